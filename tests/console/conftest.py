"""Fixtures for the console tests: a REAL ControlServer with a small stateful fake daemon, and a REAL
console HTTPS server on loopback (in-process threads; one test also runs the CLI as another user)."""

from __future__ import annotations

import base64
import http.client
import io
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from PIL import Image, ImageDraw

from device import config as cfgmod
from device.console.app import ConsoleApp
from device.console.httpd import ConsoleHTTPServer, serve_in_thread
from device.console.tls import ensure_certificate, fingerprint
from device.control import ControlServer, socket_path

PASSWORD = "correct horse battery"


def jpeg(width: int, height: int, text: str) -> str:
    img = Image.new("RGB", (width, height), (40, 60, 80))
    d = ImageDraw.Draw(img)
    d.rectangle((width // 4, height // 3, 3 * width // 4, 2 * height // 3), outline=(255, 255, 0), width=3)
    d.text((10, 10), text, fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=70)
    return base64.b64encode(buf.getvalue()).decode()


class FakeDaemon:
    """Stands in for the lead's daemon behind a real ControlServer; its reload re-reads the real file."""

    def __init__(self, config_path: Path):
        self.config_path = config_path
        self.lock = threading.Lock()
        self.speed: float | None = 0.0
        self.passes: list[dict[str, Any]] = []
        self.violations: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.reloads: list[dict[str, Any]] = []
        self.audits: list[list[dict[str, Any]]] = []
        self.triggers = 0
        self.config_hash = cfgmod.config_hash(cfgmod.load(config_path))
        self.frame = 0

    def add_pass(self, speed: float) -> None:
        with self.lock:
            self.passes.insert(
                0,
                {
                    "t_utc": f"2026-11-22T01:00:{len(self.passes):02d}Z",
                    "lane": "1",
                    "direction": "inbound",
                    "peak_kmh": speed,
                    "median_kmh": speed - 0.5,
                    "readings": 12,
                    "valid": True,
                },
            )

    def add_violation(self, speed: float, plate: str, latin: str) -> None:
        with self.lock:
            self.violations.insert(
                0,
                {
                    "seq": len(self.violations) + 1,
                    "t_utc": "2026-11-22T01:01:00Z",
                    "lane": "1",
                    "speed_kmh": speed,
                    "limit_kmh": 60.0,
                    "thumbnail_jpeg_b64": jpeg(160, 90, latin),
                    "plate": {"text": plate, "text_latin": latin, "country": "MA", "confidence": 0.93},
                },
            )

    # ---------------------------------------------------------------- handlers
    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {
                "device_id": "radarcam-test",
                "firmware": "0.1.0",
                "config_hash": self.config_hash,
                "uptime_s": 12.5,
                "components": {
                    "radar": {"state": "ok", "detail": "OPS243-A on /dev/pts/9"},
                    "camera": {"state": "degraded", "detail": "reconnecting"},
                },
                "radar": {
                    "live_speed_kmh": self.speed,
                    "direction": "inbound",
                    "t_mono_ns": time.monotonic_ns(),
                },
                "outbox": {
                    "depth": len(self.violations),
                    "pending": 0,
                    "last_ack_seq": 3,
                    "last_ack_utc": None,
                },
                "uplink": {"connected": True, "broker": "localhost:1883"},
                "clock": {
                    "utc": "2026-11-22T01:02:03Z",
                    "synced": True,
                    "source": "chrony",
                    "offset_ms": 0.4,
                },
                "disk": {"path": "/var/lib/radarcam", "free_bytes": 5 * 2**30, "total_bytes": 16 * 2**30},
                "cpu_temp_c": 51.2,
                "tamper": {"open": False, "since_utc": None},
            }

    def recent(self, args: dict[str, Any]) -> dict[str, Any]:
        n = int(args.get("limit", 20))
        with self.lock:
            return {"passes": self.passes[:n], "violations": self.violations[:n]}

    def preview(self, args: dict[str, Any]) -> dict[str, Any]:
        self.frame += 1
        return {
            "jpeg_b64": jpeg(320, 180, f"frame {self.frame}"),
            "width": 320,
            "height": 180,
            "t_mono_ns": 1,
        }

    def test_trigger(self, args: dict[str, Any]) -> dict[str, Any]:
        self.triggers += 1
        return {
            "thumbnail_jpeg_b64": jpeg(160, 90, "test"),
            "width": 160,
            "height": 90,
            "t_utc": "2026-11-22T01:03:00Z",
        }

    def reload(self, args: dict[str, Any]) -> dict[str, Any]:
        cfg = cfgmod.load(self.config_path)  # raises ConfigError -> error reply, like the real daemon
        audit = args.get("audit") or []
        with self.lock:
            self.config_hash = cfgmod.config_hash(cfg)
            self.reloads.append({"audit": audit, "config": cfg})
            seq = None
            if audit:
                seq = len(self.events) + 1
                self.events.append(
                    {"kind": "config_changed", "seq": seq, "audit": audit, "config_hash": self.config_hash}
                )
        return {"config_hash": self.config_hash, "event_seq": seq}

    def audit(self, args: dict[str, Any]) -> dict[str, Any]:
        """Sign-in and account records (the real daemon seals them as console_audit events; kept apart
        here so ``events`` holds the config_changed ones the tests count)."""
        with self.lock:
            self.audits.append(list(args["records"]))
            return {"event_seq": None}

    def selftest(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"check": "radar", "ok": True, "detail": "OPS243-A answered", "fix": ""},
            {"check": "clock", "ok": False, "detail": "not synchronised", "fix": "check chrony sources"},
        ]

    def uplink_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "detail": "connected to localhost:1883 in 12 ms"}

    def keys(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"key_id": "00112233445566778899aabbccddeeff", "fingerprint": "abcd:ef01:2345"}

    def logs(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"lines": ["INFO daemon started", "INFO radar ok"]}

    def handlers(self) -> dict[str, Any]:
        names = (
            "status",
            "recent",
            "preview",
            "test_trigger",
            "reload",
            "audit",
            "selftest",
            "uplink_test",
            "keys",
            "logs",
        )
        return {n: getattr(self, n) for n in names}


class Client:
    """Plain HTTP(S) client that keeps cookies, for the security tests (no browser needed there)."""

    def __init__(self, port: int, https: bool, source: str = "127.0.0.1"):
        self.port = port
        self.https = https
        self.source = source
        """Client address (any of 127.0.0.0/8 on Linux): several "machines" for per-address rules."""
        self.cookies: dict[str, str] = {}
        self.last_set_cookie: list[str] = []
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=ctx, timeout=10, source_address=(self.source, 0)
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(self.source, 0))

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ):
        """Keeps one connection alive (like a browser): a TLS handshake per request would dominate test CPU."""
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
            conn.close()
            conn = self._conn = self._connect()
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
        data = resp.read()
        self.last_set_cookie = resp.headers.get_all("Set-Cookie") or []
        for raw in self.last_set_cookie:
            jar = SimpleCookie()
            jar.load(raw)
            for k, m in jar.items():
                if m["max-age"] == "0":
                    self.cookies.pop(k, None)
                else:
                    self.cookies[k] = m.value
        return resp.status, resp.headers, data.decode("utf-8", "replace")

    def get(self, path: str):
        return self.request("GET", path)

    def post(
        self, path: str, form: dict[str, str] | list[tuple[str, str]], headers: dict[str, str] | None = None
    ):
        h = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return self.request("POST", path, urlencode(form).encode(), h)

    def site_form(self, **changes: str) -> dict[str, str]:
        """The site page's hidden fields (CSRF, base version) plus the given field changes."""
        _, _, html = self.get("/site")
        return {"csrf": self.token(html), "_base_version": self.token(html, "_base_version"), **changes}

    @staticmethod
    def token(html: str, name: str = "csrf") -> str:
        m = re.search(rf'name="{name}" value="([^"]*)"', html)
        assert m, f"no {name} field in page"
        return m.group(1)


@dataclass
class Env:
    tmp: Path
    config_path: Path
    daemon: FakeDaemon
    control: ControlServer
    app: ConsoleApp
    server: ConsoleHTTPServer
    port: int
    https: bool
    setup_code: str | None
    etc: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    def client(self, source: str = "127.0.0.1") -> Client:
        return Client(self.port, self.https, source)

    def config(self) -> cfgmod.Config:
        return cfgmod.load(self.config_path)

    def create_account(self, name: str, role: str, password: str = PASSWORD) -> None:
        self.app.accounts.create(name, password, role)
        self.app.first_start_code()

    def setup(self, name: str = "tech") -> Client:
        """First access with the one-time setup code: creates a technician and logs them in."""
        c = self.client()
        status, _, html = c.get("/setup")
        assert status == 200
        form = {"csrf": c.token(html), "code": self.setup_code, "username": name}
        status, headers, _ = c.post("/setup", form | {"password": PASSWORD, "password2": PASSWORD})
        assert status == 303 and headers["Location"] == "/dashboard"
        return c

    def login(self, name: str, password: str = PASSWORD, source: str = "127.0.0.1") -> Client:
        c = self.client(source)
        _, _, html = c.get("/login")
        status, headers, _ = c.post("/login", {"csrf": c.token(html), "username": name, "password": password})
        assert status == 303 and headers["Location"] == "/dashboard", status
        return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG_TEMPLATE = """
[device]
id = "radarcam-test"
state_dir = "{tmp}/daemon-state"
runtime_dir = "{tmp}/run"

[site]
id = "SITE-0042"
name = "Rabat ring road km 12"
mount_angle_deg = 20.0

[[site.lanes]]
id = "1"
direction = "inbound"
limit_kmh = 60.0

[[site.lanes]]
id = "2"
direction = "outbound"
limit_kmh = 80.0
roi = [0.5, 0.2, 0.5, 0.8]

[camera]
backend = "synthetic"

[console]
bind = "127.0.0.1"
port = {port}
https = {https}
state_dir = "{tmp}/console-state"
allowed_file_dirs = ["{tmp}/etc"]
max_failed_logins = 5
login_attempts_per_minute = {per_minute}
# OWASP's minimum argon2id profile: still the real algorithm, 4x cheaper than the field default on CI
argon2_time_cost = 2
argon2_memory_kib = 19456
"""


def make_env(tmp: Path, *, https: bool = True, per_minute: int = 200) -> Iterator[Env]:
    port = free_port()
    cfg_path = tmp / "radarcam.toml"
    cfg_path.write_text(
        CONFIG_TEMPLATE.format(tmp=tmp, port=port, https=str(https).lower(), per_minute=per_minute), "utf-8"
    )
    (tmp / "etc").mkdir()
    cfg = cfgmod.load(cfg_path)
    daemon = FakeDaemon(cfg_path)
    control = ControlServer(socket_path(cfg.device.runtime_dir), daemon.handlers())
    control.start()
    app = ConsoleApp(cfg_path)
    code = app.first_start_code()
    cert = key = None
    if https:
        cert, key, _ = ensure_certificate(cfg.console.state_dir, device_id=cfg.device.id)
        app.tls_fingerprint = fingerprint(cert.read_bytes())
    server = ConsoleHTTPServer(("127.0.0.1", port), app, cert=cert, key=key)
    serve_in_thread(server)
    try:
        yield Env(tmp, cfg_path, daemon, control, app, server, port, https, code, tmp / "etc")
    finally:
        server.shutdown()
        server.server_close()
        control.stop()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path)


@pytest.fixture
def http_env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path, https=False)


@pytest.fixture
def strict_env(tmp_path: Path) -> Iterator[Env]:
    """Low per-address login rate, for the throttling test."""
    yield from make_env(tmp_path, per_minute=8)


@pytest.fixture
def daemon_env(tmp_path: Path) -> Iterator[Env]:
    """The console in front of the REAL daemon (in-process, emulated radar and camera)."""
    from device.sim.scenario import generate
    from device.sim.unit import EmulatedUnit

    port = free_port()
    (tmp_path / "etc").mkdir()
    unit = EmulatedUnit(
        tmp_path / "unit",
        generate(2, vehicles=3, speeder_share=0.0),
        {
            "console": {
                "bind": "127.0.0.1",
                "port": port,
                "https": True,
                "state_dir": str(tmp_path / "console-state"),
                "allowed_file_dirs": [str(tmp_path / "etc")],
                "argon2_time_cost": 2,
                "argon2_memory_kib": 19456,
            }
        },
    )
    unit.start()
    cfg = cfgmod.load(unit.config_path)
    app = ConsoleApp(unit.config_path)
    code = app.first_start_code()
    cert, key, _ = ensure_certificate(cfg.console.state_dir, device_id=cfg.device.id)
    app.tls_fingerprint = fingerprint(cert.read_bytes())
    server = ConsoleHTTPServer(("127.0.0.1", port), app, cert=cert, key=key)
    serve_in_thread(server)
    try:
        yield Env(tmp_path, unit.config_path, unit.daemon, unit.daemon.control, app, server, port, True, code,
                  tmp_path / "etc", extra={"unit": unit})  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        unit.stop()
