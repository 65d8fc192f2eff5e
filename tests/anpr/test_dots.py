"""Calligraphic dot conventions (device.anpr.synth.dots): dots found, reshaped, never lost or added."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from device.anpr.synth import fonts as F
from device.anpr.synth import render_plate
from device.anpr.synth.dots import DOT_COUNT, DOT_STYLES, find_dots, restyle_dots


def _letter(n_dots: int) -> np.ndarray:
    """A bowl (the body) with ``n_dots`` round dots above it, anti-aliased like a rendered glyph."""
    m = np.zeros((110, 120), np.uint8)
    cv2.ellipse(m, (60, 75), (40, 20), 0, 0, 180, 255, 9, cv2.LINE_AA)
    cv2.line(m, (20, 75), (20, 60), 255, 9, cv2.LINE_AA)
    for i in range(n_dots):
        x = 60 + (i - (n_dots - 1) / 2) * 16
        cv2.circle(m, (int(x), 30 if i != 1 or n_dots < 3 else 16), 5, 255, -1, cv2.LINE_AA)
    return m


def _marks(mask: np.ndarray) -> list[np.ndarray]:
    """The separate marks above the bowl (the dots' region), as bool masks."""
    n, labels = cv2.connectedComponents((mask[:48] > 127).astype(np.uint8), connectivity=8)
    return [labels == i for i in range(1, n)]


def _body(mask: np.ndarray) -> np.ndarray:
    """Ink below the dots' rows (the bowl and stem): what a restyle must leave exactly as it was."""
    return mask[48:]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_find_dots_finds_the_small_compact_marks_and_not_the_body(n: int) -> None:
    dots = find_dots(_letter(n))
    assert len(dots) == n
    assert all(d[48:].sum() == 0 for d in dots)  # none of them is part of the bowl


def test_find_dots_agrees_with_the_alphabet_on_most_training_faces() -> None:
    """On real faces the detection is right for most dotted letters and never finds more dots than the
    letter has. Where it finds fewer (faces that already draw touching dots as one mark, e.g. Amiri)
    restyle_dots leaves the glyph alone rather than guess."""
    agree = total = 0
    for path in F.pool("arabic", "train")[:8]:
        f = F.font(path, 90)
        for g in "قتشفبين":
            b = f.getbbox(g)
            im = Image.new("L", (int(b[2] - b[0]) + 12, int(b[3] - b[1]) + 12), 0)
            ImageDraw.Draw(im).text((6 - b[0], 6 - b[1]), g, font=f, fill=255)
            found = len(find_dots(np.asarray(im)))
            assert found <= DOT_COUNT[g], (path, g, found)
            agree += found == DOT_COUNT[g]
            total += 1
    assert total >= 40 and agree / total >= 0.6


@pytest.mark.parametrize("style", DOT_STYLES)
@pytest.mark.parametrize("letter", ["ق", "ش", "ب"])
def test_restyle_changes_only_the_dots(style: str, letter: str) -> None:
    n = DOT_COUNT[letter]
    src = _letter(n)
    for seed in range(8):
        out = restyle_dots(src.copy(), letter, style, random.Random(seed))
        assert out.shape == src.shape and out.dtype == np.uint8
        assert np.array_equal(_body(out), _body(src))
        ink = (out[:48] > 127).sum()
        assert ink >= 0.3 * (src[:48] > 127).sum()  # the marks are reshaped, never erased
        marks = len(_marks(out))
        if style == "dash" and n > 1:
            assert marks == 1  # one stroke, or a caret's two arms meeting
        elif style == "scale":
            assert marks == n
        else:
            assert 1 <= marks <= n  # diamonds (close ones may touch, as some faces draw them)


def test_dash_joins_two_dots_into_one_stroke() -> None:
    out = restyle_dots(_letter(2), "ق", "dash", random.Random(3))
    (stroke,) = _marks(out)
    ys, xs = np.nonzero(stroke)
    assert xs.max() - xs.min() > 2 * (ys.max() - ys.min())  # longer than it is thick


def test_a_glyph_whose_dots_cannot_be_counted_is_left_alone() -> None:
    one_dot = _letter(1)
    for style in DOT_STYLES:
        assert np.array_equal(restyle_dots(one_dot, "ق", style, random.Random(1)), one_dot)  # ق has 2
        assert np.array_equal(restyle_dots(one_dot, "د", style, random.Random(1)), one_dot)  # no dots
    assert np.array_equal(restyle_dots(_letter(2), "ق", "cursive", random.Random(1)), _letter(2))


def test_render_with_dots_is_reproducible_and_off_by_default() -> None:
    ar = F.pool("arabic", "train")
    text = "123-قفب"
    plain = render_plate(text, "EG", random.Random(5), arabic_fonts=ar)
    off = render_plate(text, "EG", random.Random(5), arabic_fonts=ar, dots=False)
    assert np.array_equal(plain, off)
    changed = 0
    for seed in range(12):
        a = render_plate(text, "EG", random.Random(seed), arabic_fonts=ar, dots=True)
        b = render_plate(text, "EG", random.Random(seed), arabic_fonts=ar, dots=True)
        assert np.array_equal(a, b)
        ref = render_plate(text, "EG", random.Random(seed), arabic_fonts=ar)
        changed += a.shape != ref.shape or not np.array_equal(a, ref)
    assert changed >= 6
