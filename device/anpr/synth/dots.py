"""Calligraphic dot conventions, drawn on one rendered Arabic letter.

Printed faces draw a letter's dots as round or square marks; pen-made and calligraphic faces often do
not: two dots written as one short dash, three as a caret, square dots turned into a reed pen's
diamonds, dots larger, smaller or closer together than any face we train on. The OCR tells ق from ف,
ت from ب, ي from ى only by those dots, so it must have seen them in more than one convention.

:func:`restyle_dots` finds a glyph's dots (its small compact components), checks that it found as many
as the letter has (otherwise the glyph is returned unchanged: the face already joins or hides them, and
a guess could change the letter), and redraws them in one convention. Dots are never removed, only
reshaped, so the label stays what a reader sees.

A recipe tried on a CPU and not kept (``crop_sample(dots=True)``; models/README.md has the numbers):
the deployed network already reads redrawn dots nearly as well as the faces' own.
"""

from __future__ import annotations

import random

import cv2
import numpy as np

DOT_COUNT = {
    "ب": 1,
    "ت": 2,
    "ث": 3,
    "ج": 1,
    "خ": 1,
    "ذ": 1,
    "ز": 1,
    "ش": 3,
    "ض": 1,
    "ظ": 1,
    "غ": 1,
    "ف": 1,
    "ق": 2,
    "ن": 1,
    "ي": 2,
    "ة": 2,
}
"""Dots of each dotted letter in its isolated form (the plates' letters are drawn isolated)."""

DOT_STYLES = ("dash", "diamond", "scale")
"""``dash``: two or three dots become one stroke (three: a caret), a single dot a short oblique dash
half the time. ``diamond``: every dot a rhombus. ``scale``: dots resized and spread or drawn together."""


def find_dots(mask: np.ndarray) -> list[np.ndarray]:
    """Pixel masks of the compact components much smaller than the glyph's body (bool arrays)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 127).astype(np.uint8), connectivity=8)
    if n < 3:  # background + body + at least one dot
        return []
    areas = stats[1:, cv2.CC_STAT_AREA]
    body = 1 + int(np.argmax(areas))
    top = stats[1:, cv2.CC_STAT_TOP].min()
    height = max(1, (stats[1:, cv2.CC_STAT_TOP] + stats[1:, cv2.CC_STAT_HEIGHT]).max() - top)
    dots = []
    for i in range(1, n):
        if i == body:
            continue
        w, h, a = stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT], stats[i, cv2.CC_STAT_AREA]
        compact = max(w, h) <= 2.5 * max(1, min(w, h)) and a >= 0.45 * w * h
        if a <= 0.25 * stats[body, cv2.CC_STAT_AREA] and max(w, h) <= 0.4 * height and compact and a >= 4:
            dots.append(labels == i)
    return dots


def _erase(mask: np.ndarray, dots: list[np.ndarray]) -> np.ndarray:
    """The mask without the dots and their anti-aliased fringe (the body's own fringe stays)."""
    out = mask.copy()
    solid = mask > 127
    anything = np.zeros_like(solid)
    for d in dots:
        anything |= d
    body = solid & ~anything
    near_body = cv2.dilate(body.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    fringe = cv2.dilate(anything.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    out[fringe & ~near_body] = 0
    return out


def _poly(mask: np.ndarray, pts: np.ndarray) -> None:
    cv2.fillConvexPoly(mask, np.round(pts * 16).astype(np.int32), 255, cv2.LINE_AA, shift=4)


def _stroke(mask: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    """A straight pen stroke from ``a`` to ``b`` with rounded ends, ``width`` px thick."""
    d = b - a
    n = np.array([-d[1], d[0]]) / max(1e-6, float(np.hypot(*d))) * width / 2
    _poly(mask, np.array([a + n, b + n, b - n, a - n]))
    for p in (a, b):
        cv2.circle(mask, tuple(np.round(p * 16).astype(int)), int(width / 2 * 16), 255, -1, cv2.LINE_AA, 4)


def restyle_dots(mask: np.ndarray, letter: str, style: str, rng: random.Random) -> np.ndarray:
    """``mask`` (uint8, 255 = ink) of one isolated ``letter`` with its dots redrawn in ``style``.

    The mask needs a few pixels of free margin around the glyph: a dash can reach past the dots' box.
    """
    want = DOT_COUNT.get(letter, 0)
    if not want or style not in DOT_STYLES:
        return mask
    dots = find_dots(mask)
    if len(dots) != want:
        return mask
    centres = np.array([np.argwhere(d).mean(axis=0)[::-1] for d in dots])  # (x, y)
    sizes = np.array([np.sqrt(d.sum()) for d in dots])  # side of a square of the same area
    size = float(sizes.mean())
    out = _erase(mask, dots)
    mid = centres.mean(axis=0)
    if style == "dash":
        if want == 1:
            if rng.random() < 0.5:
                return mask
            a = np.deg2rad(rng.uniform(15, 40))
            half = size * rng.uniform(0.8, 1.2) * np.array([np.cos(a), -np.sin(a)])
            _stroke(out, mid - half, mid + half, size * rng.uniform(0.6, 0.85))
        else:
            order = centres[np.argsort(centres[:, 0])]
            span = max(size * 1.6, float(order[-1, 0] - order[0, 0]) + size * rng.uniform(0.4, 0.9))
            tilt = np.deg2rad(rng.uniform(-25, 8))
            half = span / 2 * np.array([np.cos(tilt), np.sin(tilt)])
            width = size * rng.uniform(0.6, 0.9)
            if want == 3 and rng.random() < 0.6:  # a caret: two strokes meeting above the middle
                apex = mid - np.array([0.0, size * rng.uniform(0.5, 0.9)])
                base = mid + np.array([0.0, size * 0.4])
                _stroke(out, base - half, apex, width)
                _stroke(out, apex, base + half, width)
            else:
                _stroke(out, mid - half, mid + half, width)
    elif style == "diamond":
        a = np.deg2rad(rng.uniform(-15, 15))
        r = size * rng.uniform(0.65, 0.85)
        for c in centres:
            pts = [c + r * np.array([np.cos(a + k * np.pi / 2), np.sin(a + k * np.pi / 2)]) for k in range(4)]
            _poly(out, np.array(pts))
    else:  # scale
        k = rng.uniform(0.6, 1.5)
        spread = rng.uniform(0.7, 1.4)
        for c in centres:
            cv2.circle(
                out,
                tuple(np.round((mid + (c - mid) * spread) * 16).astype(int)),
                max(8, int(size * k / 2 * 16 * 1.13)),  # a circle of the dot's area, scaled
                255,
                -1,
                cv2.LINE_AA,
                4,
            )
    return out
