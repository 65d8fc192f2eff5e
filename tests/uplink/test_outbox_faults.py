"""Outbox under real faults: a genuinely full disk, damaged pages, a file it may not write, a key's rename."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
from pathlib import Path

import pytest

from device.uplink.keys import generate_key
from device.uplink.outbox import GENESIS_HASH, Outbox, OutboxError, OutboxFull
from device.uplink.packet import verify, violation_payload
from device.uplink.sample import sample_context, sample_violation


def _payload(key, n=0, image_bytes=5_000):
    return violation_payload(sample_violation(n, image_bytes=image_bytes), sample_context("dev", key.key_id))


def _chain(ob, key) -> list[int]:
    """Every unacked row verifies and links to the one before it; returns their seqs."""
    rows = ob.next_unacked(10_000)
    for a, b in itertools.pairwise(rows):
        if b.seq == a.seq + 1:
            assert verify(b.data, key)["prev_hash"] == a.sha256
    for r in rows:
        assert verify(r.data, key)["seq"] == r.seq and hashlib.sha256(r.data).hexdigest() == r.sha256
    return [r.seq for r in rows]


@pytest.fixture
def small_disk(tmp_path):
    """A real 1.5 MiB filesystem, so SQLite meets a genuine ENOSPC (SQLITE_FULL) in every write it does,
    the retention's DELETE/COMMIT included: ``max_page_count`` only limits page growth, not the WAL."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"needs a tmpfs mount (root with CAP_SYS_ADMIN): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_with_failing_retention_raises_outbox_full_and_loses_nothing(key, small_disk):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 400_000)  # freed at the end: space comes back
    ob = Outbox(small_disk / "o.db", key, degraded_max_bytes=20_000, retention_s=0.0)
    sealed, acked = [], set()
    with pytest.raises(OutboxFull, match="disk full"):
        for i in range(200):  # the registry acks every third packet: retention has rows to delete
            s = ob.seal(_payload(key, i, image_bytes=60_000))
            sealed.append(s)
            if s.seq % 3 == 0:
                ob.mark_acked([s.seq])
                acked.add(s.seq)
    head = ob.stats()
    assert head["disk_full"] and head["last_seq"] == sealed[-1].seq and head["last_hash"] == sealed[-1].sha256
    for i in range(3):  # still full: each attempt fails cleanly, consumes no seq, moves nothing
        with pytest.raises(OutboxFull):
            ob.seal(_payload(key, 500 + i, image_bytes=60_000))
    assert not ob._db.in_transaction
    assert (ob.stats()["last_seq"], ob.stats()["last_hash"]) == (head["last_seq"], head["last_hash"])
    assert {s.seq for s in sealed} - acked <= set(_chain(ob, key))  # every pending packet still there

    filler.unlink()
    after = ob.seal(_payload(key, 999, image_bytes=10_000))
    assert after.seq == head["last_seq"] + 1
    assert verify(after.data, key)["prev_hash"] == head["last_hash"]
    ob.close()


def test_failed_seal_consumes_no_seq_and_a_retry_never_duplicates(key, tmp_path):
    ob = Outbox(tmp_path / "o.db", key, degraded_max_bytes=20_000)
    first = ob.seal(_payload(key, 0, image_bytes=30_000))
    pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
    ob._db.execute(f"PRAGMA max_page_count={pages}")  # genuine SQLITE_FULL for the next insert
    held = _payload(key, 1, image_bytes=30_000)
    with pytest.raises(OutboxFull):
        ob.seal(held)
    assert ob.stats()["last_seq"] == 1 and ob.stats()["last_hash"] == first.sha256
    ob._db.execute("PRAGMA max_page_count=1073741823")
    again = ob.seal(held)
    assert again.seq == 2 and verify(again.data, key)["prev_hash"] == first.sha256
    # The daemon retries what it holds in memory; a seal that did commit must not become a second row.
    assert ob.seal(held) == again
    assert ob.stats()["last_seq"] == 2 and _chain(ob, key) == [1, 2]
    ob.close()


def _damage_newest_packet(path: Path, newest: bytes) -> None:
    """Garbage in one overflow page's next-page pointer, so the end of the newest packet is unreachable
    (SQLITE_CORRUPT on reading it); every other page is left as it was."""
    raw = bytearray(path.read_bytes())
    page = int.from_bytes(raw[16:18], "big")  # from the header: no connection that could write back
    last = raw.find(newest[-64:]) // page + 1  # the signature is unique: the chain's last page
    assert last > 1, "newest packet's tail not found in the main file"
    links = [n for n in range(len(raw) // page) if raw[n * page : n * page + 4] == last.to_bytes(4, "big")]
    assert len(links) == 1, links
    raw[links[0] * page : links[0] * page + 4] = b"\x7f\xff\xff\xff"
    path.write_bytes(bytes(raw))


def test_corrupt_outbox_keeps_readable_pending_packets_byte_for_byte(key, tmp_path):
    path = tmp_path / "o.db"
    ob = Outbox(path, key)
    rows = [ob.seal(_payload(key, i, image_bytes=20_000)) for i in range(6)]
    ob.mark_acked([1])  # acked: the registry has it, nothing to salvage
    ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ob.close()
    _damage_newest_packet(path, rows[-1].data)
    damaged = path.read_bytes()

    ob = Outbox(path, key)
    st = ob.stats()
    assert st["state"] == "fault" and "corrupt" in st["last_error"]
    assert st["corruption"]["salvaged"] == 4 and st["corruption"]["unreadable"] == 1
    assert Path(st["corrupt_moved_to"][0]).read_bytes() == damaged  # moved aside untouched
    kept = ob.next_unacked(100)
    assert [r.seq for r in kept] == [2, 3, 4, 5]
    for r in kept:  # the very bytes that were signed before the damage
        assert r == rows[r.seq - 1]
    nxt = ob.seal(_payload(key, 9))
    assert nxt.seq == 7 and verify(nxt.data, key)["prev_hash"] == rows[-1].sha256  # chain head kept
    ob.close()
    # A restart on the rebuilt file is a healthy outbox with the salvaged rows still pending.
    ob = Outbox(path, key)
    assert "state" not in ob.stats() and [r.seq for r in ob.next_unacked(100)] == [2, 3, 4, 5, 7]
    ob.close()


def _damaged_outbox(key, path: Path) -> list:
    """Four sealed packets, the newest then damaged on disk: what a start must salvage."""
    ob = Outbox(path, key)
    rows = [ob.seal(_payload(key, i, image_bytes=20_000)) for i in range(4)]
    ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ob.close()
    _damage_newest_packet(path, rows[-1].data)
    return rows


def _open_with_power_cut(key, path: Path, monkeypatch, at_suffix: str) -> None:
    """Opens (and so salvages) ``path``, the power cut at the first rename of a file ending ``at_suffix``:
    nothing after it runs."""
    import device.uplink.outbox as outbox_mod

    real_replace = os.replace

    def cut(src, dst):
        if Path(src).name.endswith(at_suffix):
            raise SystemExit("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(outbox_mod.os, "replace", cut)
    with pytest.raises(SystemExit):
        Outbox(path, key)
    monkeypatch.setattr(outbox_mod.os, "replace", real_replace)


def test_power_cut_during_the_salvage_swap_keeps_the_salvaged_rows(key, tmp_path, monkeypatch):
    """Cut between moving the damaged file aside and renaming the rebuilt one in: no outbox file, a
    complete salvage file. The next start adopts it (seq continues), instead of an empty outbox
    restarting seq at 1."""
    path = tmp_path / "o.db"
    rows = _damaged_outbox(key, path)
    _open_with_power_cut(key, path, monkeypatch, ".salvage")
    assert not path.exists() and list(tmp_path.glob(".o.db.salvage"))

    ob = Outbox(path, key)
    st = ob.stats()
    assert st["state"] == "fault" and "interrupted salvage" in st["last_error"]
    assert st["corruption"]["moved_to"] and Path(st["corruption"]["moved_to"]).exists()
    assert [r.seq for r in ob.next_unacked(100)] == [1, 2, 3]
    assert all(r == rows[r.seq - 1] for r in ob.next_unacked(100))
    nxt = ob.seal(_payload(key, 9))
    assert nxt.seq == 5 and verify(nxt.data, key)["prev_hash"] == rows[-1].sha256
    ob.close()


def test_power_cut_between_moving_the_damaged_file_and_its_wal_keeps_both_apart(key, tmp_path, monkeypatch):
    """Cut after the damaged file moved aside but before its -wal did: the next start must not let
    SQLite read the damaged file's log into the salvaged outbox; the log goes beside the damaged file,
    byte for byte, and the salvaged rows are intact."""
    path = tmp_path / "o.db"
    rows = _damaged_outbox(key, path)
    wal = Path(str(path) + "-wal")
    log = os.urandom(4096)  # what the damaged file's log held (not a valid log: SQLite ignores it)
    wal.write_bytes(log)
    _open_with_power_cut(key, path, monkeypatch, "-wal")
    assert not path.exists() and wal.read_bytes() == log

    ob = Outbox(path, key)
    moved = Path(ob.stats()["corruption"]["moved_to"])
    assert Path(str(moved) + "-wal").read_bytes() == log  # beside the damaged file, untouched
    assert [r.seq for r in ob.next_unacked(100)] == [1, 2, 3]
    assert all(r == rows[r.seq - 1] for r in ob.next_unacked(100))
    ob.close()


def test_outbox_path_that_cannot_be_opened_is_refused_and_left_alone(key, tmp_path):
    """Not corruption (SQLITE_CANTOPEN): nothing may be renamed or recreated. Works as root too."""
    path = tmp_path / "o.db"
    path.mkdir()
    (path / "keep").write_text("x")
    with pytest.raises(OutboxError, match="cannot open the outbox"):
        Outbox(path, key)
    assert (path / "keep").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys", "o.db"]


def test_outbox_the_daemon_may_not_write_is_refused_not_replaced(key, tmp_path):
    """SQLITE_READONLY / CANTOPEN (a filesystem the kernel remounted read-only after an error, a file the
    service user may not write) is not corruption: refused with the reason, nothing moved or replaced.
    As root (whom chmod does not bind) the state directory is a real tmpfs remounted read-only."""
    if os.geteuid() == 0:
        d = tmp_path / "ro"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"needs a tmpfs mount as root: {r.stderr.decode().strip()}")

        def read_only(on: bool) -> None:
            subprocess.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(d)], check=True)
    else:
        d = tmp_path

        def read_only(on: bool) -> None:
            os.chmod(d / "o.db", 0o444 if on else 0o644)
            os.chmod(d, 0o555 if on else 0o755)

    try:
        path = d / "o.db"
        ob = Outbox(path, key)
        sealed = [ob.seal(_payload(key, i)) for i in range(3)]
        ob.close()
        before = path.read_bytes()
        read_only(True)
        try:
            with pytest.raises(OutboxError, match="cannot open the outbox"):
                Outbox(path, key)
        finally:
            read_only(False)
        assert not list(d.glob("*.corrupt-*")) and path.read_bytes() == before
        ob = Outbox(path, key)
        assert [r.seq for r in ob.next_unacked()] == [s.seq for s in sealed]
        assert ob.stats()["last_hash"] != GENESIS_HASH
        ob.close()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(d)], check=False)


def test_new_signing_key_fsyncs_its_directory(tmp_path, monkeypatch):
    """The rename is durable only once the directory is synced; watch the real fsync calls."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    generate_key(tmp_path / "keys" / "signing-key.pem")
    assert str(tmp_path / "keys") in synced
