"""Console costs on this machine: control-socket round trip, page and JSON latency, argon2id login cost.

Why these: the dashboard polls /api/status every second and each poll is one control call, so both must
stay small on a Pi; the login hash must be slow enough to hurt guessing but not a technician.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from argon2 import PasswordHasher

from device.config import ConsoleConfig
from device.console.app import ConsoleApp
from device.console.httpd import Request
from device.control import ControlClient, ControlServer, socket_path

REPEATS = 200


def _median_ms(fn, n: int = REPEATS) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def _status(_args: dict) -> dict:
    return {
        "config_hash": "0" * 64,
        "components": {
            n: {"state": "ok", "detail": ""} for n in ("radar", "camera", "anpr", "uplink", "clock")
        },
        "radar": {"live_speed_kmh": 72.4, "direction": "inbound", "t_mono_ns": time.monotonic_ns()},
        "outbox": {"depth": 3, "pending": 0, "last_ack_seq": 10, "last_ack_utc": None},
        "uplink": {"connected": True, "broker": "localhost:1883"},
        "clock": {"utc": "2026-01-01T00:00:00Z", "synced": True, "source": "chrony", "offset_ms": 0.1},
        "disk": {"path": "/", "free_bytes": 2**33, "total_bytes": 2**34},
        "cpu_temp_c": 50.0,
        "tamper": {"open": False, "since_utc": None},
    }


def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = tmp / "radarcam.toml"
        cfg.write_text(
            f'[device]\nruntime_dir = "{tmp}/run"\n[console]\nhttps = false\nstate_dir = "{tmp}/console"\n'
            "argon2_time_cost = 1\nargon2_memory_kib = 8192\n"
        )
        handlers = {"status": _status, "recent": lambda a: {"passes": [], "violations": []}}
        with ControlServer(socket_path(tmp / "run"), handlers) as srv:
            client = ControlClient(srv.path)
            rows.append(
                {
                    "bench": "console",
                    "metric": "control_status_rtt",
                    "value": _median_ms(lambda: client.call("status")),
                    "unit": "ms",
                    "target": "< 5 ms (polled every second)",
                    "note": f"median of {REPEATS}, one unix-socket connection per call",
                }
            )
            app = ConsoleApp(cfg)
            app.accounts.create("bench", "benchmark-password", "technician")
            app.first_start_code()
            sess = app.sessions.create("bench", "technician")
            cookies = {app.session_cookie: sess.token}

            def get(path: str):
                return app(Request("GET", path, {}, {}, cookies, b"", "127.0.0.1", False))

            assert get("/dashboard").status == 200
            rows.append(
                {
                    "bench": "console",
                    "metric": "dashboard_page",
                    "value": _median_ms(lambda: get("/dashboard"), 100),
                    "unit": "ms",
                    "target": "< 100 ms on a Pi 4",
                    "note": "render incl. status + recent control calls, no TLS",
                }
            )
            rows.append(
                {
                    "bench": "console",
                    "metric": "api_status",
                    "value": _median_ms(lambda: get("/api/status")),
                    "unit": "ms",
                    "target": "< 20 ms",
                    "note": "JSON poll endpoint",
                }
            )
    c = ConsoleConfig()
    ph = PasswordHasher(time_cost=c.argon2_time_cost, memory_cost=c.argon2_memory_kib)
    h = ph.hash("benchmark-password")
    rows.append(
        {
            "bench": "console",
            "metric": "argon2id_verify_default",
            "value": _median_ms(lambda: ph.verify(h, "benchmark-password"), 9),
            "unit": "ms",
            "target": "100-1000 ms",
            "note": f"t={c.argon2_time_cost}, m={c.argon2_memory_kib} KiB, p=4 (field default)",
        }
    )
    return rows
