"""Image to model-input conversions shared by training and the runtime (one definition, no skew)."""

from __future__ import annotations

import cv2
import numpy as np


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def ocr_input(crop_bgr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Grayscale crop stretched to ``h`` x ``w`` (uint8). INTER_AREA when shrinking avoids aliasing."""
    g = to_gray(crop_bgr)
    interp = cv2.INTER_AREA if g.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(g, (w, h), interpolation=interp)


def detector_input(frame_bgr: np.ndarray, h: int, w: int) -> tuple[np.ndarray, float]:
    """Grayscale frame scaled to fit ``h`` x ``w`` keeping aspect, padded right/bottom with zeros.

    Returns (uint8 image, scale); frame coordinates = model coordinates / scale.
    """
    g = to_gray(frame_bgr)
    scale = min(w / g.shape[1], h / g.shape[0])
    nw, nh = max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale))
    small = cv2.resize(g, (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.zeros((h, w), np.uint8)
    out[:nh, :nw] = small
    return out, scale
