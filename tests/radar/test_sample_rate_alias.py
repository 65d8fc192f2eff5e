"""Sampling rate vs. aliasing: a speed must never go to a vehicle of the other direction.

An OPS24x samples I/Q, so a target faster than the rate's maximum folds into the opposite sign (SX,
~111.8 km/h: 120 km/h inbound reads as ~-103.6 km/h). The driver flags readings near the maximum, the
tracker marks their pass ``near_alias_limit``, and the reader insists on the module confirming the rate.
Real parts: the emulator on a pseudo-terminal, pyserial, the reader, the driver and the tracker.
"""

from __future__ import annotations

import pytest

from device.config import LaneConfig, RadarConfig, TrackerConfig
from device.model import Direction, Pass
from device.sensors import serial_reader
from device.sensors.ops24x import Ops24xDriver, max_speed_kmh
from device.sensors.radar import make_driver
from device.sensors.serial_reader import RadarReader
from device.sensors.tracker import PassTracker
from device.sim.radar_emulator import RadarEmulator, alias_kmh
from device.sim.scenario import Scenario

from .conftest import SHORT_BEAM, vehicle, wait_for
from .test_emulator_e2e import Collector
from .test_units_confirmation import DeafEmulator

LANES_40 = [
    LaneConfig(id="1", direction="inbound", limit_kmh=40),
    LaneConfig(id="2", direction="outbound", limit_kmh=40),
]


def _cfg(port: str, **kw) -> RadarConfig:
    return RadarConfig(port=port, units="kmh", min_speed_kmh=1.0, reconnect_min_s=0.05, **kw)


def _driver(rate: str) -> Ops24xDriver:
    d = Ops24xDriver(units="kmh")
    d.init_commands(RadarConfig(units="kmh", sample_rate=rate), 40.0)
    return d


def test_emulator_folds_over_range_speeds_into_the_other_sign() -> None:
    """The scenario from review: 120 km/h inbound at SX must come out as ~-103.6 km/h, not vanish."""
    vmax = max_speed_kmh("SX")
    assert alias_kmh(120.0, vmax) == pytest.approx(-103.6, abs=0.1)
    assert alias_kmh(-120.0, vmax) == pytest.approx(103.6, abs=0.1)
    assert alias_kmh(72.5, vmax) == pytest.approx(72.5) and alias_kmh(-72.5, vmax) == pytest.approx(-72.5)


def test_sampling_rate_reply_confirms_only_the_configured_rate() -> None:
    """Like the units reply: the module's own word, number or quoted number; reset forgets it."""
    d = _driver("S2")
    assert not d.rate_confirmed
    d.feed(b'{"SamplingRate":10000}\r\n', 1)
    assert d.confirmed_rate == 10000 and not d.rate_confirmed  # S2 lost: module still at power-on SX
    d.feed(b'{"SamplingRate":"20000"}\r\n', 2)
    assert d.rate_confirmed
    d.feed(b'{"SamplingRate":"fast"}\r\n{"SamplingRate":null}\r\n', 3)
    assert d.confirmed_rate == 20000  # malformed values change nothing
    d.reset()
    assert d.confirmed_rate is None and not d.rate_confirmed


def test_readings_near_the_rate_maximum_are_flagged_with_the_rate_in_force() -> None:
    """Until the module confirms S2 it may still be at SX, so SX's zone applies; then S2's."""
    d = _driver("S2")
    early = d.feed(b'{"speed":"-103.60"}\r\n{"speed":"95.00"}\r\n', 1)
    assert early[0].alias_max_kmh == pytest.approx(111.8, abs=0.1)
    assert early[1].alias_max_kmh is None
    # a reply and readings in one chunk: each line is judged with the rate known when it arrived
    got = d.feed(
        b'{"speed":"-103.60"}\r\n{"SamplingRate":20000}\r\n{"speed":"-103.60"}\r\n{"speed":"205"}\r\n', 2
    )
    assert [r.alias_max_kmh is not None for r in got] == [True, False, True]
    assert got[1].speed_kmh == pytest.approx(103.6) and got[2].alias_max_kmh == pytest.approx(223.6, abs=0.1)


def _passes(readings) -> list[Pass]:
    tr = PassTracker(TrackerConfig(min_readings=4, gap_ms=500), LANES_40)
    out: list[Pass] = []
    for r in readings:
        out += tr.push(r)
    return sorted(out + tr.close(), key=lambda p: p.start_mono_ns)


def test_over_range_inbound_car_never_becomes_a_valid_outbound_pass() -> None:
    """40 km/h site forced to SX: a 120 km/h inbound car aliases to an outbound ~104 km/h pass that
    would be 60 km/h 'over the limit' and pinned on an outbound car; it must be invalid."""
    scenario = Scenario(
        vehicles=[vehicle(0, 0.3, 120.0, Direction.INBOUND), vehicle(1, 1.5, 62.0, Direction.OUTBOUND)],
        duration_s=2.6,
        seed=5,
        geometry=SHORT_BEAM,
    )
    got = Collector()
    with RadarEmulator(scenario) as emu:
        cfg = _cfg(emu.port, sample_rate="SX")
        reader = RadarReader(cfg, make_driver(cfg), got, max_limit_kmh=40.0)
        reader.start()
        try:
            assert emu.done.wait(20), "scenario did not finish"
            wait_for(lambda: reader.health()["sample_rate_confirmed"], what="SX confirmed")
        finally:
            reader.stop()
    passes = _passes(got.snapshot())
    assert all(p.direction is Direction.OUTBOUND for p in passes)  # the inbound car really aliased
    aliased, real = passes[0], passes[-1]
    assert len(passes) == 2 and aliased.peak_kmh > 100
    assert not aliased.valid and aliased.invalid_reasons == ("near_alias_limit",)  # else it passes
    assert real.valid and real.peak_kmh == pytest.approx(62.0, abs=1.0)  # ordinary traffic unaffected


@pytest.fixture
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial_reader, "INIT_RETRY_S", 0.3)


def _steady() -> Scenario:
    return Scenario(
        vehicles=[vehicle(0, 0.0, 10.0, Direction.INBOUND)], duration_s=60.0, seed=3, geometry=SHORT_BEAM
    )


@pytest.mark.usefixtures("fast_retry")
@pytest.mark.parametrize(
    ("ignore", "why"),
    [({"S2"}, "module reports 10000 samples/s, configured S2"), ({"S2", "??"}, "no sampling-rate reply")],
)
def test_lost_rate_command_keeps_reader_degraded_and_retrying(tmp_path, ignore, why) -> None:
    """Auto picks S2 for a 40 km/h site; if S2 is lost the module stays at 10 ksps, so no 'ok'."""
    emu = DeafEmulator(_steady(), link_dir=tmp_path).start()
    emu.ignore = set(ignore)
    cfg = _cfg(emu.port)
    reader = RadarReader(cfg, make_driver(cfg), Collector(), max_limit_kmh=40.0)
    reader.start()
    try:
        wait_for(lambda: reader.health()["init_sent"] >= 3, what="init re-sent while the rate is unconfirmed")
        h = reader.health()
        assert h["units_confirmed"] and not h["sample_rate_confirmed"]
        assert h["state"] == "degraded" and why in h["reason"]
        assert "ok" not in h["state_history"]
        emu.ignore = set()  # the next retry gets through
        wait_for(lambda: reader.health()["state"] == "ok", what="ok once S2 is confirmed")
        assert emu.sample_rate == "S2" and reader.health()["sample_rate_reported"] == 20000
    finally:
        reader.stop()
        emu.stop()
