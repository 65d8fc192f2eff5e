"""The signed plate status says what happened to the read: ``pending`` only while a read runs and an
amendment will follow; ``not_read`` and why when no read was made, so the registry never waits for an
amendment that cannot come."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from device.anpr.reader import PlateReader
from device.capture.ring import FrameRing
from device.config import AnprConfig, Config
from device.model import ClockStamp, Decision, Direction, Frame, Pass
from device.uplink.packet import verify
from device.violations import ANPR_BACKLOG, Candidate, EvidenceBuilder


class BrokenReader:
    """A plate reader whose interpreter fails (the fault is injected; the rest is real)."""

    def read_frames(self, images, country=None, roi=None):
        raise RuntimeError("interpreter failed")


def _violation(reader, *, backlog_full: bool):
    """A violation built by the real EvidenceBuilder from real frames in a ring."""
    ring = FrameRing(2.0, 30.0)
    now, period = time.monotonic_ns(), round(1e9 / 30)
    for i in range(60):
        ring.push(Frame(now - (59 - i) * period, i, np.full((48, 64, 3), i, np.uint8)))
    end = now - 600_000_000
    p = Pass("p", end - 10**9, end, Direction.INBOUND, (), 90.0, end - 2 * 10**8, 90.0, 0.5, lane="1")
    d = Decision(True, "MA", "1", "car", 60.0, 90.0, 1.0, 0.0, 90.0, 3.0, 87.0, 27.0)
    b = EvidenceBuilder(Config(), ring, reader, on_late_plate=lambda *a: None)
    if backlog_full:  # as many reads queued or running as the worker takes
        for _ in range(ANPR_BACKLOG):
            b._anpr_busy.acquire()
    try:
        clock = ClockStamp(1_700_000_000_000_000_000, end, True, "ntp")
        return b.build(Candidate(p, d, end, clock, b.pin(p)))
    finally:
        b.close()


def _sealed(tmp_path: Path, v) -> dict:
    """``v`` sealed by the daemon's own sealing path into a real outbox, read back and verified."""
    from device.daemon import Daemon
    from device.uplink.keys import generate_key
    from device.uplink.outbox import Outbox

    d = Daemon(Config())
    d.key = generate_key(tmp_path / "signing-key.pem")
    d.ctx, d.uplink = d._packet_context(d.cfg, d.config_hash), None
    d.outbox = Outbox(tmp_path / "outbox.sqlite", d.key)
    try:
        d._seal_violation(v)
        assert d.counters["sealed"] == 1
        return verify(d.outbox.get(1).data, d.key.public_key)
    finally:
        d.outbox.close()


@pytest.mark.parametrize(
    ("reader", "backlog_full", "reason", "problem"),
    [
        (lambda: BrokenReader(), False, "read_failed", "interpreter failed"),
        (lambda: PlateReader(AnprConfig(countries=["MA"])), True, "anpr_backlog_full", "ANPR backlog full"),
    ],
    ids=["reader_failed", "anpr_backlog_full"],
)
def test_a_plate_never_read_is_signed_not_read_with_the_reason(
    tmp_path, reader, backlog_full, reason, problem
):
    """Before, a full ANPR backlog sealed ``{"status": "pending"}`` though no read was queued: the
    registry waited for an amendment that never came."""
    v = _violation(reader(), backlog_full=backlog_full)
    assert v.plate is None and not v.plate_pending and v.images
    payload = _sealed(tmp_path, v)
    assert payload["plate"] == {"status": "not_read", "reason": reason}
    assert problem in payload["extra"]["plate_problem"]
    assert payload["decision"]["violation"] and payload["images"]
