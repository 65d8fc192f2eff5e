"""Letter bodies between two type faces: a glyph's shape interpolated between its drawings in two fonts.

The OCR misreads Arabic letters in held-out faces whose letter bodies are unlike any training face's
(models/README.md); the font packages offer no more faces. Blending the signed distance fields of the
same letter in two training faces draws shapes that neither face has (a bowl between a round and a
flat one, a tail between a long and a short one), so the pool of faces becomes a continuum.

Only the letter's body (its large connected parts) is blended. Dots, hamza and other small marks are
kept exactly as the first face draws them: blending two dots that do not overlap would make both
vanish, and a letter without its dots is another letter (the label would lie).
"""

from __future__ import annotations

import cv2
import numpy as np

BODY_SHARE = 0.25
"""A connected part at least this share of the largest part's area belongs to the body."""

COVER = 0.95
"""Share of the first face's body ink (and the second's, when it weighs as much) that must lie near the
blend: a stroke that fades out (the stem of ل lost, leaving a dotless ن) is another letter, though its
topology is unchanged."""

UPSCALE = 2
"""Distance fields are computed at this multiple of the glyph's size, for smooth blended edges."""


def _parts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(body, marks, body part count): ``mask``'s large connected parts and the rest, as 0/255."""
    ink = (mask >= 128).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    if n <= 1:
        return np.zeros_like(mask), np.zeros_like(mask), 0
    areas = stats[1:, cv2.CC_STAT_AREA]
    big = [i + 1 for i, a in enumerate(areas) if a >= BODY_SHARE * areas.max()]
    body = np.isin(labels, big)
    marks = (labels > 0) & ~body
    return body.astype(np.uint8) * 255, marks.astype(np.uint8) * 255, len(big)


def _topology(binary: np.ndarray) -> tuple[int, int]:
    """(connected parts, holes) of a 0/1 mask: the loop of ف, the counter of و, the eye of ه."""
    contours, hierarchy = cv2.findContours(binary.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return 0, 0
    outer = sum(1 for h in hierarchy[0] if h[3] < 0)
    return outer, len(contours) - outer


def _covered(ink: np.ndarray, near: np.ndarray, tol: float) -> float:
    """Share of ``ink``'s pixels within ``tol`` of ``near``'s."""
    dist = cv2.distanceTransform((~near).astype(np.uint8), cv2.DIST_L2, 5)
    return float((dist[ink] <= tol).mean()) if ink.any() else 0.0


def _sdf(binary: np.ndarray) -> np.ndarray:
    """Signed distance to the outline: negative inside the ink, positive outside."""
    ink = binary > 0
    outside = cv2.distanceTransform((~ink).astype(np.uint8), cv2.DIST_L2, 5)
    inside = cv2.distanceTransform(ink.astype(np.uint8), cv2.DIST_L2, 5)
    return outside - inside


def _bbox(binary: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(binary)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def blend_glyph(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray | None:
    """``a``'s letter with its body ``alpha`` of the way to ``b``'s (uint8 masks, ink 255).

    ``b``'s body is stretched onto ``a``'s body's box before blending, so the result keeps ``a``'s
    size, place and marks. Returns None (draw ``a`` as it is) where the two cannot be matched part for
    part (a body in a different number of pieces, as stencil or segmented faces draw it), or where the
    blend is not plainly the same letter as both (see the checks below)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    body_a, marks_a, n_a = _parts(a)
    body_b, _, n_b = _parts(b)
    if n_a == 0 or n_a != n_b:
        return None
    ax0, ay0, ax1, ay1 = _bbox(body_a)
    bx0, by0, bx1, by1 = _bbox(body_b)
    w, h = (ax1 - ax0) * UPSCALE, (ay1 - ay0) * UPSCALE
    pad = max(2, min(w, h) // 4)  # room outside the box: the distance fields need a background rim
    fa = np.pad(cv2.resize(a[ay0:ay1, ax0:ax1], (w, h), interpolation=cv2.INTER_LINEAR), pad)
    fa = np.where(np.pad(cv2.resize(body_a[ay0:ay1, ax0:ax1], (w, h)), pad) >= 128, fa, 0)
    fb = np.pad(cv2.resize(body_b[by0:by1, bx0:bx1], (w, h), interpolation=cv2.INTER_LINEAR), pad)
    mixed = (1.0 - alpha) * _sdf(fa >= 128) + alpha * _sdf(fb >= 128)
    # A soft edge one pixel wide (at the upscaled size), then back to the glyph's own size.
    soft = np.clip(0.5 - mixed, 0.0, 1.0)[pad:-pad, pad:-pad]
    # Two thin strokes that do not overlap cancel out: a loop that vanishes makes ف a ن, a stroke that
    # breaks makes a new part. Such a blend is another letter (or none), so it is refused.
    ink_a, ink_b, ink = fa >= 128, fb >= 128, np.pad(soft >= 0.5, pad)
    if not _topology(ink_a) == _topology(ink_b) == _topology(ink):
        return None
    tol = 0.12 * min(w, h)
    if _covered(ink_a, ink, tol) < COVER or (alpha >= 0.5 and _covered(ink_b, ink, tol) < COVER):
        return None
    body = cv2.resize(soft, (ax1 - ax0, ay1 - ay0), interpolation=cv2.INTER_AREA)
    if (marks_a[ay0:ay1, ax0:ax1] > 0)[body >= 0.5].any():
        return None  # a dot that the new body runs into would join it: a letter with a stray spur
    rim = cv2.dilate(marks_a, np.ones((3, 3), np.uint8))  # the marks' anti-aliased edges too
    out = np.where(rim > 0, a, 0).astype(np.float32)
    region = out[ay0:ay1, ax0:ax1]
    np.maximum(region, body * 255.0, out=region)
    out = out.astype(np.uint8)
    # Last, the letter as it will be drawn, at its own size: a thin neck that broke when scaled down,
    # or a mark the first face set inside its body (a bar in a counter) that no longer fits, changes
    # the parts or holes; then it is not the first face's letter any more.
    if _topology(out >= 128) != _topology(a >= 128):
        return None
    return out
