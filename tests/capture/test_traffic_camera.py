"""Synthetic traffic camera: perspective, ground-truth plate boxes, shared frame clock, real-time
pacing through the camera thread, and dropped-frame accounting."""

from __future__ import annotations

import itertools
import random
import time

import numpy as np
import pytest

from device.capture.camera import Camera, CameraThread, open_camera
from device.capture.ring import FrameRing
from device.config import CameraConfig
from device.model import Direction, Frame
from device.sim.scenario import Geometry, Scenario, Vehicle, generate
from device.sim.traffic_camera import SyntheticCamera, _fallback_plate, render_plate_image

EPOCH = 7 * 10**12


def scenario(direction: Direction, lane: str) -> Scenario:
    v = Vehicle(0, 0.5, lane, direction, 72.0, "4567-و-12", "4567-W-12", color_bgr=(30, 30, 30))
    return Scenario([v], duration_s=5.0, seed=3, geometry=Geometry())


def cam_for(sc: Scenario, **kw) -> SyntheticCamera:
    return SyntheticCamera(sc, width=640, height=360, fps=15.0, epoch_mono_ns=EPOCH, realtime=False, **kw)


def test_inbound_plate_grows_and_descends_and_is_sharpest_at_capture_line():
    sc = scenario(Direction.INBOUND, "1")
    cam = cam_for(sc)
    v = sc.vehicles[0]
    cap_no = round(v.t_capture_s(sc.geometry) * 15)
    truths = [cam.plate_boxes(n) for n in range(cap_no - 10, cap_no + 3)]
    boxes = [t[0] for t in truths if t]
    assert len(boxes) >= 10
    ys = [b.box[1] for b in boxes]
    hs = [b.box[3] for b in boxes]
    assert ys == sorted(ys) and hs[-1] > 2 * hs[0]  # nearer = lower and larger
    sig = {n: cam.plate_boxes(n)[0].blur_sigma for n in range(cap_no - 10, cap_no + 3) if cam.plate_boxes(n)}
    assert min(sig, key=sig.get) in (cap_no - 1, cap_no, cap_no + 1)
    assert abs(cam.plate_boxes(cap_no)[0].distance_m - sc.geometry.capture_m) < 72 / 3.6 / 15
    assert boxes[0].text == "4567-و-12" and boxes[0].text_latin == "4567-W-12"


def test_outbound_plate_shrinks_and_rises():
    sc = scenario(Direction.OUTBOUND, "2")
    cam = cam_for(sc)
    boxes = [cam.plate_box(n) for n in range(8, 60)]
    boxes = [b for b in boxes if b]
    assert len(boxes) > 5
    assert boxes[-1][3] < boxes[0][3] and boxes[-1][1] < boxes[0][1]


def test_plate_pixels_are_where_the_ground_truth_says():
    sc = scenario(Direction.INBOUND, "1")
    cam = cam_for(sc, noise=0.0)
    n = round(sc.vehicles[0].t_capture_s(sc.geometry) * 15)
    img = cam.render(n)
    x, y, w, h = cam.plate_box(n)
    plate = img[y : y + h, x : x + w].astype(float)
    around = img[y + h + 2 : y + 2 * h, x : x + w].astype(float)  # the dark car body under the plate
    assert plate.mean() > 150 > 60 > around.mean()
    assert plate.std() > 20  # characters on it, not a blank patch
    assert np.array_equal(img, cam.render(n))  # deterministic


def test_frames_share_the_radar_epoch_and_render_on_demand():
    sc = generate(5, vehicles=2)
    cam = SyntheticCamera(sc, width=320, height=180, fps=10.0, epoch_mono_ns=EPOCH, realtime=False)
    assert isinstance(cam, Camera)
    cam.start()
    frames = [cam.read() for _ in range(5)]
    assert [f.frame_no for f in frames] == list(range(5))
    assert [f.t_mono_ns for f in frames] == [EPOCH + i * 100_000_000 for i in range(5)]
    assert cam.frame_no_at(EPOCH + 249_000_000) == 2
    assert frames[0].image.shape == (180, 320, 3) and frames[0].exposure_us == 1000
    assert cam.preview() is not None
    cam.stop()
    assert cam.read() is None and cam.health()["state"] == "stopped"


def test_bad_geometry_rejected():
    with pytest.raises(ValueError):
        SyntheticCamera(generate(0, vehicles=1), width=100, height=50, fps=10)


def test_plate_images_are_bgr_with_plate_proportions():
    img = render_plate_image("123-أ-4", "MA", random.Random(0), height_px=40)
    assert img.dtype == np.uint8 and img.shape[0] == 40 and img.shape[2] == 3
    assert 1.4 < img.shape[1] / img.shape[0] < 5.5  # one- or two-line plate from the ANPR generator
    img = _fallback_plate("123-أ-4", "MA", random.Random(0), height_px=40)
    assert img.dtype == np.uint8 and img.shape[0] == 40 and img.shape[2] == 3
    assert 4.0 < img.shape[1] / img.shape[0] < 5.5


def test_realtime_camera_thread_delivers_frames_on_their_clock():
    cfg = CameraConfig(backend="synthetic", width=1280, height=720, fps=15.0, ring_seconds=2.0)
    epoch = time.monotonic_ns() + 50_000_000
    cam = open_camera(cfg, scenario=generate(1, vehicles=2), epoch_mono_ns=epoch)
    ring = FrameRing(cfg.ring_seconds, cfg.fps)
    received: list[tuple[int, int]] = []
    thread = CameraThread(cam, ring, on_frame=lambda f: received.append((f.t_mono_ns, time.monotonic_ns())))
    thread.start()
    deadline = time.monotonic() + 10
    while ring.pushed < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    thread.stop()
    assert not thread.is_alive()
    assert ring.pushed >= 8
    assert all(t_frame <= t_recv for t_frame, t_recv in received)  # never a frame from the future
    frames = ring.snapshot()
    for f in frames:
        assert f.t_mono_ns == cam.frame_time_ns(f.frame_no)
    gaps = sum(b.frame_no - a.frame_no - 1 for a, b in itertools.pairwise(frames))
    assert thread.dropped >= gaps  # every skipped frame is accounted for
    assert thread.health()["thread_alive"] is False


class GappyCamera:
    """Our own Camera protocol fed from a list: frames with number gaps, a timestamp gap and one
    frame out of order, to check the thread's accounting."""

    def __init__(self, frames):
        self.frames = list(frames)
        self.stopped = False

    def start(self):
        pass

    def read(self, timeout=1.0):
        return self.frames.pop(0) if self.frames else None

    def preview(self):
        return None

    def stop(self):
        self.stopped = True

    def health(self):
        return {
            "state": "running",
            "fps_measured": 0.0,
            "frames": 0,
            "dropped": 0,
            "reconnects": 0,
            "last_error": None,
        }


def test_camera_thread_counts_dropped_frames_from_numbers_and_times():
    img = np.zeros((2, 2, 3), np.uint8)
    p = 100_000_000
    seq = [Frame(0, 0, img), Frame(p, 1, img), Frame(4 * p, 4, img), Frame(5 * p, 5, img)]
    seq += [Frame(8 * p, 6, img)]  # numbering continuous but 2 periods missing in time
    seq += [Frame(7 * p, 7, img)]  # out of order: counted, not pushed
    seq += [Frame(9 * p, 8, img)]
    cam = GappyCamera(seq)
    ring = FrameRing(5.0, 10.0)
    thread = CameraThread(cam, ring, fps=10.0, read_timeout=0.01)
    thread.start()
    deadline = time.monotonic() + 5
    while ring.pushed < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.stop()
    assert [f.frame_no for f in ring.snapshot()] == [0, 1, 4, 5, 6, 8]
    assert thread.dropped == 2 + 2
    assert thread.out_of_order == 1
    assert cam.stopped


def test_sensor_noise_is_fresh_each_frame_deterministic_and_small_to_hold():
    sc = generate(5, vehicles=0, duration_s=2.0)
    cam = SyntheticCamera(sc, width=1280, height=720, fps=15.0, epoch_mono_ns=EPOCH, realtime=False)
    quiet = SyntheticCamera(sc, width=1280, height=720, fps=15.0, realtime=False, noise=0.0)
    a, b = cam.render(4).astype(int), cam.render(5).astype(int)
    clean = quiet.render(4).astype(int)
    assert np.array_equal(quiet.render(4), quiet.render(5))  # the road itself is static
    assert 1.5 < (a - clean).std() < 4.5  # sigma 3 sensor noise on every band of the frame
    for y0 in range(0, 720, 96):
        assert (a[y0 : y0 + 96] != clean[y0 : y0 + 96]).mean() > 0.5
    assert (a != b).mean() > 0.5  # not the same noise twice in a row
    assert np.array_equal(a, cam.render(4).astype(int))  # same frame number, same pixels
    # the demo process holds the simulator beside the daemon: its noise must not cost frames' worth
    noise_bytes = cam._noise.pos.nbytes + cam._noise.neg.nbytes
    assert noise_bytes < a.size  # under one BGR frame (it was six)


def test_plates_of_vehicles_gone_are_forgotten_and_come_back_the_same():
    """The plate cache must not grow for as long as the demo runs (one plate per vehicle ever seen)."""
    sc = generate(11, vehicles=12, duration_s=12.0)
    cam = SyntheticCamera(sc, width=640, height=360, fps=10.0, epoch_mono_ns=EPOCH, realtime=False)
    cam.start()
    try:
        peak, drawn = 0, {}
        for _ in range(int(sc.duration_s * 10) + 60):
            f = cam.read()
            peak = max(peak, len(cam._plates))
            if cam.plate_boxes(f.frame_no) and len(drawn) < 3:
                drawn[f.frame_no] = cam.render(f.frame_no)
        assert peak >= 2 and len(sc.vehicles) == 12
        assert cam._plates == {}  # every vehicle has left the picture by now
        assert len(drawn) == 3
        for no, img in drawn.items():  # re-rendered from the seed: the very same pixels
            assert np.array_equal(cam.render(no), img)
    finally:
        cam.stop()
