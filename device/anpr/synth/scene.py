"""Synthetic 1280x720 road frames with plates on vehicle-like shapes, clutter and text distractors.

Good enough to train and test a plate detector on geometry and contrast cues; it is not a vehicle
renderer. Plate boxes are the axis-aligned bounds of the pasted (perspective-warped) plate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageDraw

from device.anpr.synth import augment, random_plate, render_plate
from device.anpr.synth import fonts as F

FRAME_W, FRAME_H = 1280, 720
_WORDS_AR = ("شركة", "النقل", "مطعم", "صيدلية", "الطريق", "خطر", "قف", "مرحبا", "سوق", "مدرسة")
_WORDS_LA = ("TAXI", "STOP", "POLICE", "TRANSPORT", "0661234567", "SALE", "HOTEL", "CAFE", "AUTO", "EXPRESS")


@dataclass(frozen=True)
class ScenePlate:
    text: str
    latin: str
    country: str
    box: tuple[int, int, int, int]
    """(x, y, w, h) in frame pixels."""


@dataclass(frozen=True)
class Scene:
    image: np.ndarray
    plates: tuple[ScenePlate, ...]
    conditions: tuple[str, ...] = field(default=())


def _rand_col(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _backdrop(rng: random.Random) -> np.ndarray:
    img = np.zeros((FRAME_H, FRAME_W, 3), np.float32)
    horizon = rng.randint(120, 330)
    sky = np.array(_rand_col(rng, 90, 240), np.float32)
    img[:horizon] = sky * np.linspace(0.8, 1.1, horizon, dtype=np.float32)[:, None, None]
    road = np.array([rng.randint(50, 140)] * 3, np.float32)
    img[horizon:] = road + np.random.default_rng(rng.getrandbits(32)).normal(
        0, 6, (FRAME_H - horizon, FRAME_W, 1)
    )
    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.randint(2, 8)):  # buildings, trees, poles
        x, w = rng.randint(-50, FRAME_W), rng.randint(20, 300)
        top = rng.randint(0, horizon)
        cv2.rectangle(out, (x, top), (x + w, horizon + rng.randint(0, 40)), _rand_col(rng, 20, 220), -1)
        if rng.random() < 0.5:
            for _k in range(rng.randint(2, 10)):
                wx, wy = x + rng.randint(0, max(1, w)), top + rng.randint(0, max(1, horizon - top))
                cv2.rectangle(
                    out,
                    (wx, wy),
                    (wx + rng.randint(8, 30), wy + rng.randint(8, 30)),
                    _rand_col(rng, 0, 255),
                    -1,
                )
    for _ in range(rng.randint(1, 4)):  # lane markings
        x = rng.randint(0, FRAME_W)
        cv2.line(
            out, (x, horizon), (x + rng.randint(-600, 600), FRAME_H), (235, 235, 235), rng.randint(3, 14)
        )
    return out


def _distractors(img: np.ndarray, rng: random.Random) -> None:
    """Signs and lettering (Arabic, Latin, digits) that a plate detector must learn to ignore."""
    boxes = []
    for _ in range(rng.randint(1, 5)):
        w, h = rng.randint(60, 320), rng.randint(25, 120)
        x, y = rng.randint(0, FRAME_W - w), rng.randint(0, FRAME_H - h)
        bg = _rand_col(rng)
        cv2.rectangle(img, (x, y), (x + w, y + h), bg, -1)
        word = rng.choice(_WORDS_AR + _WORDS_LA)
        if rng.random() < 0.4:
            word = str(rng.randint(10, 99999))
        boxes.append((x, y, h, word, tuple(255 - c for c in bg)))
    pil = Image.fromarray(img[:, :, ::-1])
    d = ImageDraw.Draw(pil)
    for x, y, h, word, ink in boxes:
        arabic = not word.isascii()
        f = F.font(rng.choice(F.pool("arabic" if arabic else "latin", "all")), max(10, int(h * 0.6)))
        kw = {"direction": "rtl"} if arabic and f.layout_engine == 1 else {}
        d.text((x + 4, y + 2), word, font=f, fill=ink[::-1], **kw)
    img[:] = np.asarray(pil)[:, :, ::-1]


def _vehicle(img: np.ndarray, rng: random.Random, cx: int, width: int, bottom: int) -> tuple[int, int, int]:
    """Draws a front/rear view of a vehicle; returns (plate centre x, plate centre y, body width)."""
    height = int(width * rng.uniform(0.6, 1.0))
    x0, x1 = cx - width // 2, cx + width // 2
    y0 = bottom - height
    body = _rand_col(rng, 10, 245)
    cv2.rectangle(img, (x0 + width // 10, y0), (x1 - width // 10, y0 + height // 2), body, -1)
    cv2.rectangle(img, (x0, y0 + height // 3), (x1, bottom), body, -1)
    glass = _rand_col(rng, 10, 90)
    cv2.rectangle(img, (x0 + width // 6, y0 + height // 12), (x1 - width // 6, y0 + height // 3), glass, -1)
    lamp = (rng.randint(180, 255), rng.randint(180, 255), rng.randint(150, 255))
    lw = width // rng.randint(6, 9)
    ly = y0 + int(height * rng.uniform(0.45, 0.6))
    cv2.rectangle(img, (x0 + 8, ly), (x0 + 8 + lw, ly + height // 10), lamp, -1)
    cv2.rectangle(img, (x1 - 8 - lw, ly), (x1 - 8, ly + height // 10), lamp, -1)
    for k in range(rng.randint(0, 6)):  # grille
        gy = ly + k * max(3, height // 30)
        cv2.line(img, (cx - width // 5, gy), (cx + width // 5, gy), _rand_col(rng, 0, 120), 2)
    cv2.rectangle(img, (x0 - 4, bottom - height // 8), (x1 + 4, bottom), _rand_col(rng, 0, 80), -1)  # bumper
    return cx + rng.randint(-width // 12, width // 12), bottom - int(height * rng.uniform(0.15, 0.28)), width


def _paste(
    img: np.ndarray, plate: np.ndarray, cx: int, cy: int, rng: random.Random
) -> tuple[int, int, int, int]:
    warped, corners = augment.perspective(plate, rng, max_shift=rng.uniform(0.0, 0.06))
    h, w = warped.shape[:2]
    x0, y0 = cx - w // 2, cy - h // 2
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(FRAME_W, x0 + w), min(FRAME_H, y0 + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return (0, 0, 0, 0)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, np.int32(np.round(corners)), 255)
    sub_m = mask[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] > 0
    region = img[fy0:fy1, fx0:fx1]
    region[sub_m] = warped[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0][sub_m]
    bx0 = max(0, int(np.floor(corners[:, 0].min())) + x0)
    by0 = max(0, int(np.floor(corners[:, 1].min())) + y0)
    bx1 = min(FRAME_W, int(np.ceil(corners[:, 0].max())) + x0)
    by1 = min(FRAME_H, int(np.ceil(corners[:, 1].max())) + y0)
    return (bx0, by0, bx1 - bx0, by1 - by0)


BLUR_OF_PLATE_WIDTH = 0.05
"""Longest motion blur in a frame, as a fraction of its plates' mean width. Blur and plate size both
scale with distance, so the ratio is what the camera sets: a car at 130 km/h crossing the view at 20
degrees moves 2.5 cm (5 % of a 52 cm plate) in a 1/500 s exposure; enforcement cameras expose shorter."""


def blur_limit(plates: list[ScenePlate]) -> int:
    """Longest motion-blur kernel (pixels) for a frame with ``plates`` (no plates: 2 % of its height)."""
    if not plates:
        return max(3, round(0.02 * FRAME_H))
    mean_w = sum(p.box[2] for p in plates) / len(plates)
    return max(3, round(BLUR_OF_PLATE_WIDTH * mean_w))


def make_scene(
    rng: random.Random,
    *,
    split: str = "train",
    degraded: bool | None = None,
    countries: tuple[str, ...] | None = None,
    max_plates: int = 2,
    min_plates: int = 0,
) -> Scene:
    from device.anpr.synth.samples import pick_country

    img = _backdrop(rng)
    _distractors(img, rng)
    n = rng.choices(
        range(min_plates, max_plates + 1),
        weights=[1 if k == 0 else 4 if k == 1 else 1 for k in range(min_plates, max_plates + 1)],
    )[0]
    ar, la = F.pool("arabic", split), F.pool("latin", split)
    plates: list[ScenePlate] = []
    slots = rng.sample(range(n), n) if n else []
    for i in slots:
        country = pick_country(rng, countries)
        text, latin = random_plate(country, rng)
        lane_w = FRAME_W // max(1, n)
        vw = int(min(lane_w * 0.9, rng.uniform(320, 760)))
        cx = lane_w * i + lane_w // 2 + rng.randint(-lane_w // 10, lane_w // 10)
        bottom = rng.randint(int(FRAME_H * 0.7), FRAME_H + 40)
        pcx, pcy, bw = _vehicle(img, rng, cx, vw, bottom)
        plate_w = int(np.clip(bw * rng.uniform(0.22, 0.4), 80, 300))
        plate0 = render_plate(text, country, rng, height_px=64, arabic_fonts=ar, latin_fonts=la)
        ph = max(12, round(plate0.shape[0] * plate_w / plate0.shape[1]))
        plate = cv2.resize(plate0, (plate_w, ph), interpolation=cv2.INTER_AREA)
        pcy = min(pcy, FRAME_H - ph // 2 - 8)  # whole plate in view: a cut plate has no true label
        box = _paste(img, plate, pcx, pcy, rng)
        if box[2] >= 20 and box[3] >= 8 and box[1] + box[3] < FRAME_H and box[0] + box[2] < FRAME_W:
            plates.append(ScenePlate(text, latin, country, box))
    img = augment.photometric(img, rng)
    if degraded is None:
        degraded = rng.random() < 0.5
    conditions: tuple[str, ...] = ()
    if degraded:
        names = rng.sample(
            ("motion_blur", "noise", "night", "ir", "jpeg", "shadow", "glare"), rng.choice((1, 2))
        )
        for name in ("shadow", "glare", "ir", "night", "motion_blur", "noise", "jpeg"):
            if name == "motion_blur" and name in names:  # sized to the plates, not the frame
                img = augment.motion_blur(img, rng, max_len=blur_limit(plates))
            elif name in names:
                img = augment.apply(img, name, rng)
        conditions = tuple(sorted(names))
    return Scene(np.ascontiguousarray(img), tuple(plates), conditions)
