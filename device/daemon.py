"""The wiring: radar -> tracker -> enforcement -> evidence -> ANPR -> sealing -> outbox -> MQTT.

Read :meth:`Daemon.start` top to bottom for the data flow. Threads and what they own:

* ``radar``    RadarReader: serial bytes -> readings, put on ``readings`` without ever blocking.
* ``measure``  readings -> PassTracker -> Enforcer -> stats; violations go to ``candidates``.
* ``camera``   CameraThread: frames -> FrameRing (pre-trigger buffer).
* ``evidence`` candidate -> frames from the ring -> plate read (deadline) -> JPEGs -> sealed in the outbox.
* ``anpr``     plate reads (inside EvidenceBuilder), so a slow model never holds up a measurement.
* ``uplink``   UplinkClient: outbox -> MQTT, PUBACK -> sent, registry ack -> acked.
* main thread  the supervisor: heartbeats, sd_notify WATCHDOG only while every stage is alive,
  status/stats publishing, SIGTERM (drain, exit within 10 s) and SIGHUP (reload, audited).

A violation is *recorded* only once the outbox transaction that seals it has committed. Until then it
waits in memory (bounded); whatever is dropped from there, or still unsealed when the outbox closes at
shutdown, is counted (``violations_dropped`` / ``events_dropped``) and named in an ERROR log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from device import __version__
from device import config as cfgmod
from device.capture.camera import CameraThread, open_camera
from device.capture.ring import FrameRing
from device.clock import ClockMonitor
from device.config import Config
from device.enforcement import Enforcer
from device.health import Heartbeats, cpu_temperature_c, disk_free, watchdog_tick
from device.model import Decision, Direction, Frame, Pass, PlateRead, Reading, Violation
from device.sdnotify import Notifier
from device.sensors.radar import make_driver
from device.sensors.serial_reader import RadarReader
from device.sensors.tracker import PassTracker
from device.stats import TrafficStats
from device.uplink.keys import KeyFileError, SigningKey, load_signing_key
from device.uplink.outbox import Outbox, OutboxError, OutboxFull
from device.uplink.packet import PacketContext, event_payload, violation_payload
from device.violations import Candidate, EarlySnapshots, EvidenceBuilder, TriggerWindow

log = logging.getLogger("radarcam.daemon")

READINGS_QUEUE = 20_000
CANDIDATE_QUEUE = 256
PIN_BACKLOG = 32
"""Violations waiting for evidence beyond which a new one pins no frames: each pins about 12 MB at 1080p
(4 YUV frames), and an unbounded backlog would end in the OOM killer, losing every queued violation."""
STATUS_EVERY_S = 5.0
UNSEALED_MAX = 10_000
"""Records (violations, events) kept in memory while the outbox refuses them. Memory is finite: beyond
this the oldest is dropped, counted and named at ERROR (the unit has been reporting fault all along)."""
RETRY_TURN_S = 2.0
"""At most this long per supervisor turn sealing the in-memory backlog (WatchdogSec is 30 s)."""
TIMINGS_KEEP = 4096
"""Violations whose latencies :class:`Timings` keeps, the most recent (about 1.5 MB in all): the demo and
the benchmarks read them (their longest run, bench e2e at 5 vehicles/s for 120 s, seals about 600), and a
unit running for months must not grow a map per violation."""


class StartupError(RuntimeError):
    """A stage that cannot start: the daemon exits non-zero and says why (systemd restarts it)."""


@dataclass
class SimInputs:
    """What replaces hardware in the demo and emulated HIL tests (the radar comes in over a real pty)."""

    scenario: Any
    epoch_mono_ns: int


class _Recent(dict):
    """A dict that forgets its oldest entries beyond ``maxlen``: still a plain dict to its readers
    (``dict(m)`` copies it in one step, which the demo relies on while the uplink thread writes)."""

    def __init__(self, maxlen: int) -> None:
        super().__init__()
        self.maxlen = maxlen

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.maxlen:
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):  # another thread evicted it
                del self[next(iter(self))]

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self.get(key, default)


@dataclass
class Timings:
    """Per-violation latency bookkeeping for the demo and the benchmarks: figures, never evidence (the
    outbox is that), so only the ``keep`` most recent entries of each map are kept."""

    keep: int = TIMINGS_KEEP
    decided_ns: dict[str, int] = field(init=False)
    sealed_ns: dict[str, int] = field(init=False)
    seq_of: dict[str, int] = field(init=False)
    acked_ns: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.decided_ns = _Recent(self.keep)
        self.sealed_ns = _Recent(self.keep)
        self.seq_of = _Recent(self.keep)
        self.acked_ns = _Recent(self.keep)


@dataclass
class _Record:
    """A violation or event waiting in memory to be sealed, and how to name it if it is lost."""

    seal: Callable[[], Any]
    kind: str
    """``violation``, or the event's kind (counted in ``violations_dropped`` or ``events_dropped``)."""
    ident: str
    """The violation id, or the event's packet id."""
    note: str = ""

    @property
    def what(self) -> str:
        label = "violation" if self.kind == "violation" else f"event {self.kind}"
        return " ".join(x for x in (label, self.ident, self.note) if x)


class _NotSealedYet(Exception):
    """A plate amendment whose violation still waits in memory: it waits too, behind it."""


class _ViolationLost(Exception):
    """A plate amendment whose violation was dropped: it has no seq to name."""


def default_key_path(cfg: Config) -> Path:
    """systemd's LoadCredential copy first (the unit's sandbox may hide the original), then config."""
    cred = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred and (Path(cred) / "signing-key").exists():
        return Path(cred) / "signing-key"
    if cfg.device.key_path is not None:
        return cfg.device.key_path
    return cfg.device.state_dir / "keys" / "signing-key.pem"


def max_limit_kmh(cfg: Config) -> float:
    limits = [lane.limit_kmh for lane in cfg.site.lanes]
    for lane in cfg.site.lanes:
        limits += list(lane.class_limits_kmh.values()) + [w.limit_kmh for w in lane.windows]
    return max(limits)


class _ObservedOutbox(Outbox):
    """The outbox, noting when each seq is acked (for latency figures); behaviour unchanged."""

    timings: Timings

    def mark_acked(self, seqs):  # type: ignore[override]
        now = time.monotonic_ns()
        for s in seqs:
            self.timings.acked_ns.setdefault(int(s), now)
        return super().mark_acked(seqs)


class Daemon:
    """One unit. ``start()`` builds every stage from config; ``run()`` supervises until stopped."""

    def __init__(
        self,
        cfg: Config,
        *,
        config_path: Path | None = None,
        sim: SimInputs | None = None,
        notifier: Notifier | None = None,
        plate_reader: object | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.config_hash = cfgmod.config_hash(cfg)
        self.sim = sim
        self.notifier = notifier or Notifier()
        self.timings = Timings()
        self.heartbeats = Heartbeats()
        self.stats = TrafficStats()
        self.recent_passes: deque[dict] = deque(maxlen=50)
        self.recent_violations: deque[dict] = deque(maxlen=20)
        self.counters = {
            "readings": 0,
            "readings_dropped": 0,
            "readings_failed": 0,  # the tracker raised on them: skipped, the stage goes on (status fault)
            "passes": 0,
            "violations": 0,
            "sealed": 0,
            "frames_not_pinned": 0,
            "violations_dropped": 0,  # decided but never sealed: queue full, backlog full, shutdown
            "events_dropped": 0,
        }
        self.last_speed: dict[str, Any] | None = None
        self.restart_required: list[str] = []
        self._clock_synced: bool | None = None
        self._unsealed: deque[_Record] = deque()  # seals waiting for the outbox, in order (UNSEALED_MAX)
        self._unsealed_reason: str | None = None  # the last reason they failed, logged once per change
        self._seal_lock = threading.RLock()  # one sealer at a time, so the chain keeps the order of events
        self._sealing_closed = False  # set as the outbox closes: what comes later is counted as lost
        self._plate_seq: dict[str, int | None] = {}  # plate pending: violation id -> its seq (None: unsealed)
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._tamper_lock = threading.Lock()
        self._tamper_pending = 0  # cabinet switch changes not sealed yet (rate limit)
        self._tamper_latest = False
        self._tamper_sealed_at = float("-inf")
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._reload_lock = threading.Lock()  # SIGHUP (supervisor) and the console (control thread)
        # Set by signal handlers, read by the supervisor: a handler runs between two bytecodes of the main
        # thread, which may hold an Event's lock inside wait(); Event.set() there would deadlock.
        self._signalled_stop = False
        self._signalled_reload = False
        self._readings: queue.Queue[Reading] = queue.Queue(READINGS_QUEUE)
        self._candidates: queue.Queue[Candidate | None] = queue.Queue(CANDIDATE_QUEUE)
        self._amendments: queue.Queue[tuple[Violation, PlateRead | None, Frame | None]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._cfg_lock = threading.Lock()
        self._given_reader = plate_reader  # a deployer's reader object, or a test's slowed-down one

    # ------------------------------------------------------------------ start-up, top to bottom
    def start(self) -> None:
        cfg = self.cfg
        cfg.device.state_dir.mkdir(parents=True, exist_ok=True)

        # Trust: the signing key and the clock, before anything is measured.
        self.key: SigningKey = self._load_key()
        self.clock = ClockMonitor(cfg.clock, on_jump=self._clock_jumped)
        self.clock.start()  # own thread: chronyc/timedatectl never run on a hot path
        # Models load now: a broken or tampered model (hash != card) fails start-up, not the first violation.
        self.plate_reader = self._given_reader or self._plate_reader()

        # Evidence store: the outbox, then the uplink that drains it.
        try:
            self.outbox = _ObservedOutbox.from_config(
                cfg.device.state_dir / "outbox.sqlite", self.key, cfg.uplink
            )
        except OutboxError as exc:  # unopenable (not corrupt): say why and exit; the file is left alone
            raise StartupError(str(exc)) from exc
        self.outbox.timings = self.timings
        self.ctx = self._packet_context(cfg, self.config_hash)
        if self.outbox.corruption:  # the rebuilt outbox's chain says so itself: the registry learns of it
            self._seal_event("outbox_corrupt", self.outbox.corruption)
        self.uplink = None
        if cfg.uplink.enabled:
            from device.uplink.mqtt import UplinkClient

            self.uplink = UplinkClient(cfg.uplink, cfg.device.id, self.outbox, device=cfg.device)
            self.uplink.start()
            self.heartbeats.register("uplink", 30.0, lambda: self.uplink.heartbeat_ns)

        # Camera: frames into the pre-trigger ring.
        self.ring = FrameRing(cfg.camera.ring_seconds, cfg.camera.fps)
        self.camera = open_camera(
            cfg.camera,
            scenario=self.sim.scenario if self.sim else None,
            epoch_mono_ns=self.sim.epoch_mono_ns if self.sim else None,
        )
        self.camera_thread = CameraThread(self.camera, self.ring)
        self.camera_thread.start()
        self._threads.append(self.camera_thread)
        self.heartbeats.register("camera", 10.0, lambda: self.camera_thread.heartbeat_ns)

        # Evidence building (frames + plate read with a deadline).
        self.snapshots = EarlySnapshots(self.ring, cfg, cfg.tracker.gap_ms * 1_000_000)
        self.evidence = EvidenceBuilder(
            cfg, self.ring, self.plate_reader, on_late_plate=self._late_plate, snapshots=self.snapshots
        )
        self._spawn("evidence", self._evidence_loop, silence_s=30.0)
        self.heartbeats.register("anpr", max(60.0, cfg.anpr.deadline_s * 4), self.evidence.anpr_progress_ns)

        # Measurement: tracker + enforcement, fed by the radar reader.
        self.tracker = PassTracker(cfg.tracker, cfg.site.lanes)
        self.enforcer = Enforcer.for_config(cfg)
        self._spawn("measure", self._measure_loop, silence_s=5.0)
        self.radar = RadarReader(
            cfg.radar, make_driver(cfg.radar), self._on_reading, max_limit_kmh=max_limit_kmh(cfg)
        )
        self.radar.start()
        self._threads.append(self.radar)
        self.heartbeats.register("radar", 5.0, lambda: self.radar.heartbeat_ns)

        # Optional hardware: GPIO (flash, LEDs, tamper) and the console's control socket.
        self.gpio_error: str | None = None
        try:
            self.gpio = self._gpio()
        except Exception as exc:  # cabinet I/O is optional: enforcement goes on, the status says fault
            log.exception("GPIO could not start")
            self.gpio, self.gpio_error = None, f"{type(exc).__name__}: {exc}"
        self.control = self._control_server()

        self._seal_event(
            "startup",
            {
                "firmware": __version__,
                "config_hash": self.config_hash,
                # The settings themselves, in the exact bytes hashed: the registry can check the hash
                # and read every setting behind a measurement offline (no secrets: paths only).
                "config_json": cfgmod.canonical_json(cfg).decode(),
                # A door opened while the unit was off has no tamper event of its own.
                "cabinet_open": (
                    bool(self.gpio.tamper_open)
                    if self.gpio is not None and cfg.gpio.tamper_pin is not None
                    else None
                ),
                "gpio_error": self.gpio_error,
            },
        )
        self.started_mono_ns = time.monotonic_ns()
        self.notifier.ready()
        self.notifier.status("running")
        log.info("started", extra={"stage": "daemon"})

    # ------------------------------------------------------------------ stage loops
    def _on_reading(self, r: Reading) -> None:
        """Radar thread callback: must never block."""
        try:
            self._readings.put_nowait(r)
        except queue.Full:
            self.counters["readings_dropped"] += 1

    def _measure_loop(self) -> None:
        while not self._stop.is_set():
            self.heartbeats.beat("measure")
            batch: list[Reading] = []
            with contextlib.suppress(queue.Empty):
                batch.append(self._readings.get(timeout=0.05))
                while len(batch) < 512:  # a burst is taken in one turn, not one reading per wake-up
                    batch.append(self._readings.get_nowait())
            passes: list[Pass] = []
            for r in batch:
                try:
                    self.snapshots.on_reading(r)
                    passes += self.tracker.push(r)
                except Exception:  # one reading must not stop the stage, and every open pass with it
                    self.counters["readings_failed"] += 1
                    if (
                        self.counters["readings_failed"] in (1, 10, 100)
                        or not self.counters["readings_failed"] % 1000
                    ):
                        log.exception("reading skipped (%d so far): %r", self.counters["readings_failed"], r)
            if batch:
                r = batch[-1]
                self.counters["readings"] += len(batch)
                self.last_speed = {"kmh": r.speed_kmh, "direction": r.direction, "t_mono_ns": r.t_mono_ns}
            now = time.monotonic_ns()
            self.snapshots.poll(now)
            # While readings are still queued, a pass is not ended on wall time: a host stall must
            # not cut one vehicle in two (the tracker times silences on the readings themselves).
            passes += self.tracker.flush(batch[-1].t_mono_ns if batch and not self._readings.empty() else now)
            for p in passes:
                self._on_pass(p)
        for p in self.tracker.close():
            self._on_pass(p)

    def _decide(self, p: Pass) -> tuple[Decision, PacketContext]:
        """The decision and the settings its packet states, from one config. The limit is the one in
        force when the speed was measured (the peak reading), not when the pass ended: a car measured at
        07:29:58 is not judged by a school window that opened while it was still in the beam."""
        when = datetime.fromtimestamp(self.clock.utc_for_mono(p.peak_mono_ns) / 1e9, UTC)
        trusted = self.clock.stamp().synchronized  # an untrusted clock must not select a lower window limit
        with self._cfg_lock:
            return self.enforcer.decide(p, when=when, time_trusted=trusted), self.ctx

    def _on_pass(self, p: Pass) -> None:
        d, context = self._decide(p)
        self.counters["passes"] += 1
        self.stats.add(p, d)
        self.recent_passes.appendleft(
            {
                "pass_id": p.pass_id,
                "t_utc": _iso(self.clock.utc_for_mono(p.end_mono_ns)),
                "lane": p.lane,
                "direction": p.direction.value if p.direction else None,
                "peak_kmh": p.peak_kmh,
                "median_kmh": p.median_kmh,
                "readings": p.count,
                "valid": p.valid,
                "invalid_reasons": list(p.invalid_reasons),
                "limit_kmh": d.limit_kmh,
                "enforced_kmh": d.enforced_kmh,
                "violation": d.violation,
            }
        )
        if not d.violation:
            self.snapshots.release(p)
            return
        self.counters["violations"] += 1
        if self.gpio is not None:
            self.gpio.flash()
        now = time.monotonic_ns()
        pinned, backlog = self._pin(p)
        cand = Candidate(
            pass_=p,
            decision=d,
            decided_mono_ns=now,
            clock=self.clock.stamp(),
            pinned=pinned,
            unpinned_backlog=backlog,
            context=context,
        )
        try:
            self._candidates.put(cand, timeout=1.0)
        except queue.Full:  # never silently: counted (status goes to fault), the log names the pass
            self.counters["violations_dropped"] += 1
            log.error(
                "LOST: evidence queue full (%d waiting): violation for pass %s (%.2f km/h, limit %.0f) not recorded",
                CANDIDATE_QUEUE,
                p.pass_id,
                d.measured_kmh,
                d.limit_kmh,
            )

    def _pin(self, p: Pass) -> tuple[TriggerWindow | None, int | None]:
        """The violation's frames kept at decision: an outbound pass's early snapshot (taken out of the
        snapshots, whose expiry must not reach a violation still queued), else the trigger window the
        ring holds now. None (and the backlog, for the record) when ``PIN_BACKLOG`` violations already
        wait for evidence, so a stalled evidence thread costs images, never the memory every queued
        violation lives in."""
        backlog = self._candidates.qsize()
        if backlog >= PIN_BACKLOG:
            self.snapshots.release(p)  # an outbound pass's snapshot goes too
            self.counters["frames_not_pinned"] += 1
            log.warning(
                "%d violations wait for evidence: pass %s keeps no frames of its own", backlog, p.pass_id
            )
            return None, backlog
        if p.direction is Direction.OUTBOUND:
            return self.snapshots.take(p), None
        return self.evidence.pin(p), None

    def _evidence_loop(self) -> None:
        while True:
            self.heartbeats.beat("evidence")
            self._seal_amendments()
            try:
                cand = self._candidates.get(timeout=0.2)
            except queue.Empty:
                if not self._stop.is_set():
                    continue
                cand = None  # stopping and nothing left: same as the sentinel
            if cand is None:  # stopping: queue drained
                self.evidence.close()  # waits for reads in flight; their amendments are sealed next
                self._seal_amendments()
                return
            try:
                v = self.evidence.build(cand)
            except Exception as exc:  # the evidence path failed outright: seal the measurement alone
                log.exception(
                    "evidence for pass %s failed; sealing the measurement alone", cand.pass_.pass_id
                )
                v = self.evidence.bare(cand, f"evidence failed: {type(exc).__name__}: {exc}")
            self.timings.decided_ns[v.violation_id] = cand.decided_mono_ns
            self._seal_violation(v)  # never raises: what cannot be sealed waits in memory

    # ------------------------------------------------------------------ sealing
    def _seal_violation(self, v: Violation) -> None:
        """Whatever stops the seal (disk full, a locked or failing database) keeps the violation in memory,
        said loudly and retried from the supervisor. It leaves memory by being sealed, or, counted and
        named at ERROR, when the in-memory backlog is full or the outbox closes at shutdown."""
        if v.plate_pending:  # its late read's amendment must name its seq: known once it is sealed
            self._plate_seq.setdefault(v.violation_id, None)
        self._seal_in_order(_Record(lambda: self._seal_violation_now(v), "violation", v.violation_id))

    def _seal_in_order(self, rec: _Record) -> Any:
        """Seals ``rec`` now, unless older records still wait in memory: then it waits behind them, so the
        chain keeps the order things happened in (a plate amendment never gets a seq before its
        violation's). Returns what the seal returned, or None when it waits or is lost."""
        with self._seal_lock:
            if self._sealing_closed:
                self._lost([rec], "the outbox is closed (shutdown)")
                return None
            if self._unsealed:
                self._keep_unsealed(rec, None)
                return None
            try:
                return rec.seal()
            except _ViolationLost:
                self._lost([rec], "the violation it amends was lost")
            except Exception as exc:
                self._keep_unsealed(rec, exc)
            return None

    def _keep_unsealed(self, rec: _Record, exc: Exception | None) -> None:
        """``exc``: why its seal failed; None when it was not tried, waiting behind older records."""
        if len(self._unsealed) >= UNSEALED_MAX:
            self._lost([self._unsealed.popleft()], f"the in-memory backlog is full ({UNSEALED_MAX} waiting)")
        self._unsealed.append(rec)
        if exc is None:
            log.warning("%s waits in memory behind %d older records", rec.what, len(self._unsealed) - 1)
            return
        log.error(
            "%s: %s kept in memory (%d waiting): %s: %s",
            "DISK FULL" if isinstance(exc, OutboxFull) else "NOT SEALED",
            rec.what,
            len(self._unsealed),
            type(exc).__name__,
            exc,
        )

    def _lost(self, recs: list[_Record], why: str) -> None:
        """Records that will never be sealed: counted in the status counters and each named at ERROR."""
        for r in recs:
            if r.kind == "violation":
                self.counters["violations_dropped"] += 1
                self._plate_seq.pop(r.ident, None)  # so its amendment is known to be lost too
            else:
                self.counters["events_dropped"] += 1
            log.error("LOST: %s not sealed: %s", r.what, why)
        if len(recs) > 1:
            log.error("LOST: %d records not sealed: %s", len(recs), why)

    def _seal_violation_now(self, v: Violation) -> None:
        """Raises only when nothing was sealed; bookkeeping after the commit can never cause a re-seal."""
        sealed = self.outbox.seal(violation_payload(v, v.context or self.ctx), kind="violation")
        try:
            self._violation_sealed(v, sealed.seq)
        except Exception:
            log.exception(
                "violation %s sealed seq=%d, but bookkeeping after it failed", v.violation_id, sealed.seq
            )

    def _violation_sealed(self, v: Violation, seq: int) -> None:
        now = time.monotonic_ns()
        if v.violation_id in self._plate_seq:
            self._plate_seq[v.violation_id] = seq
        if v.plate:
            plate = v.plate.text
        else:
            plate = "pending" if v.plate_pending else ("not_read" if v.plate_not_read else None)
        self.timings.sealed_ns[v.violation_id] = now
        self.timings.seq_of[v.violation_id] = seq
        self.counters["sealed"] += 1
        self.recent_violations.appendleft(self._violation_summary(v, seq))
        log.info(
            "violation sealed seq=%d packet=%s speed=%.2f limit=%.0f plate=%s",
            seq,
            v.violation_id,
            v.decision.measured_kmh,
            v.decision.limit_kmh,
            plate,
            extra={"stage": "seal", "packet_id": v.violation_id},
        )
        if self.uplink is not None:
            self.uplink.wake()

    def _retry_unsealed(self, deadline: float | None = None) -> bool:
        """Violations and events that could not be sealed: sealed, oldest first, as soon as the outbox
        takes them. Never raises (it runs in the supervisor loop); each new reason is logged once. A
        full or unusable outbox stops the turn (everything would fail alike); any other failure is that
        record's own, so it goes to the back and the records behind it are not held up by it. Stops at
        ``deadline`` (time.monotonic()). Returns True when the outbox itself refused (the turn stopped).

        The seal lock is taken per record, not per turn: a long backlog must not stall the evidence
        thread for its whole length (what it seals meanwhile queues behind, in order)."""
        for _ in range(len(self._unsealed)):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with self._seal_lock:
                if self._sealing_closed or not self._unsealed:
                    return False
                rec = self._unsealed[0]
                try:
                    rec.seal()
                except _NotSealedYet:  # an amendment behind its violation, which itself went to the back
                    self._unsealed.rotate(-1)
                    continue
                except _ViolationLost:
                    self._unsealed.popleft()
                    self._lost([rec], "the violation it amends was lost")
                    continue
                except Exception as exc:  # still failing: kept, tried again next turn
                    reason = f"{type(exc).__name__}: {exc}"
                    if reason != self._unsealed_reason:
                        self._unsealed_reason = reason
                        log.error("%d records still not sealed: %s", len(self._unsealed), reason)
                    if isinstance(exc, OutboxError | sqlite3.Error):
                        return True
                    self._unsealed.rotate(-1)
                    continue
                self._unsealed.popleft()
                self._unsealed_reason = None
        return False

    def _late_plate(self, v: Violation, plate: PlateRead | None, frame: Frame | None = None) -> None:
        """ANPR thread: hand the late read to the evidence thread, which sealed the violation itself."""
        self._amendments.put((v, plate, frame))
        if self._sealing_closed:  # nothing takes it any more: counted, not left in the queue
            self._drop_amendments("the plate read finished after the outbox closed (shutdown)")

    def _drop_amendments(self, why: str) -> None:
        while True:
            try:
                v, _, _ = self._amendments.get_nowait()
            except queue.Empty:
                return
            self._lost(
                [_Record(lambda: None, "plate_amendment", "", f"(of violation {v.violation_id})")], why
            )

    def _seal_amendments(self) -> None:
        """Late plate reads, sealed as amendments that name their violation's seq: an amendment waits
        (behind it, in memory) while its violation does, so its seq always follows the violation's."""
        while True:
            try:
                v, plate, frame = self._amendments.get_nowait()
            except queue.Empty:
                return
            vid = v.violation_id
            body = {"amends": vid, "amends_seq": None, "plate": _plate_full(plate)}
            images = self.evidence.amendment_images(v, plate, frame)
            payload = event_payload("plate_amendment", body, self.ctx, self.clock.stamp(), images=images)

            def seal(payload: dict = payload, vid: str = vid) -> Any:
                if vid not in self._plate_seq:
                    raise _ViolationLost(vid)
                seq = self._plate_seq[vid]
                if seq is None:
                    raise _NotSealedYet(f"violation {vid} is not sealed yet")
                payload["body"]["amends_seq"] = seq
                sealed = self._seal_event_now("plate_amendment", payload)
                self._plate_seq.pop(vid, None)
                return sealed

            self._seal_in_order(
                _Record(seal, "plate_amendment", payload["packet_id"], f"(of violation {vid})")
            )

    def _seal_event(self, kind: str, body: dict, *, images: list | None = None) -> int | None:
        """The seq it was sealed as; None when it waits in memory (behind older records, or because the
        outbox refused it: retried like violations) or was lost (counted, logged)."""
        payload = event_payload(kind, body, self.ctx, self.clock.stamp(), images=images)  # stamped now
        sealed = self._seal_in_order(
            _Record(lambda: self._seal_event_now(kind, payload), kind, payload["packet_id"])
        )
        return None if sealed is None else sealed.seq

    def _seal_event_now(self, kind: str, payload: dict) -> Any:
        sealed = self.outbox.seal(payload, kind="event")
        if getattr(self, "uplink", None) is not None:
            self.uplink.wake()
        log.info("event %s sealed seq=%d", kind, sealed.seq, extra={"stage": "seal"})
        return sealed

    def _clock_jumped(self, old_offset_ns: int, new_offset_ns: int) -> None:
        if getattr(self, "outbox", None) is None:
            return
        self._seal_event(
            "clock_jump",
            {
                "old_offset_ns": old_offset_ns,
                "new_offset_ns": new_offset_ns,
                "jump_ns": new_offset_ns - old_offset_ns,
            },
        )

    def _watch_clock_sync(self) -> None:
        """A change of synchronisation state is evidence context: it is sealed as an event."""
        synced = self.clock.stamp().synchronized
        if synced != self._clock_synced:
            if self._clock_synced is not None:
                st = self.clock.state
                kind = "clock_synchronised" if synced else "clock_unsynchronised"
                self._seal_event(kind, {"source": st.source, "detail": getattr(st, "detail", "")})
            self._clock_synced = synced

    TAMPER_EVENT_MIN_S = 10.0
    """A bouncing or vibrating door switch must not flood the chain: the first change is sealed at once,
    later ones at most this often, as one event with the latest state and how many changes it covers."""

    def _tamper(self, opened: bool) -> None:
        """GPIO thread: a debounced change of the cabinet switch."""
        now = time.monotonic()
        with self._tamper_lock:
            self._tamper_latest = bool(opened)
            self._tamper_pending += 1
            due = now - self._tamper_sealed_at >= self.TAMPER_EVENT_MIN_S
        if due:
            self._flush_tamper(now)

    def _flush_tamper(self, now: float | None = None) -> None:
        """Seals the pending tamper changes when the interval allows (also called by the supervisor)."""
        now = time.monotonic() if now is None else now
        with self._tamper_lock:
            if not self._tamper_pending or now - self._tamper_sealed_at < self.TAMPER_EVENT_MIN_S:
                return
            body = {"cabinet_open": self._tamper_latest, "changes": self._tamper_pending}
            self._tamper_pending, self._tamper_sealed_at = 0, now
        self._seal_event("tamper", body)

    # ------------------------------------------------------------------ supervision
    def _spawn(self, name: str, target: Callable[[], None], *, silence_s: float) -> None:
        self.heartbeats.register(name, silence_s)
        t = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception:  # a dead stage stops the watchdog pings: systemd restarts us
                log.exception("stage %s died", name)

        return run

    def install_signal_handlers(self) -> None:
        """Plain flags, taken up by the supervisor within one tick (0.5 s): see ``_signalled_stop``."""

        def stop(*_: object) -> None:
            self._signalled_stop = True

        def reload(*_: object) -> None:
            self._signalled_reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def run(self) -> None:
        """Supervisor loop (main thread) until SIGTERM / :meth:`request_stop`."""
        try:
            self._supervise()
        finally:  # whatever ends the loop, open passes and evidence are drained and the outbox closed
            self.stop()

    def _supervise(self) -> None:
        interval = self.notifier.watchdog_interval_s() or 10.0
        next_status = 0.0
        next_stats = time.monotonic() + self.cfg.uplink.stats_interval_s
        while not self._signalled_stop and not self._stop.wait(min(0.5, interval / 3)):
            if self._signalled_stop:
                break
            if self._signalled_reload:
                self._signalled_reload = False
                self._reload.set()
            if self._reload.is_set():
                self._reload.clear()
                self.notifier.reloading()
                try:
                    self.reload(audit=[{"source": "SIGHUP"}])
                except cfgmod.ConfigError as exc:  # the running config stays in force
                    log.error("reload refused: %s", exc)
                    self._seal_event("config_rejected", {"error": str(exc)[:2000]})
                except Exception as exc:  # a defect: said and sealed, and the supervisor (the watchdog) lives
                    log.exception("reload failed")
                    self._seal_event("config_rejected", {"error": f"reload failed: {exc!r}"[:2000]})
                finally:
                    self.notifier.ready()
            watchdog_tick(self.heartbeats, self.notifier)  # WATCHDOG=1 only while every stage is alive
            self._watch_clock_sync()
            self._flush_tamper()
            self._retry_unsealed(time.monotonic() + RETRY_TURN_S)  # the watchdog must not wait for a backlog
            now = time.monotonic()
            try:  # reporting must never take down the loop that pings the watchdog
                if now >= next_status:
                    next_status = now + STATUS_EVERY_S
                    st = self.status()
                    if self.uplink is not None:
                        self.uplink.publish_status(st)
                    if self.gpio is not None:
                        self.gpio.set_status(st["state"])
                if now >= next_stats:
                    next_stats = now + self.cfg.uplink.stats_interval_s
                    snap = self.stats.snapshot(self.clock.stamp().utc_ns)
                    if self.uplink is not None:
                        self.uplink.publish_stats(snap)
            except Exception:
                log.exception("status report failed")

    def stop(self, timeout_s: float = 8.0) -> None:
        """Drain: measurement first (close open passes), then evidence, then one last attempt to seal what
        waits in memory, then give the uplink a moment. Nothing in memory outlives the process: what still
        cannot be sealed when the outbox closes is counted and named at ERROR. Runs once."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self.notifier.stopping()
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        if getattr(self, "radar", None) is not None:
            self.radar.stop(timeout=1.0)
        for t in self._threads:
            if t.name == "measure":
                t.join(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(queue.Full):
            self._candidates.put(None, timeout=1.0)
        for t in self._threads:
            if t.name == "evidence":
                t.join(max(0.1, deadline - time.monotonic() - 2.0))
        if getattr(self, "outbox", None) is not None:
            try:
                self._final_seals(deadline)
            except Exception:  # the rest of the shutdown (and the count of what is lost) must still run
                log.exception("final seals at shutdown failed")
        if getattr(self, "camera_thread", None) is not None:
            self.camera_thread.stop()
        if getattr(self, "control", None) is not None:
            self.control.stop()
        if getattr(self, "gpio", None) is not None:
            self.gpio.close()
        if getattr(self, "uplink", None) is not None:
            self._flush_uplink(min(2.0, max(0.0, deadline - time.monotonic())))
            self.uplink.stop()
        if getattr(self, "outbox", None) is not None:
            self._close_outbox()
        if getattr(self, "clock", None) is not None:
            self.clock.stop()
        log.info("stopped", extra={"stage": "daemon"})

    def _final_seals(self, deadline: float) -> None:
        """What would otherwise die with the process, sealed while there is time: violations the evidence
        thread did not reach (it missed its budget, or died) with their measurement alone, as when their
        evidence fails; late plate reads that finished; everything waiting in memory, oldest first; then
        the shutdown event (behind them, in order)."""
        evidence = getattr(self, "evidence", None)
        while evidence is not None:
            try:
                cand = self._candidates.get_nowait()
            except queue.Empty:
                break
            if cand is None:
                continue
            v = evidence.bare(cand, "shutdown: the evidence thread did not reach it within the stop budget")
            log.error(
                "shutdown: the evidence thread did not reach violation %s (pass %s): its measurement alone",
                v.violation_id,
                cand.pass_.pass_id,
            )
            self.timings.decided_ns[v.violation_id] = cand.decided_mono_ns
            if time.monotonic() < deadline:
                self._seal_violation(v)
            else:
                self._lost(
                    [_Record(lambda: None, "violation", v.violation_id)], "shutdown: no time left to seal it"
                )
        if evidence is not None:
            with contextlib.suppress(Exception):
                self._seal_amendments()
        refused = self._retry_unsealed(deadline)
        if getattr(self, "started_mono_ns", None):
            with contextlib.suppress(Exception):
                self._seal_event("shutdown", {"uptime_s": (time.monotonic_ns() - self.started_mono_ns) / 1e9})
            if self._unsealed and not refused:  # e.g. it waited behind a record that fails on its own
                self._retry_unsealed(deadline)

    def _close_outbox(self) -> None:
        """Closes the outbox; from here on nothing can be sealed, so what is left in memory is lost: each
        one is counted (violations_dropped, events_dropped) and named at ERROR, never dropped silently."""
        with self._seal_lock:
            self._sealing_closed = True
            left = list(self._unsealed)
            self._unsealed.clear()
            self.outbox.close()
        self._lost(left, "shutdown: the outbox did not take it before closing")
        self._drop_amendments("shutdown: the late plate read was not sealed before the outbox closed")

    def _flush_uplink(self, budget_s: float) -> None:
        """Lets the last packets (the shutdown event) reach the registry if it is reachable right now;
        whatever is left stays pending in the outbox and goes out after the restart."""
        self.uplink.wake()
        end = time.monotonic() + budget_s
        while time.monotonic() < end:
            st = self.outbox.stats()
            if st.get("pending", 0) == 0 and st.get("sent", 0) == 0:
                return
            time.sleep(0.05)

    # ------------------------------------------------------------------ reload / status / control
    LIVE_SECTIONS = ("site", "enforcement")
    """Re-applied on reload (the enforcer is rebuilt); other sections hold open state (tracker passes,
    loaded models, ports) and are flagged ``restart_required`` instead."""

    def reload(self, audit: list[dict] | None = None) -> dict:
        """Re-reads the config file; live-applies site/enforcement, flags the rest restart_required.

        What runs afterwards, and what packets and their images say (``config_hash``, device id, radar,
        camera), is the file's live sections with every other section as the daemon started with it:
        a packet must describe the settings in force, not ones waiting for a restart. The event says
        both: ``new_config_*`` is what now runs, ``file_config_hash`` what the file asks for."""
        if self.config_path is None:
            raise StartupError("no config file to reload")
        with self._reload_lock:  # one at a time: an older read of the file must not be swapped in last
            return self._reload_now(audit)

    def _reload_now(self, audit: list[dict] | None) -> dict:
        assert self.config_path is not None
        new = cfgmod.load(self.config_path)  # ConfigError propagates: the old config stays in force
        changed = [
            s
            for s in type(new).model_fields
            if getattr(new, s).model_dump() != getattr(self.cfg, s).model_dump()
        ]
        restart = sorted(set(changed) - set(self.LIVE_SECTIONS))
        try:  # the combination must still be a valid config (validators that span sections)
            running = type(new).model_validate(
                new.model_dump() | {s: getattr(self.cfg, s).model_dump() for s in restart}
            )
        except ValidationError as exc:
            raise cfgmod.ConfigError(
                f"{self.config_path}: the live sections do not fit the running ones ({exc.error_count()} "
                f"errors, first: {exc.errors()[0]['msg']}); restart to apply the file as a whole"
            ) from None
        try:  # built before anything is swapped, so a refusal leaves the running state untouched
            enforcer = Enforcer.for_config(running)
        except Exception as exc:  # e.g. a jurisdiction table that does not load
            raise cfgmod.ConfigError(f"{self.config_path}: enforcement cannot start: {exc}") from exc
        old_hash, new_hash = self.config_hash, cfgmod.config_hash(running)
        ctx = self._packet_context(running, new_hash)
        with self._cfg_lock:
            self.enforcer = enforcer
            self.cfg, self.config_hash, self.ctx = running, new_hash, ctx
            if (tracker := getattr(self, "tracker", None)) is not None:
                tracker.set_lanes(running.site.lanes)  # a pass must meet the lanes it is decided with
            if (evidence := getattr(self, "evidence", None)) is not None:
                evidence.set_config(running)  # the images' data bar shows the site now in force
        if self._radar_rate_falls_short(running):
            log.warning("the new limits need a faster radar sampling rate: restart to apply it")
            restart = sorted({*restart, "radar"})
        self.restart_required = restart
        seq = self._seal_event(
            "config_changed",
            {
                "old_config_hash": old_hash,
                "new_config_hash": self.config_hash,
                "new_config_json": cfgmod.canonical_json(running).decode(),
                "file_config_hash": cfgmod.config_hash(new),
                "sections": changed,
                "restart_required": self.restart_required,
                "audit": audit or [],
            },
        )
        log.info("config reloaded: %s -> %s sections=%s", old_hash[:12], self.config_hash[:12], changed)
        return {"config_hash": self.config_hash, "event_seq": seq, "restart_required": self.restart_required}

    def _radar_rate_falls_short(self, cfg: Config) -> bool:
        """With ``sample_rate = "auto"`` the radar's rate was chosen at start for the highest limit then;
        a limit raised live may need a faster one (a car past the rate's maximum aliases into the other
        direction at a wrong speed), which only a restart sets: flagged, not silently kept."""
        radar = getattr(self, "radar", None)
        if radar is None or cfg.radar.driver != "ops24x" or cfg.radar.sample_rate != "auto":
            return False
        from device.sensors.ops24x import max_speed_kmh, pick_sample_rate, required_max_speed_kmh

        return required_max_speed_kmh(max_limit_kmh(cfg)) > max_speed_kmh(
            pick_sample_rate(radar.max_limit_kmh)
        )

    MAX_AUDIT_RECORDS = 200
    MAX_AUDIT_RECORD_BYTES = 4096

    def seal_console_audit(self, records: object) -> int | None:
        """The console's audit records that no ``config_changed`` event carries (sign-ins, accounts,
        changes saved while the daemon was down), sealed as one ``console_audit`` event. Bounded and
        shape-checked: the console is the network-facing side."""
        if not isinstance(records, list) or not 1 <= len(records) <= self.MAX_AUDIT_RECORDS:
            raise ValueError(f"audit: 'records' must be a list of 1 to {self.MAX_AUDIT_RECORDS} records")
        for r in records:
            if not isinstance(r, dict) or not isinstance(r.get("action", "config"), str):
                raise ValueError("audit: every record must be an object with a string 'action'")
            if len(json.dumps(r, ensure_ascii=False)) > self.MAX_AUDIT_RECORD_BYTES:
                raise ValueError(f"audit: a record is larger than {self.MAX_AUDIT_RECORD_BYTES} bytes")
        return self._seal_event("console_audit", {"records": records})

    def status(self) -> dict:
        stale = self.heartbeats.stale()
        components = {
            "radar": self.radar.health(),
            "camera": self._camera_health(),
            "uplink": self.uplink.health() if self.uplink else {"state": "disabled"},
            "outbox": self.outbox.stats(),
            "anpr": {"state": "ok" if self.plate_reader is not None else "disabled"},
            "gpio": (
                {"state": "fault", "error": self.gpio_error}
                if getattr(self, "gpio_error", None)
                else {"state": "ok" if getattr(self, "gpio", None) is not None else "disabled"}
            ),
        }
        bad = [n for n, c in components.items() if c.get("state") in ("down", "fault")]
        if self._unsealed or components["outbox"].get("disk_full"):
            bad.append("outbox")
        if self.counters["violations_dropped"] or self.counters["events_dropped"]:
            bad.append("records_lost")  # until the next restart, as for a corrupt outbox
        if self.counters["readings_failed"]:
            bad.append("measure")  # a reading the tracker could not take: a defect, said until a restart
        degraded = [n for n, c in components.items() if c.get("state") == "degraded"]
        stamp = self.clock.stamp()
        state = "fault" if (stale or bad) else ("degraded" if degraded or not stamp.synchronized else "ok")
        return {
            "state": state,
            "device_id": self.cfg.device.id,
            "firmware": __version__,
            "config_hash": self.config_hash,
            "restart_required": self.restart_required,
            "uptime_s": (time.monotonic_ns() - self.started_mono_ns) / 1e9,
            "stale_stages": stale,
            "components": components,
            "counters": dict(self.counters),
            "unsealed_in_memory": len(self._unsealed),
            "clock": {
                "synchronized": stamp.synchronized,
                "source": stamp.source,
                "offset_ns": stamp.offset_ns,
                "max_error_ns": stamp.max_error_ns,
                "utc_ns": stamp.utc_ns,
            },
            "disk": disk_free(self.cfg.device.state_dir),
            "cpu_temp_c": cpu_temperature_c(),
            "tamper": {"cabinet_open": bool(self.gpio.tamper_open)} if self.gpio is not None else None,
            "live_speed": self.last_speed,
        }

    def _camera_health(self) -> dict:
        """The backend's view plus the ring's: no frame for 2 s means the camera is lost."""
        h = self.camera_thread.health()
        latest = self.ring.latest()
        age = None if latest is None else (time.monotonic_ns() - latest.t_mono_ns) / 1e9
        h["last_frame_age_s"] = age
        h["frame_layout"] = None if latest is None else latest.layout  # what the ring holds (memory)
        if age is None or age > 2.0:
            h["state"] = "down"
        return h

    # ------------------------------------------------------------------ builders for optional parts
    def _load_key(self) -> SigningKey:
        path = default_key_path(self.cfg)
        try:
            return load_signing_key(path)
        except KeyFileError as exc:
            raise StartupError(f"{exc}; to create one: radarcam keys init --path {path}") from None

    def _packet_context(self, cfg: Config, config_hash: str) -> PacketContext:
        models = self.plate_reader.models() if getattr(self, "plate_reader", None) is not None else None
        return PacketContext(
            device_id=cfg.device.id,
            firmware_version=__version__,
            config_hash=config_hash,
            key_id=self.key.key_id,
            site=cfg.site,
            radar=cfg.radar,
            anpr_models=models,
        )

    def _plate_reader(self) -> object | None:
        if not self.cfg.anpr.enabled:
            return None
        from device.anpr.reader import PlateReader

        # Plates are decoded over the site's jurisdiction and any other configured country (foreign
        # cars at a border), never forced to the jurisdiction alone.
        j = self.cfg.site.jurisdiction
        countries = [j, *(c for c in self.cfg.anpr.countries if c != j)]
        return PlateReader(self.cfg.anpr.model_copy(update={"countries": countries}))

    def _gpio(self) -> Any:
        if not self.cfg.gpio.enabled:
            return None
        from device.sensors.gpio import UnitGpio

        g = UnitGpio(self.cfg.gpio)
        g.on_tamper = self._tamper
        return g

    def _control_server(self) -> Any:
        from device.control import ControlServer

        path = self.cfg.device.runtime_dir / "control.sock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("no control socket (%s): console unavailable", exc)
            return None
        from device.control_handlers import handlers_for

        srv = ControlServer(path, handlers_for(self))
        srv.start()
        return srv

    def _violation_summary(self, v: Violation, seq: int) -> dict:
        """What the console's dashboard shows; a small thumbnail keeps its 2 s poll light."""
        img = next((i for i in v.images if i.role == "overview"), v.images[0] if v.images else None)
        return {
            "packet_id": v.violation_id,
            "seq": seq,
            "t_utc": _iso(v.clock.utc_ns),
            "lane": v.pass_.lane,
            "direction": v.pass_.direction.value if v.pass_.direction else None,
            "speed_kmh": v.decision.enforced_kmh,
            "measured_kmh": v.decision.measured_kmh,
            "limit_kmh": v.decision.limit_kmh,
            "degree": v.decision.degree,
            "fine": [v.decision.fine_min, v.decision.fine_max, v.decision.currency],
            "plate": _plate_dict(v.plate),
            "plate_pending": v.plate_pending,
            "thumbnail_jpeg_b64": thumbnail_b64(img.jpeg) if img is not None else None,
        }


def _iso(utc_ns: int) -> str:
    return datetime.fromtimestamp(utc_ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def thumbnail_b64(jpeg: bytes, width: int = 320) -> str | None:
    import base64

    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    h = max(1, round(img.shape[0] * width / img.shape[1]))
    ok, buf = cv2.imencode(
        ".jpg", cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 70]
    )
    return base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


class LogRing(logging.Handler):
    """The last N log lines in memory, for the console's log download (journald has the rest)."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:
            self.handleError(record)


def _plate_full(p: PlateRead | None) -> dict | None:
    """Every field of a late plate read, for the amendment packet."""
    if p is None:
        return None
    from dataclasses import asdict

    d = asdict(p)
    d["char_confidences"] = list(p.char_confidences)
    d["box"] = list(p.box) if p.box else None
    return d


def _plate_dict(p: PlateRead | None) -> dict | None:
    if p is None:
        return None
    return {"text": p.text, "text_latin": p.text_latin, "country": p.country, "confidence": p.confidence}


def configure_logging(level: str = "INFO") -> LogRing:
    """Structured one-line JSON logs on stdout: journald keeps them, `journalctl -o cat` shows them."""

    class _Json(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            d = {
                "t": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
                "level": record.levelname,
                "logger": record.name,
                "stage": getattr(record, "stage", record.threadName),
                "msg": record.getMessage(),
            }
            if getattr(record, "packet_id", None):
                d["packet_id"] = record.packet_id
            if record.exc_info:
                d["exc"] = self.formatException(record.exc_info)
            return json.dumps(d, ensure_ascii=False, default=str)

    h = logging.StreamHandler()
    h.setFormatter(_Json())
    ring = LogRing()
    ring.setFormatter(_Json())
    root = logging.getLogger()
    root.handlers[:] = [h, ring]
    root.setLevel(level)
    return ring
