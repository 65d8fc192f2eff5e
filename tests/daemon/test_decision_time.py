"""The daemon judges a pass by the limit in force when its speed was measured (the peak reading)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from device import config as cfgmod
from device.clock import ClockMonitor
from device.enforcement import Enforcer
from device.model import Direction, Pass


def test_a_window_that_opens_after_the_peak_but_before_the_pass_ends_does_not_apply():
    """Before, the instant was the pass's end: a car measured at 55 km/h at 07:29:58 whose pass ended
    at 07:30:01 was fined against a 07:30 school window of 30 km/h."""
    from device.daemon import Daemon

    wall = datetime(2026, 3, 4, 7, 30, tzinfo=UTC)  # a Wednesday; the site keeps UTC
    start = wall - timedelta(seconds=10)
    clock = ClockMonitor(
        cfgmod.ClockConfig(source="assume-synced"),
        wall_ns=lambda: int(start.timestamp()) * 10**9,  # wall time = mono + epoch offset
        mono_ns=lambda: 0,
    )
    clock.refresh()
    lane = cfgmod.LaneConfig(
        id="1",
        limit_kmh=60,
        windows=[cfgmod.TimeWindow(days=["wed"], start="07:30", end="08:00", limit_kmh=30)],
    )
    cfg = cfgmod.Config(site=cfgmod.SiteConfig(timezone="UTC", lanes=[lane]))
    d = Daemon(cfg)
    d.clock, d.enforcer, d.ctx = clock, Enforcer.for_config(cfg), None

    def at(s: float) -> int:  # the monotonic instant of wall time 07:30:00 + s
        return int((10 + s) * 1e9)

    def car(peak_s: float, end_s: float) -> Pass:
        return Pass(
            "p", at(peak_s - 1), at(end_s), Direction.INBOUND, (), 55.0, at(peak_s), 55.0, 0.5, lane="1"
        )

    before, _ = d._decide(car(-2.0, 1.0))
    assert not before.violation and "lane limit 60" in before.reason
    assert before.limit_at_utc_ns == int((wall - timedelta(seconds=2)).timestamp()) * 10**9
    after, _ = d._decide(car(0.5, 3.0))
    assert after.violation and after.limit_kmh == 30 and "window wed 07:30-08:00" in after.reason
