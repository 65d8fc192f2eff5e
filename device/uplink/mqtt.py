"""Device side of the uplink: publishes outbox rows over MQTT until the registry acknowledges them.

Delivery is end-to-end: a row is ``sent`` on PUBACK (the broker has it) and ``acked`` only when the
registry says it stored it: the ack names each packet by the sha256 of the stored bytes, and a row is
acked only if that equals its own sha256. Seq-only, unknown-seq or mismatched acks mark nothing and are
counted in ``bad_acks`` (docs/packet.md: the broker ACL keeps other clients off the ack topic). Anything
not acked is published again after a reconnect, after a restart (the outbox is the queue, not paho's
memory) and after ``ack_timeout_s`` plus its back-off; the registry de-duplicates.

Back-off: a registry rejects some packets silently (signed under an old device id, a reused seq, a bad
image hash) and a broker may refuse one (MQTT 5 PUBACK reason code >= 0x80). Resent at every timeout, a
window's worth of such rows would block every newer one for ever. So each failed attempt (no ack within
``ack_timeout_s``, or a refusing PUBACK) pushes that row's next attempt back exponentially
(:func:`retry_delay`), the count is kept in the outbox, and rows that have failed get at most half the
window while others wait. Nothing is skipped for good: a row leaves the outbox only on a verified ack.
A restart retries every row once; an ack for a row that had failed retries the others at once.
paho runs the network loop (with its exponential reconnect backoff); one worker thread here fills the
bounded in-flight window and applies PUBACKs/acks to the outbox in batches (one fsync per batch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

from device.config import DeviceConfig, UplinkConfig
from device.uplink import topics
from device.uplink.outbox import Outbox

log = logging.getLogger("radarcam.uplink")

SETUP_RETRY_S = 30.0
"""How often an uplink that could not be set up (a missing or refused password or TLS file) tries again:
a technician's fix takes effect without a restart."""

_UNSUPPORTED_PROTOCOL = (1, 132)  # 3.1.1 "unacceptable protocol version", 5 "unsupported protocol version"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_DIGEST_CACHE = 10_000  # seq -> sha256 of recently published rows; older ones are read from the outbox
_SCAN_PAGE = 256  # seqs per index read when stepping over rows in back-off
RETRY_MAX_S = 3600.0


def retry_delay(attempts: int, base_s: float, max_s: float = RETRY_MAX_S) -> float:
    """Wait after a row's ``attempts``-th failed attempt: base, 2 x base, 4 x base ... up to ``max_s``."""
    return min(max_s, base_s * 2.0 ** min(max(attempts, 1) - 1, 60))


def _reason(rc: Any) -> str:
    try:
        return f"0x{int(rc.value):02X} {rc.getName()}"
    except Exception:  # an unknown code still names itself
        return str(rc)


def parse_ack(payload: bytes) -> tuple[list[tuple[int, str]], list[str]]:
    """``{"acks": [{"seq", "sha256"}, ...]}`` -> (seq, sha256) pairs, and why anything else was ignored.

    Bare ``seqs`` are never trusted: they bind no content, so any publisher could make rows look stored.
    """
    try:
        doc = json.loads(payload)
    except (ValueError, TypeError):
        return [], ["unreadable ack"]
    entries = doc.get("acks") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        return [], ["ack without an 'acks' list of {seq, sha256} (seq-only acks are not accepted)"]
    good: list[tuple[int, str]] = []
    bad: list[str] = []
    for e in entries:
        seq = e.get("seq") if isinstance(e, dict) else None
        digest = e.get("sha256") if isinstance(e, dict) else None
        if type(seq) is int and seq > 0 and isinstance(digest, str) and _SHA256_HEX.fullmatch(digest):
            good.append((seq, digest))
        else:
            bad.append(f"malformed ack entry {str(e)[:80]}")
    return good, bad


def nodelay(client, userdata, sock) -> None:
    """Small acks must not wait for Nagle + delayed ACK (~40 ms per round trip)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class UplinkClient:
    def __init__(
        self, cfg: UplinkConfig, device_id: str, outbox: Outbox, *, device: DeviceConfig | None = None
    ) -> None:
        """``device``: the unit's device section, so the password file is checked against its key
        folders and key files too (:func:`device.credentials.read_password_file`), not only the
        install's."""
        self.cfg = cfg
        self._device = device
        self.device_id = device_id
        self.outbox = outbox
        self.protocol = cfg.protocol
        self.heartbeat_ns = time.monotonic_ns()
        """Updated on every worker loop (at least every 0.25 s): the supervisor's liveness signal."""
        self.retention_interval_s = 300.0
        self._prefix = cfg.topic_prefix
        self._status_topic = topics.topic(self._prefix, device_id, topics.STATUS)
        self._ack_topic = topics.topic(self._prefix, device_id, topics.ACK)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = False
        self._inflight: dict[int, float] = {}  # seq -> monotonic publish time (awaiting registry ack)
        self._mids: dict[int, tuple[int, float] | None] = {}  # paho mid -> (seq, publish time); None: JSON
        self._early_mids: dict[int, str | None] = {}  # PUBACKed before publish() returned its mid -> refusal
        self._pubacked: deque[int] = deque()
        self._refused: deque[tuple[int, float, str]] = deque()  # (seq, publish time, PUBACK reason)
        self._backoff: dict[int, list] = {}  # seq -> [failed attempts, monotonic next attempt, last error]
        self._idle: tuple[int, float] | None = None  # (last seq seen, earliest due): nothing else eligible
        self.retry_base_s = cfg.ack_timeout_s
        """First back-off step; doubles per failed attempt up to ``retry_max_s`` (30 s -> 1 h by default)."""
        self.retry_max_s = RETRY_MAX_S
        self._acks: deque[bytes] = deque()  # raw ack payloads; parsed and checked by the worker
        self._digests: dict[int, str] = {}  # seq -> sha256 of published rows (cache; outbox is the truth)
        self._fallback = False
        self._last_status: dict[str, Any] = {}
        self.reconnects = 0
        self.connect_failures = 0
        self.resends = 0
        self.published = 0
        self.puback_failures = 0
        """PUBACKs with a reason code >= 0x80 (MQTT 5): the broker did not take the packet."""
        self.bad_acks = 0
        """Ack entries ignored: malformed, seq-only, unknown seq or sha256 not that of the outbox row."""
        self.last_ack_ns: int | None = None
        self.last_error: str | None = None
        self._client = None
        self._thread: threading.Thread | None = None
        self.setup_error: str | None = None
        self.ack_subscription: str | None = None
        """``ok`` or ``refused: ...`` once the broker answered the ack subscription."""
        self.setup_retry_s = SETUP_RETRY_S
        self._next_setup = 0.0

    # ------------------------------------------------------------------ paho client

    def _build(self):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        v5 = self.protocol == "mqttv5"
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id or f"radarcam-{self.device_id}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        if self.cfg.username:
            pw = None
            if self.cfg.password_file is not None:  # second line of defence (the config checks first)
                from device.config import SIGNING_KEY_DIRS, reserved_key_dirs, signing_key_candidates
                from device.credentials import read_password_file

                d = self._device  # CredentialError (a ValueError) says which rule refused the file
                pw = read_password_file(
                    self.cfg.password_file,
                    reserved_dirs=reserved_key_dirs(d) if d is not None else SIGNING_KEY_DIRS,
                    key_files=signing_key_candidates(d) if d is not None else (),
                )
            c.username_pw_set(self.cfg.username, pw)
        tls = self.cfg.tls
        if tls.enabled:
            c.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
            if tls.insecure_skip_verify:
                c.tls_insecure_set(True)
        will_props = None
        if v5:
            will_props = Properties(PacketTypes.WILLMESSAGE)
            will_props.ContentType = "application/json"
        c.will_set(
            self._status_topic, self._status_json("offline"), qos=1, retain=True, properties=will_props
        )
        c.max_inflight_messages_set(self.cfg.max_inflight)
        c.reconnect_delay_set(min_delay=self.cfg.reconnect_min_s, max_delay=self.cfg.reconnect_max_s)
        c.on_connect = self._on_connect
        c.on_socket_open = nodelay
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self._props_cose = self._props_json = None
        if v5:
            self._props_cose = Properties(PacketTypes.PUBLISH)
            self._props_cose.ContentType = topics.COSE_CONTENT_TYPE
            self._props_json = Properties(PacketTypes.PUBLISH)
            self._props_json.ContentType = "application/json"
        if v5:
            c.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, clean_start=True)
        else:
            c.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s)
        return c

    def _status_json(self, state: str, extra: dict[str, Any] | None = None) -> bytes:
        d = {"device_id": self.device_id, "state": state, "utc_ns": time.time_ns(), **(extra or {})}
        return json.dumps(d, sort_keys=True, default=str).encode()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused connection: {reason_code}"
            if self.protocol == "mqttv5" and reason_code.value in _UNSUPPORTED_PROTOCOL:
                self._fallback = True
                self._wake.set()
            return
        client.subscribe(self._ack_topic, qos=1)
        with self._lock:
            self._connected = True
            self._inflight.clear()  # everything not acked is published again on this connection
            self._idle = None
            self.reconnects += 1
            status = dict(self._last_status)
        info = client.publish(
            self._status_topic,
            self._status_json("online", status),
            qos=1,
            retain=True,
            properties=self._props_json,
        )
        self._claim_json_mid(info.mid)
        self._wake.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """A refused ack subscription (a broker ACL without the device's ack topic) means nothing will
        ever be acked: said in health, not left to look like a slow registry."""
        refused = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        self.ack_subscription = f"refused: {', '.join(refused)}" if refused else "ok"
        if refused:
            self.last_error = (
                f"broker refused the ack subscription on {self._ack_topic}: {', '.join(refused)}"
            )

    def _on_connect_fail(self, client, userdata) -> None:
        self.connect_failures += 1
        self.last_error = "cannot connect to broker (network, TLS handshake or refused)"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was_up = self._connected
            self._connected = False
            self._inflight.clear()
            self._idle = None
        if self._stop.is_set():
            return
        if was_up:
            self.last_error = f"disconnected: {reason_code}"
        else:  # closed before CONNACK: typically the broker refused our TLS client certificate
            self.connect_failures += 1
            self.last_error = f"connection closed before CONNACK ({reason_code}): TLS certificate refused?"

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        """paho 2.x, CallbackAPIVersion.VERSION2: ``reason_code`` is a ReasonCode, always Success on 3.1.1.
        On MQTT 5 a code >= 0x80 (0x87 not authorised, 0x97 quota exceeded ...) means the broker did not
        take the message: the row stays pending and backs off; 0x10 "no matching subscribers" is taken."""
        refused = _reason(reason_code) if getattr(reason_code, "is_failure", False) else None
        with self._lock:
            if mid not in self._mids:
                self._early_mids[mid] = refused
                if len(self._early_mids) > 10_000:  # only a lost race leaves one unclaimed: stay bounded
                    self._early_mids.clear()
                return
            entry = self._mids.pop(mid)
        if entry is None:  # status / stats JSON
            return
        if refused is None:
            self._pubacked.append(entry[0])
        else:
            self._refused.append((entry[0], entry[1], refused))
        self._wake.set()

    def _claim_json_mid(self, mid: int) -> None:
        """Status/stats PUBACKs are consumed, not parked in ``_early_mids`` where a later row's reused mid
        could pick them up."""
        with self._lock:
            if mid in self._early_mids:
                del self._early_mids[mid]
            else:
                self._mids[mid] = None

    def _on_message(self, client, userdata, msg) -> None:
        self._acks.append(bytes(msg.payload))
        self._wake.set()

    # ------------------------------------------------------------------ worker

    def _row_digest(self, seq: int) -> str | None:
        d = self._digests.get(seq)
        if d is None:
            row = self.outbox.get(seq)
            d = row.sha256 if row is not None else None
        return d

    def _bad_ack(self, reason: str) -> None:
        self.bad_acks += 1
        self.last_error = f"ignored ack: {reason} (is {self._ack_topic} writable only by the registry?)"

    def _verified_acks(self) -> list[int]:
        """Seqs whose ack names the exact bytes in the outbox. Nothing else is marked (or later deleted)."""
        acked: list[int] = []
        for _ in range(len(self._acks)):
            good, bad = parse_ack(self._acks.popleft())
            for reason in bad:
                self._bad_ack(reason)
            for seq, digest in good:
                mine = self._row_digest(seq)
                if mine is None:
                    self._bad_ack(f"seq {seq} is not in the outbox")
                elif mine != digest:
                    self._bad_ack(f"seq {seq}: sha256 {digest[:16]}... is not that of the outbox row")
                else:
                    acked.append(seq)
        return acked

    def _drain_callbacks(self) -> None:
        sent = [self._pubacked.popleft() for _ in range(len(self._pubacked))]
        refused = [self._refused.popleft() for _ in range(len(self._refused))]
        acked = self._verified_acks()
        done = set(acked)
        sent = [s for s in sent if s not in done]  # acked wins: no separate 'sent' write needed
        if acked:  # acks first: they free the window and end the latency that matters
            self.outbox.mark_acked(acked)
            self.last_ack_ns = time.time_ns()
            with self._lock:
                for s in acked:
                    self._inflight.pop(s, None)
                recovered = [s for s in acked if self._backoff.pop(s, None) is not None]
                if recovered and self._backoff:
                    # A row that had failed is acked after all: the registry was down or slow rather than
                    # rejecting, so retry the others now (their counts stay: true rejects back off further).
                    now = time.monotonic()
                    for b in self._backoff.values():
                        b[1] = min(b[1], now)
                    self._idle = None
        if sent:
            self.outbox.mark_sent_many(sent)
        failed: dict[str, list[int]] = {}
        for seq, t, why in refused:
            if seq in done:
                continue
            self.puback_failures += 1
            self.last_error = f"broker refused seq {seq}: PUBACK {why} (not delivered; retried with back-off)"
            with self._lock:
                if self._inflight.get(seq) != t:  # an older attempt: its failure was counted already
                    continue
                del self._inflight[seq]
            failed.setdefault(f"PUBACK {why}", []).append(seq)
        for why, seqs in failed.items():
            self._failed(seqs, why, time.monotonic())

    def _failed(self, seqs: list[int], why: str, now: float) -> None:
        """One failed attempt per row: next attempt ``retry_delay`` later, persisted in one transaction."""
        wall = time.time_ns()
        rows = []
        with self._lock:
            for s in seqs:
                b = self._backoff.setdefault(s, [0, now, None])
                b[0] += 1
                delay = retry_delay(b[0], self.retry_base_s, self.retry_max_s)
                b[1], b[2] = now + delay, why
                rows.append((s, b[0], wall + int(delay * 1e9), why))
            self._idle = None
        try:
            self.outbox.record_attempts(rows)
        except Exception as exc:  # a full disk, say: the back-off still holds in memory until a restart
            self.last_error = f"could not record failed attempts in the outbox: {exc}"

    def _load_backoff(self) -> None:
        """Attempt counts survive a restart; due times do not: a restart retries every row once."""
        now = time.monotonic()
        saved = self.outbox.backoff()
        with self._lock:
            self._backoff = {s: [n, now, why] for s, (n, _t, why) in saved.items()}
            self._idle = None

    def _pick(self, room: int, busy: set[int], now: float) -> list[int]:
        """Up to ``room`` seqs in seq order: rows not in flight and not waiting out a back-off. Rows that
        have failed before get at most half the window while never-failed rows are waiting, so however
        many are due at once (after a restart, say) newer rows still get through."""
        with self._lock:
            backoff = {s: b[1] for s, b in self._backoff.items()}
            idle = self._idle
        if idle is not None and now < idle[1] and not self.outbox.unacked_seqs(1, after_seq=idle[0]):
            return []  # nothing new since the last full scan, and no back-off has run out
        retry_room = max(0, max(1, self.cfg.max_inflight // 2) - sum(1 for s in busy if s in backoff))
        fresh: list[int] = []
        retries: list[int] = []
        cursor, exhausted = 0, False
        while True:
            page = self.outbox.unacked_seqs(_SCAN_PAGE, after_seq=cursor)
            for s in page:
                if s in busy:
                    continue
                due = backoff.get(s)
                if due is None:
                    if len(fresh) < room:
                        fresh.append(s)
                elif due <= now and len(retries) < room:
                    retries.append(s)
            if page:
                cursor = page[-1]
            if len(page) < _SCAN_PAGE:
                exhausted = True
                break
            if len(fresh) + min(len(retries), retry_room) >= room:
                break
        take = retries[:retry_room]
        take += fresh[: room - len(take)]
        if len(take) < room:  # too few never-failed rows: due retries may use the rest of the window
            take = fresh + retries[: room - len(fresh)]
        if exhausted and len(take) < room:  # everything eligible is taken: rescan only when that changes
            waiting = [d for s, d in backoff.items() if d > now and s not in busy]
            with self._lock:
                self._idle = (cursor, min(waiting, default=float("inf")))
        return sorted(take)

    def _fill_window(self) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._connected:
                return
            expired = [seq for seq, t in self._inflight.items() if now - t > self.cfg.ack_timeout_s]
            for seq in expired:
                del self._inflight[seq]
                self.resends += 1
            room = self.cfg.max_inflight - len(self._inflight)
            busy = set(self._inflight)
        if expired:
            self._failed(expired, f"no ack within {self.cfg.ack_timeout_s:g} s", now)
        if room <= 0:
            return
        for seq in self._pick(room, busy, now):
            if not self._connected:
                return
            r = self.outbox.get(seq)
            if r is None:
                continue
            t = topics.packet_topic(self._prefix, self.device_id, r.kind)
            with self._lock:
                self._inflight[r.seq] = now
            self._digests[r.seq] = r.sha256
            if len(self._digests) > _DIGEST_CACHE:
                del self._digests[next(iter(self._digests))]
            # Never hold self._lock across publish(): paho's thread holds its own lock while it calls
            # _on_publish, which takes self._lock (lock-order deadlock). A PUBACK may therefore arrive
            # before the mid is recorded; _on_publish parks such mids in _early_mids.
            info = self._client.publish(t, r.data, qos=1, properties=self._props_cose)
            with self._lock:
                if info.mid in self._early_mids:
                    refused = self._early_mids.pop(info.mid)
                    if refused is None:
                        self._pubacked.append(r.seq)
                    else:
                        self._refused.append((r.seq, now, refused))
                else:
                    self._mids[info.mid] = (r.seq, now)
            self.published += 1

    def _run(self) -> None:
        next_retention = time.monotonic() + 10.0
        while not self._stop.is_set():
            self.heartbeat_ns = time.monotonic_ns()
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                if self._client is None:
                    if time.monotonic() >= self._next_setup:
                        self._set_up()
                    continue
                if self._fallback:
                    self._fallback = False
                    self._switch_to_311()
                self._drain_callbacks()
                self._fill_window()
                if time.monotonic() >= next_retention:  # acked rows only; see Outbox.retention
                    next_retention = time.monotonic() + self.retention_interval_s
                    self.outbox.retention()
            except Exception as exc:  # keep the uplink alive; the supervisor sees last_error
                self.last_error = f"uplink worker: {exc!r}"
                time.sleep(0.2)

    def _switch_to_311(self) -> None:
        old = self._client
        self.protocol = "mqttv311"
        old.loop_stop()
        old.disconnect()
        with self._lock:  # message ids belong to a client: the new one counts from 1 again
            self._mids.clear()
            self._early_mids.clear()
            self._inflight.clear()
        self._client = None
        self._set_up()

    # ------------------------------------------------------------------ public API

    def _set_up(self) -> bool:
        """Builds and starts the MQTT client. A file it needs that is missing or refused (the password
        file, a TLS file) leaves the uplink down, said in :meth:`health` and retried every
        ``SETUP_RETRY_S``: it never stops the daemon, which goes on sealing evidence into the outbox."""
        try:
            c = self._build()
        except (OSError, ValueError) as exc:  # CredentialError is a ValueError; ssl errors are OSErrors
            self.setup_error = f"{type(exc).__name__}: {exc}"
            self.last_error = f"uplink cannot start: {self.setup_error}"
            self._next_setup = time.monotonic() + self.setup_retry_s
            log.error("uplink cannot start (retried every %.0f s): %s", self.setup_retry_s, self.setup_error)
            return False
        if self.setup_error is not None:
            log.warning("uplink set up after: %s", self.setup_error)
        self.setup_error = None
        self._client = c
        c.loop_start()
        return True

    def start(self) -> None:
        self._stop.clear()
        if self.outbox is not None:
            self._load_backoff()
        self._set_up()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Clean stop: retained ``offline`` status, disconnect, worker joined."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        c = self._client
        if c is not None:
            if self._connected:
                info = c.publish(self._status_topic, self._status_json("offline"), qos=1, retain=True)
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout=2)
            c.disconnect()
            c.loop_stop()
        self._drain_callbacks()
        self._connected = False

    def wake(self) -> None:
        """Call after sealing: the worker publishes at once instead of at its next tick."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            inflight = len(self._inflight)
            oldest = min(self._backoff, default=None)
            stuck = list(self._backoff[oldest]) if oldest is not None else None
            backoff = len(self._backoff)
        return {
            **({"state": "fault", "setup_error": self.setup_error} if self.setup_error else {}),
            "connected": self._connected,
            "ack_subscription": self.ack_subscription,
            "protocol": self.protocol,
            "broker": f"{self.cfg.host}:{self.cfg.port}",
            "tls": self.cfg.tls.enabled,
            "inflight": inflight,
            "published": self.published,
            "resends": self.resends,
            "bad_acks": self.bad_acks,
            "puback_failures": self.puback_failures,
            "backoff": backoff,
            "oldest_stuck_seq": oldest,
            "oldest_stuck_attempts": stuck[0] if stuck else None,
            "oldest_stuck_retry_in_s": round(max(0.0, stuck[1] - now), 1) if stuck else None,
            "oldest_stuck_error": stuck[2] if stuck else None,
            "last_ack": self.last_ack_ns,
            "reconnects": max(0, self.reconnects - 1),
            "connect_failures": self.connect_failures,
            "last_error": self.last_error,
        }

    def _publish_json(self, leaf: str, d: dict[str, Any], *, retain: bool) -> bool:
        c = self._client
        if c is None or not self._connected:
            return False
        payload = json.dumps(d, sort_keys=True, default=str).encode()
        info = c.publish(
            topics.topic(self._prefix, self.device_id, leaf), payload, 1, retain, self._props_json
        )
        self._claim_json_mid(info.mid)
        return True

    def publish_status(self, d: dict[str, Any]) -> bool:
        """Retained JSON health on ``status`` (re-sent on every reconnect); False when offline."""
        self._last_status = dict(d)
        return self._publish_json(
            topics.STATUS, {"device_id": self.device_id, "state": "online", **d}, retain=True
        )

    def publish_stats(self, d: dict[str, Any]) -> bool:
        return self._publish_json(topics.STATS, d, retain=False)
