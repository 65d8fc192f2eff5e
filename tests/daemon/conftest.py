"""An in-process daemon on emulated hardware: radar emulator on a real pty, synthetic camera, real outbox.

Used to inject faults into one stage of the real daemon (hung thread, lost camera, slow ANPR) and to
drive it through its real control socket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device.sim.scenario import Scenario, generate
from device.sim.unit import EmulatedUnit
from device.uplink.testing_broker import wait_for


@pytest.fixture
def wait() -> Callable[..., object]:
    return wait_for


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., EmulatedUnit]]:
    made: list[EmulatedUnit] = []

    def make(scenario: Scenario | None = None, overrides: dict | None = None, **kw) -> EmulatedUnit:
        h = EmulatedUnit(
            tmp_path / f"h{len(made)}",
            scenario or generate(4, vehicles=6, speeder_share=0.8),
            overrides,
            **kw,
        )
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()
