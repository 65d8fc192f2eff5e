"""Costs on the hot path of supervision: clock stamps (every reading/frame/packet), heartbeats (every
stage loop), and the per-tick work of the supervisor (stale check, watchdog datagram, adjtimex)."""

from __future__ import annotations

import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from device.clock import ClockMonitor, read_adjtimex
from device.config import ClockConfig
from device.health import Heartbeats
from device.sdnotify import Notifier


def _ns_per_call(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(runs)


def run() -> list[dict]:
    rows = []

    def row(metric: str, value: float, unit: str, target: str | None = None, note: str | None = None) -> None:
        rows.append(
            {
                "bench": "supervision",
                "metric": metric,
                "value": value,
                "unit": unit,
                "target": target,
                "note": note,
            }
        )

    mon = ClockMonitor(ClockConfig(source="adjtimex"))
    mon.refresh()
    row("clock_stamp", _ns_per_call(mon.stamp, 20000) / 1000, "us/call", "< 5 us", "cached state, no syscall")
    row("adjtimex_read", _ns_per_call(read_adjtimex, 2000) / 1000, "us/call", None, "background refresh only")

    hb = Heartbeats()
    for i in range(8):
        hb.register(f"stage{i}", 10.0)
    row("heartbeat_beat", _ns_per_call(lambda: hb.beat("stage3"), 20000) / 1000, "us/call", "< 5 us")
    row(
        "heartbeat_stale_8",
        _ns_per_call(hb.stale, 5000) / 1000,
        "us/call",
        None,
        "8 stages, per supervisor tick",
    )

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "notify.sock"
        sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sink.bind(str(path))
        sink.setblocking(False)
        n = Notifier({"NOTIFY_SOCKET": str(path)})

        def ping() -> None:
            n.watchdog()
            sink.recv(64)

        row("watchdog_ping", _ns_per_call(ping, 2000) / 1000, "us/call", None, "sendto + test-side recv")
        n.close()
        sink.close()
    return rows
