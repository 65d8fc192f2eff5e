"""OpenCV backend on real video files written with cv2.VideoWriter: replay timing, a file truncated
mid-stream (stream loss -> reconnect with backoff, resume where it stopped once the data is back)."""

from __future__ import annotations

import itertools
import shutil
import time

import cv2
import numpy as np
import pytest

from device.capture.camera import CameraError, CameraThread
from device.capture.opencv_backend import OpenCVCamera, classify_source
from device.capture.ring import FrameRing
from device.config import CameraConfig

N = 60
FPS = 20.0


def _frame(i: int) -> np.ndarray:
    """Frame i shows its index in two big grey blocks, i // 8 and i % 8 in steps of 32 grey levels:
    survives MJPEG compression and the YUV 4:2:0 round trip with a wide margin."""
    img = np.full((120, 160, 3), 30, np.uint8)
    img[20:100, 10:75] = 16 + 32 * (i // 8)
    img[20:100, 85:150] = 16 + 32 * (i % 8)
    return img


def _index(img: np.ndarray) -> int:
    def level(block: np.ndarray) -> int:
        return round((float(block.mean()) - 16) / 32)

    return 8 * level(img[40:80, 25:60]) + level(img[40:80, 100:135])


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "full.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (160, 120))
    assert w.isOpened()
    for i in range(N):
        w.write(_frame(i))
    w.release()
    return path


def cfg_for(path, **kw) -> CameraConfig:
    return CameraConfig(
        backend="opencv", source=str(path), width=160, height=120, fps=FPS, reconnect_s=0.05, **kw
    )


def read_all(cam: OpenCVCamera, max_reads: int = 500):
    out = []
    for _ in range(max_reads):
        f = cam.read(0.2)
        if f is not None:
            out.append(f)
        elif cam.health()["state"] in ("ended", "reconnecting"):
            break
    return out


def test_classify_source():
    assert classify_source("0") == ("device", 0)
    assert classify_source("/dev/video2") == ("device", "/dev/video2")
    assert classify_source("rtsp://cam/stream")[0] == "url"
    assert classify_source("replay.avi") == ("file", "replay.avi")
    with pytest.raises(CameraError, match="empty"):
        classify_source("  ")


def test_missing_file_is_a_clear_error(tmp_path):
    cam = OpenCVCamera(cfg_for(tmp_path / "nope.avi"))
    with pytest.raises(CameraError, match="does not exist"):
        cam.start()
    assert cam.health()["state"] == "failed"


@pytest.mark.parametrize("layout", ["yuv420", "bgr"])
def test_replay_frames_and_timestamps(video, layout):
    cam = OpenCVCamera(cfg_for(video, frame_layout=layout), realtime=False)
    cam.start()
    frames = read_all(cam)
    cam.stop()
    assert [f.frame_no for f in frames] == list(range(N))
    assert all(f.layout == layout and f.size == (160, 120) for f in frames)
    assert [_index(f.bgr()) for f in frames] == list(range(N))
    assert [_index(f.gray()) for f in frames] == list(range(N))  # the plate reader's view, either layout
    dts = {b.t_mono_ns - a.t_mono_ns for a, b in itertools.pairwise(frames)}
    assert all(abs(d - 1e9 / FPS) <= 1 for d in dts)  # virtual clock: exactly one period apart
    assert cam.health()["state"] == "ended" and cam.health()["frames"] == N
    assert cam.preview() is not None and cam.preview().shape == (360, 640, 3)


def test_truncated_file_reconnects_and_resumes(video, tmp_path):
    data = video.read_bytes()
    live = tmp_path / "live.avi"
    live.write_bytes(data[: len(data) // 2])  # recording cut mid-stream
    cam = OpenCVCamera(cfg_for(live), realtime=False)
    cam.start()
    first = read_all(cam)
    h = cam.health()
    assert h["state"] == "reconnecting", h
    assert 5 < len(first) < N
    assert "read failed" in (h["last_error"] or "")
    # still cut: reopening works but the data ends again at the same place; no frame is delivered
    # (the torn last frame is held back, not handed out), and the backoff grows
    deadline = time.monotonic() + 10
    while cam.health()["reconnects"] < 2 and time.monotonic() < deadline:
        assert cam.read(0.2) is None
    assert cam.health()["reconnects"] >= 2 and cam.health()["frames"] == len(first)
    # the data comes back (e.g. the storage was remounted): the camera reopens and resumes
    shutil.copyfile(video, live)
    rest = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        f = cam.read(0.2)
        if f is not None:
            rest.append(f)
        elif cam.health()["state"] == "ended":
            break
    cam.stop()
    assert cam.health()["reconnects"] >= 1
    got = first + rest
    nos = [f.frame_no for f in got]
    assert nos == sorted(nos) and len(set(nos)) == len(nos)
    assert nos[-1] == N - 1
    # each frame is the right picture for its number, and time never went backwards
    assert all(_index(f.bgr()) == f.frame_no for f in got)
    assert all(b.t_mono_ns > a.t_mono_ns for a, b in itertools.pairwise(got))


def test_camera_thread_fills_ring_from_a_replay(video):
    cam = OpenCVCamera(cfg_for(video), realtime=False)
    ring = FrameRing(10.0, FPS)
    t = CameraThread(cam, ring, fps=FPS, read_timeout=0.1)
    t.start()
    deadline = time.monotonic() + 10
    while ring.pushed < N and time.monotonic() < deadline:
        time.sleep(0.02)
    t.stop()
    assert not t.is_alive()
    assert ring.pushed == N and t.dropped == 0
    assert t.health()["state"] in ("ended", "stopped")


class _FakeCapture:
    """A V4L2 device that delivers grey or 4-channel frames (formats OpenCV passes through as they are)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    def isOpened(self) -> bool:
        return True

    def set(self, prop, value) -> bool:
        return True

    def get(self, prop) -> float:
        return 0.0

    def grab(self) -> bool:
        return True

    def retrieve(self):
        return True, self.image.copy()

    def release(self) -> None:
        pass


@pytest.mark.parametrize("layout", ["yuv420", "bgr"])
@pytest.mark.parametrize("channels", [0, 1, 4])
def test_grey_and_four_channel_sources_give_bgr_frames(monkeypatch, layout, channels):
    """A 4-channel frame used to make every read raise with frame_layout yuv420 (the I420 conversion
    takes BGR only): no frame reached the ring. A grey frame stayed 2-D, and gray() and the evidence
    images (which compose a BGR picture) failed on it."""
    grey = _frame(13)[:, :, 1]
    image = {0: grey, 1: grey[:, :, None], 4: cv2.cvtColor(_frame(13), cv2.COLOR_BGR2BGRA)}[channels]
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a, **k: _FakeCapture(image))
    cam = OpenCVCamera(
        CameraConfig(backend="opencv", source="0", width=160, height=120, fps=FPS, frame_layout=layout)
    )
    cam.start()
    try:
        f = cam.read(0.2)
    finally:
        cam.stop()
    assert f is not None and f.layout == layout and f.size == (160, 120)
    assert f.bgr().shape == (120, 160, 3) and f.gray().shape == (120, 160)
    assert _index(f.bgr()) == _index(f.gray()) == 13


class _SlowDecode(_FakeCapture):
    """A USB MJPEG camera whose decode (retrieve) takes 40 ms, and whose driver takes no manual
    exposure (reads back 0) or takes it (reads back what was set, in V4L2's 100 us units)."""

    def __init__(self, image: np.ndarray, exposure: float = 0.0) -> None:
        super().__init__(image)
        self.exposure, self.grabbed_at = exposure, 0

    def get(self, prop) -> float:
        return self.exposure if prop == cv2.CAP_PROP_EXPOSURE else 0.0

    def grab(self) -> bool:
        self.grabbed_at = time.monotonic_ns()
        return True

    def retrieve(self):
        time.sleep(0.04)
        return super().retrieve()


@pytest.mark.parametrize(("read_back", "expected"), [(0.0, None), (10.0, 1000)])
def test_frames_are_stamped_at_grab_and_say_only_the_exposure_the_driver_confirmed(
    monkeypatch, read_back, expected
):
    """Before, the stamp came after the 40 ms decode (every frame that much late), and every OpenCV
    frame (an RTSP stream's too) said exposure_us = the configured 1000 though nothing had set it."""
    fake = _SlowDecode(_frame(3), exposure=read_back)
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a, **k: fake)
    cam = OpenCVCamera(
        CameraConfig(backend="opencv", source="0", width=160, height=120, fps=FPS, exposure_us=1000)
    )
    cam.start()
    try:
        f = cam.read(0.5)
    finally:
        cam.stop()
    assert f is not None and abs(f.t_mono_ns - fake.grabbed_at) < 5_000_000  # not 40 ms later
    assert f.exposure_us == expected


def test_a_stream_or_file_never_claims_an_exposure(video):
    cam = OpenCVCamera(cfg_for(video, exposure_us=1000), realtime=False)
    cam.start()
    frames = read_all(cam)
    cam.stop()
    assert frames and all(f.exposure_us is None for f in frames)
