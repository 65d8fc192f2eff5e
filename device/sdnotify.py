"""The sd_notify protocol spoken directly over ``$NOTIFY_SOCKET`` (no libsystemd, no python-systemd).

Why by hand: the protocol is one datagram of ``KEY=VALUE`` lines on an AF_UNIX socket, the Pi image need
not carry libsystemd bindings, and tests can bind a real socket and read exactly what systemd would.
Outside systemd (``NOTIFY_SOCKET`` unset) every call is a no-op, so the daemon runs the same way under
``make demo`` and under the service manager.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def _address(raw: str) -> str | bytes:
    """``@name`` is a Linux abstract socket: the leading ``@`` becomes a NUL byte."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """Sends state changes to the service manager. Thread-safe (one ``sendto`` per message)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = _address(raw) if raw else None
        self._env = dict(env)
        self._sock: socket.socket | None = None
        if self._addr is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the supervisor on a slow reader: a full queue drops the message (EAGAIN),
            # which is what a missed watchdog ping should look like anyway.
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._addr is not None

    def notify(self, **fields: str | int) -> bool:
        """Sends one message; returns False (never raises) when there is nobody to tell or it failed.

        A failed notification must not take the daemon down: systemd will act on the missing
        watchdog ping by itself, which is the correct outcome.
        """
        if self._sock is None or self._addr is None:
            return False
        for key, value in fields.items():
            if "\n" in str(value) or "=" in key:
                raise ValueError(f"sd_notify field {key!r} must be one line without '=' in the key")
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(msg, self._addr)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"READY": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def watchdog_trigger(self) -> bool:
        """Asks systemd to act as if the watchdog expired (used when a stage is known to be hung)."""
        return self.notify(WATCHDOG="trigger")

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text.replace("\n", " "))

    def stopping(self, status: str | None = None) -> bool:
        fields: dict[str, str | int] = {"STOPPING": 1}
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload (systemd >= 253) requires.

        Call :meth:`ready` again once the new configuration is in effect.
        """
        fields: dict[str, str | int] = {
            "RELOADING": 1,
            "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000,
        }
        if status is not None:
            fields["STATUS"] = status
        return self.notify(**fields)

    def watchdog_interval_s(self) -> float | None:
        """The watchdog timeout systemd enforces, or None when no watchdog applies to this process.

        ``WATCHDOG_PID`` (when set) names the process the watchdog is meant for: a child that inherited
        the environment must not ping on the parent's behalf.
        """
        usec = self._env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 1e6 if value > 0 else None

    def ping_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half the timeout, as sd_watchdog_enabled(3) recommends."""
        interval = self.watchdog_interval_s()
        return None if interval is None else interval / 2

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
