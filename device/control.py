"""Daemon <-> console control protocol: newline-delimited JSON over a local unix stream socket.

Why a socket and not shared files: the console runs as another user and must never see the signing key
or the outbox; it may only *ask* the daemon, which answers with public information. The socket lives at
``<config.device.runtime_dir>/control.sock`` (:func:`socket_path`), mode 0660, group ``radarcam-console``
when that group exists, so only the console user (and root) can connect.

Wire format, one JSON object per line (UTF-8, ``\\n`` terminated, at most 64 KiB per request line)::

    request:  {"cmd": "<name>", "args": {...}}
    response: {"ok": true,  "result": <any JSON>}
              {"ok": false, "error": "<message for a technician>"}

A connection may carry any number of requests, answered in order. Bad JSON, an unknown command, an
oversized request (the rest of that line is discarded) or a handler exception each give an error reply;
the server never crashes and keeps serving other connections. At most ``max_connections`` (32) are
served at once: one more gets ``{"ok": false, "error": "daemon busy: ..."}`` and is closed.

Commands the daemon implements (``handlers`` keys; each handler takes the ``args`` dict):

``status`` -> dict (what the daemon publishes retained on ``status`` too)::

    {"state": "ok"|"degraded"|"fault", "device_id": str, "firmware": str, "config_hash": str,
     "restart_required": [section, ...], "uptime_s": float, "stale_stages": [str, ...],
     "components": {"radar": RadarReader.health(), "camera": CameraThread.health() + last_frame_age_s,
                    "uplink": UplinkClient.health() ({"connected", ...}), "outbox": Outbox.stats()
                    ({"pending", "sent", "acked", "last_seq", "last_ack_time_ns", "disk_full", ...}),
                    "anpr": {"state"}}   # every component has "state": ok|degraded|down|disabled
     "counters": {"readings", "readings_dropped", "passes", "violations", "sealed"},
     "unsealed_in_memory": int,
     "clock": {"synchronized": bool, "source": str, "offset_ns": int|None, "max_error_ns": int|None,
               "utc_ns": int},
     "disk": {"free_bytes": int, "total_bytes": int, ...}, "cpu_temp_c": float | None,
     "tamper": {"cabinet_open": bool} | None,
     "live_speed": {"kmh": float, "direction": str|None, "t_mono_ns": int} | None}

``recent`` args ``{"limit": int = 20}`` -> ``{"passes": [...], "violations": [...]}``, newest first::

    pass:      {"t_utc": str, "lane": str|None, "direction": str, "peak_kmh": float, "median_kmh": float,
                "readings": int, "valid": bool}
    violation: {"seq": int|None, "t_utc": str, "lane": str|None, "speed_kmh": float (enforced),
                "limit_kmh": float, "thumbnail_jpeg_b64": str (small, <= 320 px wide),
                "plate": {"text": str, "text_latin": str, "country": str, "confidence": float} | None}

``preview`` -> ``{"jpeg_b64": str, "width": int, "height": int, "t_mono_ns": int}``: the latest low-res
aiming frame (camera.preview_width x preview_height).

``test_trigger`` -> ``{"thumbnail_jpeg_b64": str, "width": int, "height": int, "t_utc": str}``: captures
evidence exactly as a violation would (ring, selection, data bar) but creates no violation and no packet.

``reload`` args ``{"audit": [record, ...]}`` -> ``{"config_hash": str, "event_seq": int | None}``: the daemon
re-reads its config file, validates it (``device.config.load``), applies it, and seals ONE signed ``event``
packet of kind ``config_changed`` carrying the audit batch (records are ``{"who", "role", "when" (UTC ISO),
"field" (dotted path), "old", "new", "remote"}``). On an invalid file it keeps the running config and
answers an error. ``event_seq`` is None only when the batch was empty.

``audit`` args ``{"records": [record, ...]}`` (1 to 200, as above plus ``"action"``: ``login``,
``account_created``, ``password_changed``, ...; or ``config`` records whose ``reload`` did not go through)
-> ``{"event_seq": int | None}``: seals ONE ``event`` packet of kind ``console_audit`` carrying them, so
account and sign-in events, and changes saved while the daemon was down, reach the registry too.
``event_seq`` is None when the outbox could not take it yet (kept in the daemon's memory and retried).

``selftest`` -> ``[{"check": str, "ok": bool, "detail": str, "fix": str}, ...]`` (what ``radarcam
selftest`` prints).

``uplink_test`` -> ``{"ok": bool, "detail": str}``: connect to the configured broker with the configured TLS
and credentials, then disconnect.

``keys`` -> ``{"key_id": str, "fingerprint": str}``: public information only, never key material.

``logs`` args ``{"lines": int = 200}`` -> ``{"lines": [str, ...]}``: the daemon's most recent log lines
(oldest first) from its in-memory ring, for the console's download page.

Tolerance: the console (``device/console/view.py``) renders missing or unexpected fields as "unknown"
(an older daemon, a partial answer) instead of failing; ``preview`` answers ``jpeg_b64: null`` before the
first frame and ``test_trigger`` ``{"ok": false, "detail"}`` when the ring is empty.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
"""Largest request line accepted; responses are not capped (previews and thumbnails are big)."""
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
SOCKET_GROUP = "radarcam-console"
SOCKET_NAME = "control.sock"

Handler = Callable[[dict[str, Any]], Any]


class ControlError(Exception):
    """The daemon could not be reached, or answered with an error (message meant for a technician)."""


def socket_path(runtime_dir: str | os.PathLike[str]) -> Path:
    return Path(runtime_dir) / SOCKET_NAME


def _reply(ok: bool, result: Any = None, error: str = "") -> bytes:
    msg: dict[str, Any] = {"ok": ok}
    if ok:
        msg["result"] = result
    else:
        msg["error"] = error
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"


class ControlServer:
    """Serves ``handlers`` on a unix socket from a background thread (one thread per connection).

    At most ``max_connections`` are served at once; one more is answered with an error reply and closed
    (the console shows "daemon busy" and the next request tries again). Without the cap every open
    connection held a thread until the unit's TasksMax, where ``Thread.start`` raises; the accept loop
    now survives that too (the connection gets an error reply) and anything else one connection does.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        handlers: dict[str, Handler],
        *,
        mode: int = 0o660,
        idle_timeout_s: float = 60.0,
        max_connections: int = 32,
    ):
        self.path = Path(path)
        self.handlers = dict(handlers)
        self.mode = mode
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.refused = 0
        """Connections turned away (over the cap, or no thread to serve them)."""
        self._slots = threading.BoundedSemaphore(max_connections)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale socket from a crashed daemon
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # never world-connectable, not even for an instant
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        with contextlib.suppress(KeyError, PermissionError):
            os.chown(self.path, -1, grp.getgrnam(SOCKET_GROUP).gr_gid)
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="control-accept", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with self._lock:
            for c in list(self._conns):
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- serving
    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("control socket accept failed")
                self._stop.wait(0.1)  # EMFILE and the like repeat at once: do not spin on them
                continue
            try:
                self._start_serving(conn)
            except Exception as exc:  # nothing one connection does may end the accept loop
                log.exception("control connection not served")
                self._refuse(conn, f"daemon cannot serve this connection now ({exc}); try again")

    def _start_serving(self, conn: socket.socket) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("control socket: %d connections open, one refused", self.max_connections)
            self._refuse(
                conn, f"daemon busy: {self.max_connections} control connections already open; try again"
            )
            return
        with self._lock:
            self._conns.add(conn)
        try:
            threading.Thread(target=self._serve, args=(conn,), name="control-conn", daemon=True).start()
        except BaseException:  # RuntimeError "can't start new thread" at TasksMax: the caller refuses it
            with self._lock:
                self._conns.discard(conn)
            self._slots.release()
            raise

    def _refuse(self, conn: socket.socket, message: str) -> None:
        """An error reply, then close: the client reports it instead of waiting for its timeout."""
        self.refused += 1
        with contextlib.suppress(OSError):
            conn.settimeout(0.5)  # a client that does not read must not hold up the accept loop
            conn.sendall(_reply(False, error=message))
        with contextlib.suppress(OSError):
            conn.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._serve_lines(conn)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            self._slots.release()

    def _serve_lines(self, conn: socket.socket) -> None:
        conn.settimeout(self.idle_timeout_s)  # a silent client must not hold a thread forever
        buf = b""
        discarding = False
        try:
            while not self._stop.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        if len(buf) > MAX_REQUEST_BYTES:
                            if not discarding:
                                conn.sendall(
                                    _reply(False, error=f"request larger than {MAX_REQUEST_BYTES} bytes")
                                )
                            discarding = True
                            buf = b""
                        break
                    line, buf = buf[:nl], buf[nl + 1 :]
                    if discarding:  # tail of an oversized request
                        discarding = False
                        continue
                    if len(line) > MAX_REQUEST_BYTES:
                        conn.sendall(_reply(False, error=f"request larger than {MAX_REQUEST_BYTES} bytes"))
                        continue
                    if line.strip():
                        conn.sendall(self._dispatch(line))
        except OSError:
            return

    def _dispatch(self, line: bytes) -> bytes:
        try:
            req = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _reply(False, error=f"bad request: not JSON ({exc})")
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return _reply(False, error='bad request: expected {"cmd": str, "args": {...}}')
        args = req.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return _reply(False, error="bad request: args must be an object")
        handler = self.handlers.get(req["cmd"])
        if handler is None:
            return _reply(
                False, error=f"unknown command {req['cmd']!r}; known: {', '.join(sorted(self.handlers))}"
            )
        try:
            result = handler(args)
            return _reply(True, result)
        except Exception as exc:
            log.exception("control command %s failed", req["cmd"])
            return _reply(False, error=f"{req['cmd']} failed: {type(exc).__name__}: {exc}")


class ControlClient:
    """One short connection per call: the console never holds the daemon hostage with idle sockets."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 5.0):
        self.path = Path(path)
        self.timeout = timeout

    def call(self, cmd: str, **args: Any) -> Any:
        data = json.dumps({"cmd": cmd, "args": args}, ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) + 1 > MAX_REQUEST_BYTES:
            raise ControlError(f"{cmd}: request too large ({len(data)} bytes)")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(str(self.path))
                # Refused at once ("daemon busy"): the send fails, but its reply is already here to read.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(data + b"\n")
                buf = b""
                while b"\n" not in buf:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ControlError(f"{cmd}: daemon closed the connection without answering")
                    buf += chunk
                    if len(buf) > MAX_RESPONSE_BYTES:
                        raise ControlError(f"{cmd}: response too large")
        except FileNotFoundError:
            raise ControlError(f"daemon not running (no control socket at {self.path})") from None
        except PermissionError:
            raise ControlError(
                f"no permission to use {self.path} (console user not in {SOCKET_GROUP}?)"
            ) from None
        except TimeoutError:
            raise ControlError(f"{cmd}: daemon did not answer within {self.timeout:g} s") from None
        except ConnectionRefusedError:
            raise ControlError(f"daemon not listening on {self.path}") from None
        except OSError as exc:
            raise ControlError(f"{cmd}: {exc.strerror or exc}") from None
        try:
            msg = json.loads(buf[: buf.index(b"\n")].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ControlError(f"{cmd}: daemon sent an unreadable answer ({exc})") from None
        if not isinstance(msg, dict) or "ok" not in msg:
            raise ControlError(f"{cmd}: daemon sent a malformed answer")
        if not msg["ok"]:
            raise ControlError(str(msg.get("error") or f"{cmd} failed"))
        return msg.get("result")
