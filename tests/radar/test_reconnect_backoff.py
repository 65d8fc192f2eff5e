"""Reconnect backoff: a port that opens but fails its first read must not be reopened in a tight loop.

The failing port is pyserial's own ``loop://`` port with ``read`` raising what a half-enumerated USB
CDC device raises (a pseudo-terminal cannot be reopened once its master side is gone, so it cannot
play this fault); everything else (open, init writes, the reader thread, the driver) is real.
"""

from __future__ import annotations

import logging
import threading
import time

import serial
from serial.urlhandler.protocol_loop import Serial as LoopSerial

from device.config import RadarConfig
from device.sensors.radar import make_driver
from device.sensors.serial_reader import RadarReader

from .conftest import wait_for


class FailingReadPort(LoopSerial):
    """Opens fine; the ``good_reads`` first reads work (returning the looped-back init commands as
    lines), every later one raises like a device that vanished under the open file."""

    good_reads = 0

    def read(self, size: int = 1) -> bytes:
        if self.good_reads > 0:
            self.good_reads -= 1
            time.sleep(0.01)  # let the whole init sequence loop back: complete lines
            return super().read(max(size, self.in_waiting))
        raise serial.SerialException("read failed: [Errno 5] Input/output error")


class RecordingEvent(threading.Event):
    """The reader's stop event, recording how long each backoff waits (real waits, nothing skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return super().wait(timeout)


def reader_on(good_reads: int) -> RadarReader:
    cfg = RadarConfig(port="loop://", units="kmh", reconnect_min_s=0.05, reconnect_max_s=0.4)

    class Reader(RadarReader):
        opens = 0

        def _port(self) -> serial.Serial:
            Reader.opens += 1
            port = FailingReadPort("loop://", timeout=0.05, write_timeout=1.0)
            port.good_reads = good_reads
            return port

    r = Reader(cfg, make_driver(cfg), lambda _r: None, max_limit_kmh=60.0)
    r._stop_evt = RecordingEvent()
    return r


def test_port_that_fails_every_first_read_backs_off_and_warns_once(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="device.sensors.serial_reader")
    reader = reader_on(good_reads=0)
    t0 = time.monotonic()
    reader.start()
    try:
        wait_for(lambda: type(reader).opens >= 6, timeout=10, what="six opens")
    finally:
        reader.stop()
    elapsed = time.monotonic() - t0
    waits = reader._stop_evt.waits[:5]
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.4]  # doubling to the cap, not reset by the open
    assert elapsed >= sum(waits) * 0.9  # the waits really happened
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]  # rate-limited, not one per reopen
    h = reader.health()
    assert h["reconnects"] >= 5 and "read failed" in (h["last_error"] or "")


def test_session_that_delivered_lines_resets_the_backoff(caplog) -> None:
    """A port that worked (complete lines arrived) and then failed is retried after the shortest delay
    each time: the reset is earned by data, and each such loss is logged."""
    caplog.set_level(logging.WARNING, logger="device.sensors.serial_reader")
    reader = reader_on(good_reads=1)
    reader.start()
    try:
        wait_for(lambda: type(reader).opens >= 4, timeout=10, what="four opens")
    finally:
        reader.stop()
    assert reader.driver.stats["lines"] >= 10  # the init commands came back as lines
    assert reader._stop_evt.waits[:3] == [0.05, 0.05, 0.05]
    assert len([r for r in caplog.records if "lost" in r.getMessage()]) >= 3


def test_a_radar_that_stays_away_does_not_look_like_a_hung_thread() -> None:
    """Before, the reader beat once per open attempt: during a 30 s delay the radar stage was stale
    for 25 s, the watchdog stopped, and systemd restarted the daemon every cycle (then gave up after
    StartLimitBurst). Waiting is beating."""
    cfg = RadarConfig(port="loop://", units="kmh", reconnect_min_s=3.0, reconnect_max_s=3.0)

    class Absent(RadarReader):
        def _port(self) -> serial.Serial:
            raise serial.SerialException("could not open port /dev/radar: No such file or directory")

    r = Absent(cfg, make_driver(cfg), lambda _r: None, max_limit_kmh=60.0)
    r.start()
    try:
        ages = []
        for _ in range(6):
            time.sleep(0.5)
            ages.append((time.monotonic_ns() - r.heartbeat_ns) / 1e9)
        assert r.health()["state"] == "down"
    finally:
        r.stop()
    assert max(ages) < 1.6, ages  # within the 5 s the daemon allows the stage, at any moment
