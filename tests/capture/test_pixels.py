"""Frames held as YUV 4:2:0 instead of BGR: the conversions, the Frame API both layouts share, and the
claim that matters - evidence images and plate reads come out the same from either layout."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from device.anpr.reader import PlateReader
from device.capture.evidence import COMMENT_MAGIC, DataBar, build_evidence, jpeg_comment, select_frames
from device.capture.pixels import bgr_to_yuv420, check_yuv420, pack_yuv420, yuv420_gray, yuv420_to_bgr
from device.config import AnprConfig, CameraConfig
from device.model import Direction, Frame
from device.sim.scenario import Geometry, Scenario, Vehicle
from device.sim.traffic_camera import SyntheticCamera

FPS = 15.0


@pytest.fixture(scope="module")
def scene():
    v = Vehicle(0, 1.0, "1", Direction.INBOUND, 90.0, "12345-ب-6", "12345-B-6", color_bgr=(40, 60, 160))
    sc = Scenario([v], duration_s=6.0, seed=7, geometry=Geometry())
    cam = SyntheticCamera(sc, width=1280, height=720, fps=FPS, epoch_mono_ns=5 * 10**12, realtime=False)
    trigger = cam.epoch_mono_ns + round(v.t_capture_s(sc.geometry) * 1e9)
    no = cam.frame_no_at(trigger)
    renders = {n: cam.render(n) for n in range(no - 6, no + 7)}
    return cam, trigger, renders


def frames(renders: dict, cam: SyntheticCamera, layout: str) -> list[Frame]:
    def px(img):
        return bgr_to_yuv420(img) if layout == "yuv420" else img

    return [
        Frame(cam.frame_time_ns(n), n, px(img), 1000, 1.0, "synthetic", layout) for n, img in renders.items()
    ]


def test_round_trip_keeps_the_picture(scene):
    _, _, renders = scene
    img = next(iter(renders.values()))
    yuv = bgr_to_yuv420(img)
    assert yuv.shape == (720 * 3 // 2, 1280) and yuv.dtype == np.uint8
    back = yuv420_to_bgr(yuv)
    diff = np.abs(back.astype(int) - img.astype(int))
    # 4:2:0 halves the chroma resolution (as every JPEG here does): small on average, edges differ most
    assert diff.mean() < 2.0
    # luma is kept per pixel: grey from Y equals OpenCV's BGR2GRAY up to the limited range's rounding
    g = np.abs(yuv420_gray(yuv).astype(int) - cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(int))
    assert g.max() <= 2 and g.mean() < 0.7


def test_limited_range_luma_is_stretched_back_to_full_range():
    for level in (0, 1, 128, 254, 255):
        img = np.full((4, 6, 3), level, np.uint8)
        yuv = bgr_to_yuv420(img)
        assert int(yuv[0, 0]) == round(16 + level * 219 / 255)  # BT.601 studio swing in the buffer...
        assert abs(int(yuv420_gray(yuv)[0, 0]) - level) <= 1  # ...full range for the plate models


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="even width and height"):
        bgr_to_yuv420(np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="BGR"):
        bgr_to_yuv420(np.zeros((6, 6), np.uint8))
    for bad in (np.zeros((7, 6), np.uint8), np.zeros((6, 6, 3), np.uint8), np.zeros((9, 6), np.float32)):
        with pytest.raises(ValueError, match="not an I420 frame"):
            check_yuv420(bad)
    with pytest.raises(ValueError, match="does not hold"):
        pack_yuv420(np.zeros((9, 64), np.uint8), 64, 8)
    with pytest.raises(ValueError, match="unknown frame layout"):
        Frame(0, 0, np.zeros((6, 4), np.uint8), layout="nv12")  # type: ignore[arg-type]


def test_frame_api_is_the_same_for_both_layouts(scene):
    cam, _, renders = scene
    for layout in ("bgr", "yuv420"):
        f = frames(renders, cam, layout)[0]
        assert f.size == (1280, 720) and f.shape == (720, 1280, 3)
        assert f.bgr().shape == (720, 1280, 3) and f.gray().shape == (720, 1280)
    bgr = frames(renders, cam, "bgr")[0]
    assert bgr.bgr() is bgr.image  # no copy for BGR frames


def test_bgr_into_a_given_array(scene):
    """``bgr(out=)`` writes the picture where the evidence image wants it (the top of frame + bar)."""
    cam, _, renders = scene
    for layout in ("bgr", "yuv420"):
        f = frames(renders, cam, layout)[0]
        canvas = np.full((720 + 40, 1280, 3), 7, np.uint8)
        got = f.bgr(out=canvas[:720])
        assert np.shares_memory(got, canvas) and np.array_equal(got, f.bgr())
        assert (canvas[720:] == 7).all()  # nothing written below the picture
    yuv = frames(renders, cam, "yuv420")[0]
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        yuv.bgr(out=np.empty((720, 1280, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        yuv.bgr(out=np.empty((720, 1280 * 2, 3), np.uint8)[:, ::2])


def test_config_refuses_an_odd_size_for_yuv420():
    with pytest.raises(ValueError, match="even width and height"):
        CameraConfig(width=1279, height=720)
    assert CameraConfig(width=1279, height=720, frame_layout="bgr").width == 1279
    assert CameraConfig().frame_layout == "yuv420"


def test_evidence_is_the_same_from_either_layout(scene):
    cam, trigger, renders = scene
    bar = DataBar(1_795_000_000_000_000_000, True, "ntp", 97.2, 60.0, "inbound", "SITE-1", "Site", "الرباط",
                  "rc-1", "pkt-1", "1")  # fmt: skip

    def box(f):
        return cam.plate_box(f.frame_no)

    built = {}
    for layout in ("bgr", "yuv420"):
        fs = frames(renders, cam, layout)
        sel = select_frames(fs, trigger, 3, plate_box=box)
        built[layout] = (sel, build_evidence(sel, bar, clock=lambda t: t + 1, plate_box=box))
    (sel_b, img_b), (sel_y, img_y) = built["bgr"], built["yuv420"]
    assert sel_y[0].frame_no == sel_b[0].frame_no  # the trigger frame, chosen by time alone
    # sharpness is ranked on Y instead of the green channel: the same frames on this scene
    assert [f.frame_no for f in sel_y] == [f.frame_no for f in sel_b]
    assert [(i.role, i.frame_no, i.width, i.height) for i in img_y] == [
        (i.role, i.frame_no, i.width, i.height) for i in img_b
    ]
    for a, b in zip(img_b, img_y, strict=True):
        da = cv2.imdecode(np.frombuffer(a.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
        db = cv2.imdecode(np.frombuffer(b.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
        assert np.abs(da - db).mean() < 2.5, a.role
        ma, mb = (json.loads(jpeg_comment(x.jpeg)[len(COMMENT_MAGIC) :]) for x in (a, b))
        assert (ma.pop("layout"), mb.pop("layout")) == ("bgr", "yuv420")  # how each frame was held
        assert ma == mb  # the traced numbers do not depend on the pixel layout


def test_plate_reads_are_the_same_from_either_layout(scene):
    cam, _, renders = scene
    reader = PlateReader(AnprConfig(countries=["MA"]))
    reads = {}
    for layout in ("bgr", "yuv420"):
        fs = frames(renders, cam, layout)
        reads[layout] = reader.read_frames([f.gray() for f in fs])
    assert reads["bgr"] is not None and reads["bgr"].text == "12345-ب-6"
    assert reads["yuv420"] is not None and reads["yuv420"].text == reads["bgr"].text
    assert reads["yuv420"].box == pytest.approx(reads["bgr"].box, abs=3)


def test_pack_copies_only_what_libcamera_could_reuse():
    owned = np.arange(12 * 8, dtype=np.uint8).reshape(12, 8).copy()  # make_array's own copy, no padding
    assert pack_yuv420(owned, 8, 8) is owned  # no second copy of a 1080p frame per frame
    view = np.zeros((24, 8), np.uint8)[:12]  # a view into a buffer someone else owns
    packed = pack_yuv420(view, 8, 8)
    assert packed is not view and packed.flags.owndata and np.shares_memory(packed, view) is False
