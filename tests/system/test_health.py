"""Stage heartbeats (with an injected monotonic clock: no sleeping) and the host facts for status."""

from __future__ import annotations

import os
import socket

import pytest

from device.health import (
    Heartbeats,
    cpu_temperature_c,
    disk_free,
    host_status,
    load_average,
    memory_available_bytes,
    uptime_s,
    watchdog_tick,
)
from device.sdnotify import Notifier

S = 1_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


def test_stage_goes_stale_after_its_max_silence_and_recovers_on_beat():
    clk = FakeClock()
    hb = Heartbeats(clock=clk)
    hb.register("radar", 5.0)
    hb.register("anpr", 60.0)
    hb.beat("radar")
    hb.beat("anpr")
    clk.advance(4.9)
    assert hb.stale() == []
    clk.advance(0.2)
    assert hb.stale() == ["radar"]
    assert not hb.all_alive()
    hb.beat("radar")
    assert hb.stale() == []
    snap = {s.name: s for s in hb.snapshot()}
    assert snap["radar"].beats == 2 and snap["anpr"].beats == 1
    assert snap["anpr"].silence_s == pytest.approx(5.1)


def test_stage_that_never_beats_is_caught():
    clk = FakeClock()
    hb = Heartbeats(clock=clk)
    hb.register("camera", 10.0)
    clk.advance(9.0)
    assert hb.stale() == []
    clk.advance(2.0)
    assert hb.stale() == ["camera"]
    assert hb.snapshot()[0].last_beat_mono_ns is None


def test_probe_reads_the_stage_own_timestamp():
    clk = FakeClock()
    hb = Heartbeats(clock=clk)
    stage = {"heartbeat_ns": clk.now - 100 * S}  # set before registration: does not count
    hb.register("uplink", 30.0, lambda: stage["heartbeat_ns"])
    clk.advance(29.0)
    assert hb.stale() == []
    clk.advance(2.0)
    assert hb.stale() == ["uplink"]
    stage["heartbeat_ns"] = clk.now
    assert hb.stale() == []
    assert hb.snapshot()[0].last_beat_mono_ns == clk.now


def test_probe_that_raises_marks_the_stage_stale_without_crashing():
    hb = Heartbeats(clock=FakeClock())

    def broken() -> int:
        raise AttributeError("camera_thread is None")

    hb.register("camera", 10.0, broken)
    assert hb.stale() == ["camera"]
    assert "camera_thread is None" in hb.snapshot()[0].error


def test_registration_errors_and_unregister():
    hb = Heartbeats(clock=FakeClock())
    with pytest.raises(ValueError):
        hb.register("x", 0)
    with pytest.raises(KeyError):
        hb.beat("typo")
    hb.register("uplink", 1.0)
    hb.unregister("uplink")
    assert hb.stages == [] and hb.stale() == []


def test_watchdog_tick_pings_only_while_everything_is_alive(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    clk = FakeClock()
    hb = Heartbeats(clock=clk)
    hb.register("radar", 5.0)
    with Notifier({"NOTIFY_SOCKET": str(path)}) as n:
        assert watchdog_tick(hb, n) == []
        assert sock.recv(100) == b"WATCHDOG=1"
        clk.advance(6.0)
        assert watchdog_tick(hb, n) == ["radar"]
        assert sock.recv(100) == b"STATUS=stalled: radar"  # and no WATCHDOG=1: systemd restarts us
        assert watchdog_tick(hb, n) == ["radar"]  # said once, not every tick
        hb.beat("radar")
        assert watchdog_tick(hb, n) == []
        assert sock.recv(100) == b"WATCHDOG=1"
        assert sock.recv(100) == b"STATUS=running"  # before, "stalled: radar" stayed in systemctl status
    sock.close()


def test_disk_free_matches_statvfs_and_walks_up_to_an_existing_parent(tmp_path):
    st = os.statvfs(tmp_path)
    d = disk_free(tmp_path / "not" / "yet")
    assert d["total_bytes"] == st.f_blocks * st.f_frsize
    assert 0 < d["free_bytes"] <= d["total_bytes"]
    assert 0 < d["free_fraction"] <= 1
    assert d["path"] == str(tmp_path / "not" / "yet")


def test_cpu_temperature_takes_the_hottest_readable_zone(tmp_path):
    zones = []
    for i, text in enumerate(["45123\n", "garbage", "61500"]):
        p = tmp_path / f"thermal_zone{i}_temp"
        p.write_text(text)
        zones.append(str(p))
    zones.append(str(tmp_path / "missing"))
    assert cpu_temperature_c(zones) == pytest.approx(61.5)
    assert cpu_temperature_c([zones[1]]) is None
    assert cpu_temperature_c([]) is None


def test_cpu_temperature_on_this_host_is_none_or_plausible():
    t = cpu_temperature_c()
    assert t is None or -40.0 < t < 150.0


def test_uptime_load_memory_on_this_host(tmp_path):
    up = uptime_s()
    assert up is not None and up > 0
    load = load_average()
    assert load is not None and len(load) == 3 and all(x >= 0 for x in load)
    mem = memory_available_bytes()
    assert mem is not None and mem > 0
    bad = tmp_path / "uptime"
    bad.write_text("not a number")
    assert uptime_s(bad) is None
    assert memory_available_bytes(tmp_path / "absent") is None


def test_host_status_is_json_ready(tmp_path):
    import json

    st = host_status(tmp_path)
    json.dumps(st)
    assert st["disk_free_bytes"] > 0
