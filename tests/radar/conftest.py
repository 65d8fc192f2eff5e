"""Shared helpers for the radar tests: short scripted scenarios and polling without fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from device.config import RadarConfig
from device.model import Direction
from device.sensors.radar import make_driver
from device.sensors.serial_reader import RadarReader
from device.sim.scenario import Geometry, Scenario, Vehicle

SHORT_BEAM = Geometry(beam_near_m=5.0, beam_far_m=20.0, capture_m=10.0)


def wait_for(pred: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def replug_reader(port: str, sink) -> RadarReader:
    """A started reader on ``port`` that reconnects within 0.2 s (unplug/replug tests)."""
    cfg = RadarConfig(port=port, units="kmh", min_speed_kmh=1.0, reconnect_min_s=0.05, reconnect_max_s=0.2)
    reader = RadarReader(cfg, make_driver(cfg), sink, max_limit_kmh=60.0)
    reader.start()
    return reader


def vehicle(vid: int, t: float, kmh: float, direction: Direction, lane: str | None = None) -> Vehicle:
    return Vehicle(
        vid=vid,
        t_enter_s=t,
        lane=lane or ("1" if direction is Direction.INBOUND else "2"),
        direction=direction,
        speed_kmh=kmh,
        plate_text=f"{1000 + vid}-أ-1",
        plate_latin=f"{1000 + vid}-A-1",
    )


@pytest.fixture
def short_scenario() -> Scenario:
    """Three vehicles, one at a time, ~0.6-1.0 s each in a 15 m beam: ~4.5 s of traffic."""
    vs = [
        vehicle(0, 0.5, 72.0, Direction.INBOUND),
        vehicle(1, 2.0, 90.0, Direction.OUTBOUND),
        vehicle(2, 3.3, 63.5, Direction.INBOUND),
    ]
    return Scenario(vehicles=vs, duration_s=4.6, seed=11, geometry=SHORT_BEAM)
