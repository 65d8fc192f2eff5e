"""``radarcam console``: run the technician web console; ``radarcam console fingerprint`` prints its cert.

Runs as its own user (never the daemon's): it cannot read the signing key, and reaches the daemon only
through the control socket.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

DEFAULT_CONFIG = "/etc/radarcam/radarcam.toml"
log = logging.getLogger("device.console")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console", help="technician web console (HTTPS, own user, no access to the signing key)"
    )
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"unit config file (default {DEFAULT_CONFIG})")
    p.set_defaults(func=_run)
    csub = p.add_subparsers(dest="console_cmd")
    f = csub.add_parser("fingerprint", help="print the console certificate's SHA-256 fingerprint")
    f.add_argument("--config", default=argparse.SUPPRESS)
    f.set_defaults(func=_fingerprint)


def _fingerprint(args: argparse.Namespace) -> int:
    from device import config as cfgmod

    from .tls import fingerprint, tls_paths

    cfg = cfgmod.load(args.config)
    cert, _ = tls_paths(cfg.console.state_dir)
    try:
        print(fingerprint(cert.read_bytes()))
    except FileNotFoundError:
        print(
            f"radarcam: no console certificate yet ({cert}); it is made on the console's first start",
            file=sys.stderr,
        )
        return 1
    return 0


def _sd_notify(msg: str) -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(msg.encode(), addr)
        except OSError as exc:
            log.warning("sd_notify failed: %s", exc)


def _run(args: argparse.Namespace) -> int:
    from .app import ConsoleApp
    from .httpd import ConsoleHTTPServer, serve_in_thread
    from .tls import ensure_certificate, fingerprint

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    app = ConsoleApp(Path(args.config))
    code = app.first_start_code()
    if code:
        # The only place the code is shown: the journal / serial console (and the 0600 file).
        print(
            f"radarcam console: FIRST START - no accounts. One-time setup code: {code}\n"
            f"radarcam console: (also in {app.setup.path}); enter it on the console's setup page.",
            file=sys.stderr,
            flush=True,
        )
    cc = app.ccfg
    cert = key = None
    if cc.https:
        cert, key, created = ensure_certificate(cc.state_dir, device_id=app.device_id)
        app.tls_fingerprint = fingerprint(cert.read_bytes())
        log.info("%s console certificate SHA-256 %s", "created" if created else "using", app.tls_fingerprint)
    else:
        log.warning("console.https = false: serving plain HTTP (lab use only)")
    server = ConsoleHTTPServer((cc.bind, cc.port), app, cert=cert, key=key)
    scheme = "https" if cc.https else "http"
    print(
        f"radarcam console: listening on {scheme}://{cc.bind}:{server.server_address[1]}/",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serve_in_thread(server)
    _sd_notify("READY=1")
    stop.wait()
    _sd_notify("STOPPING=1")
    server.shutdown()
    server.server_close()
    return 0
