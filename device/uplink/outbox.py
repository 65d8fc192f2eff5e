"""Crash-safe outbox: a packet is "recorded" once its row is committed here, never before.

SQLite in WAL mode with ``synchronous=FULL``. Sealing is one ``BEGIN IMMEDIATE`` transaction: read the
chain head (last seq + hash of the last packet) from ``meta``, build the packet with ``seq = last + 1`` and
``prev_hash``, sign, insert the row and move the head. A crash at any point leaves either the old head
or the new row + new head, so ``seq`` is never reused and the chain never forks. The head lives in
``meta`` (not ``MAX(seq)``) so retention may delete old rows without resetting the sequence.

Disk policy (decided, see docs/packet.md): the quota only ever frees *acked* rows. When acked rows cannot
make room, the packet is still sealed but its images are shrunk to ``degraded_max_bytes`` (the measurement
is kept whole) and ``quota_exceeded`` is set for the status. When SQLite itself reports the disk full,
the same shrink is retried once; if that fails too :class:`OutboxFull` is raised (the caller logs, emits
an event and keeps the violation in memory) and ``disk_full`` is set. Pending rows are never deleted.
A failed seal consumes no ``seq`` and leaves the chain head as it was.

Opening: only genuine corruption (SQLITE_CORRUPT / SQLITE_NOTADB or a failing ``quick_check``) replaces the
file; it is moved aside, never deleted, and its readable unacknowledged rows are copied into the new outbox
unchanged (same seq, same signed bytes). Any other error (read-only, permissions, locks, I/O) raises
:class:`OutboxError` and leaves the file alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.config import UplinkConfig
from device.uplink.keys import SigningKey
from device.uplink.packet import PacketError, fit_to_size, seal_bytes

GENESIS_HASH = "0" * 64
PENDING, SENT, ACKED = "pending", "sent", "acked"
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26  # primary result codes
BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another holder of the database lock (a technician's sqlite3 shell). Short:
the supervisor seals from its loop, and waiting 30 s there outlasted the watchdog (WatchdogSec=30),
killing the unit with violations still in memory; a failed seal is kept and retried instead."""
_MAX_PROBES = 100_000
"""Row-by-row look-ups, newest first, when a damaged table can no longer be scanned."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (
    seq INTEGER PRIMARY KEY,
    packet_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    data BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    created_ns INTEGER NOT NULL,
    sent_ns INTEGER,
    acked_ns INTEGER
);
CREATE INDEX IF NOT EXISTS packets_state ON packets(state, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_BACKOFF_SCHEMA = """
CREATE TABLE IF NOT EXISTS backoff (
    seq INTEGER PRIMARY KEY,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
)
"""
"""Failed delivery attempts of unacked rows (no ack in time, or a refusing PUBACK), one row per packet that
failed at least once, deleted with its ack. A table of its own, created by the first failure rather than on
open (opening an older outbox on a full disk must not need a write); older firmware ignores it. No ALTER of
``packets``, and the uplink reads it without touching the packet blobs. Salvage does not copy it."""


class OutboxError(Exception):
    """Outbox failure that the daemon must report (message is one line)."""


class OutboxFull(OutboxError):
    """The disk is full even for a shrunk packet: nothing was written, nothing already pending was lost."""


class _QuickCheckFailed(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` ran and reported damage: treated as corruption."""


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, _QuickCheckFailed) or _primary_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _is_disk_full(exc: BaseException) -> bool:
    return _primary_code(exc) == _SQLITE_FULL or "full" in str(exc).lower()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Sealed:
    seq: int
    packet_id: str
    data: bytes
    sha256: str
    kind: str = "violation"


class Outbox:
    """Thread-safe: one connection guarded by a lock (the sealer and the uplink thread share it)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: SigningKey,
        *,
        quota_bytes: int = 2048 * 1024 * 1024,
        retention_s: float = 30 * 86400,
        max_packet_bytes: int = 1024 * 1024,
        degraded_max_bytes: int = 96 * 1024,
    ) -> None:
        self.path = Path(path)
        self.key = key
        self.quota_bytes = quota_bytes
        self.retention_s = retention_s
        self.max_packet_bytes = max_packet_bytes
        self.degraded_max_bytes = degraded_max_bytes
        self.disk_full = False
        self.quota_exceeded = False
        self.corrupt_moved_to: list[str] = []
        self.corruption: dict[str, Any] | None = None  # what was recovered, for the outbox_corrupt event
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], key: SigningKey, cfg: UplinkConfig) -> Outbox:
        """Quota, retention and packet cap from the ``[uplink]`` section."""
        return cls(
            path,
            key,
            quota_bytes=int(cfg.quota_mb * 1024 * 1024),
            retention_s=cfg.retention_days * 86400,
            max_packet_bytes=cfg.packet_max_bytes,
        )

    # ------------------------------------------------------------------ open / corruption

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _salvage_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.salvage")

    def _open(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = None
        self._finish_interrupted_salvage()
        try:
            self._quick_check()
            db = self._connect()
            db.executescript(_SCHEMA)
            return db
        except sqlite3.DatabaseError as exc:
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
            if not _is_corruption(exc):  # read-only, permissions, locked, I/O: not ours to replace
                raise OutboxError(
                    f"{self.path}: cannot open the outbox ({exc}); the file was left untouched"
                ) from exc
            reason = str(exc)
        return self._replace_corrupt(reason)

    def _ro_uri(self) -> str:
        return f"{self.path.resolve().as_uri()}?mode=ro"

    def _quick_check(self) -> None:
        """Read-only, before any read-write connection: closing one checkpoints into the file, and a
        damaged file must be moved aside exactly as it was found."""
        if not self.path.exists():
            return
        ro = sqlite3.connect(self._ro_uri(), uri=True)
        try:
            check = ro.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            ro.close()
        if check != "ok":
            raise _QuickCheckFailed(f"quick_check: {check}")

    def _replace_corrupt(self, reason: str) -> sqlite3.Connection:
        """Builds the new outbox beside the damaged one (salvaged rows + head), then swaps the files,
        so a crash while salvaging leaves the damaged file in place to be salvaged again."""
        tmp = self._salvage_path()
        for suffix in ("", "-journal"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
        new = sqlite3.connect(tmp, isolation_level=None)
        try:
            new.execute("PRAGMA auto_vacuum=INCREMENTAL")
            new.executescript(_SCHEMA)
            with self._tx(new):
                info = self._salvage_into(new)
        finally:
            new.close()
        moved = self._move_aside(reason)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        db = self._connect()
        db.executescript(_SCHEMA)
        self.corruption = {"error": reason, "moved_to": moved, **info}
        self.last_error = (
            f"outbox database was corrupt ({reason}); moved to {moved}; {info['salvaged']} unacknowledged"
            f" packets salvaged, {info['unreadable']} unreadable"
        )
        return db

    def _finish_interrupted_salvage(self) -> None:
        """A power cut between moving the damaged file aside and renaming the rebuilt one into place
        leaves no outbox but a complete salvage file (it is committed before the damaged file moves):
        that file is the outbox. Without this, ``seq`` would restart at 1 on an empty database."""
        tmp = self._salvage_path()
        if self.path.exists() or not tmp.exists():
            return
        moved = sorted(
            p
            for p in self.path.parent.glob(f"{self.path.name}.corrupt-*")
            if not p.name.endswith(("-wal", "-shm"))
        )
        # The cut may have come between moving the damaged file and its -wal/-shm (moved in that
        # order): those are the damaged file's. Left here, SQLite would read the damaged file's log
        # into the salvaged one; they go beside the damaged file, untouched, as it would have been.
        for suffix in ("-wal", "-shm"):
            left = Path(str(self.path) + suffix)
            if left.exists():
                dest = Path(str(moved[-1]) + suffix) if moved else left.with_name(left.name + ".orphan")
                if dest.exists():
                    dest = dest.with_name(dest.name + f".{time.time_ns()}")
                os.replace(left, dest)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.corruption = {
            "error": "salvage interrupted by a restart; completed now",
            "moved_to": str(moved[-1]) if moved else None,
        }
        self.last_error = f"outbox rebuilt after corruption; finished an interrupted salvage ({tmp.name})"

    def _salvage_into(self, new: sqlite3.Connection) -> dict[str, Any]:
        """Best effort, read-only: the chain head from ``meta`` (so ``seq`` continues, never restarts) and
        every readable unacked row, copied unchanged (they are already signed and chained)."""
        info: dict[str, Any] = {"salvaged": 0, "unreadable": 0, "head_recovered": False}
        try:
            src = sqlite3.connect(self._ro_uri(), uri=True)
        except sqlite3.Error:
            return {**info, "last_seq": 0}
        try:
            meta: dict[str, str] = {}
            with contextlib.suppress(Exception):
                meta = dict(src.execute("SELECT key, value FROM meta").fetchall())
            head: tuple[int, str] | None = None
            with contextlib.suppress(Exception):
                head = int(meta["last_seq"]), str(meta["last_hash"])
            info["head_recovered"] = head is not None
            seqs: list[int] = []
            try:  # rowids only: no overflow pages, no index that may be the damaged part
                for (seq,) in src.execute("SELECT seq FROM packets NOT INDEXED ORDER BY seq"):
                    seqs.append(int(seq))
            except Exception:  # the scan broke off: look the newer rows up one by one
                if head is not None:
                    start = max(seqs, default=0)
                    seqs += range(head[0], max(start, head[0] - _MAX_PROBES), -1)
            for seq in seqs:
                try:
                    row = src.execute(
                        "SELECT seq, packet_id, kind, data, sha256, size, state, created_ns, sent_ns, acked_ns"
                        " FROM packets WHERE seq=?",
                        (seq,),
                    ).fetchone()
                except Exception:
                    info["unreadable"] += 1
                    continue
                if row is None:
                    continue
                if row[6] == ACKED:  # the registry has it: not copied, but its seq is taken (never reused)
                    if head is None or seq > head[0]:
                        head = seq, str(row[4])
                    continue
                data = bytes(row[3])
                if hashlib.sha256(data).hexdigest() != row[4] or len(data) != row[5]:
                    info["unreadable"] += 1  # damaged inside the blob: never send altered evidence
                    continue
                new.execute(
                    "INSERT INTO packets(seq, packet_id, kind, data, sha256, size, state, created_ns, sent_ns,"
                    " acked_ns) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row[:3], data, *row[4:]),
                )
                info["salvaged"] += 1
                if head is None or seq > head[0]:
                    head = seq, str(row[4])
        finally:
            src.close()
        if "last_ack_ns" in meta:
            new.execute("INSERT INTO meta(key, value) VALUES('last_ack_ns', ?)", (meta["last_ack_ns"],))
        if head is not None:
            self._set_head(new, *head)
        info["last_seq"] = head[0] if head is not None else 0
        return info

    def _move_aside(self, reason: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 0
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(target) + suffix))
        self.corrupt_moved_to.append(str(target))
        return str(target)

    @staticmethod
    @contextlib.contextmanager
    def _tx(db: sqlite3.Connection):
        """COMMIT is inside the guard: a COMMIT that fails (disk full) is rolled back, and a failing
        ROLLBACK never hides the original error nor leaves the connection stuck in a transaction."""
        if db.in_transaction:  # an earlier ROLLBACK failed: never build on its leftovers
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLITE_FULL and friends may have rolled back already
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    @staticmethod
    def _head(db: sqlite3.Connection) -> tuple[int, str]:
        rows = dict(
            db.execute("SELECT key, value FROM meta WHERE key IN ('last_seq','last_hash')").fetchall()
        )
        return int(rows.get("last_seq", 0)), rows.get("last_hash", GENESIS_HASH)

    @staticmethod
    def _set_head(db: sqlite3.Connection, seq: int, digest: str) -> None:
        db.executemany(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [("last_seq", str(seq)), ("last_hash", digest)],
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ sealing

    def seal(self, payload: dict[str, Any], *, kind: str | None = None) -> Sealed:
        """Assigns seq + prev_hash, signs and commits in one transaction. Returns only once durable.

        ``kind`` (which topic the row goes out on) is the payload's own ``kind``; a caller that names
        another is refused: an event sent on the violation topic would be rejected by the registry for
        ever (it checks the signed kind against the topic)."""
        if "packet_id" not in payload:
            raise PacketError("payload has no packet_id")
        own = payload.get("kind")
        if own not in ("violation", "event"):
            raise PacketError(f"payload kind {own!r} is neither 'violation' nor 'event'")
        if kind is not None and kind != own:
            raise PacketError(f"sealed as {kind!r} but the payload says {own!r}")
        kind = own
        fitted = fit_to_size(payload, self.max_packet_bytes)
        self.quota_exceeded = False
        if self._over_quota():
            self._make_room()
            if self._over_quota():
                self.quota_exceeded = True
                self.last_error = "outbox quota reached with unacknowledged packets: images shrunk"
                fitted = fit_to_size(fitted, self.degraded_max_bytes, images_only=True)
        try:
            sealed = self._seal_tx(fitted, kind)
        except sqlite3.Error as exc:
            if not _is_disk_full(exc):
                raise
            self.disk_full = True
            self.last_error = f"disk full while sealing: {exc}"
            self._make_room(disk_full=True)
            try:
                sealed = self._seal_tx(fit_to_size(fitted, self.degraded_max_bytes, images_only=True), kind)
            except sqlite3.Error as exc2:
                if not _is_disk_full(exc2):
                    raise
                self.last_error = f"disk full: packet {payload['packet_id']} not recorded ({exc2})"
                raise OutboxFull(self.last_error) from None
        else:
            self.disk_full = False
        return sealed

    def _make_room(self, *, disk_full: bool = False) -> None:
        """Retention as an attempt only: on a full disk its own DELETE/COMMIT fails too, and that must
        not replace the sealing error (the caller then raises :class:`OutboxFull`). ``disk_full``: the
        oldest acked rows go whatever their age (the registry has them; a new violation has nowhere
        else to go), 50 at a time; the pages they free are reused by the next write."""
        try:
            self.retention()
            if disk_full:
                with self._lock, self._tx(self._db):
                    self._db.execute(
                        "DELETE FROM packets WHERE seq IN (SELECT seq FROM packets WHERE state='acked'"
                        " ORDER BY seq LIMIT 50)"
                    )
        except sqlite3.Error as exc:
            self.last_error = f"retention could not free space: {exc}"

    def _seal_tx(self, payload: dict[str, Any], kind: str) -> Sealed:
        with self._lock, self._tx(self._db):
            r = self._db.execute(
                "SELECT seq, packet_id, data, sha256, kind FROM packets WHERE packet_id=?",
                (str(payload["packet_id"]),),
            ).fetchone()
            if r is not None:  # a retry of a seal that did commit: the one copy, never a second
                return Sealed(r[0], r[1], r[2], r[3], r[4])
            last_seq, last_hash = self._head(self._db)
            seq = last_seq + 1
            data = seal_bytes({**payload, "seq": seq, "prev_hash": last_hash}, self.key)
            digest = hashlib.sha256(data).hexdigest()
            self._db.execute(
                "INSERT INTO packets(seq, packet_id, kind, data, sha256, size, state, created_ns)"
                " VALUES(?, ?, ?, ?, ?, ?, 'pending', ?)",
                (seq, str(payload["packet_id"]), kind, data, digest, len(data), time.time_ns()),
            )
            self._set_head(self._db, seq, digest)
        return Sealed(seq, str(payload["packet_id"]), data, digest, kind)

    # ------------------------------------------------------------------ uplink side

    def next_unacked(self, limit: int = 100, *, after_seq: int = 0) -> list[Sealed]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, packet_id, data, sha256, kind FROM packets WHERE state != 'acked' AND seq > ?"
                " ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [Sealed(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def unacked_seqs(self, limit: int = 100, *, after_seq: int = 0) -> list[int]:
        """Like :meth:`next_unacked` but seqs only, from the ``(state, seq)`` index: no blob is read, so the
        uplink can step over rows in back-off cheaply."""
        with self._lock:
            out = [
                r[0]
                for st in (PENDING, SENT)
                for r in self._db.execute(
                    "SELECT seq FROM packets WHERE state=? AND seq > ? ORDER BY seq LIMIT ?",
                    (st, after_seq, limit),
                )
            ]
        return sorted(out)[:limit]

    def _has_backoff(self) -> bool:
        return (
            self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='backoff'").fetchone()
            is not None
        )

    def backoff(self) -> dict[int, tuple[int, int, str | None]]:
        """Unacked rows that failed delivery: seq -> (attempts, next_attempt_ns wall clock, last_error)."""
        with self._lock:
            if not self._has_backoff():
                return {}
            rows = self._db.execute(
                "SELECT b.seq, b.attempts, b.next_attempt_ns, b.last_error FROM backoff b"
                " JOIN packets p ON p.seq = b.seq WHERE p.state != 'acked' ORDER BY b.seq"
            ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def record_attempts(self, rows: Iterable[tuple[int, int, int, str | None]]) -> None:
        """``(seq, attempts, next_attempt_ns, last_error)`` for a batch, one transaction; acked or unknown
        rows are left out (the ack deleted their bookkeeping)."""
        with self._lock, self._tx(self._db):
            self._db.execute(_BACKOFF_SCHEMA)
            self._db.executemany(
                "INSERT INTO backoff(seq, attempts, next_attempt_ns, last_error) SELECT ?, ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM packets WHERE seq=? AND state != 'acked')"
                " ON CONFLICT(seq) DO UPDATE SET attempts=excluded.attempts,"
                " next_attempt_ns=excluded.next_attempt_ns, last_error=excluded.last_error",
                [(int(s), int(n), int(t), e, int(s)) for s, n, t, e in rows],
            )

    def mark_sent(self, seq: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE packets SET state='sent', sent_ns=? WHERE seq=? AND state='pending'",
                (time.time_ns(), seq),
            )

    def mark_sent_many(self, seqs: list[int]) -> None:
        """One transaction (one fsync) for a batch of PUBACKs."""
        now = time.time_ns()
        with self._lock, self._tx(self._db):
            self._db.executemany(
                "UPDATE packets SET state='sent', sent_ns=? WHERE seq=? AND state='pending'",
                [(now, int(s)) for s in seqs],
            )

    def mark_acked(self, seqs: Iterable[int]) -> int:
        """Registry acks for a batch, one transaction; returns how many rows became acked."""
        now = time.time_ns()
        with self._lock, self._tx(self._db):
            n = 0
            backoff = self._has_backoff()
            for s in seqs:
                n += self._db.execute(
                    "UPDATE packets SET state='acked', acked_ns=? WHERE seq=? AND state != 'acked'",
                    (now, int(s)),
                ).rowcount
                if backoff:
                    self._db.execute("DELETE FROM backoff WHERE seq=?", (int(s),))
            if n:
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES('last_ack_ns', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(now),),
                )
        return n

    def get(self, seq: int) -> Sealed | None:
        with self._lock:
            r = self._db.execute(
                "SELECT seq, packet_id, data, sha256, kind FROM packets WHERE seq=?", (seq,)
            ).fetchone()
        return None if r is None else Sealed(r[0], r[1], r[2], r[3], r[4])

    def state(self, seq: int) -> str | None:
        with self._lock:
            r = self._db.execute("SELECT state FROM packets WHERE seq=?", (seq,)).fetchone()
        return None if r is None else r[0]

    # ------------------------------------------------------------------ housekeeping

    def db_bytes(self) -> int:
        with self._lock:
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            count = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return (count - free) * page

    def _over_quota(self) -> bool:
        return self.db_bytes() >= self.quota_bytes

    def retention(self, *, now_ns: int | None = None) -> int:
        """Deletes acked rows older than ``retention_s``, then oldest acked rows while over quota."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        cutoff = now_ns - int(self.retention_s * 1e9)
        deleted = 0
        with self._lock:
            with self._tx(self._db):
                deleted += self._db.execute(
                    "DELETE FROM packets WHERE state='acked' AND acked_ns < ?", (cutoff,)
                ).rowcount
                if self._has_backoff():  # rows left by firmware that predates the table and acked without it
                    self._db.execute(
                        "DELETE FROM backoff WHERE seq NOT IN"
                        " (SELECT seq FROM packets WHERE state IN ('pending', 'sent'))"
                    )
            while self._over_quota():
                with self._tx(self._db):
                    n = self._db.execute(
                        "DELETE FROM packets WHERE seq IN (SELECT seq FROM packets WHERE state='acked'"
                        " ORDER BY seq LIMIT 50)"
                    ).rowcount
                self._db.execute("PRAGMA incremental_vacuum")
                deleted += n
                if n == 0:
                    break
            self._db.execute("PRAGMA incremental_vacuum")
        return deleted

    def stats(self) -> dict[str, Any]:
        """Counts and flags; ``state: "fault"`` only while this run is on an outbox rebuilt after corruption."""
        with self._lock:
            counts = dict(self._db.execute("SELECT state, COUNT(*) FROM packets GROUP BY state").fetchall())
            pending_bytes = self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM packets WHERE state != 'acked'"
            ).fetchone()[0]
            last_seq, last_hash = self._head(self._db)
            r = self._db.execute("SELECT value FROM meta WHERE key='last_ack_ns'").fetchone()
        return {
            "pending": counts.get(PENDING, 0),
            "sent": counts.get(SENT, 0),
            "acked": counts.get(ACKED, 0),
            "last_seq": last_seq,
            "last_hash": last_hash,
            "last_ack_time_ns": int(r[0]) if r else None,
            "bytes": self.db_bytes(),
            "unacked_bytes": pending_bytes,
            "quota_bytes": self.quota_bytes,
            "quota_exceeded": self.quota_exceeded,
            "disk_full": self.disk_full,
            "corrupt_moved_to": list(self.corrupt_moved_to),
            "last_error": self.last_error,
        } | ({"state": "fault", "corruption": dict(self.corruption)} if self.corruption else {})
