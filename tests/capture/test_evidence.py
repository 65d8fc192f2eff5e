"""Evidence selection on synthetic traffic frames, data bar content (decoded and compared against an
independent re-render), Arabic shaping, JPEG metadata, bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from device.capture.databar import (
    bar_height,
    bar_lines,
    find_font,
    format_kmh,
    format_utc,
    render_databar,
    shape_rtl,
)
from device.capture.evidence import (
    COMMENT_MAGIC,
    DataBar,
    EvidenceError,
    build_evidence,
    encode_jpeg,
    jpeg_comment,
    select_frames,
    sharpness,
)
from device.model import Direction
from device.sim.scenario import Geometry, Scenario, Vehicle
from device.sim.traffic_camera import SyntheticCamera

FPS = 15.0
UTC0 = 1_795_000_000_123_456_789


def one_car(speed=90.0, lane="1", direction=Direction.INBOUND):
    v = Vehicle(0, 1.0, lane, direction, speed, "12345-ب-6", "12345-B-6", color_bgr=(40, 60, 160))
    return Scenario([v], duration_s=6.0, seed=7, geometry=Geometry())


@pytest.fixture(scope="module")
def pass_frames():
    sc = one_car()
    cam = SyntheticCamera(sc, width=960, height=540, fps=FPS, epoch_mono_ns=5 * 10**12, realtime=False)
    v = sc.vehicles[0]
    t_cap = v.t_capture_s(sc.geometry)
    trigger_ns = cam.epoch_mono_ns + round(t_cap * 1e9)
    capture_no = cam.frame_no_at(trigger_ns)
    frames = []
    for no in range(capture_no - 12, capture_no + 6):
        frames.append(
            __import__("device.model", fromlist=["Frame"]).Frame(
                cam.frame_time_ns(no), no, cam.render(no), 1000, 1.0, "synthetic"
            )
        )
    return cam, frames, trigger_ns, capture_no


def clock(mono_ns: int) -> int:
    return UTC0 + (mono_ns - 5 * 10**12)


def bar(**kw):
    base = dict(
        utc_ns=UTC0,
        clock_synchronized=True,
        clock_source="ntp",
        measured_kmh=87.33600000000001,
        limit_kmh=60.0,
        direction="inbound",
        site_id="SITE-0042",
        site_name="Rabat Avenue Mohammed V",
        site_name_local=None,
        device_id="rc-0007",
        packet_id="pkt-000123",
        lane="1",
    )
    base.update(kw)
    return DataBar(**base)


def test_selection_picks_trigger_frame_then_sharpest_plate_frames(pass_frames):
    cam, frames, trigger_ns, capture_no = pass_frames
    sel = select_frames(frames, trigger_ns, 3, plate_box=lambda f: cam.plate_box(f.frame_no))
    assert sel[0].frame_no == capture_no
    assert abs(sel[0].t_mono_ns - trigger_ns) <= 1e9 / FPS
    # the focus is set on the capture line: the sharpest plates are the frames next to it
    assert all(abs(f.frame_no - capture_no) <= 2 for f in sel[1:]), [f.frame_no for f in sel]
    # and the far, defocused frames score lower than the selected ones
    far = frames[0]
    assert sharpness(far.image, cam.plate_box(far.frame_no)) < sharpness(
        sel[1].image, cam.plate_box(sel[1].frame_no)
    )


def test_selection_without_plate_box_uses_lower_half(pass_frames):
    _, frames, trigger_ns, capture_no = pass_frames
    sel = select_frames(frames, trigger_ns, 3)
    assert sel[0].frame_no == capture_no
    assert all(abs(f.frame_no - capture_no) <= 4 for f in sel[1:]), [f.frame_no for f in sel]


def test_selection_bad_input():
    with pytest.raises(ValueError):
        select_frames([], 0, 0)
    with pytest.raises(EvidenceError):
        select_frames([], 0, 1)


def test_format_helpers_never_round_up_into_the_next_unit():
    assert format_utc(1_700_000_000_999_999_999).endswith(":20.999 UTC")
    assert format_kmh(87.33600000000001) == "87.336"
    assert format_kmh(60.0) == "60"
    assert format_kmh(89.9996) == "89.999"  # truncated: a bar must never show more than was measured
    assert format_kmh(1.005) == "1.005" and format_kmh(120.0001) == "120"
    row1, row2, row3 = bar_lines(bar(clock_synchronized=False, clock_source="rtc"), 42)
    assert row3 == "Rabat Avenue Mohammed V"
    assert "NOT SYNCHRONIZED (rtc)" in row1 and "MEASURED 87.336 km/h" in row1 and "LIMIT 60 km/h" in row1
    assert "RETAINED" not in row1  # no decision behind this bar (aiming image)
    assert "DIR inbound" in row1 and "LANE 1" in row1
    assert "SITE-0042" in row2 and "rc-0007" in row2 and "pkt-000123" in row2 and "FRAME 42" in row2


def test_bar_shows_the_retained_speed_that_the_fine_rests_on():
    """At a 25 degree mount angle a raw 118 km/h is 126.293 km/h retained, over a 120 limit: a bar with
    only the raw value would print a speed below the limit on a fined vehicle."""
    row1, _, _ = bar_lines(bar(measured_kmh=118.0, enforced_kmh=126.29357, limit_kmh=120.0))
    assert "MEASURED 118 km/h" in row1 and "RETAINED 126.293 km/h" in row1 and "LIMIT 120 km/h" in row1
    assert row1.index("MEASURED") < row1.index("RETAINED") < row1.index("LIMIT")


def _decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_overview_jpeg_carries_the_data_bar_and_metadata(pass_frames):
    cam, frames, trigger_ns, _ = pass_frames
    sel = select_frames(frames, trigger_ns, 2, plate_box=lambda f: cam.plate_box(f.frame_no))
    b = bar()
    images = build_evidence(sel, b, clock=clock, plate_box=lambda f: cam.plate_box(f.frame_no), quality=92)
    assert [i.role for i in images] == ["overview", "overview", "plate"]
    ov = images[0]
    frame = sel[0]
    h, w = frame.image.shape[:2]
    bh = bar_height(w)
    dec = _decode(ov.jpeg)
    assert dec.shape == (h + bh, w, 3) == (ov.height, ov.width, 3)
    assert ov.t_utc_ns == clock(frame.t_mono_ns) and ov.frame_no == frame.frame_no
    # picture above the bar is the frame itself (JPEG error only)
    assert np.abs(dec[:h].astype(int) - frame.image.astype(int)).mean() < 3.0
    # the bar region matches an independent re-render of the expected text...
    expected = render_databar(_with_utc(b, ov.t_utc_ns), w, frame_no=frame.frame_no)
    got = dec[h:]
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2.0
    # ...and not a render with one digit of the packet id changed, or another second shown
    wrong_pkt = render_databar(_with_utc(b, ov.t_utc_ns, packet_id="pkt-000124"), w, frame_no=frame.frame_no)
    wrong_time = render_databar(_with_utc(b, ov.t_utc_ns + 1_000_000_000), w, frame_no=frame.frame_no)
    for wrong in (wrong_pkt, wrong_time):
        diff = np.abs(wrong[..., 0].astype(int) - expected[..., 0].astype(int)) > 100
        ys, xs = np.nonzero(diff)
        region = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        local_good = np.abs(got[region].astype(int) - expected[region].astype(int)).mean()
        local_wrong = np.abs(got[region].astype(int) - wrong[region].astype(int)).mean()
        assert local_wrong > 4 * local_good + 10
    # metadata: the exact numbers behind the printed ones
    com = jpeg_comment(ov.jpeg)
    assert com is not None and com.startswith(COMMENT_MAGIC)
    meta = json.loads(com[len(COMMENT_MAGIC) :])
    assert meta["bar"]["measured_kmh"] == 87.33600000000001
    assert meta["frame_no"] == frame.frame_no and meta["t_mono_ns"] == frame.t_mono_ns
    assert meta["t_utc_ns"] == ov.t_utc_ns and meta["role"] == "overview"


def _with_utc(b: DataBar, utc_ns: int, **kw) -> DataBar:
    from dataclasses import asdict

    return DataBar(**{**asdict(b), "utc_ns": utc_ns, **kw})


def test_plate_crop_is_the_sharpest_plate_region(pass_frames):
    cam, frames, trigger_ns, _ = pass_frames
    sel = select_frames(frames, trigger_ns, 3, plate_box=lambda f: cam.plate_box(f.frame_no))
    images = build_evidence(sel, bar(), clock=clock, plate_box=lambda f: cam.plate_box(f.frame_no))
    plate = [i for i in images if i.role == "plate"]
    assert len(plate) == 1
    p = plate[0]
    best = max(sel, key=lambda f: sharpness(f.image, cam.plate_box(f.frame_no)))
    assert p.frame_no == best.frame_no
    meta = json.loads(jpeg_comment(p.jpeg)[len(COMMENT_MAGIC) :])
    x, y, w, h = meta["crop_box"]
    bx, by, bw, bh = cam.plate_box(best.frame_no)
    assert x <= bx and y <= by and x + w >= bx + bw and y + h >= by + bh  # plate inside the crop
    dec = _decode(p.jpeg)
    assert dec.shape[:2] == (h, w) == (p.height, p.width)
    assert np.abs(dec.astype(int) - best.image[y : y + h, x : x + w].astype(int)).mean() < 6.0


def test_evidence_build_holds_one_full_size_image_at_a_time():
    """At 1080p an evidence frame in BGR is 6 MB. Building the images converts each frame straight into
    its frame + bar image and keeps only the plate crop of the sharpest frame, so four frames (what a
    violation is built from) peak at about one such image, not three (frame, composed copy, sharpest)."""
    import tracemalloc

    from device.capture.pixels import bgr_to_yuv420
    from device.model import Frame

    sc = one_car()
    cam = SyntheticCamera(sc, width=1920, height=1080, fps=FPS, epoch_mono_ns=5 * 10**12, realtime=False)
    no = cam.frame_no_at(cam.epoch_mono_ns + round(sc.vehicles[0].t_capture_s(sc.geometry) * 1e9))
    fs = [
        Frame(cam.frame_time_ns(n), n, bgr_to_yuv420(cam.render(n)), 1000, 1.0, "synthetic", "yuv420")
        for n in range(no - 1, no + 3)
    ]
    box = cam.plate_box(no)
    assert box is not None
    build_evidence(fs, bar(), clock=clock, plate_box=lambda f: cam.plate_box(f.frame_no))  # warm caches
    tracemalloc.start()
    try:
        images = build_evidence(fs, bar(), clock=clock, plate_box=lambda f: cam.plate_box(f.frame_no))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [i.role for i in images] == ["overview"] * 4 + ["plate"]
    full = 1920 * 1080 * 3
    assert peak < 1.6 * full, f"peak {peak / 1e6:.1f} MB for {full / 1e6:.1f} MB frames"


def test_no_plate_crop_without_box(pass_frames):
    _, frames, _, _ = pass_frames
    images = build_evidence(frames[:2], bar(), clock=clock)
    assert [i.role for i in images] == ["overview", "overview"]
    with pytest.raises(EvidenceError):
        build_evidence([], bar(), clock=clock)


def _ink(a: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(a)
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of two ink masks after scaling ``b`` to ``a``'s size (the bar may fit the text smaller)."""
    b = cv2.resize(b.astype(np.uint8), (a.shape[1], a.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    pa, pb = np.zeros((h, w), bool), np.zeros((h, w), bool)
    pa[: a.shape[0], : a.shape[1]] = a
    pb[: b.shape[0], : b.shape[1]] = b
    return float((pa & pb).sum() / (pa | pb).sum())


def test_arabic_site_name_is_shaped_and_right_to_left():
    name = "شارع محمد الخامس الرباط"
    width = 1920
    with_local = render_databar(bar(site_name_local=name), width)
    without = render_databar(bar(), width)
    diff = np.abs(with_local[..., 0].astype(int) - without[..., 0].astype(int)) > 100
    assert diff.any()
    xs = np.nonzero(diff)[1]
    assert xs.min() > width // 2  # right-aligned, away from the Latin text
    drawn = _ink(np.where(diff, with_local[..., 0], 0) > 127)
    # reference: HarfBuzz shaping + FriBidi ordering through Pillow's raqm layout, same font and size
    size = max(10, int(bar_height(width) * 0.36))
    font = ImageFont.truetype(find_font("sans:lang=ar"), size, layout_engine=ImageFont.Layout.RAQM)
    im = Image.new("L", (width, 200), 0)
    ImageDraw.Draw(im).text((10, 50), name, font=font, fill=255, direction="rtl")
    reference = _ink(np.asarray(im) > 127)
    naive_font = ImageFont.truetype(find_font("sans:lang=ar"), size, layout_engine=ImageFont.Layout.BASIC)
    im2 = Image.new("L", (width, 200), 0)
    ImageDraw.Draw(im2).text((10, 50), name, font=naive_font, fill=255)  # logical order, isolated forms
    naive = _ink(np.asarray(im2) > 127)
    assert _iou(drawn, reference) > 0.7
    assert _iou(naive, reference) < 0.4
    assert shape_rtl(name) != name


def test_encode_jpeg_validates_and_round_trips():
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError):
        encode_jpeg(img, 0)
    with pytest.raises(ValueError):
        encode_jpeg(img.astype(np.float32), 90)
    with pytest.raises(ValueError):
        encode_jpeg(img, 90, comment=b"x" * 70000)
    data = encode_jpeg(img, 90, comment=b"hello")
    assert jpeg_comment(data) == b"hello"
    assert jpeg_comment(encode_jpeg(img, 90)) is None
    assert _decode(data).shape == (16, 16, 3)
    with pytest.raises(ValueError):
        jpeg_comment(b"not a jpeg")
