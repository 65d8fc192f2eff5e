"""Which frames a violation keeps: its trigger window survives a slow plate read of the violation before
it (the evidence thread is serial), and the trigger frame stays the first image."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from device.capture.evidence import EvidenceError, select_frames
from device.capture.ring import FrameRing
from device.config import Config
from device.model import ClockStamp, Decision, Direction, Frame, Pass, PlateRead, Reading
from device.violations import (
    Candidate,
    EarlySnapshots,
    EvidenceBuilder,
    TriggerWindow,
    evidence_candidates,
    trigger_ns,
)


class SlowReader:
    """A real-time stand-in for a plate read that takes longer than the ring holds (a loaded Pi)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def read_frames(self, images, country=None, roi=None):
        time.sleep(self.seconds)
        return PlateRead("12345-A-6", "12345-A-6", "MA", 0.9, frame_no=0)


@pytest.fixture
def fed_ring():
    """A 1 s ring fed at 30 fps by a thread, like the camera thread feeds the real one."""
    ring = FrameRing(1.0, 30.0)
    stop = threading.Event()

    def feed() -> None:
        """Frames on a 30 fps timeline: a thread held up by a loaded machine catches up (several frames
        with their own capture times), so the ring always spans its 1 s up to now, as a camera's would."""
        t0, n, period = time.monotonic_ns(), 0, 1_000_000_000 // 30
        while not stop.is_set():
            now = time.monotonic_ns()
            while t0 + n * period <= now:
                ring.push(Frame(t0 + n * period, n, np.full((48, 64, 3), n % 250, np.uint8)))
                n += 1
            time.sleep(0.005)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    time.sleep(1.5)
    yield ring
    stop.set()
    t.join(2)


def _candidate(end_ns: int, pinned=None) -> Candidate:
    p = Pass(
        "p", end_ns - 10**9, end_ns, Direction.INBOUND, (), 90.0, end_ns - 2 * 10**8, 90.0, 0.5, lane="1"
    )
    d = Decision(True, "MA", "1", "car", 60.0, 90.0, 1.0, 0.0, 90.0, 3.0, 87.0, 27.0)
    return Candidate(p, d, end_ns, ClockStamp(1_700_000_000_000_000_000, end_ns, True, "ntp"), pinned)


@pytest.mark.parametrize("pin", [True, False])
def test_second_violation_keeps_its_frames_only_when_pinned_at_decision(fed_ring, pin):
    cfg = Config()
    cfg.camera.ring_seconds = 1.0
    b = EvidenceBuilder(cfg, fed_ring, SlowReader(1.5), on_late_plate=lambda *a: None)
    try:
        time.sleep(cfg.camera.post_trigger_ms / 1000 + 0.1)  # both trigger windows are in the ring now
        now = time.monotonic_ns()
        ends = (now - 300_000_000, now)  # two vehicles 0.3 s apart, decided as they leave the beam
        cands = [_candidate(e, b.pin(_candidate(e).pass_) if pin else None) for e in ends]
        built = [b.build(c) for c in cands]  # what the evidence loop does: one after the other
    finally:
        b.close()
    assert built[0].images, "the first violation always has its frames"
    if pin:
        assert built[1].images and built[1].extra["evidence_problem"] is None
        assert built[1].extra["frames_in_window"] >= 10
    else:  # the failure the pin prevents: the 1.5 s read outlived the 1 s ring
        assert not built[1].images and "no camera frames" in built[1].extra["evidence_problem"]


class LastFrameReader:
    """Reads the plate best in the last of the frames it is given (far from the trigger)."""

    def read_frames(self, images, country=None, roi=None):
        return PlateRead("12345-A-6", "12345-A-6", "MA", 0.9, box=(5, 5, 20, 10), frame_no=len(images) - 1)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_trigger_frame_stays_first_and_the_plate_frame_joins(n):
    """The frame nearest the trigger is the one the measurement refers to and the one portals show
    (images[0]); the plate-read frame used to displace it (with evidence_frames=1 it was dropped)."""
    cfg = Config()
    cfg.camera.evidence_frames = n
    ring = FrameRing(cfg.camera.ring_seconds, cfg.camera.fps)
    now, period = time.monotonic_ns(), round(1e9 / 30)
    rng = np.random.default_rng(1)
    for i in range(60):  # textured frames now and then, so frame selection has something to prefer
        img = (
            rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            if i % 7 == 0
            else np.full((48, 64, 3), 128, np.uint8)
        )
        ring.push(Frame(now - (59 - i) * period, i, img))
    b = EvidenceBuilder(cfg, ring, LastFrameReader(), on_late_plate=lambda *a: None)
    try:
        c = _candidate(now - 600_000_000)
        v = b.build(Candidate(c.pass_, c.decision, now, c.clock, b.pin(c.pass_)))
    finally:
        b.close()
    t = v.extra["trigger_mono_ns"]
    overviews = [im for im in v.images if im.role == "overview"]
    nearest = min(ring.window(t - 10**9, t + 10**9), key=lambda f: abs(f.t_mono_ns - t))
    assert overviews[0].frame_no == nearest.frame_no
    assert len(overviews) == max(n, 2)  # the plate frame is added (n=1) or takes the last place
    plate = [im for im in v.images if im.role == "plate"]
    assert len(plate) == 1 and plate[0].frame_no == v.plate.frame_no == overviews[-1].frame_no
    assert plate[0].frame_no != overviews[0].frame_no  # the read was far from the trigger


class BrokenReader:
    def read_frames(self, images, country=None, roi=None):
        raise RuntimeError("interpreter failed")


def _ring_with(images) -> FrameRing:
    ring = FrameRing(2.0, 30.0)
    now, period = time.monotonic_ns(), round(1e9 / 30)
    for i, img in enumerate(images):
        ring.push(Frame(now - (len(images) - 1 - i) * period, i, img))
    return ring


def test_a_failing_plate_read_costs_the_plate_not_the_violation():
    """An exception from the reader used to escape build(): the evidence loop logged it and the
    violation was never sealed."""
    cfg = Config()
    ring = _ring_with([np.full((48, 64, 3), i, np.uint8) for i in range(60)])
    b = EvidenceBuilder(cfg, ring, BrokenReader(), on_late_plate=lambda *a: None)
    try:
        c = _candidate(time.monotonic_ns() - 600_000_000)
        v = b.build(Candidate(c.pass_, c.decision, c.decided_mono_ns, c.clock, b.pin(c.pass_)))
    finally:
        b.close()
    assert v.plate is None and not v.plate_pending and v.images
    assert "plate read failed: RuntimeError: interpreter failed" in v.extra["plate_problem"]
    assert v.decision.violation and v.pass_.peak_kmh == 90.0


def _violation_without_anpr():
    """A violation built from 60 frames in a ring, with no plate reader (the images alone)."""
    cfg = Config()
    cfg.anpr.enabled = False
    ring = _ring_with([np.full((48, 64, 3), i, np.uint8) for i in range(60)])
    b = EvidenceBuilder(cfg, ring, None, on_late_plate=lambda *a: None)
    try:
        c = _candidate(time.monotonic_ns() - 600_000_000)
        return b.build(Candidate(c.pass_, c.decision, c.decided_mono_ns, c.clock, b.pin(c.pass_)))
    finally:
        b.close()


def test_images_that_cannot_be_built_leave_a_violation_without_images(monkeypatch):
    """Rendering or encoding failing (injected here: the data bar's font gone from the disk) must not lose
    the measurement: the violation is sealed without images and says why."""
    import device.violations as violations

    def no_font(*a, **k):
        raise OSError("cannot open resource: DejaVuSans.ttf")

    monkeypatch.setattr(violations, "build_evidence", no_font)
    v = _violation_without_anpr()
    assert v.images == () and "evidence images failed: OSError" in v.extra["evidence_problem"]
    assert v.decision.violation and v.extra["frames_in_window"] > 0


def test_one_frame_whose_image_fails_costs_that_image_not_the_others(monkeypatch):
    """Before, one exception in any frame (or in the plate close-up) threw away every image already
    made: the violation was sealed with none. Now that frame is left out and named."""
    import device.capture.evidence as evidence

    real = evidence.render_databar
    bad_frame: list[int] = []

    def fails_once(bar, width, frame_no=None):
        if not bad_frame:
            bad_frame.append(frame_no)
            raise OSError("cannot open resource: DejaVuSans.ttf")
        return real(bar, width, frame_no=frame_no)

    monkeypatch.setattr(evidence, "render_databar", fails_once)
    v = _violation_without_anpr()
    assert v.images and all(im.frame_no != bad_frame[0] for im in v.images)
    assert f"frame {bad_frame[0]}: OSError" in v.extra["evidence_problem"]


def test_plate_is_read_in_the_lane_region_over_the_configured_countries():
    """The reader gets the violation's lane region (so the next lane's car cannot lend its plate) and
    no forced country (the configured list applies: a foreign car at a border is read as one)."""
    from device.config import LaneConfig

    seen: dict = {}

    class Recorder:
        def read_frames(self, images, country=None, roi=None):
            seen.update(country=country, roi=roi)
            return None

    cfg = Config()
    cfg.site.lanes = [LaneConfig(id="1", limit_kmh=60, roi=(0.0, 0.2, 0.5, 0.8))]
    ring = _ring_with([np.full((48, 64, 3), i, np.uint8) for i in range(60)])
    b = EvidenceBuilder(cfg, ring, Recorder(), on_late_plate=lambda *a: None)
    try:
        c = _candidate(time.monotonic_ns() - 600_000_000)
        b.build(Candidate(c.pass_, c.decision, c.decided_mono_ns, c.clock, b.pin(c.pass_)))
    finally:
        b.close()
    assert seen == {"country": None, "roi": (0.0, 0.2, 0.5, 0.8)}


def _textured_frames(n: int, t0: int, period: int, seed: int = 5) -> list[Frame]:
    """Frames whose detail (noise amplitude) differs, so sharpness ranks them unambiguously."""
    rng = np.random.default_rng(seed)
    return [
        Frame(t0 + i * period, i, (rng.random((48, 64, 3)) * rng.uniform(5, 250)).astype(np.uint8))
        for i in range(n)
    ]


def _outbound(gap_at_trigger: bool):
    """An outbound vehicle at 60 km/h snapshotted by EarlySnapshots from a 30 fps ring (optionally with
    the frames around its trigger dropped by the camera); also the whole window, for comparison."""
    cfg = Config()
    period = 1_000_000_000 // 30
    t0 = 10**12
    frames = _textured_frames(90, t0, period)
    first = Reading(t0 + 10 * period, 60.0, Direction.OUTBOUND)
    cam = cfg.camera
    trigger = first.t_mono_ns + int((cam.capture_offset_m + cam.rear_plate_offset_m) / (60 / 3.6) * 1e9)
    if gap_at_trigger:
        frames = [f for f in frames if abs(f.t_mono_ns - trigger) > 3 * period]
    ring = FrameRing(3.0, 30.0)
    snaps = EarlySnapshots(ring, cfg, cfg.tracker.gap_ms * 1_000_000)
    snaps.on_reading(first)
    for f in frames:
        ring.push(f)
        snaps.poll(f.t_mono_ns)
    pre, post = cam.pre_trigger_ms * 1_000_000, cam.post_trigger_ms * 1_000_000
    window = [f for f in frames if trigger - pre <= f.t_mono_ns <= trigger + post]
    t_start = first.t_mono_ns
    p = Pass("p", t_start, t_start + 3 * 10**9, Direction.OUTBOUND, (), 60, t_start, 60, 0.5, lane="1")
    return cfg, ring, snaps, window, trigger, p


@pytest.mark.parametrize("gap_at_trigger", [False, True])
def test_outbound_snapshot_keeps_only_the_frames_evidence_can_use(gap_at_trigger):
    """Every outbound vehicle is snapshotted before its speed is judged; the snapshot keeps the frames
    the evidence would pick from the whole window (4, not 24 at 30 fps) and the evidence picks the same
    ones from it. Of a window it cannot pick from only the nearest frame is kept: the evidence reports
    the same problem from it."""
    cfg, _, snaps, window, trigger, p = _outbound(gap_at_trigger)
    w = snaps.take(p)
    t, kept, in_window = w.t_ns, w.kept, len(w.seen)
    assert t == trigger and in_window == len(window)
    assert snaps.take(p) is None  # taken once
    n = evidence_candidates(cfg)
    if gap_at_trigger:  # only the nearest frame is held: it gives the same error, from the window's period
        assert len(kept) == 1 and kept[0] in window
        with pytest.raises(EvidenceError, match="frame period"):
            select_frames(kept, t, n, period_ns=1_000_000_000 // 30)
        return
    assert len(window) == 24 and len(kept) == n == 4
    assert [f.t_mono_ns for f in kept] == sorted(f.t_mono_ns for f in kept)
    assert select_frames(kept, t, n) == select_frames(window, t, n)  # same frames, same order


@pytest.mark.parametrize("gap_at_trigger", [False, True])
def test_outbound_violation_from_its_snapshot_records_the_whole_window(gap_at_trigger):
    cfg, ring, snaps, window, trigger, p = _outbound(gap_at_trigger)
    b = EvidenceBuilder(cfg, ring, None, on_late_plate=lambda *a: None, snapshots=snaps)
    d = Decision(True, "MA", "1", "car", 50.0, 60.0, 1.0, 0.0, 60.0, 3.0, 57.0, 7.0)
    try:
        v = b.build(
            Candidate(p, d, p.end_mono_ns, ClockStamp(1_700_000_000_000_000_000, p.end_mono_ns, True, "ntp"))
        )
    finally:
        b.close()
    assert v.extra["trigger_mono_ns"] == trigger
    assert v.extra["frames_in_window"] == len(window)  # the packet says how many frames the window held
    if gap_at_trigger:
        assert not v.images and "frame period" in v.extra["evidence_problem"]
    else:
        assert v.extra["evidence_problem"] is None
        assert [i.frame_no for i in v.images] == [f.frame_no for f in select_frames(window, trigger, 2)]


@pytest.mark.parametrize("pushed_at_decision_ms", [100, 600])
def test_inbound_pin_keeps_the_candidates_and_the_choice_is_the_whole_windows(pushed_at_decision_ms):
    """A violation pinned at decision keeps only the frames its evidence can be chosen from. Whether the
    whole window was there at decision (600 ms of frames after the trigger) or only part of it (100 ms;
    the rest arrives later), the frames chosen are those chosen from the whole window, and the packet's
    ``frames_in_window`` counts the whole window."""
    cfg = Config()
    period = 1_000_000_000 // 30
    t0 = 10**12
    frames = _textured_frames(120, t0, period, seed=11)
    end = t0 + 80 * period
    p = Pass("p", end - 10**9, end, Direction.INBOUND, (), 90.0, end - 2 * 10**8, 90.0, 0.5, lane="1")
    ring = FrameRing(3.0, 30.0)
    b = EvidenceBuilder(cfg, ring, None, on_late_plate=lambda *a: None)
    try:
        t = trigger_ns(p, cfg.camera.capture_offset_m, p.median_kmh, cfg.camera.rear_plate_offset_m)
        pre, post = cfg.camera.pre_trigger_ms * 1_000_000, cfg.camera.post_trigger_ms * 1_000_000
        window = [f for f in frames if t - pre <= f.t_mono_ns <= t + post]
        cut = t + pushed_at_decision_ms * 1_000_000
        for f in frames:
            if f.t_mono_ns <= cut:
                ring.push(f)
        pinned = b.pin(p)
        n = evidence_candidates(cfg)
        assert pinned.t_ns == t and len(pinned.kept) == n
        assert pinned.seen == tuple(
            (f.frame_no, f.t_mono_ns) for f in window if f.t_mono_ns <= cut
        )  # the ring's
        for f in frames:  # the camera goes on; the ring still holds the post-trigger frames
            if f.t_mono_ns > cut:
                ring.push(f)
        t_, chosen_from, in_window, _ = b.frames_for(p, pinned)
    finally:
        b.close()
    assert t_ == t and in_window == len(window) == 24
    assert select_frames(chosen_from, t, n) == select_frames(window, t, n)


def test_pinned_choice_bounds_the_trigger_frame_by_the_whole_windows_frame_period():
    """The trigger frame must be within one frame period of the trigger; the period is the whole
    window's. Frames stamped on arrival come in bursts (a USB camera after a hiccup), and the 4 frames
    kept can be such a burst: their own spacing (30 ms here) is shorter than the window's (34 ms), and
    judged by it a trigger frame 33 ms off (the frame after it was dropped) cost the violation its images,
    though the whole window has them."""
    cfg = Config()
    cfg.anpr.enabled = False
    ms = 1_000_000
    end = 10**12
    p = Pass("p", end - 10**9, end, Direction.INBOUND, (), 90.0, end - 2 * 10**8, 90.0, 0.5, lane="1")
    t = trigger_ns(p, cfg.camera.capture_offset_m, p.median_kmh, cfg.camera.rear_plate_offset_m)
    a = t - 33 * ms  # the frame nearest the trigger; the one 34 ms after it was dropped
    burst = [a - 90 * ms, a - 60 * ms, a - 30 * ms, a]  # the sharpest three and the trigger frame
    times = [burst[0] - 34 * ms * k for k in range(12, 0, -1)] + burst
    times += [a + 68 * ms + 34 * ms * k for k in range(12)]
    rng = np.random.default_rng(3)
    frames = [
        Frame(tt, i, (rng.random((48, 64, 3)) * (250 if tt in burst[:3] else 5)).astype(np.uint8))
        for i, tt in enumerate(times)
    ]
    ring = FrameRing(5.0, 30.0)
    for f in frames:
        ring.push(f)
    pre, post = cfg.camera.pre_trigger_ms * ms, cfg.camera.post_trigger_ms * ms
    window = [f for f in frames if t - pre <= f.t_mono_ns <= t + post]
    expected = select_frames(window, t, evidence_candidates(cfg))  # the whole window has evidence
    b = EvidenceBuilder(cfg, ring, None, on_late_plate=lambda *a: None)
    d = Decision(True, "MA", "1", "car", 60.0, 90.0, 1.0, 0.0, 90.0, 3.0, 87.0, 27.0)
    try:
        pinned = b.pin(p)
        assert {f.t_mono_ns for f in pinned.kept} == set(burst)
        v = b.build(Candidate(p, d, end, ClockStamp(1_700_000_000_000_000_000, end, True, "ntp"), pinned))
    finally:
        b.close()
    assert v.extra["evidence_problem"] is None
    assert [i.frame_no for i in v.images] == [f.frame_no for f in expected[: cfg.camera.evidence_frames]]


def test_an_outbound_car_that_is_not_the_reports_first_object_is_snapshotted():
    """Before, only object 0 of a report armed a snapshot; object 0 is the strongest of both directions,
    so an outbound car beside a truck coming in (object 1 all along) got none and its violation had no
    images ("camera lost?") though the camera was fine."""
    cfg = Config()
    period = 1_000_000_000 // 30
    t0 = 10**12
    ring = FrameRing(3.0, 30.0)
    snaps = EarlySnapshots(ring, cfg, cfg.tracker.gap_ms * 1_000_000)
    for k in range(4):  # four reports: the truck (inbound, strongest) first, the car second
        t = t0 + k * 50_000_000
        snaps.on_reading(Reading(t, 50.0, Direction.INBOUND, obj_index=0))
        snaps.on_reading(Reading(t, 90.0, Direction.OUTBOUND, obj_index=1))
        snaps.on_reading(Reading(t, 40.0, Direction.OUTBOUND, obj_index=2))  # a weaker echo: not armed
    for f in _textured_frames(90, t0, period):
        ring.push(f)
        snaps.poll(f.t_mono_ns)
    p = Pass("p", t0, t0 + 3 * 10**9, Direction.OUTBOUND, (), 90, t0, 90, 0.5, lane="1")
    w = snaps.take(p)
    cam = cfg.camera
    assert w is not None and w.kept
    assert w.t_ns == t0 + int((cam.capture_offset_m + cam.rear_plate_offset_m) / (90 / 3.6) * 1e9)


def test_an_outbound_snapshot_taken_at_decision_outlives_the_snapshots_expiry():
    """Before, the snapshot stayed with EarlySnapshots until the evidence thread reached the violation;
    a later outbound car's snapshot expired it after max_pass_s + 2 s, so a violation that waited behind
    another's plate read lost all its images. Taken into the candidate at decision, it is kept."""
    from device.daemon import Daemon

    cfg, ring, snaps, window, trigger, p = _outbound(False)
    daemon = Daemon(cfg)
    daemon.ring, daemon.snapshots = ring, snaps  # the parts start() would build
    pinned, backlog = daemon._pin(p)
    assert isinstance(pinned, TriggerWindow) and backlog is None
    late = p.start_mono_ns + 20 * 10**9  # a second outbound car, 20 s later
    snaps.on_reading(Reading(late, 60.0, Direction.OUTBOUND))
    snaps.poll(late + 10 * 10**9)
    b = EvidenceBuilder(cfg, ring, None, on_late_plate=lambda *a: None, snapshots=snaps)
    d = Decision(True, "MA", "1", "car", 50.0, 60.0, 1.0, 0.0, 60.0, 3.0, 57.0, 7.0)
    try:
        clock = ClockStamp(1_700_000_000_000_000_000, p.end_mono_ns, True, "ntp")
        v = b.build(Candidate(p, d, p.end_mono_ns, clock, pinned))
    finally:
        b.close()
    assert v.extra["evidence_problem"] is None and v.images
    assert v.extra["trigger_mono_ns"] == trigger and v.extra["frames_in_window"] == len(window)
