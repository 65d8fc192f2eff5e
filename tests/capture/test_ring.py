"""Frame ring: bounded, time-ordered, no pixel copies, and the trigger picks the right frames under
jitter and dropped frames."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from device.capture.evidence import EvidenceError, select_frames
from device.capture.ring import FrameRing, ring_bytes, ring_slots
from device.model import Frame

PERIOD = 33_333_333  # 30 fps


def make_frames(
    n: int, *, seed: int = 0, jitter_ns: int = 3_000_000, drop: set[int] = frozenset(), t0: int = 10**12
):
    rng = random.Random(seed)
    img = np.zeros((4, 4, 3), np.uint8)
    out = []
    for i in range(n):
        if i in drop:
            continue
        out.append(Frame(t0 + i * PERIOD + rng.randint(-jitter_ns, jitter_ns), i, img))
    return out


def test_push_keeps_references_and_bounds_memory():
    ring = FrameRing(2.0, 30.0)
    assert ring.capacity == ring_slots(2.0, 30.0) == 62
    frames = make_frames(200)
    for f in frames:
        ring.push(f)
    assert len(ring) == ring.capacity
    assert ring.pushed == 200
    held = ring.snapshot()
    assert [f.frame_no for f in held] == list(range(200 - 62, 200))
    assert all(a is b for a, b in zip(held, frames[-62:], strict=True))  # same objects: nothing copied
    assert ring.latest() is frames[-1]
    assert ring_bytes(2.0, 30.0, 1920, 1080) == 62 * 1920 * 1080 * 3 // 2  # YUV 4:2:0, the default
    assert ring_bytes(2.0, 30.0, 1920, 1080, "bgr") == 62 * 1920 * 1080 * 3


def test_out_of_order_push_is_rejected_and_loses_nothing():
    ring = FrameRing(1.0, 10.0)
    a, b = make_frames(2, jitter_ns=0)
    ring.push(b)
    with pytest.raises(ValueError, match="capture order"):
        ring.push(a)
    assert ring.snapshot() == [b]


def test_invalid_ring_parameters():
    with pytest.raises(ValueError):
        FrameRing(0, 30)
    with pytest.raises(ValueError):
        FrameRing(1, -1)


@pytest.mark.parametrize("seed", range(5))
def test_window_and_nearest_under_jitter_and_drops(seed):
    rng = random.Random(seed)
    drop = set(rng.sample(range(5, 55), 8))
    frames = make_frames(60, seed=seed, drop=drop)
    ring = FrameRing(2.0, 30.0)
    for f in frames:
        ring.push(f)
    t0, t1 = frames[10].t_mono_ns + 1, frames[40].t_mono_ns
    win = ring.window(t0, t1)
    assert [f.frame_no for f in win] == [f.frame_no for f in frames if t0 <= f.t_mono_ns <= t1]
    for _ in range(50):
        trig = rng.randint(frames[0].t_mono_ns, frames[-1].t_mono_ns)
        best = min(abs(f.t_mono_ns - trig) for f in frames)
        got = ring.nearest(trig)
        assert abs(got.t_mono_ns - trig) == best


def test_trigger_selects_the_frame_of_that_instant_or_refuses():
    """The first evidence frame is within one frame period of the trigger; when the frames around it
    were dropped, selection refuses instead of handing a photo of another instant."""
    frames = make_frames(60, seed=3, drop={30, 31, 32, 33})
    ring = FrameRing(2.0, 30.0)
    for f in frames:
        ring.push(f)
    trig = 10**12 + 20 * PERIOD + 5_000_000
    win = ring.window(trig - 600_000_000, trig + 600_000_000)
    sel = select_frames(win, trig, 3)
    assert sel[0].frame_no == 20
    assert abs(sel[0].t_mono_ns - trig) <= PERIOD
    assert len({f.frame_no for f in sel}) == 3
    hole = 10**12 + 31 * PERIOD + 20_000_000
    with pytest.raises(EvidenceError, match="frame period"):
        select_frames(ring.window(hole - 600_000_000, hole + 600_000_000), hole, 2)
    with pytest.raises(EvidenceError, match="no frames"):
        select_frames([], trig, 2)


def test_window_rejects_reversed_bounds():
    ring = FrameRing(1.0, 10.0)
    with pytest.raises(ValueError):
        ring.window(10, 5)
    assert ring.nearest(5) is None and ring.latest() is None


def test_one_writer_many_readers_see_consistent_windows():
    ring = FrameRing(1.0, 100.0)
    frames = make_frames(3000, jitter_ns=0)
    errors: list[str] = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            snap = ring.snapshot()
            times = [f.t_mono_ns for f in snap]
            if times != sorted(times) or len(snap) > ring.capacity:
                errors.append("inconsistent snapshot")
            nos = [f.frame_no for f in snap]
            if nos and nos != list(range(nos[0], nos[0] + len(nos))):
                errors.append(f"gap in snapshot {nos[:3]}")

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for r in readers:
        r.start()
    for f in frames:
        ring.push(f)
    done.set()
    for r in readers:
        r.join(10)
    assert not errors, errors[:3]
    assert ring.latest() is frames[-1]
