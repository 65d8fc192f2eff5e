"""The whole daemon as a subprocess under systemd-like supervision, with the faults a roadside unit meets.

Each test asserts the evidence invariant: every packet the unit sealed reaches the registry exactly once,
verified, with an unbroken hash chain, whatever happened in between.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from device.uplink.packet import verify


def all_acked(status: dict) -> bool:
    ob = status["components"]["outbox"]
    return ob["pending"] == 0 and ob["sent"] == 0


def outbox_seqs(unit) -> list[int]:
    db = sqlite3.connect(f"file:{unit.tmp / 'state' / 'outbox.sqlite'}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT seq FROM packets ORDER BY seq")]
    finally:
        db.close()


def assert_registry_complete(unit, reg, timeout: float = 30.0) -> list[dict]:
    """Registry holds exactly the outbox's packets: each once, verified, chain intact, no gap."""
    want = outbox_seqs(unit)
    deadline = time.monotonic() + timeout
    got: list[dict] = []
    while time.monotonic() < deadline:
        got = reg.packets(unit.device_id)
        if sorted(p["seq"] for p in got) == want:
            break
        time.sleep(0.3)
    seqs = [p["seq"] for p in got]
    assert sorted(seqs) == want, (
        f"registry {sorted(seqs)} != outbox {want}; registry {reg.stats()}; daemon log: {unit.logs()[-4000:]}"
    )
    assert len(seqs) == len(set(seqs)), "duplicate at the registry"
    prev = None
    for rec in sorted(got, key=lambda r: r["seq"]):
        payload = verify(rec["data"], unit.key.public_key)
        assert payload["seq"] == rec["seq"]
        if prev is not None:
            import hashlib

            assert payload["prev_hash"] == hashlib.sha256(prev).hexdigest(), f"chain broken at {rec['seq']}"
        prev = rec["data"]
    assert reg.rejections() == []
    chain = reg.chain(unit.device_id)
    assert chain["intact"] and chain["gaps"] == [] and chain["broken_links"] == [], chain
    return got


def test_supervised_run_ready_watchdog_and_clean_stop(unit_factory, registry_for):
    unit = unit_factory(vehicles=4)
    reg = registry_for(unit)
    unit.start(watchdog_s=2.0)
    unit.notify.wait_for("READY", "1", timeout=60)
    t_ready = time.monotonic()
    # WATCHDOG=1 keeps coming while all stages are alive (interval < WatchdogSec/2).
    unit.notify.wait_for("WATCHDOG", "1", timeout=5)
    n0 = unit.notify.count("WATCHDOG", "1")
    time.sleep(2.5)
    n1 = unit.notify.count("WATCHDOG", "1")
    assert n1 - n0 >= 2
    st = unit.wait_status(lambda s: s["components"]["uplink"].get("connected"))
    assert st["device_id"] == unit.device_id
    # the ring holds the default layout, YUV 4:2:0, and says so to the technician
    unit.wait_status(lambda s: s["components"]["camera"].get("frame_layout") == "yuv420")
    t0 = time.monotonic()
    assert unit.terminate(timeout=12) == 0
    assert time.monotonic() - t0 < 10.0
    unit.notify.wait_for("STOPPING", "1", timeout=5)
    assert unit.notify.count("STOPPING", "1") == 1
    assert t_ready > 0
    assert_registry_complete(unit, reg)


def test_power_cut_mid_violation_loses_nothing(unit_factory, registry_for):
    unit = unit_factory(seed=11, vehicles=10, speeder_share=0.8, emulated_only=True)
    reg = registry_for(unit)
    unit.start()
    unit.notify.wait_for("READY", "1", timeout=60)
    unit.wait_status(lambda s: s["counters"]["sealed"] >= 1, timeout=90)
    unit.kill()  # SIGKILL: no drain, no clean close of SQLite, mid-pipeline
    sealed_before = outbox_seqs(unit)
    assert sealed_before, "a violation was sealed before the power cut"
    unit.start()
    unit.notify.wait_for("READY", "1", timeout=60)
    unit.wait_status(lambda s: all_acked(s), timeout=60)
    got = assert_registry_complete(unit, reg)
    assert set(sealed_before) <= {p["seq"] for p in got}
    assert unit.terminate() == 0


def test_radar_unplugged_and_replugged(unit_factory, registry_for):
    unit = unit_factory(seed=5, vehicles=30, speeder_share=0.3, emulated_only=True)
    registry_for(unit)
    unit.start()
    unit.notify.wait_for("READY", "1", timeout=60)
    unit.wait_status(
        lambda s: s["components"]["radar"]["state"] == "ok" and s["counters"]["readings"] > 0, 60
    )
    unit.emulator.unplug()
    st = unit.wait_status(lambda s: s["components"]["radar"]["state"] != "ok", timeout=15)
    assert st["state"] in ("degraded", "fault")
    readings_before = st["counters"]["readings"]
    unit.emulator.replug()
    st = unit.wait_status(
        lambda s: s["components"]["radar"]["state"] == "ok" and s["counters"]["readings"] > readings_before,
        30,
    )
    assert st["components"]["radar"]["reconnects"] >= 1
    assert unit.terminate() == 0


def test_radar_replugged_while_booting_is_degraded_until_units_confirmed(unit_factory, registry_for):
    """A module that drops the init sequence streams unit-less numbers: the daemon must say degraded
    (not ok while blind) and keep re-sending until the module confirms the units."""
    unit = unit_factory(seed=5, vehicles=30, speeder_share=0.3, emulated_only=True)
    registry_for(unit)
    emu = unit.emulator
    booting = threading.Event()
    real_answer = emu.answer
    emu.answer = lambda cmd: b"" if booting.is_set() else real_answer(cmd)
    unit.start()
    unit.notify.wait_for("READY", "1", timeout=60)
    unit.wait_status(lambda s: s["components"]["radar"]["state"] == "ok", 60)
    booting.set()
    emu.unplug()
    unit.wait_status(lambda s: s["components"]["radar"]["state"] == "down", timeout=15)
    emu.replug()
    st = unit.wait_status(
        lambda s: (
            s["components"]["radar"]["reconnects"] >= 1
            and s["components"]["radar"]["driver"].get("skipped_units_unknown", 0) > 0
            and s["components"]["radar"]["init_sent"] >= 3
        ),  # first open, reopen, at least one retry
        timeout=60,
    )
    radar = st["components"]["radar"]
    assert radar["state"] == "degraded" and "units not confirmed" in radar["reason"], radar
    assert st["state"] in ("degraded", "fault")
    readings_before = st["counters"]["readings"]
    booting.clear()
    st = unit.wait_status(
        lambda s: s["components"]["radar"]["state"] == "ok" and s["counters"]["readings"] > readings_before,
        30,
    )
    assert st["components"]["radar"]["units"] == unit.cfg.radar.units
    assert unit.terminate() == 0


def test_broker_lost_then_back(unit_factory, registry_for, broker_proc):
    if not broker_proc.restartable:
        pytest.skip("cannot stop a real broker from the test")
    unit = unit_factory(seed=3, vehicles=10, speeder_share=0.9, emulated_only=True)
    reg = registry_for(unit)
    unit.start()
    unit.notify.wait_for("READY", "1", timeout=60)
    unit.wait_status(lambda s: s["components"]["uplink"].get("connected"), 30)
    broker_proc.stop()
    unit.wait_status(lambda s: not s["components"]["uplink"].get("connected"), 30)
    # Violations keep being sealed while the broker is away.
    st = unit.wait_status(lambda s: s["counters"]["sealed"] >= 2, 90)
    assert st["components"]["outbox"]["pending"] + st["components"]["outbox"].get("sent", 0) >= 1
    broker_proc.restart()
    unit.wait_status(lambda s: s["components"]["uplink"].get("connected"), 60)
    unit.wait_status(lambda s: all_acked(s), 60)
    assert unit.terminate() == 0
    assert_registry_complete(unit, reg)


def test_missing_key_fails_loudly_without_traceback(unit_factory):
    unit = unit_factory(vehicles=1)
    (unit.tmp / "state" / "keys" / "signing-key.pem").unlink()
    unit.start()
    assert unit.proc.wait(60) == 1
    log = unit.logs()
    assert "cannot start" in log and "keys init" in log and "Traceback" not in log


def test_camera_lost_measurements_still_sealed(unit_factory, registry_for, tmp_path):
    """A USB camera that stops delivering (here: the OpenCV backend on a recording that ends) is reported
    down; violations are still sealed, without images and saying why; the watchdog keeps running."""
    import cv2
    import numpy as np

    if os.environ.get("RADARCAM_HIL_CAMERA"):
        pytest.skip("the camera is real hardware: unplug it by hand for this check")
    video = tmp_path / "short.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(30):  # 3 s of frames, then the 'camera' is gone
        w.write(np.full((240, 320, 3), (i * 8) % 255, np.uint8))
    w.release()
    unit = unit_factory(
        seed=9, vehicles=8, speeder_share=1.0, emulated_only=True,
        camera={"backend": "opencv", "source": str(video), "width": 320, "height": 240, "fps": 10},
    )  # fmt: skip
    reg = registry_for(unit)
    unit.start()
    unit.notify.wait_for("READY", "1", timeout=60)
    st = unit.wait_status(lambda s: s["components"]["camera"]["state"] == "down", 30)
    assert st["state"] == "fault"
    st = unit.wait_status(lambda s: s["counters"]["sealed"] >= 1, 90)
    n = unit.notify.count("WATCHDOG", "1")
    unit.wait_status(lambda s: unit.notify.count("WATCHDOG", "1") > n, 10)  # camera down is not a hung stage
    assert unit.terminate() == 0
    got = assert_registry_complete(unit, reg)
    violations = [verify(p["data"], unit.key.public_key) for p in got if p["kind"] == "violation"]
    assert violations and all(v["images"] == [] and v["extra"]["evidence_problem"] for v in violations)
