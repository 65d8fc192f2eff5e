"""Fixed-size ring of the most recent camera frames, indexed by capture time.

The camera thread pushes every frame; a violation asks for the frames around its pass *after* the pass
ended, so the ring must hold at least ``pre_trigger + pass duration + post_trigger`` of video. Frames are
stored by reference (``Frame.image`` is never copied), so a push is a few list stores under a lock: O(1),
no allocation proportional to the image. The camera backend must therefore hand over a fresh array per
frame (all backends here do), never a buffer it will overwrite.

Memory is bounded by the slot count, ``ceil(seconds * fps) + 2`` frames, plus whatever frames a reader
still references after they were overwritten. At 1920x1080 a YUV 4:2:0 frame (``camera.frame_layout``'s
default) is 3 110 400 bytes (2.97 MiB), so a 2 s ring at 30 fps (62 slots) holds at most 192.8 MB
(183.9 MiB); BGR frames take twice that (6 220 800 bytes a frame, 385.7 MB). At 1280x720 a YUV frame is
1.38 MB (85.7 MB for 2 s at 30 fps).
"""

from __future__ import annotations

import bisect
import math
import threading

from device.model import Frame, FrameLayout

_SLACK_SLOTS = 2
"""Extra slots so a reader's window at exactly ``seconds`` is not cut by a frame arriving early."""


def ring_slots(seconds: float, fps: float) -> int:
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"ring needs seconds > 0 and fps > 0, got seconds={seconds} fps={fps}")
    return math.ceil(seconds * fps) + _SLACK_SLOTS


def ring_bytes(seconds: float, fps: float, width: int, height: int, layout: FrameLayout = "yuv420") -> int:
    """Upper bound of the pixel memory a full ring pins (what the docstring figures come from)."""
    per_frame = width * height * 3 // 2 if layout == "yuv420" else width * height * 3
    return ring_slots(seconds, fps) * per_frame


class FrameRing:
    """Last ``seconds`` of frames; one writer (the camera thread), any number of readers.

    Frames must be pushed in capture order (non-decreasing ``t_mono_ns``); a frame older than the newest
    one is rejected with ``ValueError`` because it would break the time ordering readers rely on.
    """

    def __init__(self, seconds: float, fps: float) -> None:
        self.seconds = float(seconds)
        self.fps = float(fps)
        self.capacity = ring_slots(seconds, fps)
        self._slots: list[Frame | None] = [None] * self.capacity
        self._head = 0  # next slot to write
        self._count = 0
        self._pushed = 0
        self._last_t: int | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    @property
    def pushed(self) -> int:
        """Frames pushed since creation (including those already overwritten)."""
        return self._pushed

    def push(self, frame: Frame) -> None:
        with self._lock:
            if self._last_t is not None and frame.t_mono_ns < self._last_t:
                raise ValueError(
                    f"frame {frame.frame_no} at {frame.t_mono_ns} ns is older than the newest frame in "
                    f"the ring ({self._last_t} ns): frames must be pushed in capture order"
                )
            self._slots[self._head] = frame
            self._head = (self._head + 1) % self.capacity
            if self._count < self.capacity:
                self._count += 1
            self._pushed += 1
            self._last_t = frame.t_mono_ns

    def snapshot(self) -> list[Frame]:
        """All frames currently held, oldest first (a list of references, no pixel copies)."""
        with self._lock:
            n, head, slots = self._count, self._head, self._slots
            start = (head - n) % self.capacity
            out = slots[start : start + n] if start + n <= self.capacity else slots[start:] + slots[:head]
        return out  # type: ignore[return-value]

    def latest(self) -> Frame | None:
        with self._lock:
            if self._count == 0:
                return None
            return self._slots[(self._head - 1) % self.capacity]

    def window(self, t0_ns: int, t1_ns: int) -> list[Frame]:
        """Frames with ``t0_ns <= t_mono_ns <= t1_ns``, oldest first."""
        if t1_ns < t0_ns:
            raise ValueError(f"window end {t1_ns} is before its start {t0_ns}")
        frames = self.snapshot()
        times = [f.t_mono_ns for f in frames]
        return frames[bisect.bisect_left(times, t0_ns) : bisect.bisect_right(times, t1_ns)]

    def nearest(self, t_ns: int) -> Frame | None:
        """The frame whose capture time is closest to ``t_ns`` (earlier one on a tie)."""
        frames = self.snapshot()
        if not frames:
            return None
        times = [f.t_mono_ns for f in frames]
        i = bisect.bisect_left(times, t_ns)
        if i == 0:
            return frames[0]
        if i == len(frames):
            return frames[-1]
        before, after = frames[i - 1], frames[i]
        return before if t_ns - before.t_mono_ns <= after.t_mono_ns - t_ns else after

    def span_ns(self) -> int:
        """Time covered by the frames held (0 with fewer than two frames)."""
        frames = self.snapshot()
        return frames[-1].t_mono_ns - frames[0].t_mono_ns if len(frames) > 1 else 0
