"""OpenCV ``VideoCapture`` backend: USB cameras (V4L2 index or /dev path), RTSP/HTTP streams, video files.

Timestamps: ``Frame.t_mono_ns`` is ``time.monotonic_ns()`` taken right after ``grab()`` returns and
before ``retrieve()`` decodes it (MJPEG/RTSP decoding takes tens of ms), i.e. when the frame reached this
process. That is later than the exposure by the transport latency (USB:
one frame or less; RTSP: often 100-500 ms, the reason an IP camera is a poor evidence camera unless the
latency is measured and configured out). For a video file (replay), frames are stamped on a virtual
clock: start time + frame index / file fps, paced in real time when
``realtime`` is set, so a replay lines up with a recorded radar log the same way each time.

Stream loss (read fails, camera unplugged, RTSP drop, file cut short): the capture is released and
reopened with exponential backoff from ``reconnect_s`` up to 30 s; ``health()`` says ``reconnecting``.
A file that reads short of its header's frame count is treated the same way (reopened and sought to
the next frame: a recording still being written, or restored, continues). A file that simply ends is
``ended`` (``loop=True`` restarts it instead).

Pixels: OpenCV decodes to BGR (a grey or 4-channel source is converted to BGR too); with
``frame_layout = "yuv420"`` each frame is converted to I420 before it enters the ring (half the memory,
``device/capture/pixels.py``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from device.capture.camera import CameraError, CameraStats
from device.capture.pixels import bgr_to_yuv420
from device.config import CameraConfig
from device.model import Frame

MAX_BACKOFF_S = 30.0


def classify_source(source: str) -> tuple[str, int | str]:
    """``("device", 0)``, ``("device", "/dev/video2")``, ``("url", "rtsp://...")`` or ``("file", path)``."""
    s = source.strip()
    if not s:
        raise CameraError("camera.source is empty: give a V4L2 index (0), a /dev/video path, a URL or a file")
    if s.isdigit():
        return "device", int(s)
    if "://" in s:
        return "url", s
    if s.startswith("/dev/"):
        return "device", s
    return "file", s


class OpenCVCamera:
    def __init__(self, cfg: CameraConfig, *, realtime: bool = True, loop: bool = False) -> None:
        self.cfg = cfg
        self.kind, self.target = classify_source(cfg.source)
        self.realtime = realtime
        self.loop = loop
        self._cap: Any = None
        self._stats = CameraStats()
        self._preview: np.ndarray | None = None
        self._lock = threading.Lock()
        self._frame_no = 0
        self._backoff = cfg.reconnect_s
        self._next_retry = 0.0
        self._file_epoch_ns = 0
        self._file_next_idx = 0
        self._loop_offset_ms = 0.0
        self._loop_base = 0
        self._pending: tuple[int, np.ndarray] | None = None
        self._stop = threading.Event()
        self._exposure_us: int | None = None
        """The exposure the driver confirmed (V4L2 devices only); None: not set, or not known."""

    # -- open / close -----------------------------------------------------------------------------
    def _open(self) -> None:
        import cv2

        if self.kind == "file" and not os.path.exists(str(self.target)):
            raise CameraError(f"video file {self.target} does not exist")
        backend = cv2.CAP_V4L2 if self.kind == "device" else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.target, backend)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open camera source {self.cfg.source!r}")
        if self.kind == "device":
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
            cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a stale queue
            if self.cfg.exposure_us > 0:
                cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)  # V4L2: 1 = manual
                cap.set(cv2.CAP_PROP_EXPOSURE, self.cfg.exposure_us / 100.0)  # V4L2 unit: 100 us
                # What the frames say is what the driver reports back, not what was asked for: a
                # camera without manual exposure ignores the request.
                got = cap.get(cv2.CAP_PROP_EXPOSURE)
                self._exposure_us = round(got * 100) if got and got > 0 else None
        if self.kind == "file":
            # a reopened file continues where it stopped (a recording that is still growing, or was
            # restored): same frame index, same virtual clock, so timestamps never go backwards
            self._file_epoch_ns = self._file_epoch_ns or time.monotonic_ns()
            if self._file_next_idx:
                cap.set(cv2.CAP_PROP_POS_FRAMES, self._file_next_idx)
        self._cap = cap

    def start(self) -> None:
        self._stop.clear()
        self._stats.state = "starting"
        try:
            self._open()
        except CameraError as exc:
            self._stats.state, self._stats.last_error = "failed", str(exc)
            raise
        self._stats.state = "running"

    def _lost(self, why: str) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._stats.last_error = why
        self._stats.state = "reconnecting"
        self._next_retry = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)

    def _try_reconnect(self, timeout: float) -> bool:
        wait = self._next_retry - time.monotonic()
        if wait > 0:
            self._stop.wait(min(wait, timeout))
            if self._next_retry - time.monotonic() > 0:
                return False
        try:
            self._open()
        except CameraError as exc:
            self._lost(f"reconnect failed: {exc}")
            return False
        self._stats.reconnects += 1
        self._stats.state = "running"
        return True

    # -- frames -----------------------------------------------------------------------------------
    def _file_end(self, cap: Any) -> bool:
        import cv2

        total = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        return total > 0 and self._file_next_idx >= total

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._stop.is_set() or self._stats.state in ("ended", "stopped"):
            return None
        if self._cap is None and not self._try_reconnect(timeout):
            return None
        if self.kind == "file":
            return self._read_file()
        image, t = self._grab(self._cap)
        if image is None:
            self._lost(f"read failed on {self.cfg.source!r} after frame {self._frame_no - 1}")
            return None
        return self._emit(self._frame_no, t, image)

    @staticmethod
    def _grab(cap: Any) -> tuple[np.ndarray | None, int]:
        """The decoded frame and the time its grab() returned (before the decode: see the docstring)."""
        if not cap.grab():
            return None, time.monotonic_ns()
        t = time.monotonic_ns()
        ok, image = cap.retrieve()
        return (image if ok and image is not None else None), t

    def _read_file(self) -> Frame | None:
        """Replays with one frame of look-ahead: a file cut mid-frame decodes its last, torn frame
        without error, and only the *next* read fails. Holding each frame until the following one
        decoded lets us discard the torn one and read it again, whole, after the reconnect."""
        import cv2

        cap = self._cap
        while True:
            image, _ = self._grab(cap)  # a file's frames are stamped on its virtual clock
            if image is None:
                pending, self._pending = self._pending, None
                if self._file_end(cap):
                    if pending is not None:
                        return self._emit_file(*pending)  # the last frame of a complete file
                    if not self.loop:
                        self._stats.state = "ended"
                        cap.release()
                        self._cap = None
                        return None
                    self._loop_offset_ms += self._file_next_idx * 1000.0 / self._file_fps(cap)
                    self._loop_base += self._file_next_idx
                    self._file_next_idx = 0
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    return None
                if pending is not None:
                    self._file_next_idx = pending[0]
                self._lost(f"read failed on {self.cfg.source!r} at frame {self._file_next_idx}")
                return None
            idx = self._file_next_idx
            self._file_next_idx += 1
            prev, self._pending = self._pending, (idx, image)
            if prev is not None:
                return self._emit_file(*prev)

    def _emit_file(self, idx: int, image: np.ndarray) -> Frame:
        t = self._file_epoch_ns + round(
            (self._loop_offset_ms + idx * 1000.0 / self._file_fps(self._cap)) * 1e6
        )
        if self.realtime:
            delay = (t - time.monotonic_ns()) / 1e9
            if delay > 0:
                self._stop.wait(delay)
        return self._emit(self._loop_base + idx, t, image)

    def _emit(self, frame_no: int, t: int, image: np.ndarray) -> Frame:
        import cv2

        self._backoff = self.cfg.reconnect_s
        self._frame_no = frame_no + 1
        self._stats.frame(t)
        if frame_no % 3 == 0:
            small = cv2.resize(
                image, (self.cfg.preview_width, self.cfg.preview_height), interpolation=cv2.INTER_AREA
            )
            with self._lock:
                self._preview = small
        if image.ndim == 2 or image.shape[2] == 1:  # a grey source (some V4L2 and GStreamer formats)
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:  # BGRA/BGRx: frames are BGR for every consumer (and for I420)
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        layout = "bgr"
        h, w = image.shape[:2]
        if self.cfg.frame_layout == "yuv420" and not (h % 2 or w % 2):
            # an odd-sized source (rare) stays BGR rather than losing a pixel row or column
            image, layout = bgr_to_yuv420(image), "yuv420"
        return Frame(
            t_mono_ns=t,
            frame_no=frame_no,
            image=image,
            exposure_us=self._exposure_us,
            analogue_gain=None,
            source=f"opencv:{self.cfg.source}",
            layout=layout,
        )

    def _file_fps(self, cap: Any) -> float:
        import cv2

        return cap.get(cv2.CAP_PROP_FPS) or self.cfg.fps

    def preview(self) -> np.ndarray | None:
        with self._lock:
            return self._preview

    def stop(self) -> None:
        self._stop.set()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._stats.state != "ended":
            self._stats.state = "stopped"

    def health(self) -> dict[str, Any]:
        h = self._stats.as_dict()
        h["source_kind"] = self.kind
        return h
