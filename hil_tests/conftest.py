"""Hardware-in-the-loop fixtures: real hardware when the environment points to it, emulators otherwise.

* ``RADARCAM_HIL_RADAR=/dev/ttyACM0``  a real OPS24x (tests that need scripted traffic are skipped:
  a real radar measures real cars)
* ``RADARCAM_HIL_CAMERA=picamera2|/dev/video0|rtsp://...``  a real camera
* ``RADARCAM_HIL_BROKER=host:port``  a real broker (plain MQTT; the registry subscribes there too)

Without them: the OPS24x emulator on a real pseudo-terminal, the synthetic traffic camera and a local
mosquitto, so the same tests run in CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from device import config as cfgmod
from device.sim.scenario import Scenario, generate
from device.sim.service_manager import NotifyListener

HIL_RADAR = os.environ.get("RADARCAM_HIL_RADAR")
HIL_CAMERA = os.environ.get("RADARCAM_HIL_CAMERA")
HIL_BROKER = os.environ.get("RADARCAM_HIL_BROKER")

pytestmark = pytest.mark.hil


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "hil_tests" in str(item.fspath):
            item.add_marker(pytest.mark.hil)


class ExternalBroker:
    """A broker the test does not own (RADARCAM_HIL_BROKER): it cannot be stopped from here."""

    restartable = False

    def __init__(self, spec: str) -> None:
        host, _, port = spec.rpartition(":")
        self.address = (host or "localhost", int(port))


@pytest.fixture
def broker_proc() -> Iterator:
    if HIL_BROKER:
        yield ExternalBroker(HIL_BROKER)
        return
    from device.uplink.testing_broker import MosquittoBroker

    b = MosquittoBroker().start()
    b.restartable = True
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def broker(broker_proc) -> tuple[str, int]:
    return broker_proc.address


class Unit:
    """One unit under test: config, key, scenario, radar (emulated or real), daemon as a subprocess."""

    def __init__(
        self,
        tmp: Path,
        broker: tuple[str, int],
        scenario: Scenario,
        *,
        epoch_delay_s: float = 6.0,
        camera: dict | None = None,
    ):
        from device.uplink.keys import generate_key

        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.scenario = scenario
        self.epoch = time.monotonic_ns() + int(epoch_delay_s * 1e9)
        self.key = generate_key(tmp / "state" / "keys" / "signing-key.pem")
        self.device_id = f"HIL-{uuid.uuid4().hex[:6]}"
        self.emulator = None
        if HIL_RADAR:
            radar_port = HIL_RADAR
        else:
            from device.sim.radar_emulator import RadarEmulator

            self.emulator = RadarEmulator(scenario, epoch_mono_ns=self.epoch, realtime=True, link_dir=tmp)
            self.emulator.start()
            radar_port = str(self.emulator.port)
        scen_path = tmp / "scenario.json"
        data = json.loads(scenario.to_json())
        data["epoch_mono_ns"] = self.epoch
        scen_path.write_text(json.dumps(data, ensure_ascii=False))
        if camera is not None:
            pass
        elif HIL_CAMERA == "picamera2":
            camera = {"backend": "picamera2"}
        elif HIL_CAMERA:
            camera = {"backend": "opencv", "source": HIL_CAMERA}
        else:
            camera = {
                "backend": "synthetic",
                "source": str(scen_path),
                "width": 640,
                "height": 360,
                "fps": 10,
            }
        lanes = [
            {"id": lid, "direction": scenario.lane_directions[lid], "limit_kmh": lim}
            for lid, lim in sorted(scenario.lanes.items())
        ]
        self.cfg = cfgmod.parse(
            {
                "device": {
                    "id": self.device_id,
                    "state_dir": str(tmp / "state"),
                    "runtime_dir": str(tmp / "run"),
                },
                "site": {"id": "HIL-SITE", "jurisdiction": "MA", "lanes": lanes},
                "radar": {"port": radar_port, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
                "camera": {**camera, "ring_seconds": 3.0},
                "anpr": {"enabled": False},
                "uplink": {
                    "host": broker[0],
                    "port": broker[1],
                    "reconnect_max_s": 2.0,
                    "ack_timeout_s": 3.0,
                },
                "clock": {"source": "assume-synced"},
            }
        )
        self.config_path = tmp / "radarcam.toml"
        cfgmod.save(self.cfg, self.config_path)
        self.notify = NotifyListener(tmp / "notify.sock")
        self.proc: subprocess.Popen | None = None

    def start(self, *, watchdog_s: float = 3.0) -> subprocess.Popen:
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), WATCHDOG_USEC=str(int(watchdog_s * 1e6)))
        env.pop("WATCHDOG_PID", None)
        self.log = open(self.tmp / f"daemon-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "run", "--config", str(self.config_path)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self.proc

    def control(self, cmd: str, **args):
        from device.control import ControlClient

        return ControlClient(self.tmp / "run" / "control.sock", timeout=5.0).call(cmd, **args)

    def wait_status(self, pred, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                last = self.control("status")
                if pred(last):
                    return last
            except Exception:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}: {self.logs()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(
            f"status condition not met in {timeout} s; last status: {json.dumps(last)[:2000]}"
        )

    def logs(self) -> str:
        self.log.flush()
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("daemon-*.log")))

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.emulator is not None:
            self.emulator.stop()
        self.notify.close()


def traffic(seed: int = 7, vehicles: int = 8, speeder_share: float = 0.5) -> Scenario:
    return generate(seed, vehicles=vehicles, speeder_share=speeder_share, lanes={"1": 60.0, "2": 60.0})


@pytest.fixture
def unit_factory(tmp_path: Path, broker: tuple[str, int]) -> Iterator:
    units: list[Unit] = []

    def make(
        *,
        seed: int = 7,
        vehicles: int = 8,
        speeder_share: float = 0.5,
        emulated_only: bool = False,
        camera: dict | None = None,
    ) -> Unit:
        if emulated_only and HIL_RADAR:
            pytest.skip(
                "needs scripted traffic from the radar emulator (RADARCAM_HIL_RADAR is real hardware)"
            )
        u = Unit(tmp_path / f"u{len(units)}", broker, traffic(seed, vehicles, speeder_share), camera=camera)
        units.append(u)
        return u

    yield make
    for u in units:
        u.close()


@pytest.fixture
def registry_for(broker: tuple[str, int], tmp_path: Path) -> Iterator:
    from device.uplink.registry import Registry

    regs = []

    def make(unit: Unit):
        reg = Registry(
            f"sqlite:///{tmp_path / f'registry-{len(regs)}.sqlite'}",
            host=broker[0],
            port=broker[1],
            keys={unit.device_id: unit.key.public_key},
            group=f"hil-{uuid.uuid4().hex[:6]}",
        )
        reg.start()
        regs.append(reg)
        return reg

    yield make
    for r in regs:
        r.stop()
