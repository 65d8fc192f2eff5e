"""Flat, front-on plate images per country layout (geometry and degradation are applied elsewhere).

Layouts are drawn on a canvas 128 px high and scaled to the requested height, so thin strokes get
anti-aliased like a real sensor would. Every visual choice (font per group, ink, margins, spacing,
border, band colours) is drawn from ``rng`` so one seed gives one image.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from device.anpr.plates import ARABIC_INDIC, COUNTRIES
from device.anpr.synth import fonts as F

BASE_H = 128
Typeset = Literal["glyphs", "strings", "joined"]
"""How a plate's groups are drawn. ``glyphs`` (training and the card's main test sets): glyph by glyph
with even gaps. The other two are habits of other plate generators, for the card's ``typeset`` test sets:
``strings`` sets each group as one string (the font's own advances and kerning), ``joined`` also draws
an Arabic letter group as one word, in its connected forms."""
STYLES = {
    "MA": ("one_line", "two_line"),
    "SA": ("standard",),
    "EG": ("private", "taxi", "truck"),
    "MR": ("standard",),
}


def to_arabic_indic(digits: str) -> str:
    return digits.translate(str.maketrans("0123456789", ARABIC_INDIC))


class _Painter:
    """Draws text groups into boxes with fonts picked once per plate."""

    def __init__(
        self,
        img: Image.Image,
        rng: random.Random,
        arabic: Sequence[str],
        latin: Sequence[str],
        typeset: Typeset = "glyphs",
    ):
        self.img = img
        self.draw = ImageDraw.Draw(img)
        self.rng = rng
        self.ink = tuple(rng.randint(0, 45) for _ in range(3))
        self.arabic_font = rng.choice(list(arabic))
        self.latin_font = rng.choice(list(latin))
        self.bold = rng.random() < 0.35
        self.fill_h = rng.uniform(0.62, 0.9)
        self.typeset = typeset

    def text(
        self,
        box: tuple[float, float, float, float],
        text: str,
        *,
        arabic: bool,
        rtl: bool = False,
        spacing: float = 0.0,
        ink: tuple[int, ...] | None = None,
        fill_h: float | None = None,
    ) -> None:
        """Draws ``text`` glyph by glyph in visual order (reversed when ``rtl``), fitted into ``box``.

        Plate characters are isolated glyphs, so drawing them one by one gives the exact visual
        order without depending on the bidi engine's treatment of digit runs.
        """
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        if bw < 2 or bh < 2 or not text:
            return
        path = self.arabic_font if arabic else self.latin_font
        if self.typeset != "glyphs" and F.font(path, 12).layout_engine == ImageFont.Layout.RAQM:
            self._string(box, text, path, rtl=rtl, spacing=spacing, ink=ink, fill_h=fill_h)
            return
        glyphs = list(reversed(text)) if rtl else list(text)
        size = max(6, int(bh * (fill_h or self.fill_h)))
        stroke = 1 if self.bold and size > 24 else 0
        gap_f = spacing * 0.25 + self.rng.uniform(0.02, 0.1)
        for _ in range(12):
            f = F.font(path, size)
            boxes = [f.getbbox(g, stroke_width=stroke) for g in glyphs]
            gap = gap_f * size
            tw = sum(b[2] - b[0] for b in boxes) + gap * (len(glyphs) - 1)
            top = min(b[1] for b in boxes)
            bot = max(b[3] for b in boxes)
            if tw <= bw * 0.96 and bot - top <= bh * 0.98:
                break
            size = max(6, int(size * min(0.95, 0.96 * bw / max(1, tw), 0.98 * bh / max(1, bot - top))))
        cx = x0 + bw / 2 + self.rng.uniform(-0.03, 0.03) * bw
        cy = y0 + bh / 2 + self.rng.uniform(-0.04, 0.04) * bh
        x = cx - tw / 2
        y = cy - (top + bot) / 2
        fill = ink or self.ink
        for g, b in zip(glyphs, boxes, strict=True):
            self.draw.text((x - b[0], y), g, font=f, fill=fill, stroke_width=stroke, stroke_fill=fill)
            x += b[2] - b[0] + gap

    def _string(
        self,
        box: tuple[float, float, float, float],
        text: str,
        path: str,
        *,
        rtl: bool,
        spacing: float,
        ink: tuple[int, ...] | None,
        fill_h: float | None,
    ) -> None:
        """``text`` set as one string by the layout engine: the font's own advances and kerning
        instead of :meth:`text`'s even gaps, and when ``joined`` an Arabic letter group in its
        connected (initial, medial, final) forms, as a generator that types the group as a word
        draws it. Digits are held left to right with a bidi override: spaced Arabic-Indic digits
        would otherwise be reordered right to left."""
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        joined = self.typeset == "joined" and rtl and len(text) > 1
        sep = "" if joined or (spacing < 1 and self.rng.random() < 0.5) else " "
        s = sep.join(text)
        kw = {"direction": "rtl"} if rtl else {"direction": "ltr"}
        if not rtl:
            s = "\u202d" + s + "\u202c"  # left-to-right override ... pop
        size = max(6, int(bh * (fill_h or self.fill_h)))
        stroke = 1 if self.bold and size > 24 else 0
        for _ in range(12):
            f = F.font(path, size)
            left, top, right, bot = self.draw.textbbox((0, 0), s, font=f, stroke_width=stroke, **kw)
            if right - left <= bw * 0.96 and bot - top <= bh * 0.98:
                break
            size = max(
                6, int(size * min(0.95, 0.96 * bw / max(1, right - left), 0.98 * bh / max(1, bot - top)))
            )
        cx = x0 + bw / 2 + self.rng.uniform(-0.03, 0.03) * bw
        cy = y0 + bh / 2 + self.rng.uniform(-0.04, 0.04) * bh
        fill = ink or self.ink
        self.draw.text(
            (cx - (left + right) / 2, cy - (top + bot) / 2),
            s,
            font=f,
            fill=fill,
            stroke_width=stroke,
            stroke_fill=fill,
            **kw,
        )

    def word(
        self,
        box: tuple[float, float, float, float],
        text: str,
        *,
        arabic: bool,
        ink: tuple[int, ...] | None = None,
    ) -> None:
        """Decorative joined words (country names), shaped by the layout engine."""
        x0, y0, x1, y1 = box
        path = self.arabic_font if arabic else self.latin_font
        size = max(6, int((y1 - y0) * 0.8))
        kw = {"direction": "rtl"} if arabic and F.font(path, size).layout_engine == 1 else {}
        for _ in range(10):
            f = F.font(path, size)
            left, t, r, b = self.draw.textbbox((0, 0), text, font=f, **kw)
            if r - left <= (x1 - x0) and b - t <= (y1 - y0):
                break
            size = max(5, int(size * 0.85))
        self.draw.text(
            ((x0 + x1 - left - r) / 2, (y0 + y1 - t - b) / 2), text, font=f, fill=ink or self.ink, **kw
        )

    def vline(self, x: float, y0: float, y1: float, width: int = 3) -> None:
        self.draw.line([(x, y0), (x, y1)], fill=self.ink, width=width)

    def hline(self, y: float, x0: float, x1: float, width: int = 3) -> None:
        self.draw.line([(x0, y), (x1, y)], fill=self.ink, width=width)


def _background(w: int, h: int, rng: random.Random, base: tuple[int, int, int] | None = None) -> Image.Image:
    if base is None:
        v = rng.randint(215, 255)
        base = (v - rng.randint(0, 20), v - rng.randint(0, 10), v)  # BGR-ish off-white, later swapped
    return Image.new("RGB", (w, h), base)


def _border(p: _Painter, w: int, h: int) -> None:
    t = p.rng.randint(2, 6)
    inset = p.rng.randint(1, 5)
    p.draw.rounded_rectangle(
        [inset, inset, w - 1 - inset, h - 1 - inset], radius=p.rng.randint(2, 14), outline=p.ink, width=t
    )


def _ma(
    groups: list[str],
    style: str,
    rng: random.Random,
    ar: Sequence[str],
    la: Sequence[str],
    typeset: Typeset,
) -> Image.Image:
    digits, letter, region = groups
    if style == "two_line":
        h, w = BASE_H, int(BASE_H * rng.uniform(1.7, 2.1))
        img = _background(w, h, rng)
        p = _Painter(img, rng, ar, la, typeset)
        _border(p, w, h)
        split = h * rng.uniform(0.42, 0.5)
        m = w * 0.06
        p.text((m, 0.08 * h, w / 2 - 4, split - 2), letter, arabic=True, fill_h=0.85)
        p.text((w / 2 + 4, 0.08 * h, w - m, split - 2), region, arabic=False)
        if rng.random() < 0.7:
            p.vline(w / 2, 0.1 * h, split - 4)
        p.text((m, split + 2, w - m, 0.93 * h), digits, arabic=False)
        return img
    h, w = BASE_H, int(BASE_H * rng.uniform(4.2, 4.9))
    img = _background(w, h, rng)
    p = _Painter(img, rng, ar, la, typeset)
    _border(p, w, h)
    a = rng.uniform(0.5, 0.58)
    b = a + rng.uniform(0.17, 0.21)
    y0, y1 = 0.1 * h, 0.9 * h
    p.text((0.04 * w, y0, a * w - 4, y1), digits, arabic=False)
    p.text((a * w + 4, y0, b * w - 4, y1), letter, arabic=True, fill_h=rng.uniform(0.65, 0.9))
    p.text((b * w + 4, y0, 0.96 * w, y1), region, arabic=False)
    if rng.random() < 0.85:
        p.vline(a * w, 0.14 * h, 0.86 * h, rng.randint(2, 5))
        p.vline(b * w, 0.14 * h, 0.86 * h, rng.randint(2, 5))
    return img


def _sa(
    groups: list[str], rng: random.Random, ar: Sequence[str], la: Sequence[str], typeset: Typeset
) -> Image.Image:
    digits, letters = groups
    spec = COUNTRIES["SA"]
    h, w = BASE_H, int(BASE_H * rng.uniform(2.2, 2.7))
    img = _background(w, h, rng)
    p = _Painter(img, rng, ar, la, typeset)
    _border(p, w, h)
    strip = w * rng.uniform(0.12, 0.16)
    main = w - strip
    p.vline(main, 0.06 * h, 0.94 * h)
    p.word((main + 3, 0.1 * h, w - 6, 0.45 * h), "السعودية", arabic=True)
    p.word((main + 3, 0.55 * h, w - 6, 0.9 * h), "KSA", arabic=False)
    mid = h * rng.uniform(0.47, 0.53)
    half = main * rng.uniform(0.47, 0.53)
    p.hline(mid, 6, main)
    p.vline(half, 0.06 * h, 0.94 * h)
    latin = "".join(spec.letters[c] for c in letters)
    sp = rng.choice((1, 1, 2))
    p.text((0.04 * w, 0.08 * h, half - 4, mid - 3), to_arabic_indic(digits), arabic=True, spacing=sp)
    p.text((half + 4, 0.08 * h, main - 4, mid - 3), letters, arabic=True, rtl=True, spacing=sp)
    p.text((0.04 * w, mid + 3, half - 4, 0.92 * h), digits, arabic=False, spacing=sp)
    p.text((half + 4, mid + 3, main - 4, 0.92 * h), latin, arabic=False, spacing=sp)
    return img


_EG_BANDS = {"private": (200, 140, 40), "taxi": (40, 140, 230), "truck": (40, 60, 200)}  # RGB


def _eg(
    groups: list[str],
    style: str,
    rng: random.Random,
    ar: Sequence[str],
    la: Sequence[str],
    typeset: Typeset,
) -> Image.Image:
    digits, letters = groups
    h, w = BASE_H, int(BASE_H * rng.uniform(1.8, 2.2))
    img = _background(w, h, rng)
    p = _Painter(img, rng, ar, la, typeset)
    band = h * rng.uniform(0.24, 0.3)
    col = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in _EG_BANDS[style])
    p.draw.rectangle([0, 0, w, band], fill=col)
    p.word((w * 0.55, 0.05 * band, w * 0.95, 0.95 * band), "مصر", arabic=True, ink=(250, 250, 250))
    p.word((w * 0.05, 0.05 * band, w * 0.45, 0.95 * band), "EGYPT", arabic=False, ink=(250, 250, 250))
    _border(p, w, h)
    half = w * rng.uniform(0.47, 0.53)
    p.vline(half, band + 6, 0.94 * h)
    sp = rng.choice((1, 1, 2))
    p.text((0.05 * w, band + 4, half - 4, 0.94 * h), to_arabic_indic(digits), arabic=True, spacing=sp)
    p.text((half + 4, band + 4, 0.95 * w, 0.94 * h), letters, arabic=True, rtl=True, spacing=sp)
    return img


def _mr(
    groups: list[str], rng: random.Random, ar: Sequence[str], la: Sequence[str], typeset: Typeset
) -> Image.Image:
    digits, letters, region = groups
    h, w = BASE_H, int(BASE_H * rng.uniform(4.2, 4.9))
    img = _background(w, h, rng)
    p = _Painter(img, rng, ar, la, typeset)
    _border(p, w, h)
    flag = w * rng.uniform(0.09, 0.12)
    p.draw.rectangle([8, 0.12 * h, flag, 0.6 * h], fill=(0, 120 + rng.randint(-20, 20), 60))
    p.draw.ellipse([flag * 0.35, 0.25 * h, flag * 0.75, 0.45 * h], fill=(230, 190, 20))
    p.word((8, 0.64 * h, flag, 0.88 * h), "RIM", arabic=False)
    x = flag + 6
    rest = w - x - 0.03 * w
    p.text((x, 0.1 * h, x + rest * 0.5, 0.9 * h), digits, arabic=False)
    p.text((x + rest * 0.52, 0.1 * h, x + rest * 0.76, 0.9 * h), letters, arabic=False)
    p.text((x + rest * 0.78, 0.1 * h, x + rest, 0.9 * h), region, arabic=False)
    return img


def render(
    text: str,
    country: str,
    rng: random.Random,
    *,
    height_px: int = 64,
    style: str | None = None,
    arabic_fonts: Sequence[str] | None = None,
    latin_fonts: Sequence[str] | None = None,
    typeset: Typeset = "glyphs",
) -> np.ndarray:
    """BGR uint8 image of plate ``text`` (format of :mod:`device.anpr.plates`), ``height_px`` high.

    ``style`` picks a layout variant (``STYLES[country]``, e.g. Morocco ``one_line``/``two_line``);
    None draws one. Fonts default to every usable Debian font; training passes its own pool.
    ``typeset`` (:data:`Typeset`) sets the groups as whole strings, or joins Arabic letter groups into
    words, as other plate generators do (:meth:`_Painter._string`).
    """
    if country not in COUNTRIES:
        raise ValueError(f"unknown country {country!r}; known: {sorted(COUNTRIES)}")
    groups = text.split("-")
    if len(groups) != len(COUNTRIES[country].groups):
        raise ValueError(
            f"{text!r} does not have the {len(COUNTRIES[country].groups)} groups of a {country} plate"
        )
    if style is None:
        style = rng.choices(STYLES[country], weights=[3, 1, 1][: len(STYLES[country])])[0]
    elif style not in STYLES[country]:
        raise ValueError(f"style {style!r} not in {STYLES[country]} for {country}")
    ar = arabic_fonts or F.pool("arabic", "all")
    la = latin_fonts or F.pool("latin", "all")
    if country == "MA":
        img = _ma(groups, style, rng, ar, la, typeset)
    elif country == "SA":
        img = _sa(groups, rng, ar, la, typeset)
    elif country == "EG":
        img = _eg(groups, style, rng, ar, la, typeset)
    else:
        img = _mr(groups, rng, ar, la, typeset)
    w = max(4, round(img.width * height_px / img.height))
    img = img.resize(
        (w, height_px), Image.Resampling.LANCZOS if height_px < BASE_H else Image.Resampling.BICUBIC
    )
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])
