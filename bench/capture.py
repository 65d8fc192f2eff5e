"""Capture benchmarks: ring insert, evidence build (select + 2 x 1080p JPEG with data bar + plate crop)
from BGR and from YUV 4:2:0 frames, the per-frame cost of holding frames as YUV 4:2:0 (conversion on
backends that deliver BGR, grey for the plate reader), memory of a 2 s ring at 1080p30 in each layout,
synthetic camera render time at 1280x720."""

from __future__ import annotations

import statistics
import time
import tracemalloc

import numpy as np

from device.capture.evidence import DataBar, build_evidence, select_frames
from device.capture.pixels import bgr_to_yuv420
from device.capture.ring import FrameRing, ring_bytes
from device.model import Frame, FrameLayout
from device.sim.scenario import Direction, Geometry, Scenario, Vehicle
from device.sim.traffic_camera import SyntheticCamera

BENCH = "capture"


def _row(metric, value, unit, target=None, note=None):
    return {"bench": BENCH, "metric": metric, "value": value, "unit": unit, "target": target, "note": note}


def _ring_insert() -> float:
    img = np.zeros((1080, 1920, 3), np.uint8)
    frames = [Frame(i * 33_333_333, i, img) for i in range(20_000)]
    per = []
    for _ in range(5):
        ring = FrameRing(2.0, 30.0)
        t0 = time.perf_counter_ns()
        for f in frames:
            ring.push(f)
        per.append((time.perf_counter_ns() - t0) / len(frames) / 1000)
    return statistics.median(per)


def _scene_frames(fps: float = 30.0, layout: FrameLayout = "bgr"):
    v = Vehicle(0, 1.0, "1", Direction.INBOUND, 90.0, "12345-ب-6", "12345-B-6", color_bgr=(40, 60, 160))
    sc = Scenario([v], duration_s=5.0, seed=1, geometry=Geometry())
    cam = SyntheticCamera(sc, width=1920, height=1080, fps=fps, epoch_mono_ns=0, realtime=False)
    trig = round(v.t_capture_s(sc.geometry) * 1e9)
    no = cam.frame_no_at(trig)

    def pixels(n: int) -> np.ndarray:
        return bgr_to_yuv420(cam.render(n)) if layout == "yuv420" else cam.render(n)

    # the window a violation pulls at 30 fps: 600 ms before and after the trigger
    frames = [
        Frame(cam.frame_time_ns(n), n, pixels(n), 1000, 1.0, layout=layout) for n in range(no - 18, no + 19)
    ]
    return cam, frames, trig


def _per_frame_ms(fn) -> float:
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _evidence(cam, frames, trig, with_box: bool) -> float:
    bar = DataBar(1_795_000_000_000_000_000, True, "ntp", 97.2, 60.0, "inbound", "SITE-1", "Test site",
                  "الرباط", "rc-1", "pkt-1", "1")  # fmt: skip
    box = (lambda f: cam.plate_box(f.frame_no)) if with_box else None
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        sel = select_frames(frames, trig, 2, plate_box=box)
        imgs = build_evidence(sel, bar, clock=lambda t: t + 1_795_000_000_000_000_000, plate_box=box)
        times.append((time.perf_counter() - t0) * 1000)
    assert len(imgs) == (3 if with_box else 2)
    return statistics.median(times)


def _evidence_peak_mb(cam, frames, trig) -> float:
    """Python-traced peak of building a violation's images from 4 frames (what a violation keeps)."""
    bar = DataBar(1_795_000_000_000_000_000, True, "ntp", 97.2, 60.0, "inbound", "SITE-1", "Test site",
                  "الرباط", "rc-1", "pkt-1", "1")  # fmt: skip
    box = lambda f: cam.plate_box(f.frame_no)  # noqa: E731
    sel = select_frames(frames, trig, 4, plate_box=box)
    build_evidence(sel, bar, clock=lambda t: t, plate_box=box)  # fonts and caches loaded first
    tracemalloc.start()
    build_evidence(sel, bar, clock=lambda t: t, plate_box=box)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def _ring_memory(layout: FrameLayout) -> float:
    shape = (1620, 1920) if layout == "yuv420" else (1080, 1920, 3)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    ring = FrameRing(2.0, 30.0)
    for i in range(200):  # fresh array per frame, as a camera delivers them
        ring.push(Frame(i * 33_333_333, i, np.empty(shape, np.uint8), layout=layout))
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del ring
    return (current - base) / 2**20


def _render_720p() -> float:
    from device.sim.scenario import generate

    sc = generate(2, vehicles=4)
    cam = SyntheticCamera(sc, width=1280, height=720, fps=15.0, epoch_mono_ns=0, realtime=False)
    t_cap = sc.vehicles[0].t_capture_s(sc.geometry)
    start = round((t_cap - 1.0) * 15)
    cam.render(start)
    times = []
    for n in range(start, start + 30):
        t0 = time.perf_counter()
        cam.render(n)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run() -> list[dict]:
    rows = [_row("ring_insert", _ring_insert(), "us", "< 50 us", "FrameRing(2 s, 30 fps).push, 1080p frames")]
    for layout, tag in (("bgr", ""), ("yuv420", "_yuv420")):
        cam, frames, trig = _scene_frames(layout=layout)
        what = "YUV 4:2:0 frames (converted to BGR for the JPEGs)" if layout == "yuv420" else "BGR frames"
        rows.append(
            _row(
                f"evidence_build{tag}",
                _evidence(cam, frames, trig, True),
                "ms",
                "< 60 ms",
                f"{what}: select 2 of {len(frames)} (plate box) + 2 x 1080p JPEG q90 with data bar + plate crop",
            )
        )
        rows.append(
            _row(
                f"evidence_build_peak{tag}",
                _evidence_peak_mb(cam, frames, trig),
                "MiB",
                None,
                f"{what}: traced peak building 4 x 1080p overviews + plate crop (one full-size image at a time)",
            )
        )
        rows.append(
            _row(
                f"evidence_build_no_box{tag}",
                _evidence(cam, frames, trig, False),
                "ms",
                None,
                f"{what}: select 2 of {len(frames)} on the lower half (no plate box yet) + 2 x 1080p JPEG",
            )
        )
    bgr = cam.render(frames[0].frame_no)
    yuv = frames[0]
    rows.append(
        _row(
            "bgr_to_yuv420_1080p",
            _per_frame_ms(lambda: bgr_to_yuv420(bgr)),
            "ms",
            None,
            "per frame, OpenCV and synthetic backends with frame_layout yuv420 (picamera2 delivers YUV420)",
        )
    )
    rows.append(
        _row("gray_1080p_yuv420", _per_frame_ms(yuv.gray), "ms", None, "Frame.gray(): Y plane, range LUT")
    )
    bgr_frame = Frame(0, 0, bgr)
    rows.append(_row("gray_1080p_bgr", _per_frame_ms(bgr_frame.gray), "ms", None, "Frame.gray(): BGR2GRAY"))
    for layout in ("yuv420", "bgr"):
        rows.append(
            _row(
                f"ring_memory_2s_1080p30_{layout}",
                _ring_memory(layout),  # type: ignore[arg-type]
                "MiB",
                None,
                f"measured (tracemalloc); bound {ring_bytes(2.0, 30.0, 1920, 1080, layout) / 2**20:.1f} MiB"  # type: ignore[arg-type]
                " = 62 slots",
            )
        )
    rows.append(
        _row(
            "pin_trigger_window_1080p30",
            _pin_ms(),
            "ms",
            None,
            "measuring thread, per violation / outbound vehicle: keep 4 of a 24-frame YUV window",
        )
    )
    rows.append(_row("synthetic_render_720p", _render_720p(), "ms", "< 66.7 ms (15 fps)", "4 vehicles"))
    return rows


def _pin_ms() -> float:
    from device.config import Config
    from device.violations import take_window

    _, frames, trig = _scene_frames(layout="yuv420")
    ring = FrameRing(2.0, 30.0)
    for f in frames:
        ring.push(f)
    cfg = Config()
    return _per_frame_ms(lambda: take_window(ring, trig, cfg))
