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


@pytest.fixture
def unsupervised() -> Callable[..., object]:
    """Starts a harness unit's daemon without its supervisor loop, so nothing retries held records or
    stops the daemon behind the test's back: the test takes the supervisor's turns itself. The harness
    still stops it at teardown (``stop()`` runs once)."""
    from device.daemon import Daemon, SimInputs

    def start(h: EmulatedUnit, **kw) -> Daemon:
        d = Daemon(
            h.cfg, config_path=h.config_path, sim=SimInputs(h.scenario, h.epoch), notifier=h.notifier, **kw
        )
        h.daemon = d
        d.start()
        return d

    return start


class LockedOutbox:
    """Another process's write lock on the outbox (a technician's sqlite3 shell left in a transaction): a
    real SQLITE_BUSY for every seal, after 100 ms instead of the 5 s busy timeout."""

    def __init__(self, d, path: Path) -> None:
        import sqlite3

        with d.outbox._lock:
            d.outbox._db.execute("PRAGMA busy_timeout=100")
        self.other = sqlite3.connect(path, isolation_level=None)
        self.other.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.other is not None:
            self.other.execute("ROLLBACK")
            self.other.close()
            self.other = None


@pytest.fixture
def lock_outbox() -> Iterator[Callable[..., LockedOutbox]]:
    made: list[LockedOutbox] = []

    def lock(d, path: Path) -> LockedOutbox:
        made.append(LockedOutbox(d, path))
        return made[-1]

    yield lock
    for m in made:
        m.release()
