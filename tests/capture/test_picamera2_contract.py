"""The picamera2 backend against a thin fake of the picamera2 API (only the seam: Picamera2 object,
its configuration calls and CompletedRequest). libcamera cannot run here; the contract can be checked:
configuration and controls, every request released (even when processing raises), SensorTimestamp on
CLOCK_BOOTTIME or CLOCK_MONOTONIC converted onto time.monotonic_ns()."""

from __future__ import annotations

import sys
import time
import types
from typing import ClassVar

import cv2
import numpy as np
import pytest

from device.capture.camera import CameraError, open_camera
from device.capture.picamera2_backend import Picamera2Camera, detect_timestamp_clock, to_monotonic_ns
from device.config import CameraConfig

W, H, PW, PH = 320, 240, 160, 120
SMPTE170M = object()  # stands for libcamera.ColorSpace.Smpte170m()
MONO_NOW = 1_000_000_000_000
SUSPENDED_NS = 5_000_000_000  # the unit slept 5 s at some point: BOOTTIME is 5 s ahead of MONOTONIC


U, V = 90, 200


def yuv420_buffer(w: int, h: int, y: int, u: int, v: int) -> np.ndarray:
    """What picamera2's ``make_array`` gives for YUV420: ``(h*3/2, stride)``, the stride aligned to 64
    bytes with its padding left in (filled with 255 here so a leak shows), each chroma row half a stride."""
    stride = -(-w // 64) * 64
    buf = np.full((h * 3 // 2, stride), 255, np.uint8)
    buf[:h, :w] = y
    chroma = buf[h:].reshape(h, stride // 2)  # a view: writes land in buf
    chroma[: h // 2, : w // 2] = u
    chroma[h // 2 :, : w // 2] = v
    return buf


class FakeRequest:
    def __init__(self, cam: FakePicamera2, ts: int, fail: bool) -> None:
        self.cam, self.ts, self.fail, self.released = cam, ts, fail, 0

    def get_metadata(self) -> dict:
        return {"SensorTimestamp": self.ts, "ExposureTime": 1000, "AnalogueGain": 2.0, "FrameDuration": 33333}

    def make_array(self, name: str) -> np.ndarray:
        if self.fail:
            raise RuntimeError("buffer mapping failed")
        cfg = self.cam.config[name]
        w, h = cfg["size"]
        if cfg["format"] == "RGB888":
            return np.full((h, w, 3), self.ts % 251, np.uint8)
        return yuv420_buffer(w, h, self.ts % 200 + 16 if name == "main" else 77, U, V)

    def release(self) -> None:
        self.released += 1


class FakeJob:
    def __init__(self, cam: FakePicamera2) -> None:
        self.cam, self.result = cam, None


class FakePicamera2:
    instances: ClassVar[list[FakePicamera2]] = []
    timestamps: ClassVar[list[int]] = []
    fail_at: ClassVar[set[int]] = set()
    broken_after: ClassVar[int | None] = None
    align: ClassVar = None

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.calls: list[str] = []
        self.requests: list[FakeRequest] = []
        self.config: dict | None = None
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main=None, lores=None, controls=None, buffer_count=None, **kw):
        self.calls.append("create_video_configuration")
        assert set(kw) <= {"colour_space"}, kw
        return {
            "main": dict(main),
            "lores": dict(lores),
            "controls": dict(controls),
            "buffer_count": buffer_count,
            "colour_space": kw.get("colour_space"),
        }

    def configure(self, config) -> None:
        self.calls.append("configure")
        if FakePicamera2.align is not None:  # libcamera's validate() may round the size
            config = {
                **config,
                "main": {**config["main"], "size": FakePicamera2.align(config["main"]["size"])},
            }
        self.config = config

    @property
    def camera_config(self) -> dict | None:
        return self.config

    def start(self) -> None:
        self.calls.append("start")

    def capture_request(self, wait=None):
        assert wait is False, "the backend must not block in capture_request (abandoned jobs leak requests)"
        self.calls.append("capture_request")
        return FakeJob(self)

    def wait(self, job, timeout=None):
        n = len(self.requests)
        if FakePicamera2.broken_after is not None and n >= FakePicamera2.broken_after:
            raise RuntimeError("camera frontend timeout")
        if job.result is None:
            if n >= len(FakePicamera2.timestamps):
                raise TimeoutError
            job.result = FakeRequest(self, FakePicamera2.timestamps[n], n in FakePicamera2.fail_at)
            self.requests.append(job.result)
        return job.result

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def fake_picamera2(monkeypatch):
    mod = types.ModuleType("picamera2")
    mod.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    libcamera = types.ModuleType("libcamera")
    libcamera.ColorSpace = types.SimpleNamespace(Smpte170m=lambda: SMPTE170M)
    monkeypatch.setitem(sys.modules, "libcamera", libcamera)
    FakePicamera2.instances = []
    FakePicamera2.fail_at = set()
    FakePicamera2.broken_after = None
    FakePicamera2.align = None
    return FakePicamera2


def cfg(**kw) -> CameraConfig:
    base = dict(backend="picamera2", width=W, height=H, fps=30.0, preview_width=PW, preview_height=PH)
    base.update(kw)
    return CameraConfig(**base)


def fixed_clock(boot_offset: int):
    return lambda: (MONO_NOW, MONO_NOW + boot_offset)


@pytest.mark.parametrize(
    ("layout", "fmt", "space"), [("yuv420", "YUV420", SMPTE170M), ("bgr", "RGB888", None)]
)
def test_configures_video_streams_and_short_exposure(fake_picamera2, layout, fmt, space):
    cam = open_camera(cfg(exposure_us=800, analogue_gain=4.0, frame_layout=layout))
    assert isinstance(cam, Picamera2Camera)
    cam.start()
    fake = fake_picamera2.instances[0]
    assert fake.calls == ["create_video_configuration", "configure", "start"]
    c = fake.config
    assert c["main"] == {"size": (W, H), "format": fmt}
    # YUV is asked for in BT.601 limited range: the matrix device/capture/pixels.py decodes with
    assert c["colour_space"] is space
    assert c["lores"] == {"size": (PW, PH), "format": "YUV420"}
    assert c["controls"] == {
        "FrameDurationLimits": (33333, 33333),
        "AeEnable": False,
        "ExposureTime": 800,
        "AnalogueGain": 4.0,
    }
    assert c["buffer_count"] >= 4
    cam.stop()
    assert fake.calls[-2:] == ["stop", "close"]
    auto = Picamera2Camera(cfg(exposure_us=0)).controls()
    assert auto["AeEnable"] is True and "ExposureTime" not in auto


@pytest.mark.parametrize(("boot_offset", "clock"), [(0, None), (SUSPENDED_NS, "boottime")])
def test_sensor_timestamps_land_on_the_monotonic_clock(fake_picamera2, boot_offset, clock):
    period = 33_333_333
    # sensor stamps on BOOTTIME (libcamera's documented clock) 100 ms .. 0 ms before "now"
    base = MONO_NOW + boot_offset - 100_000_000
    fake_picamera2.timestamps = [base + i * period for i in range(3)] + [base + 5 * period]
    cam = Picamera2Camera(cfg(), clock=fixed_clock(boot_offset))
    cam.start()
    frames = [cam.read(0.1) for _ in range(4)]
    assert all(f is not None for f in frames)
    for f, ts in zip(frames, fake_picamera2.timestamps, strict=True):
        assert f.t_mono_ns == ts - boot_offset - 1000 * 1000 // 2  # mid-exposure of the first row
        assert f.shape == (H, W, 3) and f.exposure_us == 1000 and f.analogue_gain == 2.0
        assert f.layout == "yuv420" and f.image.shape == (H * 3 // 2, W)
    assert [f.frame_no for f in frames] == [0, 1, 2, 5]
    h = cam.health()
    assert h["dropped"] == 2 and h["frames"] == 4 and h["timestamp_clock"] == clock
    assert cam.preview().shape == (PH, PW, 3)
    assert all(r.released == 1 for r in fake_picamera2.instances[0].requests)
    fake = fake_picamera2.instances[0]
    dispatched = fake.calls.count("capture_request")
    assert cam.read(0.01) is None  # timeout: no frame, no crash...
    assert cam.read(0.01) is None
    assert fake.calls.count("capture_request") == dispatched + 1  # ...and the same job is waited on again
    fake_picamera2.timestamps.append(base + 6 * period)
    late = cam.read(0.01)
    assert late is not None and late.frame_no == 6 and fake.requests[-1].released == 1


def test_frame_numbers_follow_the_real_frame_period(fake_picamera2):
    """A sensor's real period is a whole number of lines (here 33.320 ms against the 33.333 ms asked
    for): over 4 000 frames (2 minutes) numbering from the first stamp drifted into a duplicate number;
    each frame is numbered from the one before it instead, and a real gap still counts as drops."""
    period = 33_320_000
    base = MONO_NOW - 4100 * period
    stamps = [base + i * period for i in range(4000)]
    stamps += [stamps[-1] + 3 * period]  # two frames really lost
    fake_picamera2.timestamps = stamps
    cam = Picamera2Camera(cfg(), clock=fixed_clock(0))
    cam.start()
    numbers = [cam.read(0.1).frame_no for _ in range(len(stamps))]
    assert numbers[:4000] == list(range(4000)) and numbers[-1] == 4002
    assert cam.health()["dropped"] == 2


def test_requests_released_even_when_processing_raises(fake_picamera2):
    fake_picamera2.timestamps = [MONO_NOW - 50_000_000 + i * 33_333_333 for i in range(3)]
    fake_picamera2.fail_at = {1}
    cam = Picamera2Camera(cfg(), clock=fixed_clock(0))
    cam.start()
    got = [cam.read(0.1) for _ in range(3)]
    assert got[0] is not None and got[1] is None and got[2] is not None
    reqs = fake_picamera2.instances[0].requests
    assert [r.released for r in reqs] == [1, 1, 1]
    assert "buffer mapping failed" in cam.health()["last_error"]


def test_camera_failure_closes_and_reopens(fake_picamera2):
    fake_picamera2.timestamps = [MONO_NOW - 50_000_000 + i * 33_333_333 for i in range(2)]
    fake_picamera2.broken_after = 1
    cam = Picamera2Camera(cfg(reconnect_s=0.05), clock=fixed_clock(0))
    cam.start()
    assert cam.read(0.1) is not None
    assert cam.read(0.1) is None
    h = cam.health()
    assert h["state"] == "reconnecting" and "frontend timeout" in h["last_error"]
    assert fake_picamera2.instances[0].calls[-2:] == ["stop", "close"]
    fake_picamera2.broken_after = None
    deadline = time.monotonic() + 5
    while cam.health()["reconnects"] == 0 and time.monotonic() < deadline:
        cam.read(0.05)
    assert cam.health()["reconnects"] == 1 and cam.health()["state"] == "running"
    assert len(fake_picamera2.instances) == 2
    cam.stop()


def test_clock_detection_rules():
    assert detect_timestamp_clock(MONO_NOW - 10, MONO_NOW, MONO_NOW) is None  # clocks equal
    assert detect_timestamp_clock(MONO_NOW - 10, MONO_NOW, MONO_NOW + SUSPENDED_NS) == "monotonic"
    assert (
        detect_timestamp_clock(MONO_NOW + SUSPENDED_NS - 10, MONO_NOW, MONO_NOW + SUSPENDED_NS) == "boottime"
    )
    assert (
        to_monotonic_ns(MONO_NOW + SUSPENDED_NS - 10, "boottime", MONO_NOW, MONO_NOW + SUSPENDED_NS)
        == MONO_NOW - 10
    )
    assert to_monotonic_ns(123, None, MONO_NOW, MONO_NOW) == 123


def test_missing_picamera2_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import raises ImportError
    cam = open_camera(cfg())
    with pytest.raises(CameraError, match="picamera2 is not installed"):
        cam.start()
    assert cam.health()["state"] == "failed"


@pytest.mark.parametrize("width", [W, 330])  # 330: not a multiple of 64, so the stride is padded (384)
def test_yuv420_frames_are_packed_copies_without_stride_padding(fake_picamera2, width):
    fake_picamera2.timestamps = [MONO_NOW - 50_000_000]
    cam = Picamera2Camera(cfg(width=width), clock=fixed_clock(0))
    cam.start()
    f = cam.read(0.1)
    cam.stop()
    y = fake_picamera2.timestamps[0] % 200 + 16
    assert f.layout == "yuv420" and f.size == (width, H) and f.image.shape == (H * 3 // 2, width)
    assert f.image.flags.owndata and f.image.flags.c_contiguous  # not a view into libcamera's buffer
    q = H * width // 4
    planes = f.image[:H].ravel(), f.image[H:].ravel()[:q], f.image[H:].ravel()[q:]
    assert [set(np.unique(p).tolist()) for p in planes] == [{y}, {U}, {V}]  # no padding byte leaked
    # the picture decodes as OpenCV decodes that Y, U, V (BT.601 limited range)
    want = cv2.cvtColor(np.array([[y, y], [y, y], [U, V]], np.uint8), cv2.COLOR_YUV2BGR_I420)[
        0, 0
    ]  # 2x2 I420
    assert np.abs(f.bgr().astype(int) - want.astype(int)).max() <= 1
    assert f.bgr().shape == (H, width, 3)


def test_frames_have_the_size_libcamera_configured(fake_picamera2):
    """libcamera may round a requested size to what the ISP produces (here the width down to a multiple
    of 32): frames are unpacked at the configured size, not the requested one, and health says which."""
    fake_picamera2.timestamps = [MONO_NOW - 50_000_000]
    fake_picamera2.align = lambda size: (size[0] // 32 * 32, size[1])
    cam = Picamera2Camera(cfg(width=330), clock=fixed_clock(0))
    cam.start()
    f = cam.read(0.1)
    cam.stop()
    assert f is not None and f.size == (320, H) and cam.health()["size"] == [320, H]
