"""From an enforcement decision to a complete :class:`Violation`: frames, plate read, evidence JPEGs.

Runs on the evidence thread, never on the radar thread. The plate read gets a deadline: a slow ANPR
backlog delays the packet, never the measurement. When the deadline passes the violation is sealed with
``plate_pending`` and the read, when it arrives, is sealed as a signed amendment that names the packet.
A read that is never made (ANPR backlog full, reader failed) is not "pending": ``plate_not_read`` says
why, and the packet's plate says ``not_read`` (see docs/packet.md).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from device.capture.evidence import DataBar, EvidenceError, build_evidence, period_of_times, select_frames
from device.capture.ring import FrameRing
from device.config import Config, SiteConfig
from device.model import ClockStamp, Decision, Direction, Frame, Pass, PlateRead, Reading, Violation
from device.uplink.packet import PacketContext

log = logging.getLogger("radarcam.evidence")

ANPR_BACKLOG = 32
"""Plate reads queued or running at once; a violation beyond them gets no read (plate ``not_read``)."""


@dataclass(frozen=True)
class Candidate:
    """A pass the enforcer called a violation, with the moment it was decided."""

    pass_: Pass
    decision: Decision
    decided_mono_ns: int
    clock: ClockStamp
    pinned: TriggerWindow | None = None
    """The trigger window's frames the ring held at decision time (:meth:`EvidenceBuilder.pin`); for an
    outbound pass, its early snapshot, taken out of :class:`EarlySnapshots` at decision so that their
    expiry cannot take it from a violation still waiting for its evidence."""
    unpinned_backlog: int | None = None
    """Set when no frames were pinned because this many violations were already waiting for evidence."""
    context: PacketContext | None = None
    """The settings in force at the decision, taken with the enforcer that made it: a reload while the
    violation waits for its evidence must not put the new site on its images or in its packet."""


@dataclass(frozen=True)
class TriggerWindow:
    """Frames taken from the ring for one trigger before it overwrites them. Only the frames the
    evidence can be chosen from are kept (``kept``: the trigger frame and the sharpest others, as
    ``select_frames`` picks them), so a vehicle waiting for its evidence holds 4 frames, not 24 at
    30 fps; ``seen`` describes the whole window as it was."""

    t_ns: int
    kept: list[Frame]
    seen: tuple[tuple[int, int], ...]
    """``(frame_no, t_mono_ns)`` of every frame the window held, in time order: the packet's
    ``frames_in_window``, whether frames after it are still to come, and the frame period that
    ``select_frames`` bounds the trigger frame's timing error by (the whole window's, not that of the
    few frames kept)."""


def take_window(ring: FrameRing, t: int, cfg: Config) -> TriggerWindow:
    """The trigger window ``[t - pre_trigger, t + post_trigger]`` as the ring holds it now."""
    cam = cfg.camera
    window = ring.window(t - cam.pre_trigger_ms * 1_000_000, t + cam.post_trigger_ms * 1_000_000)
    return TriggerWindow(
        t, _keep_for_evidence(window, t, cfg), tuple((f.frame_no, f.t_mono_ns) for f in window)
    )


def trigger_ns(p: Pass, capture_offset_m: float, speed_kmh: float, rear_plate_offset_m: float = 0.0) -> int:
    """When the vehicle was at the camera's capture point.

    A Doppler radar measures no range, but the beam's near edge is a known place: an inbound vehicle
    leaves the beam there (pass end), an outbound one enters there (pass start). The capture point is
    ``capture_offset_m`` further up the road, crossed ``offset / speed`` before (inbound) or after
    (outbound, plus ``rear_plate_offset_m``: we see its rear). The frame nearest this instant is the
    first evidence image.
    """
    v = max(speed_kmh / 3.6, 0.5)
    if p.direction is Direction.OUTBOUND:
        return p.start_mono_ns + int((capture_offset_m + rear_plate_offset_m) / v * 1e9)
    return p.end_mono_ns - int(capture_offset_m / v * 1e9)


def utc_of(clock: ClockStamp, mono_ns: int) -> int:
    """Wall-clock time of a monotonic instant, through the clock stamp taken with it."""
    return clock.utc_ns + (mono_ns - clock.mono_ns)


def evidence_candidates(cfg: Config) -> int:
    """How many frames a violation's plate read and images are chosen from (the trigger frame first)."""
    return max(cfg.camera.evidence_frames, 4)


def _keep_for_evidence(window: list[Frame], t: int, cfg: Config) -> list[Frame]:
    """The frames of ``window`` that ``select_frames`` picks, in time order. When it cannot pick (no
    frame near enough the trigger), only the nearest frame: the evidence thread reports that same
    problem from it, and the rest of the window (25 frames, ~78 MB at 1080p) is not held for nothing."""
    try:
        picked = select_frames(window, t, evidence_candidates(cfg)) if window else []
    except EvidenceError:
        return [min(window, key=lambda f: (abs(f.t_mono_ns - t), f.t_mono_ns))]
    return sorted(picked, key=_time)


def _time(f: Frame) -> int:
    return f.t_mono_ns


class EarlySnapshots:
    """Frames for outbound vehicles, kept before the ring overwrites them.

    An outbound vehicle passes the capture point soon after its pass starts, but the pass only ends
    when it leaves the far edge of the beam, seconds later: longer than a ring sized for inbound traffic
    holds at 1080p. So the measurement thread arms a snapshot at the first reading of each outbound pass
    (its speed is already known) and, once the post-trigger frames exist, keeps references to the
    window's frames (no pixel copy). The evidence thread takes them when the pass completes.

    Only the frames the evidence can use are kept: the trigger frame and the sharpest others, exactly
    the ``evidence_candidates`` that :meth:`EvidenceBuilder.build` would pick from the whole window (it
    picks the same ones again from these). Every outbound vehicle is snapshotted before its speed is
    judged, so at 30 fps this keeps 4 frames instead of 24 per vehicle in the beam.
    """

    def __init__(self, ring: FrameRing, cfg: Config, gap_ns: int) -> None:
        self._ring = ring
        self._cfg = cfg
        self._gap_ns = gap_ns
        self._last_reading_ns: int | None = None
        self._armed: list[tuple[int, int]] = []  # (pass start, trigger)
        self._snaps: dict[int, TriggerWindow] = {}  # by pass start
        self._lock = threading.Lock()
        self._report_t: int | None = None  # the report (one line's objects share its time) being read
        self._report_dirs: set[Direction | None] = set()

    def on_reading(self, r: Reading) -> None:
        """Arms on the strongest outbound object of each report, as the tracker follows it: not object 0
        of the report, which is the stronger of both directions (an outbound car beside a truck coming
        in is object 1 for its whole pass, and got no snapshot)."""
        if r.t_mono_ns != self._report_t:
            self._report_t, self._report_dirs = r.t_mono_ns, set()
        strongest = r.direction not in self._report_dirs
        self._report_dirs.add(r.direction)
        if r.direction is not Direction.OUTBOUND or not strongest:
            return
        last = self._last_reading_ns
        self._last_reading_ns = r.t_mono_ns
        if last is not None and r.t_mono_ns - last <= self._gap_ns:
            return  # same pass
        cam = self._cfg.camera
        dt = int((cam.capture_offset_m + cam.rear_plate_offset_m) / max(r.speed_kmh / 3.6, 0.5) * 1e9)
        self._armed.append((r.t_mono_ns, r.t_mono_ns + dt))

    def poll(self, now_ns: int) -> None:
        post = self._cfg.camera.post_trigger_ms * 1_000_000
        due = [a for a in self._armed if a[1] + post <= now_ns]
        if not due:
            return
        self._armed = [a for a in self._armed if a[1] + post > now_ns]
        # chosen outside the lock: ranking sharpness takes milliseconds, and take() must not wait for it
        taken = [(start, take_window(self._ring, t, self._cfg)) for start, t in due]
        with self._lock:
            self._snaps.update(taken)
            # A pass lasts at most tracker.max_pass_s: older snapshots belong to passes already decided.
            horizon = int((self._cfg.tracker.max_pass_s + 2.0) * 1e9) + self._gap_ns
            for k in [k for k in self._snaps if now_ns - k > horizon]:
                del self._snaps[k]

    def release(self, p: Pass) -> None:
        """A pass that is not a violation: let its frames go now (at 1080p they are ~6 MB each)."""
        if p.direction is Direction.OUTBOUND:
            self.take(p)

    def take(self, p: Pass) -> TriggerWindow | None:
        """The pass's snapshot, removed."""
        with self._lock:
            if not self._snaps:
                return None
            key = min(self._snaps, key=lambda k: abs(k - p.start_mono_ns))
            if abs(key - p.start_mono_ns) > self._gap_ns:
                return None
            return self._snaps.pop(key)


class EvidenceBuilder:
    """Collects frames from the ring and reads the plate within the deadline."""

    def __init__(
        self,
        cfg: Config,
        ring: FrameRing,
        plate_reader: object | None,
        *,
        on_late_plate: Callable[[Violation, PlateRead | None, Frame | None], None],
        snapshots: EarlySnapshots | None = None,
    ) -> None:
        self._cfg = cfg
        self._ring = ring
        self._snapshots = snapshots
        self._reader = plate_reader
        self._on_late_plate = on_late_plate
        # One ANPR worker: the model uses its own threads; a queue of futures keeps order.
        self._anpr = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="anpr")
        self._anpr_busy = threading.BoundedSemaphore(ANPR_BACKLOG)
        self._anpr_busy_since: int | None = None

    def set_config(self, cfg: Config) -> None:
        """The running config after a reload (its live sections: the site on the data bar)."""
        self._cfg = cfg

    def anpr_progress_ns(self) -> int:
        """Heartbeat probe: an idle ANPR worker is alive; a busy one since the read it is stuck in."""
        busy = self._anpr_busy_since
        return time.monotonic_ns() if busy is None else busy

    def pin(self, p: Pass) -> TriggerWindow:
        """On the measuring thread, as the violation is decided: references to the trigger window's frames
        the ring holds now (no pixel copy), those the evidence can be chosen from. The evidence thread
        works through violations one at a time and may wait seconds for a plate read; by the time it
        reaches the next one the ring (about 2 s) may have overwritten that vehicle's frames.

        Keeping only the candidates loses nothing: the frames chosen later from the pinned ones and the
        post-trigger frames that arrive after the decision are the ones chosen from the whole window (the
        trigger frame is the nearest of either part, the sharpest others are among each part's sharpest)."""
        cam = self._cfg.camera
        return take_window(
            self._ring, trigger_ns(p, cam.capture_offset_m, p.median_kmh, cam.rear_plate_offset_m), self._cfg
        )

    def frames_for(
        self, p: Pass, pinned: TriggerWindow | None = None
    ) -> tuple[int, list[Frame], int, int | None]:
        """The trigger instant, its window's frames and how many frames the window held: an outbound
        pass's early snapshot (which kept only the frames evidence is chosen from), else the frames
        ``pinned`` at decision time joined with those the ring holds now (post-trigger frames that did not
        exist yet when the pass was decided); and the whole window's frame period (None: that of the
        frames returned)."""
        cam = self._cfg.camera
        if p.direction is Direction.OUTBOUND:
            # its snapshot, taken into the candidate at decision (else still with the snapshots)
            snap = pinned if pinned is not None else (self._snapshots.take(p) if self._snapshots else None)
            if snap is not None:
                return snap.t_ns, snap.kept, len(snap.seen), period_of_times([t for _, t in snap.seen])
            pinned = None
        t = trigger_ns(p, cam.capture_offset_m, p.median_kmh, cam.rear_plate_offset_m)
        t1 = t + cam.post_trigger_ms * 1_000_000
        period = 1_000_000_000 // max(cam.fps, 1)
        if pinned is not None and pinned.kept and pinned.seen[-1][1] >= t1 - period:
            # the whole window was already there
            return t, pinned.kept, len(pinned.seen), period_of_times([ts for _, ts in pinned.seen])
        # Wait (briefly) until the post-trigger frames exist.
        deadline = time.monotonic_ns() + 2 * cam.post_trigger_ms * 1_000_000 + 500_000_000
        while time.monotonic_ns() < deadline:
            latest = self._ring.latest()
            if latest is not None and latest.t_mono_ns >= t1:
                break
            time.sleep(0.01)
        late = self._ring.window(t - cam.pre_trigger_ms * 1_000_000, t1)
        if pinned is None or not pinned.kept:
            return t, late, len(late), None
        merged = sorted(
            ({f.frame_no: f for f in pinned.kept} | {f.frame_no: f for f in late}).values(), key=_time
        )
        seen = dict(pinned.seen) | {f.frame_no: f.t_mono_ns for f in late}
        return t, merged, len(seen), period_of_times(sorted(seen.values()))

    def _read_plate(
        self, frames: list[Frame], roi: tuple[float, float, float, float] | None = None
    ) -> tuple[PlateRead | None, Frame | None]:
        """The plate in the lane's region (``roi``), decoded over the reader's countries: the site's
        jurisdiction and the others configured in ``anpr.countries`` (a foreign car is read as one)."""
        self._anpr_busy_since = time.monotonic_ns()
        try:
            if self._reader is None or not frames:
                return None, None
            read = self._reader.read_frames([f.gray() for f in frames], roi=roi)  # type: ignore[attr-defined]
            if read is None:
                return None, None
            idx = read.frame_no if read.frame_no is not None and 0 <= read.frame_no < len(frames) else 0
            best = frames[idx]
            read = replace(read, frame_no=best.frame_no)
            return read, best
        finally:
            self._anpr_busy_since = None
            self._anpr_busy.release()

    def _site(self, context: PacketContext | None) -> SiteConfig:
        """The site a violation was decided at: its own context's, else the one running now."""
        return context.site if context is not None else self._cfg.site

    def build(self, cand: Candidate) -> Violation:
        cfg = self._cfg
        site = self._site(cand.context)
        p = cand.pass_
        vid = str(uuid.uuid4())
        t, window, in_window, period = self.frames_for(p, cand.pinned)
        evidence_problem: str | None = None
        try:
            picked = select_frames(window, t, evidence_candidates(cfg), period_ns=period) if window else []
        except EvidenceError as exc:  # no frame of that instant: keep the measurement, say why
            picked, evidence_problem = [], str(exc)
        if not window:
            evidence_problem = (
                "no camera frames in the trigger window (camera lost?)"
                if cand.unpinned_backlog is None
                else f"trigger window overwritten: {cand.unpinned_backlog} violations were waiting for evidence, "
                "so its frames were not kept at decision"
            )
        if evidence_problem:
            log.warning("violation %s without images: %s", vid, evidence_problem)

        plate: PlateRead | None = None
        plate_frame: Frame | None = None
        plate_note: str | None = None
        not_read: str | None = None  # why no read was made, when none was: never "pending"
        pending = False
        future: cf.Future | None = None
        if cfg.anpr.enabled and self._reader is not None and picked:
            if self._anpr_busy.acquire(blocking=False):
                lane = next((ln for ln in site.lanes if ln.id == cand.decision.lane), None)
                future = self._anpr.submit(self._read_plate, picked, lane.roi if lane else None)
                try:
                    plate, plate_frame = future.result(timeout=cfg.anpr.deadline_s)
                    future = None
                except cf.TimeoutError:
                    pending = True
                except Exception as exc:  # a failing reader costs the plate, never the violation
                    log.exception("plate read failed for violation %s", vid)
                    future, plate_note = None, f"plate read failed: {type(exc).__name__}: {exc}"
                    not_read = "read_failed"
            else:  # no read is queued, so none will follow: the packet must not promise one
                log.error(
                    "ANPR backlog full (%d reads): violation %s sealed with no plate read", ANPR_BACKLOG, vid
                )
                not_read = "anpr_backlog_full"
                plate_note = f"ANPR backlog full ({ANPR_BACKLOG} reads queued or running): no read was made"

        # The trigger frame stays first (it is the instant the measurement refers to; portals show
        # images[0]); the frame the plate was read in joins the set, replacing the last, if not in it.
        frames = picked[: cfg.camera.evidence_frames]
        if plate_frame is not None and all(f.frame_no != plate_frame.frame_no for f in frames):
            frames = [*frames[: max(1, len(frames) - 1)], plate_frame]
        bar = self._bar(vid, p, cand.decision, cand.clock, t, site)
        images: list = []
        failed: list[str] = []
        if frames:
            try:
                images = build_evidence(
                    frames,
                    bar,
                    clock=lambda mono: utc_of(cand.clock, mono),
                    # the box is where the plate is in *its* frame: the close-up is cut from that frame only
                    plate_box=(
                        (lambda f: plate.box if f.frame_no == plate_frame.frame_no else None)
                        if plate is not None and plate_frame is not None
                        else None
                    ),
                    quality=cfg.camera.jpeg_quality,
                    problems=failed,
                )
            except Exception as exc:  # rendering/encoding failed: the measurement is still sealed
                log.exception("evidence images failed for violation %s", vid)
                evidence_problem = f"evidence images failed: {type(exc).__name__}: {exc}"
            if failed:  # some images made, some not: each named (the trigger frame may be among them)
                log.error("evidence images of violation %s left out: %s", vid, "; ".join(failed))
                evidence_problem = "evidence images left out: " + "; ".join(failed)
        violation = Violation(
            violation_id=vid,
            pass_=p,
            decision=cand.decision,
            clock=cand.clock,
            images=tuple(images),
            plate=plate,
            plate_pending=pending,
            plate_not_read=not_read,
            extra={
                "trigger_mono_ns": t,
                "decided_mono_ns": cand.decided_mono_ns,
                "frames_in_window": in_window,
                "evidence_problem": evidence_problem,
            }
            | ({"plate_problem": plate_note} if plate_note else {}),
            context=cand.context,
        )
        if future is not None:
            future.add_done_callback(lambda f, v=violation: self._late(v, f))
        return violation

    def _bar(self, vid: str, p: Pass, d: Decision, clock: ClockStamp, t: int, site: SiteConfig) -> DataBar:
        cfg = self._cfg
        return DataBar(
            utc_ns=utc_of(clock, t),
            clock_synchronized=clock.synchronized,
            clock_source=clock.source,
            measured_kmh=d.measured_kmh,
            enforced_kmh=d.enforced_kmh,
            limit_kmh=d.limit_kmh,
            direction=p.direction.value if p.direction else "unknown",
            site_id=site.id,
            site_name=site.name,
            site_name_local=site.name_local,
            device_id=cfg.device.id,
            packet_id=vid,
            lane=p.lane,
        )

    def amendment_images(self, v: Violation, plate: PlateRead | None, frame: Frame | None) -> list:
        """The frame a late read comes from, with its data bar, and the plate close-up: the violation was
        sealed before the read existed, so its images may not include that frame; the amendment must
        show what it claims."""
        if plate is None or frame is None:
            return []
        bar = self._bar(
            v.violation_id,
            v.pass_,
            v.decision,
            v.clock,
            int(v.extra.get("trigger_mono_ns", frame.t_mono_ns)),
            self._site(v.context),
        )
        try:
            return build_evidence(
                [frame],
                bar,
                clock=lambda mono: utc_of(v.clock, mono),
                plate_box=plate.box,
                quality=self._cfg.camera.jpeg_quality,
            )
        except Exception:  # the amendment is still sealed, with the read alone
            log.exception("images for the late plate of %s failed", v.violation_id)
            return []

    def bare(self, cand: Candidate, problem: str) -> Violation:
        """The violation with its measurement only, for when building its evidence failed outright: a
        fault in the camera path must never cost the record of the offence."""
        return Violation(
            violation_id=str(uuid.uuid4()),
            pass_=cand.pass_,
            decision=cand.decision,
            clock=cand.clock,
            images=(),
            plate=None,
            plate_pending=False,
            extra={"decided_mono_ns": cand.decided_mono_ns, "evidence_problem": problem},
            context=cand.context,
        )

    def _late(self, v: Violation, f: cf.Future) -> None:
        frame: Frame | None = None
        try:
            plate, frame = f.result()
        except Exception:  # the amendment still tells the registry the read failed
            log.exception("late plate read failed for %s", v.violation_id)
            plate = None
        self._on_late_plate(v, plate, frame)

    def close(self) -> None:
        self._anpr.shutdown(wait=True, cancel_futures=False)
