"""An in-process daemon on emulated hardware: radar emulator on a real pty, synthetic camera, real outbox.

Used to inject faults into one stage of the real daemon (hung thread, lost camera, slow ANPR) and to
drive it through its real control socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device import config as cfgmod
from device.daemon import Daemon, SimInputs
from device.sdnotify import Notifier
from device.sim.scenario import Scenario, generate
from device.sim.service_manager import NotifyListener


def wait_until(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Harness:
    def __init__(
        self, tmp: Path, scenario: Scenario, overrides: dict | None = None, *, start_delay_s: float = 2.0
    ):
        from device.sim.radar_emulator import RadarEmulator
        from device.uplink.keys import generate_key

        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.scenario = scenario
        self.epoch = time.monotonic_ns() + int(start_delay_s * 1e9)
        self.key = generate_key(tmp / "state" / "keys" / "signing-key.pem")
        self.emulator = RadarEmulator(scenario, epoch_mono_ns=self.epoch, realtime=True, link_dir=tmp)
        self.emulator.start()
        lanes = [
            {"id": lid, "direction": scenario.lane_directions[lid], "limit_kmh": lim}
            for lid, lim in sorted(scenario.lanes.items())
        ]
        data = {
            "device": {"id": "TEST-UNIT", "state_dir": str(tmp / "state"), "runtime_dir": str(tmp / "run")},
            "site": {"id": "TEST-SITE", "jurisdiction": "MA", "lanes": lanes},
            "radar": {"port": str(self.emulator.port), "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
            "camera": {"backend": "synthetic", "width": 640, "height": 360, "fps": 10, "ring_seconds": 3.0},
            "anpr": {"enabled": False},
            "uplink": {"enabled": False},
            "clock": {"source": "assume-synced"},
        }
        for section, values in (overrides or {}).items():
            data.setdefault(section, {}).update(values)
        self.cfg = cfgmod.parse(data)
        self.config_path = tmp / "radarcam.toml"
        cfgmod.save(self.cfg, self.config_path)
        self.notify = NotifyListener(tmp / "notify.sock")
        self.notifier = Notifier(env={"NOTIFY_SOCKET": str(self.notify.path), "WATCHDOG_USEC": "600000"})
        self.daemon: Daemon | None = None

    def start(self, **kw) -> Daemon:
        import threading

        self.daemon = Daemon(
            self.cfg,
            config_path=self.config_path,
            sim=SimInputs(self.scenario, self.epoch),
            notifier=self.notifier,
            **kw,
        )
        self.daemon.start()
        self.supervisor = threading.Thread(target=self.daemon.run, daemon=True)
        self.supervisor.start()
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.request_stop()
            self.supervisor.join(15)
        self.emulator.stop()
        self.notify.close()


@pytest.fixture
def wait() -> Callable[..., object]:
    return wait_until


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(scenario: Scenario | None = None, overrides: dict | None = None, **kw) -> Harness:
        h = Harness(
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
