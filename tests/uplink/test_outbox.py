"""Outbox: seq/prev_hash chain across restarts, states, retention, quota, disk full, corruption."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from device.uplink.outbox import GENESIS_HASH, Outbox, OutboxFull
from device.uplink.packet import PacketError, event_payload, verify, violation_payload
from device.uplink.sample import sample_context, sample_violation


def _payload(key, n=0, image_bytes=5_000):
    return violation_payload(sample_violation(n, image_bytes=image_bytes), sample_context("dev", key.key_id))


def _chain_ok(ob, key, seqs):
    prev = GENESIS_HASH
    for s in seqs:
        row = ob.get(s)
        p = verify(row.data, key)
        assert p["seq"] == s and p["prev_hash"] == prev
        assert row.sha256 == hashlib.sha256(row.data).hexdigest()
        prev = row.sha256


def test_seq_and_chain_survive_restart_and_span_kinds(key, tmp_path):
    ob = Outbox(tmp_path / "o.db", key)
    a = ob.seal(_payload(key, 1))
    ev = event_payload(
        "startup", {"reason": "test"}, sample_context("dev", key.key_id), sample_violation().clock
    )
    b = ob.seal(ev, kind="event")
    ob.close()
    ob = Outbox(tmp_path / "o.db", key)  # restart
    c = ob.seal(_payload(key, 2))
    assert (a.seq, b.seq, c.seq) == (1, 2, 3) and b.kind == "event"
    _chain_ok(ob, key, [1, 2, 3])
    ob.mark_acked([1, 2, 3])
    ob.retention_s = 0
    assert ob.retention() == 3 and ob.get(1) is None
    d = ob.seal(_payload(key, 3))  # retention never resets the sequence or the chain
    assert d.seq == 4 and verify(d.data, key)["prev_hash"] == c.sha256


def test_states_and_next_unacked(key, tmp_path):
    ob = Outbox(tmp_path / "o.db", key)
    for i in range(5):
        ob.seal(_payload(key, i))
    assert [r.seq for r in ob.next_unacked(3)] == [1, 2, 3]
    ob.mark_sent(1)
    ob.mark_sent_many([2, 3])
    assert ob.state(1) == "sent" and ob.state(4) == "pending"
    assert ob.mark_acked([1, 2]) == 2 and ob.mark_acked([1]) == 0
    st = ob.stats()
    assert (st["pending"], st["sent"], st["acked"], st["last_seq"]) == (2, 1, 2, 5)
    assert st["last_ack_time_ns"] is not None
    assert [r.seq for r in ob.next_unacked(10)] == [3, 4, 5]


def test_retention_never_touches_pending_or_sent(key, tmp_path):
    ob = Outbox(tmp_path / "o.db", key, retention_s=0)
    for i in range(6):
        ob.seal(_payload(key, i))
    ob.mark_sent_many([1, 2, 3, 4])
    ob.mark_acked([1, 2])
    assert ob.retention() == 2
    assert [r.seq for r in ob.next_unacked(10)] == [3, 4, 5, 6]


def test_quota_reached_keeps_every_pending_packet(key, tmp_path):
    """Fault 6: over quota with nothing acked, nothing is removed and new packets keep the measurement."""
    ob = Outbox(tmp_path / "o.db", key, quota_bytes=200_000, degraded_max_bytes=70_000)
    payloads = [_payload(key, i, image_bytes=40_000) for i in range(12)]
    seals = [ob.seal(p) for p in payloads]
    st = ob.stats()
    assert st["quota_exceeded"] and st["pending"] == 12 and st["last_seq"] == 12
    assert ob.retention() == 0
    assert [r.seq for r in ob.next_unacked(100)] == list(range(1, 13))
    _chain_ok(ob, key, range(1, 13))
    last = verify(seals[-1].data, key)
    assert len(seals[-1].data) <= 70_000  # degraded: smaller images, the same measurement and decision
    assert last["measurement"] == payloads[-1]["measurement"] and last["decision"] == payloads[-1]["decision"]
    assert all("reencoded" in im for im in last["images"])
    ob.mark_acked(range(1, 13))
    assert ob.retention() > 0  # acked rows may go once over quota
    after = verify(ob.seal(_payload(key, 99, image_bytes=40_000)).data, key)
    assert not any("reencoded" in im for im in after["images"])
    assert ob.stats()["quota_exceeded"] is False


def test_over_quota_a_large_event_is_still_sealed_whole(key, tmp_path):
    """The over-quota cap shrinks images; an event whose own body is larger (a console audit of many
    records) is sealed as it is, not refused on every retry and left unsealed."""
    ob = Outbox(tmp_path / "o.db", key, quota_bytes=150_000, degraded_max_bytes=40_000)
    for i in range(4):
        ob.seal(_payload(key, i, image_bytes=40_000))
    records = [{"who": "tech1", "what": "x" * 3_000, "n": i} for i in range(30)]
    ev = event_payload(
        "console_audit", {"records": records}, sample_context("dev", key.key_id), sample_violation().clock
    )
    sealed = ob.seal(ev, kind="event")
    assert ob.stats()["quota_exceeded"]
    assert len(sealed.data) > 40_000
    assert verify(sealed.data, key)["body"]["records"] == records
    _chain_ok(ob, key, range(1, 6))


def test_disk_full_degrades_then_raises_without_losing_pending(key, tmp_path):
    ob = Outbox(tmp_path / "o.db", key, degraded_max_bytes=20_000)
    first = [ob.seal(_payload(key, i, image_bytes=30_000)) for i in range(3)]
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count={pages + 12}")  # SQLite reports "database or disk is full"
    small = ob.seal(_payload(key, 10, image_bytes=30_000))  # shrunk to fit the last pages
    assert ob.stats()["disk_full"] and small.seq == 4
    with pytest.raises(OutboxFull, match="disk full"):
        for i in range(50):
            ob.seal(_payload(key, 20 + i, image_bytes=30_000))
    assert ob.stats()["disk_full"]
    kept = [r.seq for r in ob.next_unacked(100)]
    assert kept[:4] == [s.seq for s in first] + [4]
    _chain_ok(ob, key, kept)


def test_a_full_disk_frees_acked_rows_whatever_their_age_before_refusing(key, tmp_path):
    """Before, retention freed acked rows only past retention_days or over the quota: with the disk full
    and 20 acked rows under quota, the next violation was refused (OutboxFull) and nothing deleted."""
    ob = Outbox(tmp_path / "o.db", key)
    for i in range(20):
        ob.seal(_payload(key, i, image_bytes=20_000))
    ob.mark_acked(list(range(1, 21)))
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count={pages + 2}")  # the file may hardly grow: a full disk
    sealed = [ob.seal(_payload(key, 100 + i, image_bytes=20_000)) for i in range(10)]  # no OutboxFull
    assert [s.seq for s in sealed] == list(range(21, 31))
    assert all(ob.state(s.seq) == "pending" for s in sealed)
    assert ob.stats()["acked"] < 20  # the oldest acked rows made room


def test_corrupt_database_is_moved_aside_not_deleted(key, tmp_path):
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not an sqlite database" * 200)
    original = path.read_bytes()
    ob = Outbox(path, key)
    st = ob.stats()
    assert len(st["corrupt_moved_to"]) == 1 and "corrupt" in st["last_error"]
    assert Path(st["corrupt_moved_to"][0]).read_bytes() == original
    assert ob.seal(_payload(key)).seq == 1


def _damage_root_page(ob: Outbox, path: Path, table: str) -> None:
    """Closes ``ob`` (its log checkpointed into the file) and overwrites the start of ``table``'s root page."""
    ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ob.close()
    raw = bytearray(path.read_bytes())
    with sqlite3.connect(path) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        rootpage = db.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()[0]
    root = (rootpage - 1) * page
    raw[root : root + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))


def test_corrupt_page_keeps_seq_when_head_is_readable(key, tmp_path):
    path = tmp_path / "o.db"
    ob = Outbox(path, key)
    for i in range(3):
        ob.seal(_payload(key, i, image_bytes=20_000))
    _damage_root_page(ob, path, "packets")  # not the meta table
    ob = Outbox(path, key)
    assert ob.stats()["corrupt_moved_to"]
    assert ob.seal(_payload(key, 9)).seq == 4  # never reused


@pytest.mark.parametrize("acked", [{1, 2, 3, 4, 5}, {1, 3, 4, 5}])
def test_a_rebuilt_outbox_never_reuses_the_seq_of_an_acked_row(key, tmp_path, acked):
    """With the meta table unreadable, the head was taken from the newest *unacked* readable row: all
    acked gave seq 1 again, and 2 pending of 5 gave seq 3. The registry holds those seqs: every new
    violation would have been refused as a replay for ever."""
    path = tmp_path / "o.db"
    ob = Outbox(path, key)
    sealed = [ob.seal(_payload(key, i, image_bytes=2_000)) for i in range(5)]
    ob.mark_acked(sorted(acked))
    _damage_root_page(ob, path, "meta")  # the meta table only
    ob = Outbox(path, key)
    assert ob.stats()["corrupt_moved_to"]
    nxt = ob.seal(_payload(key, 9))
    assert nxt.seq == 6 and verify(nxt.data, key)["prev_hash"] == sealed[-1].sha256
    assert [r.seq for r in ob.next_unacked(10)] == [*sorted({1, 2, 3, 4, 5} - acked), 6]


def test_the_row_goes_out_as_the_kind_its_payload_says(key, tmp_path):
    """The topic came from a separate argument defaulting to "violation": an event sealed without it
    went out on the violation topic and was refused by the registry for ever."""
    ob = Outbox(tmp_path / "o.db", key)
    ctx = sample_context("dev", key.key_id)
    ev = event_payload("startup", {"firmware": "x"}, ctx, sample_violation(1).clock)
    assert ob.seal(ev).kind == "event"
    assert ob.seal(_payload(key, 1)).kind == "violation"
    ev2 = event_payload("startup", {"firmware": "y"}, ctx, sample_violation(2).clock)
    with pytest.raises(PacketError, match="payload says 'event'"):
        ob.seal(ev2, kind="violation")
    assert ob.stats()["last_seq"] == 2  # the refused one took no seq


def test_concurrent_seal_and_ack_threads(key, tmp_path):
    ob = Outbox(tmp_path / "o.db", key)
    errors = []

    def sealer():
        try:
            for i in range(25):
                ob.seal(_payload(key, i, image_bytes=2_000))
        except Exception as exc:
            errors.append(exc)

    def acker():
        try:
            for _ in range(200):
                rows = ob.next_unacked(5)
                ob.mark_sent_many([r.seq for r in rows])
                ob.mark_acked([r.seq for r in rows[:2]])
        except Exception as exc:
            errors.append(exc)

    ts = [threading.Thread(target=sealer), threading.Thread(target=sealer), threading.Thread(target=acker)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert ob.stats()["last_seq"] == 50
    _chain_ok(ob, key, range(1, 51))
