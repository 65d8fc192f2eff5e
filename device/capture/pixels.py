"""Frame pixel layouts: BGR (OpenCV's order) and planar YUV 4:2:0 (I420), and the conversions between them.

Why YUV 4:2:0: the ring holds seconds of full-resolution video, and at 12 bits a pixel instead of 24 it
holds them in half the memory (a 1080p frame is 3 110 400 bytes instead of 6 220 800). Nothing is lost
that the evidence keeps: the JPEGs are 4:2:0 themselves, the plate reader works on luma only, and only
the few frames that become evidence are converted back to BGR. The Pi's ISP produces YUV420 natively
(no conversion at all); other backends convert once per frame (about 0.5 ms for 1080p on the development
machine, see bench/capture.py).

Colour: BT.601 limited range ("studio swing", Y 16-235), the matrix of OpenCV's ``COLOR_BGR2YUV_I420`` and
``COLOR_YUV2BGR_I420`` and of libcamera's ``Smpte170m`` colour space, which the picamera2 backend asks
for - so a Pi frame and a converted USB frame decode to the same colours. The plate models were trained
on full-range grey (``COLOR_BGR2GRAY``), so :func:`yuv420_gray` stretches Y back to full range.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.model import FrameLayout

_Y_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)
"""Limited-range luma (16-235) to full range (0-255), as a lookup table."""


def frame_size(image: np.ndarray, layout: FrameLayout) -> tuple[int, int]:
    """``(width, height)`` of the picture ``image`` holds in ``layout``."""
    if layout == "yuv420":
        return int(image.shape[1]), int(image.shape[0]) * 2 // 3
    return int(image.shape[1]), int(image.shape[0])


def bgr_to_yuv420(bgr: np.ndarray) -> np.ndarray:
    """I420 of a BGR image: ``(H*3/2, W)`` uint8, Y plane then U then V. Needs even width and height."""
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"need a uint8 BGR image, got {bgr.dtype} with shape {bgr.shape}")
    h, w = bgr.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"YUV 4:2:0 needs even width and height, got {w}x{h}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def check_yuv420(yuv: np.ndarray) -> None:
    if (
        yuv.dtype != np.uint8
        or yuv.ndim != 2
        or yuv.shape[0] % 3
        or yuv.shape[1] % 2
        or (yuv.shape[0] // 3) % 2
    ):
        raise ValueError(f"not an I420 frame (uint8, (H*3/2, W), even W and H): {yuv.dtype} {yuv.shape}")


def yuv420_to_bgr(yuv: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The BGR picture of an I420 frame: a new array, or written into ``out`` (``(H, W, 3)`` uint8,
    C-contiguous), which is returned."""
    check_yuv420(yuv)
    if out is None:
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420)
    h, w = yuv.shape[0] * 2 // 3, yuv.shape[1]
    if out.shape != (h, w, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(
            f"need a C-contiguous uint8 ({h}, {w}, 3) array to convert into, got {out.dtype} {out.shape}"
        )
    got = cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420, dst=out)
    if not np.shares_memory(got, out):  # OpenCV reallocates rather than fail: never hand back stale pixels
        out[:] = got
    return out


def yuv420_gray(yuv: np.ndarray) -> np.ndarray:
    """Full-range grey (what ``COLOR_BGR2GRAY`` gives for the same picture) from the Y plane: a lookup
    table over ``H x W`` bytes, no colour conversion."""
    check_yuv420(yuv)
    return cv2.LUT(yuv[: yuv.shape[0] * 2 // 3], _Y_TO_FULL)


def pack_yuv420(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """A contiguous I420 frame from picamera2's YUV420 array, which is ``(H*3/2, stride)`` with the
    stride's padding left in (each U and V row is half a stride, two of them per array row).

    Never a view of libcamera's buffer (it is reused): ``make_array`` already hands over a copy, which
    is returned as it is when there is no padding; otherwise the planes are packed into a new array."""
    h, w = int(height), int(width)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[0] != h * 3 // 2 or array.shape[1] < w:
        raise ValueError(f"YUV420 array of shape {array.shape} does not hold a {w}x{h} frame")
    if h % 2 or w % 2:
        raise ValueError(f"YUV 4:2:0 needs even width and height, got {w}x{h}")
    stride = array.shape[1]
    if stride == w:
        return array if array.flags.owndata and array.flags.c_contiguous else np.array(array, copy=True)
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = array[:h, :w]
    chroma = np.ascontiguousarray(array[h:]).reshape(h, stride // 2)  # one half-stride row per chroma row
    quarter = h * w // 4
    flat = out[h:].reshape(-1)
    flat[:quarter] = chroma[: h // 2, : w // 2].reshape(-1)
    flat[quarter:] = chroma[h // 2 :, : w // 2].reshape(-1)
    return out
