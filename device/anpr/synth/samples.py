"""Labelled samples for training and testing: plate crops (as a detector would cut them) and frames.

``split="train"`` draws fonts from the training pool, ``"heldout"`` only from fonts never trained on;
the test sets also use seeds disjoint from training (see models/train).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import cv2
import numpy as np

from device.anpr.synth import STYLES, augment, random_plate, render_plate
from device.anpr.synth import fonts as F
from device.anpr.synth.render import Typeset
from device.anpr.synth.scene import Scene, make_scene

COUNTRY_WEIGHTS = {"MA": 0.4, "SA": 0.2, "EG": 0.2, "MR": 0.2}
VARIETY_WEIGHTS = {"MA": 0.3, "SA": 0.15, "EG": 0.35, "MR": 0.2}
"""Country mix of ``variety`` crops: Egypt's plates are Arabic glyphs only (no Latin row to fall back
on), so they carry most of the unseen-type-face risk and get the largest share."""


@dataclass(frozen=True)
class CropSample:
    image: np.ndarray
    """BGR crop around the plate, loose like a detector box plus margin."""
    text: str
    latin: str
    country: str
    conditions: tuple[str, ...]
    style: str = ""
    """Layout variant drawn (``STYLES[country]``): decides the visual reading order."""


def pick_country(
    rng: random.Random, countries: tuple[str, ...] | None = None, weights: dict[str, float] | None = None
) -> str:
    table = weights or COUNTRY_WEIGHTS
    names = list(countries or table)
    return rng.choices(names, weights=[table.get(c, 0.25) for c in names])[0]


def _background_patch(h: int, w: int, rng: random.Random) -> np.ndarray:
    col = np.array([rng.randint(0, 255) for _ in range(3)], np.float32)
    img = np.ones((h, w, 3), np.float32) * col
    if rng.random() < 0.5:
        img += np.linspace(rng.uniform(-40, 40), rng.uniform(-40, 40), w, dtype=np.float32)[None, :, None]
    g = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 12), (h, w, 1))
    return np.clip(img + g, 0, 255).astype(np.uint8)


RESTYLE_TYPESETS: tuple[Typeset, ...] = ("glyphs", "strings", "joined")

CROP_MARGINS = {"tight": (0.12, 0.2), "wide": (0.25, 0.45)}
"""Largest crop margin per side, as fractions of the plate's (width, height): ``tight`` is a good
detector box, ``wide`` covers the reader's wider retry crop (device.anpr.reader.MARGINS)."""


def crop_sample(
    rng: random.Random,
    *,
    split: str = "train",
    degraded: bool | None = None,
    country: str | None = None,
    margins: str = "tight",
    variety: bool = False,
    typeset: Typeset = "glyphs",
    restyle: bool = False,
) -> CropSample:
    """One labelled crop. ``variety`` (the OCR's training stages 3 and 4) adds warped glyph outlines
    (:func:`.augment.glyph_warp`), plates as small as a distant car's in a 1280x720 frame, and more
    Egyptian plates; without it the draws are unchanged, so older seeds give the same crops.
    ``typeset`` passes on to the renderer (:data:`.render.Typeset`): other generators' habits.
    ``restyle`` (a training recipe tried on a CPU, models/README.md; no committed stage uses it yet)
    draws the typeset per plate instead (glyphs 60 %, strings 20 %, joined 20 %) and gives 30 % of the
    plates a broad pen's stroke contrast (:func:`.augment.pen`)."""
    country = country or pick_country(rng, weights=VARIETY_WEIGHTS if variety else None)
    text, latin = random_plate(country, rng)
    if restyle:
        typeset = rng.choices(RESTYLE_TYPESETS, weights=(0.6, 0.2, 0.2))[0]
    ar, la = F.pool("arabic", split), F.pool("latin", split)
    style = rng.choice(STYLES[country])
    one_line = style in ("one_line", "standard") and country in ("MA", "MR")
    low = (18 if one_line else 26) if variety else (28 if one_line else 40)
    plate = render_plate(
        text,
        country,
        rng,
        height_px=rng.randint(low, 110),
        style=style,
        arabic_fonts=ar,
        latin_fonts=la,
        typeset=typeset,
    )
    if restyle and rng.random() < 0.3:
        plate = augment.pen(plate, rng)
    if variety and rng.random() < 0.5:
        plate = augment.glyph_warp(plate, rng)
    # (No draw for the other splits, so their seeds keep their data.)
    if split in ("train_extended", "train_wide") and rng.random() < 0.06:
        plate = augment.hollow(plate, rng)
    ph, pw = plate.shape[:2]
    if rng.random() < 0.7:
        plate, corners = augment.perspective(plate, rng, max_shift=rng.uniform(0.01, 0.07))
    else:
        corners = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    qh, qw = plate.shape[:2]
    pad = int(0.4 * max(qh, qw * 0.25)) + 4
    canvas = _background_patch(qh + 2 * pad, qw + 2 * pad, rng)
    # Paste the warped plate only where it is (mask of its quad), so the surroundings stay background.
    mask = np.zeros((qh, qw), np.uint8)
    cv2.fillConvexPoly(mask, np.int32(np.round(corners)), 255)
    region = canvas[pad : pad + qh, pad : pad + qw]
    region[mask > 0] = plate[mask > 0]
    x0, y0 = corners[:, 0].min() + pad, corners[:, 1].min() + pad
    x1, y1 = corners[:, 0].max() + pad, corners[:, 1].max() + pad
    bw, bh = x1 - x0, y1 - y0
    mx, my = CROP_MARGINS[margins]
    cx0 = round(x0 - bw * rng.uniform(-0.03, mx))
    cx1 = round(x1 + bw * rng.uniform(-0.03, mx))
    cy0 = round(y0 - bh * rng.uniform(-0.05, my))
    cy1 = round(y1 + bh * rng.uniform(-0.05, my))
    H, W = canvas.shape[:2]
    crop = canvas[max(0, cy0) : min(H, cy1), max(0, cx0) : min(W, cx1)]
    crop = augment.photometric(crop, rng)
    if degraded is None:
        degraded = rng.random() < 0.5
    conditions: tuple[str, ...] = ()
    if degraded:
        crop, conditions = augment.degrade(crop, rng)
    return CropSample(np.ascontiguousarray(crop), text, latin, country, conditions, style)


def frame_sample(
    rng: random.Random,
    *,
    split: str = "train",
    degraded: bool | None = None,
    countries: tuple[str, ...] | None = None,
    max_plates: int = 2,
) -> Scene:
    """A 1280x720 road frame with 0..max_plates plates (see :func:`.scene.make_scene`)."""
    return make_scene(rng, split=split, degraded=degraded, countries=countries, max_plates=max_plates)
