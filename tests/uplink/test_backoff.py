"""Rows the registry never acks back off instead of holding the in-flight window for ever.

The registry drops what it rejects without an ack, so the device cannot tell "rejected" from "slow": it
only sees timeouts. Before the back-off, ``max_inflight`` such rows were resent at every timeout and no
newer row was ever published. Real mosquitto on loopback and the reference registry throughout.
"""

from __future__ import annotations

import itertools
import sqlite3
import time

from device.uplink import topics
from device.uplink.mqtt import retry_delay
from device.uplink.outbox import Outbox
from device.uplink.packet import violation_payload
from device.uplink.sample import sample_context, sample_violation
from device.uplink.testing_broker import MqttPeer, wait_for


def _seal_old_id(rig, n: int) -> list[int]:
    """Sealed under the unit's previous device id (re-registered since): refused as 'signed device_id'."""
    ctx = sample_context("cam-old", rig.key.key_id)
    return [
        rig.outbox.seal(violation_payload(sample_violation(i, image_bytes=4_000), ctx)).seq for i in range(n)
    ]


def _seal_bad_image(rig) -> int:
    """Validly signed, but the first image's bytes are not the ones its sha256 names."""
    p = violation_payload(sample_violation(99, image_bytes=4_000), sample_context(rig.device, rig.key.key_id))
    jpeg = bytearray(p["images"][0]["jpeg"])
    jpeg[len(jpeg) // 2] ^= 0xFF
    p["images"][0] = {**p["images"][0], "jpeg": bytes(jpeg)}
    return rig.outbox.seal(p).seq


def _states(ob: Outbox, seqs) -> set[str | None]:
    return {ob.state(s) for s in seqs}


def test_retry_delay_doubles_from_the_base_up_to_the_cap():
    assert [retry_delay(n, 30.0) for n in range(1, 10)] == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert retry_delay(10_000, 30.0) == 3600.0  # no overflow however long a row stays stuck


def test_rejected_rows_back_off_and_newer_rows_are_acked(rig):
    """A window's worth of rows the registry refuses (plus one), then good ones: the good ones are acked,
    the refused ones are retried further and further apart, and none of them is deleted or marked."""
    reg = rig.registry()
    stuck = [*_seal_old_id(rig, 10), _seal_bad_image(rig)]  # seqs 1..11; max_inflight is 10
    good = rig.seal(5)  # 12..16
    original = {s: rig.outbox.get(s).data for s in stuck}
    watch = MqttPeer(rig.broker, topics.packet_topic("radarcam/v1", rig.device, "violation"))
    try:
        c = rig.client(ack_timeout_s=1.0)
        c.retry_base_s, c.retry_max_s = 0.5, 60.0
        wait_for(lambda: _states(rig.outbox, good) == {"acked"}, 15, "the newer rows to be acked")
        # seq 1 is published again further and further apart: ~1.5, 2, 3 s (1 s timeout + 0.5, 1, 2 s)
        wait_for(lambda: len([m for m in watch.on("violation") if m.payload == original[1]]) >= 4, 20,
                 "four attempts of seq 1")  # fmt: skip
        times = [m.timestamp for m in watch.on("violation") if m.payload == original[1]]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert gaps[2] >= gaps[0] + 0.75, gaps  # 1.5 s expected; the worker ticks every 0.25 s
    finally:
        watch.close()
    assert reg.count(rig.device) == 5 and [r["seq"] for r in reg.packets(rig.device)] == good
    wait_for(lambda: reg.received >= c.published, 5, "the registry to handle every delivery")
    rejected = {r["seq"]: r for r in reg.rejections()}
    assert sorted(rejected) == stuck  # one record per refused packet, however often it came
    assert "signed device_id 'cam-old'" in rejected[1]["reason"] and rejected[1]["deliveries"] >= 4
    assert "image hash mismatch" in rejected[11]["reason"]
    h = c.health()
    assert h["backoff"] == len(stuck) and h["oldest_stuck_seq"] == 1 and h["oldest_stuck_attempts"] >= 3
    assert "no ack within 1 s" in h["oldest_stuck_error"]
    saved = rig.outbox.backoff()  # persisted, for a restart and for a technician with sqlite3
    assert sorted(saved) == stuck and all(n >= 1 for n, _t, _e in saved.values())
    # nothing is deleted or marked without an ack: not by the back-off, not by retention under pressure
    assert _states(rig.outbox, stuck) <= {"pending", "sent"}
    rig.outbox.quota_bytes = 1
    assert rig.outbox.retention(now_ns=2**62) == len(good)  # the acked rows only
    assert {s: rig.outbox.get(s).data for s in stuck} == original


def test_a_restart_retries_stuck_rows_once_without_blocking_newer_rows(rig):
    """Attempt counts survive a restart and every stuck row is tried once more; rows that have failed
    before get at most half the window, so new rows are acked at once although a window's worth
    (12 > max_inflight) of old failures are all due together."""
    reg = rig.registry()
    stuck = _seal_old_id(rig, 12)
    first = rig.client(ack_timeout_s=1.0)
    wait_for(lambda: len(rig.outbox.backoff()) == 12, 15, "all 12 to fail once")
    first.stop()
    wait_for(lambda: reg.received == first.published, 5, "the registry to handle every delivery")
    before = {r["seq"]: r["deliveries"] for r in reg.rejections()}
    attempts = {s: n for s, (n, _t, _e) in rig.outbox.backoff().items()}
    good = rig.seal(3)
    t0 = time.monotonic()
    second = rig.client(ack_timeout_s=3.0)  # without the half-window rule seqs 1-10 would hold it 3 s
    wait_for(lambda: _states(rig.outbox, good) == {"acked"}, 10, "the new rows to be acked")
    assert time.monotonic() - t0 < 1.5, "new rows waited behind the stuck ones"
    wait_for(lambda: all(r["deliveries"] > before[r["seq"]] for r in reg.rejections()), 10,
             "every stuck row to be retried after the restart")  # fmt: skip
    wait_for(
        lambda: all(rig.outbox.backoff()[s][0] > attempts[s] for s in stuck), 10, "them to back off again"
    )
    assert second.health()["backoff"] == 12 and _states(rig.outbox, stuck) <= {"pending", "sent"}


def test_an_ack_for_a_row_that_had_failed_retries_the_others_at_once(rig):
    """Registry down: rows fail and back off. The first one acked once it is back shows the registry was
    away, not refusing, so rows waiting out a long back-off are retried at once, not after it."""
    rig.seal(1)
    later = rig.seal(4)  # 2..5: made to look long stuck (their next delay is 16 s)
    rig.outbox.record_attempts([(s, 4, 0, "earlier") for s in later])
    c = rig.client(ack_timeout_s=1.0)  # back-off base = the ack timeout: 1 s, and 16 s after a 5th failure
    wait_for(lambda: rig.outbox.backoff().get(2, (0,))[0] == 5, 10, "the long-stuck rows to fail again")
    assert rig.outbox.backoff()[2][1] - time.time_ns() > 10e9  # their next attempt is 16 s away
    reg = rig.registry()
    t0 = time.monotonic()
    rig.assert_delivered(5, reg, timeout=8.0)
    assert time.monotonic() - t0 < 6.0  # seq 1 is retried within ~2 s and its ack frees the rest
    assert rig.outbox.backoff() == {} and c.health()["backoff"] == 0


def test_backoff_table_is_added_to_an_older_outbox_by_the_first_failure(key, tmp_path):
    """Opening an older outbox writes nothing new (a full disk must not stop it opening); the first
    recorded failure adds the table; an ack deletes the row's bookkeeping; acked rows take none."""
    ob = Outbox(tmp_path / "o.db", key)
    ctx = sample_context("dev", key.key_id)
    for i in range(3):
        ob.seal(violation_payload(sample_violation(i, image_bytes=2_000), ctx))
    ob.close()
    raw = sqlite3.connect(tmp_path / "o.db")
    assert raw.execute("SELECT name FROM sqlite_master WHERE name='backoff'").fetchone() is None
    raw.close()
    ob = Outbox(tmp_path / "o.db", key)
    assert ob.backoff() == {}
    ob.record_attempts([(1, 1, 111, "no ack within 30 s"), (2, 3, 222, "PUBACK 0x87 Not authorized")])
    ob.close()
    ob = Outbox(tmp_path / "o.db", key)  # survives a restart
    assert ob.backoff() == {1: (1, 111, "no ack within 30 s"), 2: (3, 222, "PUBACK 0x87 Not authorized")}
    assert ob.mark_acked([1]) == 1
    ob.record_attempts([(1, 2, 333, "late"), (9, 1, 1, "unknown seq")])
    assert ob.backoff() == {2: (3, 222, "PUBACK 0x87 Not authorized")}
    assert [r.seq for r in ob.next_unacked(10)] == [2, 3]
    ob.close()
