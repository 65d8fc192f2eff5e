"""The camera seam: one small protocol every backend implements, a factory, and the thread that feeds
the frame ring.

Every backend stamps ``Frame.t_mono_ns`` on ``time.monotonic_ns()`` - the radar driver's clock - so a
pass's peak time can be matched against frame times directly. How each backend gets there differs
(sensor timestamp converted, or host time at grab) and is documented in the backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from device.capture.ring import FrameRing
    from device.config import CameraConfig
    from device.model import Frame
    from device.sim.scenario import Scenario


class CameraError(Exception):
    """A camera that cannot be opened or configured; the message is meant for a technician."""


@runtime_checkable
class Camera(Protocol):
    def start(self) -> None: ...

    def read(self, timeout: float = 1.0) -> Frame | None:
        """Next frame, or None when none arrived within ``timeout`` seconds; its pixels in
        ``camera.frame_layout`` (a fresh array, never a buffer the backend will reuse)."""
        ...

    def preview(self) -> np.ndarray | None:
        """Latest low-resolution BGR frame for the technician's aiming view."""
        ...

    def stop(self) -> None: ...

    def health(self) -> dict[str, Any]:
        """``state``, ``fps_measured``, ``frames``, ``dropped``, ``reconnects``, ``last_error``."""
        ...


@dataclass
class CameraStats:
    """Counters every backend keeps; ``health()`` is their dict. Thread-safe enough: one writer."""

    state: str = "stopped"
    """``stopped``, ``starting``, ``running``, ``reconnecting``, ``failed``, ``ended``."""
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    last_error: str | None = None
    _times: list[int] = field(default_factory=list)

    def frame(self, t_mono_ns: int) -> None:
        self.frames += 1
        self._times.append(t_mono_ns)
        if len(self._times) > 64:
            del self._times[:-32]

    def fps(self) -> float:
        t = self._times[-32:]
        if len(t) < 2 or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) * 1e9 / (t[-1] - t[0])

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "fps_measured": self.fps(),
            "frames": self.frames,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "last_error": self.last_error,
        }


def open_camera(
    cfg: CameraConfig,
    *,
    scenario: Scenario | None = None,
    epoch_mono_ns: int | None = None,
    realtime: bool = True,
) -> Camera:
    """Builds (does not start) the backend named by ``cfg.backend``.

    ``scenario``/``epoch_mono_ns`` are only for the synthetic backend: the same scenario and epoch the
    radar emulator plays, so frames and radar readings describe the same vehicles at the same instants.
    ``realtime=False`` (synthetic, video-file replay) delivers frames as fast as they are read.
    """
    if cfg.backend == "picamera2":
        from device.capture.picamera2_backend import Picamera2Camera

        return Picamera2Camera(cfg)
    if cfg.backend == "opencv":
        from device.capture.opencv_backend import OpenCVCamera

        return OpenCVCamera(cfg, realtime=realtime)
    if cfg.backend == "synthetic":
        from device.sim.scenario import generate
        from device.sim.traffic_camera import SyntheticCamera

        return SyntheticCamera(
            scenario if scenario is not None else generate(0, duration_s=60.0),
            width=cfg.width,
            height=cfg.height,
            fps=cfg.fps,
            epoch_mono_ns=epoch_mono_ns,
            realtime=realtime,
            preview_size=(cfg.preview_width, cfg.preview_height),
            layout=cfg.frame_layout,
        )
    raise CameraError(f"unknown camera backend {cfg.backend!r}")


class CameraThread(threading.Thread):
    """Reads the camera forever and pushes every frame into the ring.

    Dropped frames are counted from ``frame_no`` gaps (the backend's own sequence) and, where a backend
    has no reliable sequence, from timestamp gaps of more than 1.5 nominal frame periods. ``heartbeat_ns``
    is refreshed on every loop turn (frame or timeout) so the daemon's watchdog can tell a stalled
    camera thread from a camera that delivers nothing.
    """

    def __init__(
        self,
        camera: Camera,
        ring: FrameRing,
        *,
        fps: float | None = None,
        read_timeout: float = 0.5,
        on_frame: Callable[[Frame], None] | None = None,
        name: str = "camera",
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.camera = camera
        self.ring = ring
        self.fps = fps or ring.fps
        self.read_timeout = read_timeout
        self.on_frame = on_frame
        self.heartbeat_ns = time.monotonic_ns()
        self.frames = 0
        self.dropped = 0
        self.out_of_order = 0
        self._max_no_seen = -1
        self.last_error: str | None = None
        self._stop_evt = threading.Event()
        self._last: Frame | None = None

    def _count_gap(self, frame: Frame) -> None:
        prev = self._last
        if prev is None:
            return
        # numbers: against the highest number seen, so a discarded out-of-order frame is not a drop too
        gap_no = frame.frame_no - max(prev.frame_no, self._max_no_seen) - 1
        period = 1e9 / self.fps
        gap_t = round((frame.t_mono_ns - prev.t_mono_ns) / period) - 1
        self.dropped += max(gap_no, gap_t, 0)

    def run(self) -> None:
        try:
            self.camera.start()
        except Exception as exc:
            self.last_error = f"camera start failed: {exc}"
            return
        try:
            while not self._stop_evt.is_set():
                self.heartbeat_ns = time.monotonic_ns()
                try:
                    frame = self.camera.read(self.read_timeout)
                except Exception as exc:  # a backend bug must not kill the thread silently
                    self.last_error = f"read failed: {exc!r}"
                    self._stop_evt.wait(self.read_timeout)
                    continue
                if frame is None:
                    continue
                if self._last is not None and frame.t_mono_ns < self._last.t_mono_ns:
                    self.out_of_order += 1  # keep the ring time-ordered; count it, never crash
                    self._max_no_seen = max(self._max_no_seen, frame.frame_no)
                    continue
                self._count_gap(frame)
                self._max_no_seen = max(self._max_no_seen, frame.frame_no)
                self.ring.push(frame)
                self._last = frame
                self.frames += 1
                if self.on_frame is not None:
                    self.on_frame(frame)
        finally:
            self.camera.stop()

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_evt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def health(self) -> dict[str, Any]:
        h = dict(self.camera.health())
        h.update(
            thread_alive=self.is_alive(),
            heartbeat_age_s=(time.monotonic_ns() - self.heartbeat_ns) / 1e9,
            ring_frames=len(self.ring),
            ring_dropped=self.dropped,
            thread_error=self.last_error,
        )
        return h
