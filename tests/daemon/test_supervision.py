"""Faults injected into single stages of the real, in-process daemon."""

from __future__ import annotations

import json
import threading
import time

import cbor2
import pytest

from device.capture.evidence import COMMENT_MAGIC, jpeg_comment
from device.uplink.packet import verify


def watchdog_pings(h) -> list[float]:
    return [t for t, m in h.notify.messages if m.get("WATCHDOG") == "1"]


def test_ready_then_watchdog_stops_when_a_stage_hangs(harness, wait):
    h = harness()
    d = h.start()
    h.notify.wait_for("READY", "1", timeout=5)  # the listener thread reads it asynchronously
    wait(lambda: len(watchdog_pings(h)) >= 3, 10, "watchdog pings")

    # Hang the measurement stage inside the tracker: the radar keeps reading, the stage stops beating.
    release = threading.Event()
    real_push = d.tracker.push

    def stuck_push(r):
        release.wait()
        return real_push(r)

    d.tracker.push = stuck_push
    wait(lambda: "measure" in d.heartbeats.stale(), 15, "measure stage to go stale")
    time.sleep(0.3)
    n = len(watchdog_pings(h))
    time.sleep(1.5)
    assert len(watchdog_pings(h)) == n, "WATCHDOG=1 must stop while a stage is hung"
    status_msgs = [m["STATUS"] for _, m in h.notify.messages if "STATUS" in m]
    assert any("measure" in s for s in status_msgs)
    assert d.status()["state"] == "fault"

    release.set()  # stage recovers -> pings resume
    d.tracker.push = real_push
    wait(lambda: len(watchdog_pings(h)) > n, 10, "watchdog pings to resume")


def test_a_reading_the_tracker_cannot_take_is_skipped_not_the_stage(harness, wait):
    """Before, an exception in the tracker (an overflow on a garbage module time) left the measuring
    thread: stage dead, watchdog restart, every open pass lost. Now the reading is skipped and counted,
    the status says fault, and the stage goes on measuring."""
    h = harness()
    d = h.start()
    wait(lambda: d.counters["readings"] > 0, 20, "readings")
    real_push, failed = d.tracker.push, []

    def push_failing_once(r):
        if not failed:
            failed.append(r)
            raise OverflowError("cannot convert float infinity to integer")
        return real_push(r)

    d.tracker.push = push_failing_once
    wait(lambda: failed, 10, "a reading to fail")
    n = d.counters["readings"]
    wait(lambda: d.counters["readings"] > n + 20, 20, "readings after the failure")
    assert d.counters["readings_failed"] == 1 and "measure" not in d.heartbeats.stale()
    assert d.status()["state"] == "fault"


def test_camera_lost_violation_still_recorded_without_images(harness, wait):
    from device.sim.scenario import generate

    h = harness(generate(9, vehicles=3, speeder_share=1.0))
    d = h.start()
    wait(lambda: d.ring.latest() is not None, 15, "first frame")
    d.camera_thread.stop()  # the camera is gone (cable pulled)
    wait(lambda: d.status()["components"]["camera"]["state"] == "down", 10, "camera reported down")
    wait(lambda: d.counters["sealed"] >= 1, 90, "a violation sealed")
    seq = d.timings.seq_of[next(iter(d.timings.seq_of))]
    payload = verify(d.outbox.get(seq).data, h.key.public_key)
    assert payload["kind"] == "violation"
    assert payload["images"] == []
    assert "camera" in payload["extra"]["evidence_problem"]
    assert payload["measurement"]["readings"], "the measurement is kept in full"
    assert d.status()["state"] == "fault"


def test_reload_through_control_socket_is_audited_and_sealed(harness, wait):
    from device import config as cfgmod
    from device.control import ControlClient, ControlError

    h = harness()
    d = h.start()
    client = ControlClient(h.tmp / "run" / "control.sock")
    before = client.call("status")["config_hash"]

    cfg = cfgmod.load(h.config_path)
    lanes = [lane.model_copy(update={"limit_kmh": 50.0}) for lane in cfg.site.lanes]
    cfg = cfg.model_copy(update={"site": cfg.site.model_copy(update={"lanes": lanes})})
    cfgmod.save(cfg, h.config_path)
    audit = [{"who": "tech1", "role": "technician", "field": "site.lanes.0.limit_kmh", "old": 60, "new": 50}]
    res = client.call("reload", audit=audit)
    assert res["config_hash"] != before and res["config_hash"] == cfgmod.config_hash(cfg)
    ev = verify(d.outbox.get(res["event_seq"]).data, h.key.public_key)
    assert ev["event"] == "config_changed"
    assert ev["body"]["audit"] == audit
    assert ev["body"]["old_config_hash"] == before
    assert d.enforcer.site.lanes[0].limit_kmh == 50.0

    # A corrupt file is refused; the running configuration stays in force.
    h.config_path.write_text("[site\nbroken")
    try:
        client.call("reload", audit=[])
        raise AssertionError("reload of a corrupt file must fail")
    except ControlError as exc:
        assert "TOML" in str(exc)
    assert client.call("status")["config_hash"] == res["config_hash"]
    assert client.call("keys")["key_id"] == h.key.key_id
    assert "private" not in str(client.call("keys")).lower()


def test_reload_runs_only_the_live_sections_and_packets_say_what_runs(harness):
    """A reload that also changes a restart-only section (the device id) applies the site at once and
    keeps the device id as started: packets keep describing the settings in force (a packet signed with
    the new id on the old topic would be refused), and the event names the file's config apart."""
    from device import config as cfgmod
    from device.sensors.tracker import PassTracker

    h = harness()
    d = h.start()
    started = cfgmod.load(h.config_path)
    lanes = [lane.model_copy(update={"limit_kmh": 40.0}) for lane in started.site.lanes]
    file_cfg = started.model_copy(
        update={
            "site": started.site.model_copy(update={"lanes": lanes, "name": "Renamed site"}),
            "device": started.device.model_copy(update={"id": "another-device"}),
        }
    )
    cfgmod.save(file_cfg, h.config_path)
    res = d.reload(audit=[])
    assert res["restart_required"] == ["device"]
    assert d.cfg.device.id == started.device.id and d.ctx.device_id == started.device.id
    assert d.cfg.site.name == "Renamed site" and d.enforcer.site.lanes[0].limit_kmh == 40.0
    assert isinstance(d.tracker, PassTracker) and [ln.limit_kmh for ln in d.tracker.lanes] == [40.0] * len(
        lanes
    )
    assert d.evidence._cfg.site.name == "Renamed site"
    ev = verify(d.outbox.get(res["event_seq"]).data, h.key.public_key)
    assert ev["device_id"] == started.device.id and ev["config_hash"] == d.config_hash
    body = ev["body"]
    assert body["file_config_hash"] == cfgmod.config_hash(file_cfg) != body["new_config_hash"]
    assert body["new_config_hash"] == d.config_hash == cfgmod.config_hash(d.cfg)
    assert '"another-device"' not in body["new_config_json"]


def test_a_live_limit_raise_past_the_radars_sampling_rate_asks_for_a_restart(harness):
    """``sample_rate = "auto"`` picks the rate at start for the highest limit; a lane raised live to
    120 km/h needs a faster one (a 250 km/h car would alias), so the reload flags the radar instead of
    reporting nothing to restart. A change the rate still covers flags nothing."""
    from device import config as cfgmod

    h = harness()
    d = h.start()
    started = cfgmod.load(h.config_path)

    def with_limit(kmh: float):
        lanes = [lane.model_copy(update={"limit_kmh": kmh}) for lane in started.site.lanes]
        return started.model_copy(update={"site": started.site.model_copy(update={"lanes": lanes})})

    cfgmod.save(with_limit(max(ln.limit_kmh for ln in started.site.lanes) - 10), h.config_path)
    assert d.reload(audit=[])["restart_required"] == []
    cfgmod.save(with_limit(120.0), h.config_path)
    res = d.reload(audit=[])
    assert res["restart_required"] == ["radar"] and d.enforcer.site.lanes[0].limit_kmh == 120.0
    assert verify(d.outbox.get(res["event_seq"]).data, h.key.public_key)["body"]["restart_required"] == [
        "radar"
    ]


class GatedReader:
    """The real plate reader, held at its first read until the test lets it go: a violation decided
    and waiting for its evidence, for as long as the test needs."""

    def __init__(self) -> None:
        from device.anpr.reader import PlateReader
        from device.config import AnprConfig

        self.real = PlateReader(AnprConfig(countries=["MA"]))
        self.entered, self.release = threading.Event(), threading.Event()

    def read_frames(self, images, *, country=None, roi=None):
        self.entered.set()
        self.release.wait(30)
        return self.real.read_frames(images, country=country, roi=roi)

    def models(self) -> dict:
        return self.real.models()


def test_a_violation_decided_before_a_reload_is_sealed_with_the_settings_it_was_decided_under(harness, wait):
    """Before, the packet took the site and config hash in force when it was sealed: a violation
    decided at 60 km/h, sealed after a reload to 40 km/h at a renamed site, stated the new site, the
    new config hash and the new name on its images, beside the 60 km/h limit it was decided under."""
    from device import config as cfgmod
    from device.sim.scenario import generate

    h = harness(generate(6, vehicles=2, speeder_share=1.0), {"anpr": {"enabled": True, "deadline_s": 20.0}})
    reader = GatedReader()
    d = h.start(plate_reader=reader)
    started = cfgmod.load(h.config_path)
    hash_before = d.config_hash
    assert reader.entered.wait(60), "no violation reached its plate read"
    assert d.counters["sealed"] == 0  # decided, its evidence waiting for the read

    lanes = [lane.model_copy(update={"limit_kmh": 40.0}) for lane in started.site.lanes]
    site = started.site.model_copy(update={"lanes": lanes, "name": "Renamed site"})
    cfgmod.save(started.model_copy(update={"site": site}), h.config_path)
    res = d.reload(audit=[])
    assert res["config_hash"] != hash_before and d.ctx.site.name == "Renamed site"
    reader.release.set()

    wait(lambda: d.counters["sealed"] >= 1, 30, "the held violation sealed")
    seq = min(d.timings.seq_of.values())
    assert seq > res["event_seq"]  # sealed after the config_changed event, decided before it
    v = verify(d.outbox.get(seq).data, h.key.public_key)
    assert v["config_hash"] == hash_before
    assert v["site"]["name"] == started.site.name != "Renamed site"
    assert v["site"]["limit_kmh"] == started.site.lanes[0].limit_kmh != 40.0
    bars = [json.loads(jpeg_comment(im["jpeg"])[len(COMMENT_MAGIC) :])["bar"] for im in v["images"]]
    assert bars and {b["site_name"] for b in bars} == {started.site.name}
    assert {b["limit_kmh"] for b in bars} == {v["site"]["limit_kmh"]}


def _assert_stopped_with_shutdown_event(h) -> None:
    """systemd saw STOPPING=1 and the outbox, reopened, ends with the sealed shutdown event."""
    from device.uplink.outbox import Outbox

    h.notify.wait_for("STOPPING", "1", timeout=5)
    ob = Outbox(h.tmp / "state" / "outbox.sqlite", h.key, quota_bytes=10**9, retention_s=10**6)
    last = ob.get(ob.stats()["last_seq"])
    assert cbor2.loads(cbor2.loads(last.data).value[2])["event"] == "shutdown"
    ob.close()
    h.daemon = None


def test_sigterm_style_stop_drains_and_seals_shutdown(harness, wait):
    h = harness()
    d = h.start()
    wait(lambda: d.counters["readings"] > 0, 30, "readings")
    t0 = time.monotonic()
    d.request_stop()
    h.supervisor.join(12)
    assert not h.supervisor.is_alive()
    assert time.monotonic() - t0 < 10
    _assert_stopped_with_shutdown_event(h)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_supervisor_that_dies_still_drains_and_seals_shutdown(harness, wait):
    """Whatever ends the supervisor loop, open passes and evidence are drained and the outbox closed
    with a shutdown event (systemd then restarts the unit); before, an exception skipped ``stop()``."""
    h = harness()
    d = h.start()
    wait(lambda: d.counters["readings"] > 0, 30, "readings")

    def broken() -> None:
        raise RuntimeError("injected supervisor fault")

    d._watch_clock_sync = broken
    h.supervisor.join(15)
    assert not h.supervisor.is_alive()
    _assert_stopped_with_shutdown_event(h)


def test_unsynchronised_clock_does_not_apply_time_windows(harness, wait):
    """The daemon tells the enforcer whether its clock is synchronised: with an assumed-unsynchronised
    clock an all-day 20 km/h window is not applied, so passes are judged on the lane's 60 km/h."""
    from device.sim.scenario import generate

    window = {"start": "00:00", "end": "24:00", "limit_kmh": 20.0}
    lanes = [{"id": "1", "direction": "inbound", "limit_kmh": 60.0, "windows": [window]}]
    h = harness(
        generate(4, vehicles=3, speeder_share=0.0),
        overrides={"site": {"lanes": lanes}, "clock": {"source": "assume-unsynced"}},
    )
    d = h.start()
    wait(lambda: d.counters["passes"] >= 2, 60, "two passes")
    seen = [p for p in d.recent_passes if p["direction"] == "inbound"]
    assert seen and all(p["limit_kmh"] == 60.0 for p in seen), seen
    assert d.counters["violations"] == 0


def test_disk_full_keeps_violations_in_memory_then_seals_them(harness, wait):
    from device.sim.scenario import generate
    from device.uplink.outbox import OutboxFull

    h = harness(generate(9, vehicles=3, speeder_share=1.0))
    d = h.start()
    real_seal = d.outbox.seal
    full = {"on": True}

    def seal(payload, *, kind="violation"):
        if full["on"]:
            raise OutboxFull("database or disk is full")
        return real_seal(payload, kind=kind)

    d.outbox.seal = seal
    wait(lambda: d.counters["violations"] >= 2, 90, "two violations decided while the disk is full")
    wait(lambda: len(d._unsealed) >= 2, 10, "violations kept in memory")
    st = d.status()
    assert st["state"] == "fault" and st["unsealed_in_memory"] >= 2
    assert d.counters["sealed"] == 0

    full["on"] = False  # space is back
    wait(lambda: not d._unsealed, 10, "held violations sealed")
    assert d.counters["sealed"] >= 2
    kinds = [
        verify(d.outbox.get(s).data, h.key.public_key)["kind"]
        for s in range(1, d.outbox.stats()["last_seq"] + 1)
    ]
    assert kinds.count("violation") == d.counters["sealed"]


def test_startup_event_carries_the_config_behind_its_hash_and_the_cabinet_state(harness):
    """Offline, the registry can check config_hash and read every setting behind a measurement; a door
    already open at boot (opened while the unit was off) is in the chain too."""
    import hashlib
    import json

    from device.uplink.outbox import Outbox

    h = harness(overrides={"gpio": {"enabled": True, "pin_factory": "mock", "tamper_pin": 17}})
    d = h.start()
    ob: Outbox = d.outbox
    first = next(
        verify(ob.get(s).data, h.key.public_key)
        for s in range(1, ob.stats()["last_seq"] + 1)
        if verify(ob.get(s).data, h.key.public_key).get("event") == "startup"
    )
    body = first["body"]
    assert hashlib.sha256(body["config_json"].encode()).hexdigest() == body["config_hash"] == d.config_hash
    assert json.loads(body["config_json"])["gpio"]["tamper_pin"] == 17
    assert body["cabinet_open"] is False and body["gpio_error"] is None


def test_gpio_that_cannot_start_leaves_enforcement_running(harness, wait):
    """Cabinet I/O is optional: a GPIO failure (here: no gpiochip for lgpio on this machine) used to stop
    the whole unit with a traceback; now the daemon runs and reports GPIO as a fault."""
    h = harness(overrides={"gpio": {"enabled": True, "pin_factory": "lgpio", "flash_pin": 27}})
    d = h.start()
    st = d.status()
    assert st["components"]["gpio"]["state"] == "fault" and st["components"]["gpio"]["error"]
    assert st["state"] == "fault"
    wait(lambda: d.counters["readings"] > 0, 30, "radar readings while GPIO is down")


def test_a_signal_that_lands_while_the_main_thread_holds_an_events_lock_does_not_deadlock():
    """Before, the handlers called Event.set(), which takes the Event's lock; a signal arriving while
    the main thread held it (inside _stop.wait(), _reload.clear()) blocked for ever: SIGTERM ended in
    SIGKILL without a drain, SIGHUP stopped the watchdog pings. Run in a child with a deadline."""
    import subprocess
    import sys

    script = (
        "import os, signal\n"
        "from device.config import Config\n"
        "from device.daemon import Daemon\n"
        "d = Daemon(Config())\n"
        "d.install_signal_handlers()\n"
        "with d._reload._cond:\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "    sum(range(1000))  # a few bytecodes: the handler runs here, lock held\n"
        "with d._stop._cond:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    sum(range(1000))\n"
        "assert d._signalled_reload and d._signalled_stop\n"
        "print('ok')\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_sighup_reloads_and_sigterm_stops_through_the_supervisor(harness, wait):
    """The handlers only set flags: the supervisor takes them up within a tick (reload sealed as a
    config_changed event from SIGHUP; SIGTERM drains and seals the shutdown event)."""
    import os
    import signal

    from device import config as cfgmod

    h = harness()
    d = h.start()
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        d.install_signal_handlers()
        cfg = cfgmod.load(h.config_path)
        lanes = [lane.model_copy(update={"limit_kmh": lane.limit_kmh - 5}) for lane in cfg.site.lanes]
        cfgmod.save(
            cfg.model_copy(update={"site": cfg.site.model_copy(update={"lanes": lanes})}), h.config_path
        )
        old_hash = d.config_hash
        os.kill(os.getpid(), signal.SIGHUP)
        wait(lambda: d.config_hash != old_hash, 10, "the SIGHUP reload")
        assert d.config_hash == cfgmod.config_hash(cfgmod.load(h.config_path))
        os.kill(os.getpid(), signal.SIGTERM)
        h.supervisor.join(15)
        assert not h.supervisor.is_alive()
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    _assert_stopped_with_shutdown_event(h)
