"""Camera-like degradations of plate images and frames: the "degraded" condition of the test sets.

Each function takes and returns BGR uint8 and draws every parameter from ``rng`` (reproducible).
Occlusion never hides more than a thin strip, so the label stays readable by a person.
"""

from __future__ import annotations

import random

import cv2
import numpy as np

CONDITIONS = ("motion_blur", "noise", "night", "ir", "jpeg", "shadow", "occlusion", "low_res", "glare")


def perspective(
    img: np.ndarray, rng: random.Random, max_shift: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """Random homography of the whole image; returns the warped image and the 4 moved corners."""
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jit = np.float32(
        [[rng.uniform(-1, 1) * max_shift * w, rng.uniform(-1, 1) * max_shift * h] for _ in range(4)]
    )
    dst = src + jit
    dst -= dst.min(axis=0)
    ow, oh = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
    m = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(img, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, dst


def hollow(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Outline lettering: the inside of every dark stroke painted with the plate's background.

    Some type faces (and some embossed plates under flat light) show only the strokes' edges; a flat
    render of a filled face turned hollow teaches the OCR that shape, not stroke fill, is the letter.
    """
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    _, ink = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    dist = cv2.distanceTransform(ink, cv2.DIST_L2, 3)
    half = float(np.percentile(dist[ink > 0], 95)) if (ink > 0).any() else 0.0  # half the stroke width
    k = max(1, round(half * rng.uniform(0.35, 0.6)))
    inner = cv2.erode(ink, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    out = img.copy()
    paper = np.median(img[ink == 0], axis=0) if (ink == 0).any() else np.array([255, 255, 255])
    out[inner > 0] = paper.astype(np.uint8)
    return out


def pen(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Gives the lettering a broad pen's contrast: strokes across one direction thin, along it full.

    Calligraphic faces (Naskh, Maghribi, Diwani styles) owe much of their look to that thick/thin
    modulation, which our mostly monoline training faces lack. Eroding the glyphs with a short line
    kernel at a random angle (20-70 degrees either way) thins each stroke by how much it runs across
    that line (keeping at least 55 % of the ink), while strokes along it keep theirs. Wide dark parts
    (borders, colour bands) are left as they are: only components narrower than 40 % of the plate
    change.
    """
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    _, ink = cv2.threshold(g, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    n_cc, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    keep = np.zeros(n_cc, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_WIDTH] < 0.4 * img.shape[1]
    glyphs = np.where(keep[labels], 255, 0).astype(np.uint8)
    if not glyphs.any() or (ink == 0).sum() < ink.size * 0.3:
        return img  # nothing to restyle, or the "ink" is the plate itself (dark plate, light text)
    dist = cv2.distanceTransform(glyphs, cv2.DIST_L2, 3)
    ridge = (dist > 0.5) & (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8)))
    width = 2 * float(np.median(dist[ridge])) if ridge.any() else 2.0  # typical stroke width
    up = max(1, int(np.ceil(16 / max(width, 1.0))))  # work at >= 16 px per stroke: sub-pixel thinning
    h, w = glyphs.shape
    big = cv2.resize(glyphs, (w * up, h * up), interpolation=cv2.INTER_LINEAR)
    big = np.where(big > 127, 255, 0).astype(np.uint8)
    a = np.deg2rad(rng.uniform(20, 70) * rng.choice((1, -1)))
    n = round(width * up * rng.uniform(0.45, 0.7)) | 1
    while True:  # a shorter nib where the longer one would erase more than half of the ink
        nib = np.zeros((n, n), np.uint8)
        c, dx, dy = (n - 1) / 2, np.cos(a) * (n - 1) / 2, np.sin(a) * (n - 1) / 2
        cv2.line(nib, (round(c - dx), round(c + dy)), (round(c + dx), round(c - dy)), 1, max(1, up // 2))
        stroke = cv2.erode(big, nib)
        if n <= 3 or np.count_nonzero(stroke) >= 0.55 * np.count_nonzero(big):
            break
        n -= 2
    keep_ink = cv2.resize(stroke, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    # A glyph thinner than the plate's typical stroke would all but vanish (its label with it): only
    # components that keep at least half their ink are restyled, each with its anti-aliased fringe.
    lab = np.where(glyphs > 0, labels, 0).ravel()
    kept = np.bincount(lab, weights=keep_ink.ravel(), minlength=n_cc)
    kept /= np.maximum(1, np.bincount(lab, minlength=n_cc))
    thin = (kept < 0.5)[labels] & (glyphs > 0)
    restyled = np.where((glyphs > 0) & ~thin, 255, 0).astype(np.uint8)
    rim = (cv2.dilate(restyled, np.ones((3, 3), np.uint8)) > 0) & ~thin
    fade = np.where(rim, 1.0 - keep_ink, 0.0)[..., None]  # ink that the nib takes away
    paper = np.median(img[ink == 0], axis=0).astype(np.float32)
    return np.clip(img * (1 - fade) + paper * fade, 0, 255).astype(np.uint8)


def glyph_warp(img: np.ndarray, rng: random.Random, amplitude: float | None = None) -> np.ndarray:
    """Smooth random displacement of a flat plate: every glyph's outline bends a little differently.

    Type faces differ in exactly this way (bowl widths, tail curves, stroke joins), so training on
    warped renders of our fonts stands in for the faces we do not have. ``amplitude`` is the largest
    shift as a fraction of the plate height (default 1.5-3.5 %); the field varies over about a glyph's
    width, so strokes bend but do not tear.
    """
    h, w = img.shape[:2]
    a = (amplitude if amplitude is not None else rng.uniform(0.015, 0.035)) * h
    sigma = h * rng.uniform(0.08, 0.14)
    g = np.random.default_rng(rng.getrandbits(32))
    fields = []
    for _ in range(2):
        f = cv2.GaussianBlur(g.standard_normal((h, w)).astype(np.float32), (0, 0), sigma)
        fields.append(f * (a / max(1e-6, float(np.abs(f).max()))))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(img, xx + fields[0], yy + fields[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def motion_blur(img: np.ndarray, rng: random.Random, max_len: int | None = None) -> np.ndarray:
    """Linear blur up to ~6% of the image height (about a third of a stroke gap on a plate)."""
    n = rng.randint(3, max(3, max_len or int(img.shape[0] * 0.09)))
    k = np.zeros((n, n), np.float32)
    k[n // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), rng.uniform(-30, 30), 1.0)
    k = cv2.warpAffine(k, rot, (n, n))
    k /= max(k.sum(), 1e-6)
    return cv2.filter2D(img, -1, k)


def noise(img: np.ndarray, rng: random.Random, sigma: float | None = None) -> np.ndarray:
    s = sigma if sigma is not None else rng.uniform(4, 16)
    g = np.random.default_rng(rng.getrandbits(32)).normal(0, s, img.shape)
    return np.clip(img.astype(np.float32) + g, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, rng: random.Random) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(15, 45)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else img


def night(img: np.ndarray, rng: random.Random) -> np.ndarray:
    f = img.astype(np.float32) * rng.uniform(0.2, 0.45) + rng.uniform(0, 10)
    return noise(np.clip(f, 0, 255).astype(np.uint8), rng, rng.uniform(4, 10))


def ir(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Near-infrared look: monochrome, retro-reflective plate glows, ink stays dark, slight bloom."""
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    g = np.clip((g - 60) * rng.uniform(1.2, 1.8) + 40, 0, 255)
    g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.5, 1.2))
    return cv2.cvtColor(g.astype(np.uint8), cv2.COLOR_GRAY2BGR)


def shadow(img: np.ndarray, rng: random.Random) -> np.ndarray:
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    x0 = rng.uniform(-0.2, 0.8) * w
    pts = np.int32(
        [
            [x0, -1],
            [x0 + rng.uniform(0.2, 0.9) * w, -1],
            [x0 + rng.uniform(-0.3, 0.9) * w, h + 1],
            [x0 + rng.uniform(-0.6, 0.3) * w, h + 1],
        ]
    )
    cv2.fillPoly(mask, [pts], 255)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.03 * w)).astype(np.float32) / 255.0
    f = 1.0 - mask[..., None] * rng.uniform(0.35, 0.6)
    return np.clip(img.astype(np.float32) * f, 0, 255).astype(np.uint8)


def glare(img: np.ndarray, rng: random.Random) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.3, 0.8) * max(w, h)
    m = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * rng.uniform(40, 90)
    return np.clip(img.astype(np.float32) + m[..., None], 0, 255).astype(np.uint8)


def occlusion(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """A thin strip (bumper edge, tow bar, mud) across the top or bottom edge, or a corner blob."""
    out = img.copy()
    h, w = img.shape[:2]
    col = tuple(int(c) for c in np.random.default_rng(rng.getrandbits(32)).integers(0, 120, 3))
    if rng.random() < 0.6:
        t = max(1, int(h * rng.uniform(0.06, 0.14)))
        if rng.random() < 0.5:
            out[:t] = col
        else:
            out[h - t :] = col
    else:
        r = int(min(h, w) * rng.uniform(0.12, 0.22))
        cx = rng.choice((0, w))
        cy = rng.choice((0, h))
        cv2.circle(out, (cx, cy), r, col, -1)
    return out


def low_res(img: np.ndarray, rng: random.Random) -> np.ndarray:
    h, w = img.shape[:2]
    f = rng.uniform(0.35, 0.6)
    small = cv2.resize(img, (max(4, int(w * f)), max(4, int(h * f))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


_FUNCS = {
    "motion_blur": motion_blur,
    "noise": noise,
    "night": night,
    "ir": ir,
    "jpeg": jpeg,
    "shadow": shadow,
    "occlusion": occlusion,
    "low_res": low_res,
    "glare": glare,
}


def apply(img: np.ndarray, name: str, rng: random.Random) -> np.ndarray:
    return _FUNCS[name](img, rng)


def degrade(
    img: np.ndarray, rng: random.Random, *, n: int | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """One to three random conditions, applied in a camera-plausible order; returns (image, names)."""
    k = n if n is not None else rng.choice((1, 1, 2, 2, 3))
    names = rng.sample(CONDITIONS, k)
    order = ("shadow", "glare", "occlusion", "ir", "night", "motion_blur", "low_res", "noise", "jpeg")
    for name in order:
        if name in names:
            img = apply(img, name, rng)
    return img, tuple(n for n in order if n in names)


def photometric(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Mild exposure/contrast/colour changes every camera frame has (used on "clean" samples too)."""
    f = img.astype(np.float32)
    f = (f - 128) * rng.uniform(0.75, 1.2) + 128 + rng.uniform(-30, 25)
    f *= np.float32([rng.uniform(0.9, 1.1) for _ in range(3)])
    if rng.random() < 0.5:
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.3, 0.9))
    return np.clip(f, 0, 255).astype(np.uint8)
