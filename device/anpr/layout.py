"""Visual reading order of each plate layout, and the way back to plate text.

The committed OCR reads a plate like a page: top row left to right, then the bottom row (CTC over the
two rows of its feature map). Arabic letter groups are drawn right to left, so their visual order is the
reverse of the logical order kept in plate text. Saudi plates carry the number twice (Arabic row, Latin
row); the Latin row is preferred when both parse, since its glyphs are less ambiguous.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from device.anpr.grammar import is_valid
from device.anpr.plates import COUNTRIES, DIGITS
from device.anpr.translit import from_latin


def visual_lines(text: str, country: str, style: str) -> tuple[str, str]:
    """What the plate shows as (first line, second line), each left to right, ASCII digits.

    One-line plates leave the second line empty. The OCR has one CTC head per line, so a two-line
    plate's rows are never interleaved: Morocco's two-line variant is (letter + region, serial), a Saudi
    plate is (Arabic row, Latin row).
    """
    g = text.split("-")
    if country == "MA":
        digits, letter, region = g
        return (letter + region, digits) if style == "two_line" else (digits + letter + region, "")
    if country == "SA":
        digits, letters = g
        latin = "".join(COUNTRIES["SA"].letters[c] for c in letters)
        return digits + letters[::-1], digits + latin
    if country == "EG":
        digits, letters = g
        return digits + letters[::-1], ""
    return "".join(g), ""


def visual_target(text: str, country: str, style: str) -> str:
    """Both lines of :func:`visual_lines` in reading order (top line first)."""
    return "".join(visual_lines(text, country, style))


@dataclass(frozen=True, slots=True)
class Token:
    char: str
    row: int
    prob: float
    step: int = -1
    """Output position that emitted the character (-1: unknown)."""


def _runs(tokens: list[Token]) -> list[tuple[str, list[Token]]]:
    """Maximal runs of one kind: 'd' digits, 'a' Arabic letters, 'l' Latin letters."""
    out: list[tuple[str, list[Token]]] = []
    for t in tokens:
        kind = "d" if t.char in DIGITS else ("l" if t.char.isascii() else "a")
        if out and out[-1][0] == kind:
            out[-1][1].append(t)
        else:
            out.append((kind, [t]))
    return out


def _s(ts: list[Token]) -> str:
    return "".join(t.char for t in ts)


INCOMPLETE_READ_WEIGHT = 0.25
"""Confidence factor for a read that lacks a row its country always prints (see :func:`complete`)."""


def complete(tokens: list[Token], country: str) -> bool:
    """Whether the read has every row the country's plates always print.

    A Saudi plate always carries its Latin row; a read of the Arabic row alone parses, so that a plate
    with a dirty Latin row is still read, but an Egyptian plate gives exactly that read too (digits and
    letters, no Latin row), and most Egyptian letters are also Saudi ones. Weighting the incomplete
    read down lets the layout that explains the whole plate win when several countries are configured.
    """
    if country == "SA":
        return any(t.char.isascii() and t.char.isalpha() for t in tokens)
    return True


def parse(tokens: list[Token], country: str) -> tuple[str, tuple[float, ...]] | None:
    """Plate text and per-character probabilities (text order), or None if the read fits no layout."""
    runs = _runs(tokens)
    kinds = "".join(k for k, _ in runs)
    text: str | None = None
    confs: list[Token] = []
    one_row = len({t.row for t in tokens}) <= 1
    if country == "MA":
        if kinds == "dad" and len(runs[1][1]) == 1 and one_row:  # a one-line plate is read on one row
            d, a, r = (ts for _, ts in runs)
            text, confs = f"{_s(d)}-{_s(a)}-{_s(r)}", d + a + r
        elif kinds == "ad" and len(runs[0][1]) == 1:
            # Two lines: letter and region on top, the serial below, each on its own row. A letter and
            # digits all on one row is not one: it is a one-line plate whose serial was not read (hidden,
            # dirty), and splitting its region into "serial" and "region" invented a plate (6-ي-42 read
            # as 2-ي-4 at 0.96; the split never served a real two-line read on the development sets).
            a, dd = runs[0][1], runs[1][1]
            top = [t for t in dd if t.row == 0]
            bottom = [t for t in dd if t.row == 1]
            if top and bottom and a[0].row == 0:
                text, confs = f"{_s(bottom)}-{_s(a)}-{_s(top)}", bottom + a + top
    elif country == "SA":
        cands: list[tuple[str, list[Token]]] = []
        if kinds == "dadl":
            d1, a, d2, lat = (ts for _, ts in runs)
            with contextlib.suppress(ValueError):
                cands.append((f"{_s(d2)}-{from_latin(_s(lat), 'SA')}", d2 + lat))
            cands.append((f"{_s(d1)}-{_s(a)[::-1]}", d1 + a[::-1]))
        elif kinds == "dl":
            d, lat = runs[0][1], runs[1][1]
            with contextlib.suppress(ValueError):
                cands.append((f"{_s(d)}-{from_latin(_s(lat), 'SA')}", d + lat))
        elif kinds == "da":
            d, a = runs[0][1], runs[1][1]
            cands.append((f"{_s(d)}-{_s(a)[::-1]}", d + a[::-1]))
        for t, c in cands:
            if is_valid(t, "SA"):
                text, confs = t, c
                break
    elif country == "EG":
        if kinds == "da":
            d, a = runs[0][1], runs[1][1]
            text, confs = f"{_s(d)}-{_s(a)[::-1]}", d + a[::-1]
    elif country == "MR":
        m = re.fullmatch(r"(\d{4})([A-Z]{2})(\d{2})", _s(tokens))
        if m and one_row:
            text, confs = "-".join(m.groups()), tokens
    if text is None or not is_valid(text, country):
        return None
    return text, tuple(t.prob for t in confs)
