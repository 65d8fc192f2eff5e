"""An emulated unit: the real daemon, in-process, on emulated hardware.

Radar emulator on a real pseudo-terminal, synthetic camera on the same scenario and epoch, a real
outbox and signing key, and an emulated service manager listening on ``NOTIFY_SOCKET``. Tests use it to
inject faults into single stages and to drive the daemon through its real control socket; the console's
integration tests put the real console in front of it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from device import config as cfgmod
from device.daemon import Daemon, SimInputs
from device.sdnotify import Notifier
from device.sim.scenario import Scenario
from device.sim.service_manager import NotifyListener


class EmulatedUnit:
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
            if getattr(self, "supervisor", None) is None:  # start() failed: stop what it had started
                self.daemon.stop()
            else:
                self.daemon.request_stop()
                self.supervisor.join(15)
        self.emulator.stop()
        self.notify.close()
