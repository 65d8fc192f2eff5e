"""The radar reader thread: serial port -> driver -> readings, surviving unplugs.

It never blocks on the consumer: readings go into a bounded deque drained by a small dispatcher thread
that calls ``on_reading``; if the consumer stalls, the oldest readings are dropped and counted
(``dropped`` in health) instead of the serial buffer overflowing unseen. When the port vanishes (USB
unplug, pty closed) the reader closes it, reports ``down`` and retries with exponential backoff
(``reconnect_min_s`` doubling to ``reconnect_max_s``); once open again it is ``degraded`` until a
complete line has arrived *and* the module has confirmed the configured units, then ``ok``.

The backoff is reset only by a healthy session (a complete line received, or ``HEALTHY_S`` open
without an error), never by a successful open alone: a port that opens but fails its first read (a
half-enumerated USB device) was reopened in a tight loop, 147 733 times a second with a warning each.
Every reopen after a lost port waits the current delay, and the "lost" warning is rate-limited.

The init commands are not awaited, so a module that drops them (still booting after a replug, a
corrupted byte) would stream unit-less numbers the driver must skip: lines arrive, yet nothing is
measured. Hence the units check, with ``reason`` in health saying why it is degraded, and the whole
init sequence re-sent every ``INIT_RETRY_S`` until the units are confirmed. The sampling rate is checked
the same way (its ``{"SamplingRate":...}`` reply, or the ``??`` banner): a lost rate command leaves the
module at its power-on 10 ksps, where anything above ~112 km/h aliases into the other direction.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

from device.config import RadarConfig
from device.model import Reading
from device.sensors.radar import RadarDriver

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.05
QUEUE_MAX = 10_000
INIT_RETRY_S = 2.0
"""Re-send the init sequence this often while the units or the rate are unconfirmed (a handful of short
commands: harmless to a module that did get them, and bounded however long it stays silent or booting)."""
HEALTHY_S = 5.0
"""A session that stayed open this long without an error counts as healthy even without a line."""
WARN_EVERY_S = 60.0
"""At most one "port lost" warning this often while sessions keep failing (the count is logged)."""


class RadarReader(threading.Thread):
    def __init__(
        self,
        cfg: RadarConfig,
        driver: RadarDriver,
        on_reading: Callable[[Reading], None],
        *,
        max_limit_kmh: float,
    ) -> None:
        super().__init__(name="radar-reader", daemon=True)
        self.cfg = cfg
        self.driver = driver
        self.on_reading = on_reading
        self.max_limit_kmh = max_limit_kmh
        self.heartbeat_ns = time.monotonic_ns()
        self._stop_evt = threading.Event()
        self._lock = threading.Lock()
        self._state = "starting"
        self._reconnects = 0
        self._bytes_in = 0
        self._readings = 0
        self._dropped = 0
        self._callback_errors = 0
        self._driver_errors = 0
        self._history: collections.deque[tuple[int, str]] = collections.deque(maxlen=32)
        self._last_reading_ns: int | None = None
        self._last_error: str | None = None
        self._reason: str | None = None
        self._init_sent = 0
        self._backoff_s = cfg.reconnect_min_s
        self._lost_unlogged = 0
        self._next_warn = 0.0
        self._ser: serial.Serial | None = None
        self._queue: collections.deque[Reading] = collections.deque()
        self._cond = threading.Condition()
        self._dispatcher = threading.Thread(target=self._dispatch, name="radar-dispatch", daemon=True)

    # ------------------------------------------------------------------ public

    def health(self) -> dict[str, Any]:
        stats = self.driver.stats
        with self._lock:
            age = (
                None if self._last_reading_ns is None else (time.monotonic_ns() - self._last_reading_ns) / 1e9
            )
            return {
                "state": self._state,
                "reason": self._reason,
                "port": self.cfg.port,
                "reconnects": self._reconnects,
                "bytes_in": self._bytes_in,
                "readings": self._readings,
                "skipped": stats.get("skipped", 0),
                "dropped": self._dropped,
                "callback_errors": self._callback_errors,
                "driver_errors": self._driver_errors,
                "last_reading_age_s": age,
                "last_error": self._last_error,
                "driver": stats,
                "product": getattr(self.driver, "product", None),
                "units": getattr(self.driver, "units", None),
                "units_confirmed": self._units_confirmed(),
                "sample_rate": getattr(self.driver, "sample_rate", None),
                "sample_rate_reported": getattr(self.driver, "confirmed_rate", None),
                "sample_rate_confirmed": self._rate_confirmed(),
                "init_sent": self._init_sent,
                "backoff_s": self._backoff_s,
                "state_history": [state for _, state in self._history],
            }

    def stop(self, timeout: float = 2.0) -> None:
        self._stop_evt.set()
        with self._cond:
            self._cond.notify_all()
        if self.is_alive():
            self.join(timeout)
        if self._dispatcher.is_alive():
            self._dispatcher.join(timeout)

    # ------------------------------------------------------------------ thread bodies

    def run(self) -> None:
        self._dispatcher.start()
        first = True
        while not self._stop_evt.is_set():
            self.heartbeat_ns = time.monotonic_ns()
            try:
                self._open()
            except (serial.SerialException, OSError, ValueError) as exc:
                self._set(state="down", error=f"open {self.cfg.port}: {exc}")
                if self._backoff():
                    break
                continue
            if not first:
                with self._lock:
                    self._reconnects += 1
            first = False
            opened = time.monotonic()
            lines_at_open = self.driver.stats.get("lines", 0)
            try:
                self._read_loop()
            except (serial.SerialException, OSError) as exc:
                healthy = (
                    self.driver.stats.get("lines", 0) > lines_at_open
                    or time.monotonic() - opened >= HEALTHY_S
                )
                self._set(state="down", error=f"read {self.cfg.port}: {exc}")
                self._warn_lost(exc, healthy)
                self._close()
                if healthy:  # the port worked: the next trouble starts from the shortest delay again
                    self._backoff_s = self.cfg.reconnect_min_s
                if self._backoff():
                    break
            finally:
                self._close()
        self._set(state="stopped")

    def _backoff(self) -> bool:
        """Waits the current delay, then doubles it (to ``reconnect_max_s``); True when stopped.

        Beats while it waits: waiting on purpose is this thread working. The watchdog is for a hung
        thread; a radar unplugged for a minute made the stage look hung for most of each 30 s delay,
        systemd restarted the daemon over and over and, after ``StartLimitBurst``, gave up on it."""
        slices = max(1, math.ceil(self._backoff_s))  # about a second each
        for _ in range(slices):
            self.heartbeat_ns = time.monotonic_ns()
            if self._stop_evt.wait(self._backoff_s / slices):
                return True
        self.heartbeat_ns = time.monotonic_ns()
        self._backoff_s = min(self._backoff_s * 2, self.cfg.reconnect_max_s)
        return False

    def _warn_lost(self, exc: BaseException, healthy: bool) -> None:
        """A lost healthy port is always logged; repeated failures once per ``WARN_EVERY_S``."""
        now = time.monotonic()
        self._lost_unlogged += 1
        if not healthy and now < self._next_warn:
            return
        more = self._lost_unlogged - 1
        log.warning(
            "radar port %s lost: %s%s",
            self.cfg.port,
            exc,
            f" ({more} more failed sessions since the last warning)" if more else "",
        )
        self._lost_unlogged = 0
        self._next_warn = now + WARN_EVERY_S

    def _port(self) -> serial.Serial:
        """The serial port, opened (a separate method so a test can hand in a failing one)."""
        return serial.Serial(self.cfg.port, self.cfg.baudrate, timeout=READ_TIMEOUT_S, write_timeout=1.0)

    def _open(self) -> None:
        ser = self._port()
        try:
            ser.reset_input_buffer()
            self.driver.reset()
            with self._lock:
                self._enter("degraded")
                self._reason = "no data since the port opened"
            # Replies may arrive late or between data lines: the driver treats them as non-readings
            # (and learns the units from the units reply), so we never wait for them here.
            self._send_init(ser)
        except BaseException:
            ser.close()
            raise
        self._ser = ser
        log.info("radar port %s open", self.cfg.port)

    def _send_init(self, ser: serial.Serial) -> None:
        for cmd in self.driver.init_commands(self.cfg, self.max_limit_kmh):
            ser.write(cmd)
        ser.flush()
        with self._lock:
            self._init_sent += 1

    def _units_confirmed(self) -> bool:
        return getattr(self.driver, "confirmed_units", None) == self.cfg.units

    def _rate_confirmed(self) -> bool:
        """The module reported the configured sampling rate (drivers without one: nothing to confirm)."""
        return bool(getattr(self.driver, "rate_confirmed", True))

    def _init_confirmed(self) -> bool:
        return self._units_confirmed() and self._rate_confirmed()

    def _update_state(self, lines_seen: bool) -> None:
        """``ok`` only with data flowing, units and sampling rate confirmed (caller holds the lock)."""
        if not lines_seen:
            reason: str | None = "no data since the port opened"
        elif not self._units_confirmed():
            got = getattr(self.driver, "confirmed_units", None)
            reason = (
                f"units not confirmed: module reports {got}, configured {self.cfg.units}"
                if got
                else f"units not confirmed: no units reply from the module (configured {self.cfg.units})"
            )
        elif not self._rate_confirmed():
            got_rate = getattr(self.driver, "confirmed_rate", None)
            want = getattr(self.driver, "sample_rate", None)
            reason = (
                f"sampling rate not confirmed: module reports {got_rate} samples/s, configured {want}"
                if got_rate
                else f"sampling rate not confirmed: no sampling-rate reply from the module (configured {want})"
            )
        else:
            reason = None
        self._reason = reason
        self._enter("degraded" if reason else "ok")

    def _close(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                ser.close()

    def _read_loop(self) -> None:
        ser = self._ser
        assert ser is not None
        lines_at_open = self.driver.stats.get("lines", 0)
        next_init_ns = time.monotonic_ns() + int(INIT_RETRY_S * 1e9)
        retries = 0
        while not self._stop_evt.is_set():
            now = self.heartbeat_ns = time.monotonic_ns()
            if now >= next_init_ns and not self._init_confirmed():
                if retries % 30 == 0:  # about once a minute, not every retry
                    log.warning(
                        "radar %s: units or sampling rate not confirmed, re-sending init commands",
                        self.cfg.port,
                    )
                retries += 1
                self._send_init(ser)
                next_init_ns = now + int(INIT_RETRY_S * 1e9)
            waiting = ser.in_waiting
            data = ser.read(min(max(waiting, 1), 65536))
            if not data:
                continue
            t = time.monotonic_ns()
            try:
                readings = self.driver.feed(data, t)
            except Exception as exc:  # a parser bug must cost these bytes, not the radar thread
                log.exception("radar driver failed on %d bytes", len(data))
                with self._lock:
                    self._driver_errors += 1
                    self._last_error = f"driver: {exc!r}"
                continue
            with self._lock:
                self._bytes_in += len(data)
                self._update_state(self.driver.stats.get("lines", 0) > lines_at_open)
                if readings:
                    self._readings += len(readings)
                    self._last_reading_ns = t
            if readings:
                with self._cond:
                    q = self._queue
                    for r in readings:
                        if len(q) >= QUEUE_MAX:
                            q.popleft()
                            self._dropped += 1
                        q.append(r)
                    self._cond.notify()

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop_evt.is_set():
                    self._cond.wait(0.5)
                if not self._queue and self._stop_evt.is_set():
                    return
                batch = list(self._queue)
                self._queue.clear()
            for r in batch:
                try:
                    self.on_reading(r)
                except Exception:  # a consumer bug must not kill the radar path
                    self._callback_errors += 1
                    log.exception("on_reading failed")

    def _set(self, *, state: str, error: str | None = None) -> None:
        with self._lock:
            self._enter(state)
            self._reason = error
            if error is not None:
                self._last_error = error

    def _enter(self, state: str) -> None:
        """Record a state change (caller holds the lock); repeated states are not history."""
        if state != self._state:
            self._state = state
            self._history.append((time.monotonic_ns(), state))
