"""Letter bodies blended between two faces (device.anpr.synth.blend): a new shape, never a new letter."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from device.anpr.reader import PlateReader
from device.anpr.synth import fonts as F
from device.anpr.synth import random_plate, render_plate
from device.anpr.synth.blend import blend_glyph


def _ink(mask: np.ndarray) -> np.ndarray:
    return mask >= 128


def _parts(mask: np.ndarray) -> int:
    return cv2.connectedComponents(_ink(mask).astype(np.uint8), connectivity=8)[0] - 1


def _ellipse(dot: bool = False) -> np.ndarray:
    m = np.zeros((100, 120), np.uint8)
    cv2.ellipse(m, (60, 65), (40, 25), 0, 0, 360, 255, -1, cv2.LINE_AA)
    if dot:
        cv2.circle(m, (60, 16), 7, 255, -1, cv2.LINE_AA)
    return m


def _box() -> np.ndarray:
    m = np.zeros((100, 120), np.uint8)
    cv2.rectangle(m, (20, 40), (100, 90), 255, -1)
    return m


def test_no_blend_gives_the_first_face_back() -> None:
    a = _ellipse(dot=True)
    out = blend_glyph(a, _box(), 0.0)
    assert out is not None
    assert (_ink(out) ^ _ink(a)).sum() <= 0.03 * _ink(a).sum()


def test_the_body_moves_toward_the_second_face_as_alpha_grows() -> None:
    """An ellipse blended toward a box of the same size is a rounded box: its area lies between the
    two and grows with alpha."""
    a, b = _ellipse(), _box()
    areas = []
    for alpha in (0.0, 0.3, 0.6, 1.0):
        out = blend_glyph(a, b, alpha)
        assert out is not None
        areas.append(int(_ink(out).sum()))
    assert areas == sorted(areas)
    assert areas[0] < areas[1] < areas[2] < areas[3]
    assert abs(areas[3] - _ink(b).sum()) <= 0.05 * _ink(b).sum()


def test_the_dots_are_kept_exactly_where_the_first_face_draws_them() -> None:
    a = _ellipse(dot=True)
    out = blend_glyph(a, _box(), 0.5)
    assert out is not None
    assert _parts(out) == 2
    np.testing.assert_array_equal(out[:30], a[:30])  # the dot's rows: untouched


def test_a_stroke_that_would_fade_out_is_refused() -> None:
    """Two thin stems far apart in the box cancel out when blended (a ل losing its stem reads as a
    dotless ن); the blend is refused rather than drawn."""
    a = np.zeros((100, 80), np.uint8)
    b = np.zeros((100, 80), np.uint8)
    for m, x in ((a, 65), (b, 15)):
        cv2.line(m, (10, 85), (70, 85), 255, 5)  # the same bowl
        cv2.line(m, (x, 10), (x, 85), 255, 5)  # the stem at the other side
    assert blend_glyph(a, b, 0.5) is None


def test_a_loop_that_would_vanish_is_refused() -> None:
    a = np.zeros((100, 100), np.uint8)
    b = np.zeros((100, 100), np.uint8)
    cv2.line(a, (10, 80), (90, 80), 255, 5)
    cv2.line(b, (10, 80), (90, 80), 255, 5)
    cv2.circle(a, (25, 50), 15, 255, 3)  # the head of ف on the left in one face...
    cv2.circle(b, (75, 50), 15, 255, 3)  # ... on the right in the other
    assert blend_glyph(a, b, 0.5) is None


def test_bodies_in_a_different_number_of_pieces_are_refused() -> None:
    a = _box()
    b = _box()
    b[:, 58:62] = 0  # a stencil face's cut
    assert blend_glyph(a, b, 0.4) is None
    with pytest.raises(ValueError, match="alpha"):
        blend_glyph(a, a, 1.5)


def _glyph(path: str, g: str) -> np.ndarray:
    f = F.font(path, 90)
    b = f.getbbox(g)
    im = Image.new("L", (int(b[2] - b[0]) + 12, int(b[3] - b[1]) + 12), 0)
    ImageDraw.Draw(im).text((6 - b[0], 6 - b[1]), g, font=f, fill=255)
    return np.asarray(im).copy()


def test_real_faces_blend_often_and_keep_every_letters_parts() -> None:
    """Across pairs of training faces a fair share of letters blend, and every accepted blend has as many
    separate parts (body and dots) as the first face's letter: no dot lost, none merged, no stray."""
    rng = random.Random(7)
    pool = F.pool("arabic", "train_wide")
    accepted = total = 0
    for _ in range(10):
        pa, pb = rng.sample(pool, 2)
        for g in "بجفقنوي٢٣٨":
            a, b = _glyph(pa, g), _glyph(pb, g)
            out = blend_glyph(a, b, rng.uniform(0.25, 0.6))
            total += 1
            if out is None:
                continue
            accepted += 1
            assert out.shape == a.shape
            assert _parts(out) == _parts(a), (pa, pb, g)
    assert accepted >= 0.3 * total


def test_blended_plates_keep_their_labels(reader: PlateReader) -> None:
    """The committed OCR reads plates whose letters were blended between two training faces about as
    well as plain ones: the shapes are new but still the letters the labels say (a blend that made
    another letter would be read as that letter)."""
    ar, la = F.pool("arabic", "train_wide"), F.pool("latin", "train_wide")
    right = {False: 0, True: 0}
    changed = 0
    for i in range(60):
        text, _ = random_plate("EG", random.Random(900 + i))
        plates = {}
        for blend in (False, True):
            rng = random.Random(i)
            img = render_plate(text, "EG", rng, height_px=64, arabic_fonts=ar, latin_fonts=la, blend=blend)
            plates[blend] = img
            pad = cv2.copyMakeBorder(img, 8, 8, 12, 12, cv2.BORDER_CONSTANT, value=(90, 90, 90))
            right[blend] += reader.read_crop(pad, country="EG").text == text
        changed += plates[False].shape != plates[True].shape or not np.array_equal(
            plates[False], plates[True]
        )
    assert changed >= 50  # the blend draws other plates...
    assert right[False] >= 54
    assert right[True] >= right[False] - 4  # ...and keeps what they say
