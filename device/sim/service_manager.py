"""The service manager's end of sd_notify, for emulated supervision (HIL tests, demos).

A real AF_UNIX datagram socket read continuously by a thread, like systemd reads ``$NOTIFY_SOCKET``;
messages are kept with their arrival time so tests can check READY, WATCHDOG cadence and STOPPING.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._messages: list[tuple[float, dict[str, str]]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            fields = dict(
                line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line
            )
            with self._lock:
                self._messages.append((time.monotonic(), fields))

    @property
    def messages(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self._messages)

    def fields(self) -> list[dict[str, str]]:
        return [m for _, m in self.messages]

    def count(self, key: str, value: str) -> int:
        return sum(1 for m in self.fields() if m.get(key) == value)

    def wait_for(
        self, key: str, value: str | None = None, timeout: float = 30.0, *, after: int = 0
    ) -> dict[str, str]:
        """First message (from index ``after``) with ``key`` (= ``value``), or AssertionError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.fields()[after:]:
                if key in m and (value is None or m[key] == value):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value} within {timeout} s; last messages: {self.fields()[-5:]}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(1)
        self.sock.close()
