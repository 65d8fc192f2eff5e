"""Tiny HTTP(S) layer: standard-library ThreadingHTTPServer + ssl, turning requests into plain values.

Why not a framework: the console serves a handful of server-rendered pages on a Pi; the standard library
is enough and keeps the attack surface and the install small. The app sees only :class:`Request` and
returns :class:`Response`, so it can be tested without sockets and this file stays dumb.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_FORM_FIELDS = 400
BASELINE_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
"""Sent with every response that does not set its own (the app sets fuller ones on its pages)."""


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-case names."""
    cookies: dict[str, str]
    body: bytes
    remote: str
    https: bool

    _form: dict[str, list[str]] | None = None

    @property
    def form(self) -> dict[str, list[str]]:
        if self._form is None:
            ctype = self.headers.get("content-type", "")
            if ctype.startswith("application/x-www-form-urlencoded"):
                text = self.body.decode("utf-8", errors="strict")
                self._form = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
            else:
                self._form = {}
        return self._form

    def field(self, name: str, default: str = "") -> str:
        """Last value wins: a hidden "0" followed by a checked checkbox's "1" reads as "1"."""
        vals = self.form.get(name)
        return vals[-1] if vals else default

    def arg(self, name: str, default: str = "") -> str:
        vals = self.query.get(name)
        return vals[-1] if vals else default


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str, value: str) -> Response:
        self.headers.append((name, value))
        return self


App = Callable[[Request], Response]


def _make_handler(app: App, https: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "radarcam-console"
        sys_version = ""
        timeout = 30
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _handle(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                self.close_connection = True
                self._send(Response(413, b"request body too large", "text/plain; charset=utf-8"))
                return
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            cookies: dict[str, str] = {}
            try:
                jar = SimpleCookie()
                jar.load(self.headers.get("Cookie", ""))
                cookies = {k: m.value for k, m in jar.items()}
            except CookieError:
                pass
            req = Request(
                method=self.command,
                path=url.path,
                query=parse_qs(url.query, keep_blank_values=True, max_num_fields=50),
                headers={k.lower(): v for k, v in self.headers.items()},
                cookies=cookies,
                body=body,
                remote=self.client_address[0] if self.client_address else "",
                https=https,
            )
            try:
                resp = app(req)
            except (UnicodeDecodeError, ValueError) as exc:
                resp = Response(400, f"bad request: {exc}".encode(), "text/plain; charset=utf-8")
            except Exception:
                log.exception("console request %s %s failed", self.command, url.path)
                resp = Response(500, b"internal error (see the console log)", "text/plain; charset=utf-8")
            self._send(resp)

        def _send(self, resp: Response) -> None:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for k, v in resp.headers:
                self.send_header(k, v)
            have = {k.lower() for k, _ in resp.headers}
            for k, v in BASELINE_HEADERS:  # answers made here (400, 413, 500) never reach the app's
                if k.lower() not in have:
                    self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)

        do_GET = do_POST = do_HEAD = _handle

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
                log.debug("connection from %s dropped: %s", self.client_address, exc)
                self.close_connection = True

    return Handler


class ConsoleHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], app: App, *, cert: Path | None = None, key: Path | None = None):
        https = cert is not None
        super().__init__(addr, _make_handler(app, https))
        self.https = https
        if cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cert), str(key))
            # Handshake in the per-request thread, not in accept(): a slow client cannot stall the server.
            self.socket = ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request: object, client_address: object) -> None:
        log.warning("request from %s failed", client_address, exc_info=True)


def serve_in_thread(server: ConsoleHTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    return t
