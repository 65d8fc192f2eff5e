"""Raspberry Pi camera through picamera2/libcamera (Camera Module 3, HQ, global-shutter modules).

Configuration: a *video* configuration (continuous streaming, several buffers) with a full-resolution
main stream - ``YUV420`` in libcamera's ``Smpte170m`` colour space (BT.601 limited range, what OpenCV's
I420 conversions assume) for ``frame_layout = "yuv420"``, the ISP's own output and half the memory of
RGB; or ``RGB888``, in libcamera's naming B,G,R byte order, exactly OpenCV's BGR - and a
small ``YUV420`` lores stream for the technician's aiming view (only its Y plane is used: grey preview,
no colour conversion cost). ``FrameDurationLimits`` pins the frame rate; a short fixed ``ExposureTime``
(about 1/1000 s freezes a vehicle at 90 km/h to 2.5 cm of motion) with a fixed ``AnalogueGain`` and AE
off, unless the config asks for auto exposure (``exposure_us = 0``).

Timestamps: ``SensorTimestamp`` (ns) is when the first row of the frame was read out. libcamera
documents it on ``CLOCK_BOOTTIME``; the Pi's V4L2 drivers stamp buffers with ``CLOCK_MONOTONIC``. The
two differ only by time spent in suspend, so a unit that never sleeps sees them equal - but we do not
rely on that: the first frame whose age is plausible on exactly one of the two clocks decides which one
the driver uses, and BOOTTIME stamps are shifted onto MONOTONIC (the radar's clock) by the current
BOOTTIME-MONOTONIC offset. ``Frame.t_mono_ns`` is then the middle of the first row's exposure:
``SensorTimestamp - ExposureTime / 2``.

Every completed request is released in a ``finally``: a leaked request starves libcamera of buffers and
the stream stops after ``buffer_count`` frames. For the same reason ``read(timeout)`` dispatches
``capture_request(wait=False)`` and waits on that job with ``Picamera2.wait(job, timeout)`` (picamera2
>= 0.3.17); a job that timed out is waited on again by the next read instead of being abandoned.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from device.capture.camera import CameraError, CameraStats
from device.capture.pixels import pack_yuv420
from device.config import CameraConfig
from device.model import Frame

MAX_TIMESTAMP_AGE_NS = 2_000_000_000
"""A completed request's sensor timestamp is at most this old when we get it (buffers x frame time)."""
BUFFER_COUNT = 6


def clock_offsets_ns() -> tuple[int, int]:
    """``(monotonic_now, boottime_now)`` read back to back."""
    mono = time.monotonic_ns()
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return mono, boot


def detect_timestamp_clock(ts_ns: int, mono_now: int, boot_now: int) -> str | None:
    """``"monotonic"`` / ``"boottime"`` when the timestamp's age is plausible on exactly one clock,
    ``None`` when both (clocks equal: never suspended) or neither fit."""
    fits_mono = 0 <= mono_now - ts_ns <= MAX_TIMESTAMP_AGE_NS
    fits_boot = 0 <= boot_now - ts_ns <= MAX_TIMESTAMP_AGE_NS
    if fits_mono and not fits_boot:
        return "monotonic"
    if fits_boot and not fits_mono:
        return "boottime"
    return None


def to_monotonic_ns(ts_ns: int, clock: str | None, mono_now: int, boot_now: int) -> int:
    """Sensor timestamp on ``clock`` -> ``time.monotonic_ns()`` clock."""
    if clock == "boottime":
        return ts_ns - (boot_now - mono_now)
    return ts_ns


def _default_colour_space() -> Any:
    """libcamera's BT.601 limited-range colour space (``device/capture/pixels.py`` decodes with it)."""
    try:
        libcamera = importlib.import_module("libcamera")
    except ImportError as exc:
        raise CameraError("libcamera's Python bindings are missing (apt install python3-libcamera)") from exc
    return libcamera.ColorSpace.Smpte170m()


def _default_factory(camera_num: int) -> Any:
    try:
        mod = importlib.import_module("picamera2")
    except ImportError as exc:
        raise CameraError(
            "picamera2 is not installed (apt install python3-picamera2, or pip install 'radarcam[pi]' "
            "with system libcamera); use camera.backend = 'opencv' or 'synthetic' elsewhere"
        ) from exc
    return mod.Picamera2(camera_num)


class Picamera2Camera:
    """:class:`~device.capture.camera.Camera` over picamera2. ``factory`` is the test seam."""

    def __init__(
        self,
        cfg: CameraConfig,
        *,
        camera_num: int = 0,
        factory: Callable[[int], Any] | None = None,
        clock: Callable[[], tuple[int, int]] = clock_offsets_ns,
        colour_space: Callable[[], Any] = _default_colour_space,
    ) -> None:
        self.cfg = cfg
        self.camera_num = camera_num
        self._factory = factory or _default_factory
        self._colour_space = colour_space
        self._clock = clock
        self._cam: Any = None
        self._stats = CameraStats()
        self._ts_clock: str | None = None
        self._prev_ts: int | None = None
        self._prev_no = 0
        self._last_no: int | None = None
        self._preview: np.ndarray | None = None
        self._lock = threading.Lock()
        self._next_retry = 0.0
        self._job: Any = None
        self.main_size: tuple[int, ...] = (cfg.width, cfg.height)
        """The main stream's size as libcamera configured it (it may round the requested one)."""
        self.frame_period_ns = round(1e9 / cfg.fps)

    # -- configuration ----------------------------------------------------------------------------
    def controls(self) -> dict[str, Any]:
        """libcamera controls for the configured frame rate and exposure."""
        period_us = round(1e6 / self.cfg.fps)
        controls: dict[str, Any] = {"FrameDurationLimits": (period_us, period_us)}
        if self.cfg.exposure_us > 0:
            controls["AeEnable"] = False
            controls["ExposureTime"] = min(self.cfg.exposure_us, period_us)
            controls["AnalogueGain"] = self.cfg.analogue_gain if self.cfg.analogue_gain > 0 else 1.0
        else:
            controls["AeEnable"] = True
            if self.cfg.analogue_gain > 0:
                controls["AnalogueGain"] = self.cfg.analogue_gain
        return controls

    def _open(self) -> None:
        cam = self._factory(self.camera_num)
        try:
            yuv = self.cfg.frame_layout == "yuv420"
            extra = {"colour_space": self._colour_space()} if yuv else {}
            config = cam.create_video_configuration(
                main={"size": (self.cfg.width, self.cfg.height), "format": "YUV420" if yuv else "RGB888"},
                lores={"size": (self.cfg.preview_width, self.cfg.preview_height), "format": "YUV420"},
                controls=self.controls(),
                buffer_count=BUFFER_COUNT,
                **extra,
            )
            cam.configure(config)
            cam.start()
        except Exception:
            _close_quietly(cam)
            raise
        self._cam = cam
        self._prev_ts = None  # frame numbers restart from the sensor's new stream
        # libcamera may adjust the size to what the ISP can produce: frames are what was configured
        configured = getattr(cam, "camera_config", None) or config
        self.main_size = tuple(int(v) for v in configured["main"]["size"])

    def start(self) -> None:
        self._stats.state = "starting"
        try:
            self._open()
        except CameraError as exc:
            self._stats.state, self._stats.last_error = "failed", str(exc)
            raise
        except Exception as exc:
            self._stats.state, self._stats.last_error = "failed", f"{type(exc).__name__}: {exc}"
            raise CameraError(f"cannot start camera {self.camera_num}: {exc}") from exc
        self._stats.state = "running"

    # -- frames -----------------------------------------------------------------------------------
    def _frame_from_request(self, request: Any) -> Frame:
        md = request.get_metadata()
        ts = md.get("SensorTimestamp")
        if ts is None:
            raise CameraError("request without SensorTimestamp metadata")
        mono_now, boot_now = self._clock()
        if self._ts_clock is None:
            self._ts_clock = detect_timestamp_clock(int(ts), mono_now, boot_now)
        exposure_us = md.get("ExposureTime")
        t_mono = to_monotonic_ns(int(ts), self._ts_clock, mono_now, boot_now)
        if exposure_us:
            t_mono -= int(exposure_us) * 1000 // 2
        # Numbered from the previous frame, in units of this frame's own duration (FrameDuration, else
        # the requested period): real sensor periods are whole lines, not exactly 1/fps, and counting
        # from the stream's first stamp would drift into duplicate or phantom frame numbers over minutes.
        period = int(md["FrameDuration"]) * 1000 if md.get("FrameDuration") else self.frame_period_ns
        if self._prev_ts is None:
            frame_no = self._stats.frames + self._stats.dropped
        else:
            frame_no = self._prev_no + max(1, round((int(ts) - self._prev_ts) / period))
        self._prev_ts, self._prev_no = int(ts), frame_no
        image = request.make_array("main")
        if self.cfg.frame_layout == "yuv420":  # a packed copy: the buffer goes back to libcamera
            image = pack_yuv420(image, *self.main_size)
        elif not image.flags.owndata:  # never keep a view into a buffer libcamera will reuse
            image = image.copy()
        lores = request.make_array("lores")
        ph, pw = self.cfg.preview_height, self.cfg.preview_width
        with self._lock:
            self._preview = np.repeat(np.array(lores[:ph, :pw])[:, :, None], 3, axis=2)
        return Frame(
            t_mono_ns=t_mono,
            frame_no=frame_no,
            image=image,
            exposure_us=int(exposure_us) if exposure_us is not None else None,
            analogue_gain=float(md["AnalogueGain"]) if md.get("AnalogueGain") is not None else None,
            source=f"picamera2:{self.camera_num}",
            layout=self.cfg.frame_layout,
        )

    def read(self, timeout: float = 1.0) -> Frame | None:
        if self._cam is None:
            return self._retry(timeout)
        try:
            # one outstanding job at a time: a job abandoned on timeout would later capture a request
            # that nobody releases, so a timed-out job is waited on again by the next read
            if self._job is None:
                self._job = self._cam.capture_request(wait=False)
            request = self._cam.wait(self._job, timeout=timeout)
        except TimeoutError:
            return None
        except Exception as exc:
            self._fail(exc)
            return None
        self._job = None
        if request is None:
            return None
        try:
            frame = self._frame_from_request(request)
        except Exception as exc:
            self._stats.last_error = f"bad frame: {type(exc).__name__}: {exc}"
            self._stats.dropped += 1
            return None
        finally:
            request.release()
        last = self._last_no
        if last is not None and frame.frame_no > last + 1:
            self._stats.dropped += frame.frame_no - last - 1
        self._last_no = frame.frame_no
        self._stats.frame(frame.t_mono_ns)
        return frame

    def _drop_job(self) -> None:
        """Releases the request of an outstanding job if it completed; stopping the camera cancels it
        otherwise."""
        job, self._job = self._job, None
        if job is not None and self._cam is not None:
            with contextlib.suppress(Exception):
                request = self._cam.wait(job, timeout=0)
                if request is not None:
                    request.release()

    def _fail(self, exc: BaseException) -> None:
        self._stats.state = "reconnecting"
        self._stats.last_error = f"{type(exc).__name__}: {exc}"
        self._drop_job()
        cam, self._cam = self._cam, None
        _close_quietly(cam)
        self._next_retry = time.monotonic() + self.cfg.reconnect_s

    def _retry(self, timeout: float) -> None:
        wait = self._next_retry - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            return None
        try:
            self._open()
        except Exception as exc:
            self._stats.last_error = f"reopen failed: {type(exc).__name__}: {exc}"
            self._next_retry = time.monotonic() + self.cfg.reconnect_s
            return None
        self._stats.reconnects += 1
        self._stats.state = "running"
        return None

    def preview(self) -> np.ndarray | None:
        with self._lock:
            return self._preview

    def stop(self) -> None:
        self._drop_job()
        cam, self._cam = self._cam, None
        _close_quietly(cam)
        self._stats.state = "stopped"

    def health(self) -> dict[str, Any]:
        h = self._stats.as_dict()
        h["timestamp_clock"] = self._ts_clock
        h["size"] = list(self.main_size)
        return h


def _close_quietly(cam: Any) -> None:
    if cam is None:
        return
    for name in ("stop", "close"):
        with contextlib.suppress(Exception):  # closing a broken camera must not mask the original error
            getattr(cam, name)()
