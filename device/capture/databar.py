"""The data bar burnt under every overview image: what a court reads without any software.

The bar is drawn *below* the frame (the picture is never covered), in three rows of Latin text:
UTC time with milliseconds and the clock's sync state, measured and limit speed, direction and lane;
site id, device id, packet id and frame number; the site name. A site name in Arabic is shaped with
``arabic-reshaper`` (contextual letter forms) and put in visual right-to-left order with ``python-bidi``,
then drawn with Pillow's BASIC layout (raqm would reorder the already-visual string a second time) in an
Arabic font located with ``fc-match``, right-aligned on the third row.
"""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from device.speeds import format_kmh

if TYPE_CHECKING:
    from device.model import Frame

LATIN_FONT_PATTERNS = ("DejaVu Sans:bold", "Noto Sans:bold", "FreeSans:bold", "sans-serif:bold")
ARABIC_FONT_PATTERNS = ("Noto Sans Arabic:bold", "Noto Naskh Arabic", "Amiri", "DejaVu Sans", "sans-serif")


class FontNotFoundError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class DataBar:
    """What the bar shows. ``measured_kmh`` is the radar's unrounded value; ``enforced_kmh`` the speed the
    fine rests on (after calibration, cosine correction and tolerance: it can exceed the raw value at a
    mount angle). The bar shows both, truncated to 3 decimals; the JPEG comment carries the exact floats."""

    utc_ns: int
    clock_synchronized: bool
    clock_source: str
    measured_kmh: float
    limit_kmh: float
    direction: str | None
    site_id: str
    site_name: str
    site_name_local: str | None = None
    device_id: str = ""
    packet_id: str = ""
    lane: str | None = None
    enforced_kmh: float | None = None
    """None on images that record no decision (aiming, self-test)."""


def _fc_match(pattern: str) -> str | None:
    try:
        out = subprocess.run(
            ["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True, timeout=10, check=False
        )
    except FileNotFoundError:  # not a missing font: the tool that finds them (say so, not "install fonts")
        raise FontNotFoundError("fc-match not found: install fontconfig") from None
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


@functools.cache
def _arabic_capable_files() -> frozenset[str]:
    try:
        out = subprocess.run(
            ["fc-list", ":lang=ar", "file"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(line.split(":")[0].strip() for line in out.splitlines() if line.strip())


@functools.cache
def find_font(pattern: str) -> str:
    """Font file for a fontconfig pattern (``...:lang=ar`` only accepts fonts that cover Arabic)."""
    arabic = ":lang=ar" in pattern
    candidates = [pattern] if not arabic else [f"{p}:lang=ar" for p in ARABIC_FONT_PATTERNS] + [pattern]
    for cand in candidates:
        path = _fc_match(cand)
        if path and (not arabic or path in _arabic_capable_files()):
            return path
    raise FontNotFoundError(f"no font found for {pattern!r} (install fonts-noto-core or fonts-dejavu-core)")


@functools.cache
def latin_font_path() -> str:
    for p in LATIN_FONT_PATTERNS:
        path = _fc_match(p)
        if path:
            return path
    raise FontNotFoundError("no Latin font found (install fonts-dejavu-core)")


@functools.cache
def _font(path: str, size: int):  # -> ImageFont.FreeTypeFont
    from PIL import ImageFont

    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)


def shape_rtl(text: str) -> str:
    """Logical-order Arabic text -> visual-order string of presentation forms, ready for a BASIC layout."""
    import arabic_reshaper
    from bidi.algorithm import get_display

    return get_display(arabic_reshaper.reshape(text))


def format_utc(utc_ns: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm UTC`` (milliseconds truncated, never rounded into the next second)."""
    secs, rem = divmod(utc_ns, 1_000_000_000)
    t = dt.datetime.fromtimestamp(secs, tz=dt.UTC)
    return f"{t:%Y-%m-%d %H:%M:%S}.{rem // 1_000_000:03d} UTC"


def bar_lines(bar: DataBar, frame_no: int | None = None) -> tuple[str, str, str]:
    """The three Latin rows: measurement, identifiers, site name (the Arabic name is drawn separately)."""
    sync = f"SYNC {bar.clock_source}" if bar.clock_synchronized else f"NOT SYNCHRONIZED ({bar.clock_source})"
    direction = bar.direction or "unknown"
    lane = f"  LANE {bar.lane}" if bar.lane else ""
    # "Measured" and "retained" (vitesse mesuree / retenue): the raw radar value and the one compared with
    # the limit; showing only the raw one could print a speed below the limit on a fined vehicle.
    speed = f"MEASURED {format_kmh(bar.measured_kmh)} km/h"
    if bar.enforced_kmh is not None:
        speed += f"   RETAINED {format_kmh(bar.enforced_kmh)} km/h"
    row1 = (
        f"{format_utc(bar.utc_ns)} [{sync}]   {speed}   "
        f"LIMIT {format_kmh(bar.limit_kmh)} km/h   DIR {direction}{lane}"
    )
    frame = f"   FRAME {frame_no}" if frame_no is not None else ""
    row2 = f"SITE {bar.site_id}   DEVICE {bar.device_id}   PACKET {bar.packet_id}{frame}"
    return row1, row2, bar.site_name


ROWS = 3


def row_height(width: int) -> int:
    return max(16, round(width * 0.022))


def bar_height(width: int) -> int:
    return ROWS * row_height(width)


def _fit(draw, path: str, size: int, texts: list[str], max_w: float, max_h: int):  # -> FreeTypeFont
    """Largest font <= ``size`` whose rendering of every text fits ``max_w`` x ``max_h``."""
    while True:
        font = _font(path, size)
        boxes = [draw.textbbox((0, 0), t, font=font) for t in texts if t]
        if size <= 8 or all(b[2] - b[0] <= max_w and b[3] - b[1] <= max_h for b in boxes):
            return font
        size -= 1


def render_databar(bar: DataBar, width: int, *, frame_no: int | None = None) -> np.ndarray:
    """The bar as a BGR uint8 array ``(bar_height(width), width, 3)``: white text on black.

    Rows: measurement; identifiers; site name (Latin, left) and local-script name (right-aligned).
    Fonts shrink until every row fits the width, so nothing is ever cut off.
    """
    from PIL import Image, ImageDraw

    rh = row_height(width)
    h = ROWS * rh
    img = Image.new("L", (width, h), 0)
    draw = ImageDraw.Draw(img)
    margin = max(4, rh // 3)
    rows = list(bar_lines(bar, frame_no))
    local = shape_rtl(bar.site_name_local) if bar.site_name_local else ""
    latin_path = latin_font_path()
    font = _fit(draw, latin_path, int(rh * 0.72), rows[:2], width - 2 * margin, rh - 2)
    name_w = width - 2 * margin
    afont = None
    if local:
        apath = find_font("sans:lang=ar")
        name_w = (width - 3 * margin) * 0.5
        afont = _fit(draw, apath, int(rh * 0.72), [local], name_w, rh - 2)
    nfont = _fit(draw, latin_path, font.size, [rows[2]], name_w, rh - 2)
    for i, (text, f) in enumerate(zip(rows, (font, font, nfont), strict=True)):
        draw.text((margin, i * rh + (rh - f.size) // 2), text, font=f, fill=255)
    if local and afont is not None:
        _, top, right, bottom = draw.textbbox((0, 0), local, font=afont)
        x = width - margin - right  # right-aligned: RTL text starts at the right edge
        y = 2 * rh + (rh - (bottom - top)) // 2 - top
        draw.text((x, y), local, font=afont, fill=255)
    import cv2

    return cv2.cvtColor(np.asarray(img), cv2.COLOR_GRAY2BGR)


def compose(frame: Frame, bar_img: np.ndarray) -> np.ndarray:
    """Frame on top, bar below, in one new array. The frame is converted straight into it (the frame in
    the ring is left untouched), so a 1080p evidence image costs one full-size array, not two."""
    w, h = frame.size
    if bar_img.shape[1] != w:
        raise ValueError(f"bar width {bar_img.shape[1]} != image width {w}")
    out = np.empty((h + bar_img.shape[0], w, 3), np.uint8)
    frame.bgr(out=out[:h])
    out[h:] = bar_img
    return out
