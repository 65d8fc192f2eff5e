"""`radarcam selftest` against emulated hardware: all PASS on a healthy unit, FAIL with a fix otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device import config as cfgmod
from device.sim.radar_emulator import RadarEmulator
from device.sim.scenario import generate
from device.uplink.keys import generate_key
from device.uplink.testing_broker import MosquittoBroker


@pytest.fixture
def broker():
    b = MosquittoBroker().start()
    yield b
    b.stop()


def write_config(tmp: Path, radar_port: str, broker_port: int, *, key: bool = True) -> Path:
    if key:
        generate_key(tmp / "state" / "keys" / "signing-key.pem")
    cfg = cfgmod.parse(
        {
            "device": {"id": "SELFTEST", "state_dir": str(tmp / "state"), "runtime_dir": str(tmp / "run")},
            "radar": {"port": radar_port},
            "camera": {"backend": "synthetic", "width": 640, "height": 360, "fps": 10},
            "uplink": {"host": "127.0.0.1", "port": broker_port},
            "clock": {"source": "assume-synced"},
        }
    )
    path = tmp / "radarcam.toml"
    cfgmod.save(cfg, path)
    return path


def run_selftest(path: Path) -> tuple[int, list[dict], str]:
    p = subprocess.run(
        [sys.executable, "-m", "device.cli", "selftest", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return p.returncode, json.loads(p.stdout), p.stderr


def test_selftest_all_pass_on_emulated_unit(tmp_path, broker):
    # Continuous traffic so the radar check sees readings whenever it looks.
    scen = generate(1, duration_s=120.0, min_gap_s=0.0)
    emu = RadarEmulator(scen, epoch_mono_ns=time.monotonic_ns(), realtime=True, link_dir=tmp_path)
    emu.start()
    try:
        rc, checks, err = run_selftest(write_config(tmp_path, str(emu.port), broker.port))
    finally:
        emu.stop()
    by = {c["check"]: c for c in checks}
    assert set(by) == {
        "signing key",
        "radar",
        "camera",
        "gpio",
        "clock",
        "disk",
        "broker",
        "anpr models",
        "data bar",
    }
    failed = {k: v for k, v in by.items() if not v["ok"]}
    assert rc == 0 and not failed, (failed, err[-2000:])
    assert "readings" in by["radar"]["detail"] and "fps" in by["camera"]["detail"]


def test_selftest_reports_failures_with_fixes(tmp_path):
    path = write_config(tmp_path, str(tmp_path / "no-such-radar"), 1, key=False)
    rc, checks, _ = run_selftest(path)
    by = {c["check"]: c for c in checks}
    assert rc == 1
    for name in ("signing key", "radar", "broker"):
        assert not by[name]["ok"], name
        assert by[name]["fix"], f"{name} failure without a fix"
    assert "keys init" in by["signing key"]["fix"]
    # The table form is what a technician sees at the roadside.
    p = subprocess.run(
        [sys.executable, "-m", "device.cli", "selftest", "--config", str(path)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1 and "FAIL  signing key" in p.stdout and "fix:" in p.stdout


def test_selftest_fails_the_data_bar_without_fontconfig(tmp_path):
    """fc-match missing (a headless install without fontconfig): every data bar fails, so violations are
    sealed without images. The self-test says so, and names the package, not the fonts."""
    import os

    path = write_config(tmp_path, str(tmp_path / "no-such-radar"), 1)
    env = dict(os.environ, PATH=str(tmp_path / "empty-bin"))  # no fc-match (nor anything else)
    p = subprocess.run(
        [sys.executable, "-m", "device.cli", "selftest", "--config", str(path), "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    by = {c["check"]: c for c in json.loads(p.stdout)}
    assert not by["data bar"]["ok"] and "install fontconfig" in by["data bar"]["detail"]
    assert "fontconfig" in by["data bar"]["fix"]


def test_a_key_others_may_read_fails_the_key_check_with_the_chmod(tmp_path):
    """The check is the daemon's own (``load_signing_key``): a key the daemon would refuse fails here."""
    import os

    from device.selftest import check_key

    cfg = cfgmod.parse({"device": {"id": "SELFTEST", "state_dir": str(tmp_path / "state")}})
    key = tmp_path / "state" / "keys" / "signing-key.pem"
    generate_key(key)
    assert check_key(cfg)[0]
    os.chmod(key, 0o644)
    ok, detail, fix = check_key(cfg)
    assert not ok and "mode 0644" in detail and fix == f"chmod 600 {key}"


def test_a_kernel_clock_past_its_error_bound_names_chrony_as_the_fix():
    """With only systemd-timesyncd the kernel's bound grows 0.5 ms/s between polls: the clock reads
    unsynchronised most of the time, and the fix is chrony, not "check NTP"."""
    from device.clock import SyncState
    from device.selftest import check_clock

    cfg = cfgmod.Config()
    kernel = SyncState(True, "ntp", "adjtimex", offset_ns=0, max_error_ns=600_000_000)
    ok, detail, fix = check_clock(cfg, reader=lambda: kernel)
    assert not ok and "max error 600.0 ms" in detail and "install chrony" in fix
    chrony = SyncState(True, "ntp", "chrony", offset_ns=0, max_error_ns=600_000_000)
    ok, _, fix = check_clock(cfg, reader=lambda: chrony)
    assert not ok and "chrony" not in fix.split(";")[0].replace("chronyc", "")
    ok, _, _ = check_clock(cfg, reader=lambda: SyncState(True, "ntp", "adjtimex", 0, 2_000_000))
    assert ok
