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


class OutboxError(Exception):
    """Outbox failure that the daemon must report (message is one line)."""


class OutboxFull(OutboxError):
    """The disk is full even for a shrunk packet: nothing was written, nothing already pending was lost."""


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
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _open(self) -> sqlite3.Connection:
        recovered: tuple[int, str] | None = None
        try:
            db = self._connect()
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                db.close()
            recovered = self._recover_head()
            moved = self._move_aside(str(exc))
            db = self._connect()
            db.executescript(_SCHEMA)
            self.last_error = f"outbox database was corrupt ({exc}); moved to {moved}"
        if recovered is not None:
            with self._tx(db):
                self._set_head(db, *recovered)
        return db

    def _recover_head(self) -> tuple[int, str] | None:
        """Best effort: read the chain head from the damaged file so ``seq`` continues, never restarts."""
        try:
            uri = f"file:{self.path}?mode=ro"
            db = sqlite3.connect(uri, uri=True)
            try:
                rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
                return int(rows["last_seq"]), str(rows["last_hash"])
            finally:
                db.close()
        except Exception:
            return None

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
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if db.in_transaction:  # SQLITE_FULL and friends have already rolled back
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

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

    def seal(self, payload: dict[str, Any], *, kind: str = "violation") -> Sealed:
        """Assigns seq + prev_hash, signs and commits in one transaction. Returns only once durable."""
        if "packet_id" not in payload:
            raise PacketError("payload has no packet_id")
        fitted = fit_to_size(payload, self.max_packet_bytes)
        self.quota_exceeded = False
        if self._over_quota():
            self.retention()
            if self._over_quota():
                self.quota_exceeded = True
                self.last_error = "outbox quota reached with unacknowledged packets: images shrunk"
                fitted = fit_to_size(fitted, self.degraded_max_bytes)
        try:
            sealed = self._seal_tx(fitted, kind)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            self.disk_full = True
            self.last_error = f"disk full while sealing: {exc}"
            self.retention()
            try:
                sealed = self._seal_tx(fit_to_size(fitted, self.degraded_max_bytes), kind)
            except sqlite3.OperationalError as exc2:
                raise OutboxFull(f"disk full: packet {payload['packet_id']} not recorded ({exc2})") from None
        else:
            self.disk_full = False
        return sealed

    def _seal_tx(self, payload: dict[str, Any], kind: str) -> Sealed:
        with self._lock, self._tx(self._db):
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
            for s in seqs:
                n += self._db.execute(
                    "UPDATE packets SET state='acked', acked_ns=? WHERE seq=? AND state != 'acked'",
                    (now, int(s)),
                ).rowcount
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
        }
