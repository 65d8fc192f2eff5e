"""Reference registry: the receiving end a central operator can run or copy.

For each packet: verify the COSE signature against the registered device key, check that the signed
``device_id`` matches the topic, then store it durably and only THEN publish the ack, which names each
packet by the sha256 of the stored bytes (see :meth:`Registry.acks_for`). Identical
re-deliveries (QoS 1 is at-least-once, devices resend after timeouts) are stored once and acked again;
a known ``seq`` or ``packet_id`` arriving with different bytes is rejected as a replay, and so is a packet
whose image bytes do not match their signed sha256. A rejection is stored once per (device, seq, sha256),
with a delivery count: devices keep resending what is never acked. A ``seq`` below the
highest seen but not yet stored is a late delivery and fills the gap. Every row records whether its
``prev_hash`` matches the stored predecessor, so gaps and broken links are visible in :meth:`chain`.
Several instances may run in one MQTT 5 shared-subscription group against one database.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device.config import TlsConfig
from device.uplink import topics
from device.uplink.keys import key_id_of, load_public_key, parse_public_pem, public_pem
from device.uplink.mqtt import nodelay
from device.uplink.outbox import GENESIS_HASH
from device.uplink.packet import PacketError, image_problems, parse, verify

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, packet_id TEXT NOT NULL, kind TEXT NOT NULL,
    data BLOB NOT NULL, sha256 TEXT NOT NULL, prev_hash TEXT NOT NULL, prev_ok INTEGER,
    received_ns INTEGER NOT NULL, deliveries INTEGER NOT NULL DEFAULT 1, instance TEXT,
    PRIMARY KEY (device_id, seq), UNIQUE (device_id, packet_id)
);
CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, public_pem TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS device_keys (
    device_id TEXT NOT NULL, key_id TEXT NOT NULL, public_pem TEXT NOT NULL,
    PRIMARY KEY (device_id, key_id)
);
CREATE TABLE IF NOT EXISTS rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT, topic TEXT NOT NULL, seq INTEGER,
    reason TEXT NOT NULL, sha256 TEXT NOT NULL, received_ns INTEGER NOT NULL, data BLOB,
    deliveries INTEGER NOT NULL DEFAULT 1, last_received_ns INTEGER, size INTEGER
);
CREATE INDEX IF NOT EXISTS rejections_sha256 ON rejections(sha256);
"""
_ADDED_COLUMNS = {  # added to databases written by earlier versions
    "rejections": {  # when rejections were de-duplicated
        "deliveries": "INTEGER NOT NULL DEFAULT 1",
        "last_received_ns": "INTEGER",
        "size": "INTEGER",
    },
    "packets": {"key_id": "TEXT"},  # key retirement: which key signed each stored packet
    "device_keys": {"registered_ns": "INTEGER", "revoked_ns": "INTEGER", "revoked_reason": "TEXT"},
}
_INDEXES = "CREATE INDEX IF NOT EXISTS packets_key ON packets(device_id, key_id, seq)"
REJECTED_BLOB_BYTES = 64 * 1024
"""A rejected packet's bytes are kept up to this (headers, identity, measurement: enough to see what was
sent); ``size`` keeps the full length and ``sha256`` names the whole packet."""
_PG_SCHEMA = (
    _SQLITE_SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    .replace("BLOB", "BYTEA")
    .replace("INTEGER", "BIGINT")
)


class _Db:
    """SQLite (path or ``sqlite:///path``) or PostgreSQL (``postgresql://...``, needs psycopg)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = url.startswith(("postgresql://", "postgres://"))
        if self.pg:
            import psycopg  # optional dependency: pip install 'radarcam[postgres]'

            self.conn = psycopg.connect(url, autocommit=True)
            with self.conn.transaction():
                for stmt in filter(str.strip, _PG_SCHEMA.split(";")):
                    self.conn.execute(stmt)
                for table, cols in _ADDED_COLUMNS.items():
                    for col, decl in cols.items():
                        decl = decl.replace("INTEGER", "BIGINT")
                        self.conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col} {decl}")
                self.conn.execute(_INDEXES)
        else:
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=30000")
            self.conn.executescript(_SQLITE_SCHEMA)
            for table, cols in _ADDED_COLUMNS.items():
                have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
                for col, decl in cols.items():
                    if col not in have:
                        try:
                            self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
                        except sqlite3.OperationalError as exc:  # another instance migrated it just now
                            if "duplicate column" not in str(exc):
                                raise
            self.conn.execute(_INDEXES)

    def q(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.pg:
            sql = sql.replace("?", "%s")
        cur = self.conn.execute(sql, params)
        try:
            return [tuple(r) for r in cur.fetchall()]
        except Exception:  # statements without a result set
            return []

    def begin(self) -> None:
        self.q("BEGIN" if self.pg else "BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.q("COMMIT")

    def rollback(self) -> None:
        self.q("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


def load_keys(keys: dict[str, Any] | str | os.PathLike[str]) -> dict[str, Ed25519PublicKey]:
    """A dict device -> key (or PEM path), or a directory of ``<device>.pub.pem`` files."""
    if isinstance(keys, dict):
        return {d: (k if isinstance(k, Ed25519PublicKey) else load_public_key(k)) for d, k in keys.items()}
    out = {}
    for p in sorted(Path(keys).glob("*.pub.pem")):
        name = p.name.removesuffix(".pub.pem")
        if _KID_SUFFIX.search(name):  # <device>-<kid>.pub.pem: an export's earlier key, not a device
            continue
        out[name] = load_public_key(p)
    return out


_KID_SUFFIX = re.compile(r"-[0-9a-f]{32}$")


class Registry:
    def __init__(
        self,
        db_url: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        tls: TlsConfig | None = None,
        group: str = "registry",
        keys: dict[str, Any] | str | os.PathLike[str],
        topic_prefix: str = "radarcam/v1",
        instance: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.db = _Db(str(db_url))
        self.host, self.port, self.tls, self.group = host, port, tls, group
        self.username, self.password = username, password  # the broker ACL's registry user (docs/packet.md)
        self.keys = self._remember_keys(load_keys(keys))
        self._current_kid = {d: key_id_of(k) for d, k in self.keys.items()}  # per packet: not re-hashed
        self.prefix = topic_prefix
        self.instance = instance or f"registry-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.rejected = 0
        self.acks_sent = 0
        self.last_error: str | None = None

    def _remember_keys(self, given: dict[str, Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
        """Registered keys are kept in the database so ``export`` can write them without being told.

        ``devices`` holds each device's current key; ``device_keys`` every key it has had, by key id: a
        re-keyed unit's older packets (and the unacked ones it still sends) keep verifying with the key
        that signed them."""
        for device, key in given.items():
            pem = public_pem(key)
            self.db.q(
                "INSERT INTO devices(device_id, public_pem) VALUES(?, ?)"
                " ON CONFLICT(device_id) DO UPDATE SET public_pem=excluded.public_pem",
                (device, pem),
            )
        now = time.time_ns()
        current: dict[str, str] = {}
        for device, pem in self.db.q("SELECT device_id, public_pem FROM devices"):  # history of every key
            kid = current[device] = key_id_of(
                parse_public_pem(pem.encode(), source=f"registry key for {device}")
            )
            self.db.q(  # the first registration's time orders a device's keys (see _key_refusal)
                "INSERT INTO device_keys(device_id, key_id, public_pem, registered_ns) VALUES(?, ?, ?, ?)"
                " ON CONFLICT(device_id, key_id) DO NOTHING",
                (device, kid, pem, now),
            )
        # Keys recorded before keys had a registration time: older than any registered since, the
        # current one newest among them.
        for device, kid in self.db.q("SELECT device_id, key_id FROM device_keys WHERE registered_ns IS NULL"):
            self.db.q(
                "UPDATE device_keys SET registered_ns=? WHERE device_id=? AND key_id=?",
                (int(current.get(device) == kid), device, kid),
            )
        self._backfill_key_ids()
        self.key_history: dict[str, dict[str, Ed25519PublicKey]] = {}
        for device, kid, pem in self.db.q("SELECT device_id, key_id, public_pem FROM device_keys"):
            self.key_history.setdefault(device, {})[kid] = parse_public_pem(
                pem.encode(), source=f"{device} {kid}"
            )
        stored = {d: parse_public_pem(pem.encode(), source=f"registry key for {d}") for d, pem in
                  self.db.q("SELECT device_id, public_pem FROM devices")}  # fmt: skip
        return stored | given

    def _backfill_key_ids(self, batch: int = 200) -> None:
        """Packets stored before the key id was kept get it from their own header (once, in batches:
        the images make rows large). An unreadable one gets "" so it is not read again."""
        while rows := self.db.q(
            f"SELECT device_id, seq, data FROM packets WHERE key_id IS NULL LIMIT {batch}"
        ):
            for device, seq, data in rows:
                try:
                    kid = parse(bytes(data)).kid or ""
                except PacketError:
                    kid = ""
                self.db.q("UPDATE packets SET key_id=? WHERE device_id=? AND seq=?", (kid, device, seq))

    def _successors_first_seq(self, device: str, kid: str) -> tuple[str, int] | None:
        """The first stored seq signed by a key that replaced ``kid`` (registered after it, or the
        device's current key), and that key: from there on the device signs with the newer key."""
        current = self._current_kid.get(device)
        if kid == current:
            return None
        reg = self.db.q("SELECT registered_ns FROM device_keys WHERE device_id=? AND key_id=?", (device, kid))
        if not reg:
            return None
        rows = self.db.q(
            "SELECT key_id FROM device_keys WHERE device_id=? AND key_id<>? AND (registered_ns>? OR key_id=?)",
            (device, kid, reg[0][0] or 0, current or ""),
        )
        newer = [r[0] for r in rows]
        if not newer:
            return None
        marks = ", ".join("?" * len(newer))
        rows = self.db.q(
            f"SELECT key_id, seq FROM packets WHERE device_id=? AND key_id IN ({marks}) ORDER BY seq LIMIT 1",
            (device, *newer),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def _key_refusal(self, device: str, kid: str, seq: int) -> str | None:
        """Why a packet signed by ``kid`` may not be stored: the key was revoked, or it was replaced and
        ``seq`` is at or past the first packet of its replacement (a re-keyed device signs everything
        from there with the new key; an old key's unacked packets have lower seqs and still verify).
        Read inside the store's transaction, so every instance sharing the database applies it at once."""
        row = self.db.q(
            "SELECT revoked_ns, revoked_reason FROM device_keys WHERE device_id=? AND key_id=?", (device, kid)
        )
        if row and row[0][0] is not None:
            return f"signed with revoked key {kid}" + (f" ({row[0][1]})" if row[0][1] else "")
        if kid == self._current_kid.get(device):  # the common case: one query per packet
            return None
        succ = self._successors_first_seq(device, kid)
        if succ is not None and seq >= succ[1]:
            return (
                f"signed with retired key {kid}: key {succ[0]} signs this device's packets from seq {succ[1]}"
            )
        return None

    def revoke_key(self, device: str, kid: str, reason: str = "") -> int:
        """Refuses every packet ``kid`` signed that is not yet stored (a key that may be compromised).
        Stored packets stay (evidence is never deleted); :meth:`chain` lists them. Returns their count."""
        with self._lock:
            if not self.db.q("SELECT 1 FROM device_keys WHERE device_id=? AND key_id=?", (device, kid)):
                raise KeyError(f"{device!r} has no registered key {kid!r}")
            self.db.q(
                "UPDATE device_keys SET revoked_ns=COALESCE(revoked_ns, ?), revoked_reason=? "
                "WHERE device_id=? AND key_id=?",
                (time.time_ns(), reason[:500], device, kid),
            )
            return self.db.q("SELECT COUNT(*) FROM packets WHERE device_id=? AND key_id=?", (device, kid))[0][
                0
            ]

    # ------------------------------------------------------------------ packet handling (no MQTT)

    def _reject_row(self, device: str | None, topic: str, reason: str, data: bytes, seq: int | None) -> None:
        """Once per (device, seq, sha256): a device resends what is never acked (with back-off, but for
        ever), so a repeat only counts and updates the reason and time; the blob is capped."""
        digest, now = hashlib.sha256(data).hexdigest(), time.time_ns()
        same = [r[0] for r in self.db.q("SELECT id, device_id, seq FROM rejections WHERE sha256=?", (digest,))
                if r[1] == device and r[2] == seq]  # fmt: skip
        if same:
            self.db.q(
                "UPDATE rejections SET deliveries = deliveries + 1, last_received_ns=?, reason=?, topic=?"
                " WHERE id=?",
                (now, reason, topic, same[0]),
            )
        else:
            self.db.q(
                "INSERT INTO rejections(device_id, topic, seq, reason, sha256, received_ns, data, deliveries,"
                " last_received_ns, size) VALUES(?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                (device, topic, seq, reason, digest, now, data[:REJECTED_BLOB_BYTES], now, len(data)),
            )
        self.rejected += 1

    def _check(self, topic: str, data: bytes) -> dict[str, Any]:
        """Everything that needs no database: topic, key, signature, signed identity. CPU only."""
        parsed = topics.device_from_topic(self.prefix, topic)
        if parsed is None or parsed[1] not in (topics.VIOLATION, topics.EVENT):
            return {"result": "rejected", "device_id": None, "reason": "not a packet topic"}
        device, leaf = parsed
        key = self.keys.get(device)
        if key is None:
            return {
                "result": "rejected",
                "device_id": device,
                "reason": f"unknown device {device!r} (no registered key)",
            }
        with contextlib.suppress(PacketError):  # malformed: verify() below says why
            key = self.key_history.get(device, {}).get(parse(data).kid or "", key)
        try:
            payload = verify(data, key)
        except PacketError as exc:
            return {"result": "rejected", "device_id": device, "reason": f"verification failed: {exc}"}
        seq = payload.get("seq")
        bad = None
        if payload.get("device_id") != device:
            bad = f"signed device_id {payload.get('device_id')!r} != topic"
        elif (
            not isinstance(seq, int) or not 1 <= seq < 2**63 or not isinstance(payload.get("prev_hash"), str)
        ):
            bad, seq = "missing or invalid seq / prev_hash", None
        elif (payload.get("kind") == "violation") != (leaf == topics.VIOLATION):
            bad = f"kind {payload.get('kind')!r} published on {leaf!r}"
        elif not isinstance(payload.get("images", []), list):
            bad = "images is not a list"
        elif problems := image_problems(payload):  # signed claims that the bytes do not bear out
            bad = f"image hash mismatch: {'; '.join(problems)}"
        if bad:
            return {"result": "rejected", "device_id": device, "reason": bad, "seq": seq}
        return {
            "result": "ok",
            "device_id": device,
            "seq": seq,
            "payload": payload,
            "key_id": payload["key_id"],
        }

    def handle(self, topic: str, data: bytes) -> dict[str, Any]:
        """Verify + store one packet; see :meth:`handle_batch`."""
        return self.handle_batch([(topic, data)])[0]

    def handle_batch(self, msgs: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
        """Verify + store packets in ONE transaction (group commit: one fsync for the batch).

        Returns per message ``{"result": stored|duplicate|rejected, ...}``. Acks are the caller's job,
        sent only after this returns, so an ack never precedes the commit.
        """
        checks = [self._check(t, d) for t, d in msgs]
        results: list[dict[str, Any]] = []
        with self._lock:
            self.db.begin()
            try:
                for (topic, data), c in zip(msgs, checks, strict=True):
                    self.received += 1
                    res = c
                    if c["result"] == "ok":
                        p = c["payload"]
                        res = self._store(
                            c["device_id"], c["seq"], str(p.get("packet_id")), str(p.get("kind")), data,
                            hashlib.sha256(data).hexdigest(), p["prev_hash"], c["key_id"],
                        )  # fmt: skip
                        if res["result"] in ("replay", "refused"):
                            res = {"result": "rejected", "device_id": c["device_id"], "reason": res["reason"],
                                   "seq": c["seq"]}  # fmt: skip
                    if res["result"] == "rejected":
                        self._reject_row(res["device_id"], topic, res["reason"], data, res.get("seq"))
                    results.append(res)
                self.db.commit()
            except BaseException:
                self.db.rollback()
                raise
            for r in results:
                if r["result"] == "duplicate":
                    self.duplicates += 1
                elif r["result"] == "stored":
                    self.stored += 1
        return results

    def _store(
        self,
        device: str,
        seq: int,
        packet_id: str,
        kind: str,
        data: bytes,
        digest: str,
        prev_hash: str,
        key_id: str,
    ) -> dict[str, Any]:
        """Inside one transaction: duplicate / replay / key check, insert, and the two chain links it
        touches. A duplicate is acked again even if its key was revoked since: it was stored before."""
        row = self.db.q("SELECT sha256 FROM packets WHERE device_id=? AND seq=?", (device, seq))
        if row and row[0][0] == digest:
            self.db.q(
                "UPDATE packets SET deliveries = deliveries + 1 WHERE device_id=? AND seq=?", (device, seq)
            )
            return {"result": "duplicate", "device_id": device, "seq": seq, "sha256": row[0][0]}
        if row:
            return {"result": "replay", "reason": f"replay: seq {seq} already stored with different content"}
        other = self.db.q("SELECT seq FROM packets WHERE device_id=? AND packet_id=?", (device, packet_id))
        if other:
            return {
                "result": "replay",
                "reason": f"replay: packet id {packet_id} already stored as seq {other[0][0]}",
            }
        if refusal := self._key_refusal(device, key_id, seq):
            return {"result": "refused", "reason": refusal}
        if seq == 1:
            prev_ok: int | None = int(prev_hash == GENESIS_HASH)
        else:
            prev = self.db.q("SELECT sha256 FROM packets WHERE device_id=? AND seq=?", (device, seq - 1))
            prev_ok = int(prev_hash == prev[0][0]) if prev else None
        self.db.q(
            "INSERT INTO packets(device_id, seq, packet_id, kind, data, sha256, prev_hash, prev_ok,"
            " received_ns, instance, key_id) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device,
                seq,
                packet_id,
                kind,
                data,
                digest,
                prev_hash,
                prev_ok,
                time.time_ns(),
                self.instance,
                key_id,
            ),
        )
        nxt = self.db.q("SELECT prev_hash FROM packets WHERE device_id=? AND seq=?", (device, seq + 1))
        if nxt:
            self.db.q(
                "UPDATE packets SET prev_ok=? WHERE device_id=? AND seq=?",
                (int(nxt[0][0] == digest), device, seq + 1),
            )
        return {"result": "stored", "device_id": device, "seq": seq, "prev_ok": prev_ok, "sha256": digest}

    # ------------------------------------------------------------------ MQTT

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused: {reason_code}"
            return
        filters = [
            (topics.shared(self.group, f"{self.prefix}/+/{leaf}"), 1)
            for leaf in (topics.VIOLATION, topics.EVENT)
        ]
        client.subscribe(filters)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if all(not rc.is_failure for rc in reason_codes):
            self._subscribed.set()
        else:
            self.last_error = f"subscription refused: {reason_codes}"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._subscribed.clear()

    def _on_message(self, client, userdata, msg) -> None:
        self._queue.put((msg.topic, msg.payload))

    def _worker(self) -> None:
        """Drains whatever arrived since the last commit into one batch, commits, then acks."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        while not self._halt.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < 256:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                results = self.handle_batch(batch)
            except Exception as exc:  # database down etc.: no ack, the device will resend
                self.last_error = f"storing failed: {exc!r}"
                continue
            c = self._client
            for device, ack in self.acks_for(results).items():
                if c is not None:
                    c.publish(topics.topic(self.prefix, device, topics.ACK), json.dumps(ack), 1, False, props)
                    self.acks_sent += 1

    def acks_for(self, results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Per device, the ack for committed packets. Each entry names the sha256 of the stored bytes: the
        device marks a row acked only if it matches, so an ack cannot stand for bytes never stored.
        ``seqs`` is for human readers only; devices ignore it."""
        acks: dict[str, dict[str, Any]] = {}
        for r in results:
            if r["result"] in ("stored", "duplicate"):
                a = acks.setdefault(r["device_id"], {"acks": [], "seqs": [], "registry": self.instance})
                a["acks"].append({"seq": r["seq"], "sha256": r["sha256"]})
                a["seqs"].append(r["seq"])
        return acks

    def start(self, timeout: float = 10.0) -> Registry:
        """Connects and returns once the shared subscriptions are granted."""
        import ssl

        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.instance, protocol=mqtt.MQTTv5)
        if self.tls is not None and self.tls.enabled:
            c.tls_set(
                ca_certs=str(self.tls.ca_file) if self.tls.ca_file else None,
                certfile=str(self.tls.cert_file) if self.tls.cert_file else None,
                keyfile=str(self.tls.key_file) if self.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if self.username:
            c.username_pw_set(self.username, self.password)
        c.on_connect, c.on_subscribe = self._on_connect, self._on_subscribe
        c.on_message, c.on_disconnect = self._on_message, self._on_disconnect
        c.on_socket_open = nodelay
        c.reconnect_delay_set(0.2, 5)
        c.connect_async(self.host, self.port, 30, clean_start=True)
        self._client = c
        self._halt.clear()
        self._thread = threading.Thread(target=self._worker, name=f"{self.instance}-store", daemon=True)
        self._thread.start()
        c.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise RuntimeError(f"registry: not subscribed on {self.host}:{self.port} within {timeout} s")
        return self

    def stop(self) -> None:
        """Finishes the batch in hand (commit + acks), then disconnects. Messages still queued are
        neither stored nor acked: devices publish them again after their ack timeout."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        c, self._client = self._client, None
        if c is not None:
            c.disconnect()
            c.loop_stop()

    def close(self) -> None:
        self.stop()
        self.db.close()

    # ------------------------------------------------------------------ queries (demo, tests, export)

    def count(self, device_id: str | None = None) -> int:
        with self._lock:
            if device_id is None:
                return self.db.q("SELECT COUNT(*) FROM packets")[0][0]
            return self.db.q("SELECT COUNT(*) FROM packets WHERE device_id=?", (device_id,))[0][0]

    def packets(self, device_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.q(
                "SELECT seq, packet_id, kind, data, sha256, prev_hash, prev_ok, received_ns, deliveries, instance"
                " FROM packets WHERE device_id=? ORDER BY seq",
                (device_id,),
            )
        names = ("seq", "packet_id", "kind", "data", "sha256", "prev_hash", "prev_ok", "received_ns",
                 "deliveries", "instance")  # fmt: skip
        return [dict(zip(names, r, strict=True)) | {"data": bytes(r[3])} for r in rows]

    def rejections(self) -> list[dict[str, Any]]:
        """One entry per rejected (device, seq, sha256); ``deliveries`` counts its arrivals."""
        names = ("device_id", "topic", "seq", "reason", "sha256", "received_ns", "deliveries",
                 "last_received_ns", "size", "stored_bytes")  # fmt: skip
        with self._lock:
            rows = self.db.q(f"SELECT {', '.join(names[:-1])}, LENGTH(data) FROM rejections ORDER BY id")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def chain(self, device_id: str) -> dict[str, Any]:
        """Gaps (missing seqs from 1 to the highest) and broken ``prev_hash`` links for one device."""
        with self._lock:
            rows = self.db.q("SELECT seq, prev_ok FROM packets WHERE device_id=? ORDER BY seq", (device_id,))
        seqs = [r[0] for r in rows]
        have = set(seqs)
        last = seqs[-1] if seqs else 0
        gaps = [s for s in range(1, last + 1) if s not in have]
        broken = [r[0] for r in rows if r[1] == 0]
        return {
            "device_id": device_id,
            "count": len(seqs),
            "first_seq": seqs[0] if seqs else None,
            "last_seq": last or None,
            "gaps": gaps,
            "broken_links": broken,
            "intact": bool(seqs) and not gaps and not broken and all(r[1] == 1 for r in rows),
            **self._key_doubts(device_id),
        }

    def _key_doubts(self, device: str) -> dict[str, list[int]]:
        """Stored packets whose key says they need a second look: signed by a revoked key, or by a
        replaced key at or past its replacement's first seq (stored before that packet arrived)."""
        with self._lock:
            keys = self.db.q("SELECT key_id, revoked_ns FROM device_keys WHERE device_id=?", (device,))
            revoked = [k for k, r in keys if r is not None]
            retired: list[int] = []
            by_key = "SELECT seq FROM packets WHERE device_id=? AND key_id=? AND seq>=?"
            for kid, _ in keys:
                if (succ := self._successors_first_seq(device, kid)) is not None:
                    retired += [r[0] for r in self.db.q(by_key, (device, kid, succ[1]))]
            by_revoked = [r[0] for kid in revoked for r in self.db.q(by_key, (device, kid, 0))]
        return {"revoked_key_seqs": sorted(by_revoked), "retired_key_seqs": sorted(retired)}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            devices = self.db.q("SELECT device_id, COUNT(*), MAX(seq) FROM packets GROUP BY device_id")
        return {
            "instance": self.instance,
            "subscribed": self._subscribed.is_set(),
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "acks_sent": self.acks_sent,
            "devices": {d: {"count": n, "last_seq": m} for d, n, m in devices},
            "last_error": self.last_error,
        }

    def export(self, out_dir: str | os.PathLike[str]) -> int:
        """``DIR/<device>-<seq>.cose`` for every stored packet plus ``DIR/<device>.pub.pem``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with self._lock:
            rows = self.db.q("SELECT device_id, seq, data FROM packets ORDER BY device_id, seq")
        for device, seq, data in rows:
            (out / f"{device}-{seq}.cose").write_bytes(bytes(data))
        for device in sorted({r[0] for r in rows}):
            if device in self.keys:  # the current key, and every earlier one by key id
                (out / f"{device}.pub.pem").write_text(public_pem(self.keys[device]))
            for kid, key in sorted(self.key_history.get(device, {}).items()):
                (out / f"{device}-{kid}.pub.pem").write_text(public_pem(key))
        return len(rows)
