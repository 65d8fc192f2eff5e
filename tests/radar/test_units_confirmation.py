"""A module that ignores the init commands must leave the reader degraded and retrying, never blind-but-ok.

Real parts: the OPS24x emulator on a pseudo-terminal, pyserial, the reader and the ops24x driver. The
emulator only gains a "deaf" switch (a module still booting drops what it is sent).
"""

from __future__ import annotations

import threading
import time

import pytest

from device.config import RadarConfig
from device.model import Direction
from device.sensors import serial_reader
from device.sensors.radar import make_driver
from device.sensors.serial_reader import RadarReader
from device.sim.radar_emulator import RadarEmulator
from device.sim.scenario import Scenario

from .conftest import SHORT_BEAM, replug_reader, vehicle, wait_for
from .test_emulator_e2e import Collector

RETRY_S = 0.3


class DeafEmulator(RadarEmulator):
    """Drops every command while ``deaf`` is set (or only those in ``ignore``) and keeps streaming."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.deaf = threading.Event()
        self.ignore: set[str] = set()
        self.dropped: list[str] = []

    def answer(self, cmd: str) -> bytes:
        if self.deaf.is_set() or cmd in self.ignore:
            self.dropped.append(cmd)
            return b""
        return super().answer(cmd)


def _steady_traffic() -> Scenario:
    # one slow vehicle in the beam for the whole test: the module never stops reporting
    return Scenario(
        vehicles=[vehicle(0, 0.0, 10.0, Direction.INBOUND)], duration_s=60.0, seed=3, geometry=SHORT_BEAM
    )


@pytest.fixture(autouse=True)
def fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serial_reader, "INIT_RETRY_S", RETRY_S)


def test_module_booting_after_replug_keeps_reader_degraded_until_units_confirmed(tmp_path) -> None:
    emu = DeafEmulator(_steady_traffic(), link_dir=tmp_path).start()
    got = Collector()
    reader = replug_reader(emu.port, got)
    try:
        wait_for(lambda: reader.health()["state"] == "ok" and got.snapshot(), what="first readings")
        assert reader.health().get("reason") is None
        emu.deaf.set()  # replugged module still booting: drops the init sequence, streams m/s numbers
        emu.unplug()
        wait_for(lambda: reader.health()["state"] == "down", what="down after unplug")
        emu.replug()
        wait_for(lambda: reader.health()["reconnects"] == 1, what="reopened")
        n_before = len(got.snapshot())
        skipped0 = reader.health()["driver"].get("skipped_units_unknown", 0)
        t0 = time.monotonic()
        sent_t0 = reader.health().get("init_sent", 0)
        wait_for(
            lambda: reader.health()["driver"].get("skipped_units_unknown", 0) >= skipped0 + 10,
            what="unit-less lines arriving",
        )
        # lines arrive but nothing can be measured: degraded, never ok
        assert reader.health()["state"] == "degraded"
        wait_for(lambda: reader.health()["init_sent"] >= sent_t0 + 2, what="init re-sent while unconfirmed")
        h = reader.health()
        elapsed = time.monotonic() - t0
        assert h["state"] == "degraded" and h["state_history"][-2:] == ["down", "degraded"]
        assert "units not confirmed" in h["reason"] and not h["units_confirmed"]
        assert len(got.snapshot()) == n_before  # no reading delivered with unknown units
        assert h["init_sent"] - sent_t0 <= elapsed / RETRY_S + 1  # bounded rate (one-sided: load-safe)
        assert emu.dropped.count("UK") >= 2
        emu.deaf.clear()  # boot finished: the next retry configures it
        wait_for(lambda: reader.health()["state"] == "ok", what="ok once units confirmed")
        wait_for(lambda: len(got.snapshot()) > n_before + 3, what="readings after boot")
        h = reader.health()
        assert h["reason"] is None and h["units"] == "kmh" and "UK" in emu.commands
        assert all(r.unit == "kmh" for r in got.snapshot()[n_before:])
        sent = h["init_sent"]
        time.sleep(3 * RETRY_S)
        assert reader.health()["init_sent"] == sent  # confirmed: no more re-sending
    finally:
        reader.stop()
        emu.stop()


def test_module_confirming_other_units_is_degraded_but_readings_are_converted_right() -> None:
    with DeafEmulator(_steady_traffic()) as emu:
        emu.ignore.add("UK")  # the module stays in m/s; its ?? banner says so
        got = Collector()
        cfg = RadarConfig(port=emu.port, units="kmh", min_speed_kmh=1.0, reconnect_min_s=0.05)
        reader = RadarReader(cfg, make_driver(cfg), got, max_limit_kmh=60.0)
        reader.start()
        try:
            wait_for(lambda: len(got.snapshot()) > 5, what="readings in m/s")
            wait_for(lambda: emu.dropped.count("UK") >= 2, what="init re-sent")
            h = reader.health()
        finally:
            reader.stop()
    assert h["state"] == "degraded" and "ok" not in h["state_history"]
    assert h["reason"] == "units not confirmed: module reports mps, configured kmh"
    readings = got.snapshot()
    assert all(r.unit == "mps" for r in readings)
    assert max(r.speed_kmh for r in readings) == pytest.approx(10.0, abs=1.0)
