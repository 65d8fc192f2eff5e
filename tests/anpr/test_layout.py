"""Visual reading order per layout and the way back to plate text (what the CTC OCR relies on)."""

from __future__ import annotations

import random

import pytest

from device.anpr.layout import Token, complete, parse, visual_lines, visual_target
from device.anpr.plates import COUNTRIES
from device.anpr.synth import STYLES, random_plate


def _tokens(visual: str, top_len: int | None = None) -> list[Token]:
    n = len(visual) if top_len is None else top_len
    return [Token(c, 0 if i < n else 1, 0.9) for i, c in enumerate(visual)]


@pytest.mark.parametrize("country", sorted(COUNTRIES))
def test_round_trip_every_style(country: str) -> None:
    rng = random.Random(77)
    for style in STYLES[country]:
        for _ in range(100):
            text, _ = random_plate(country, rng)
            first, second = visual_lines(text, country, style)
            got = parse(_tokens(first + second, len(first)), country)
            assert got is not None and got[0] == text, (style, first, second, got)
            assert len(got[1]) == len(text.replace("-", ""))


def test_arabic_groups_are_reversed_visually() -> None:
    assert visual_target("123-بحد", "EG", "private") == "123دحب"
    assert visual_target("12-بحد", "SA", "standard") == "12دحب12BJD"
    assert visual_target("12-ب-7", "MA", "two_line") == "ب712"


def test_lines_split_two_line_plates_only() -> None:
    assert visual_lines("12-ب-7", "MA", "two_line") == ("ب7", "12")
    assert visual_lines("12-ب-7", "MA", "one_line") == ("12ب7", "")
    assert visual_lines("12-بحد", "SA", "standard") == ("12دحب", "12BJD")
    assert visual_lines("1234-AB-07", "MR", "standard") == ("1234AB07", "")
    assert visual_lines("123-بحد", "EG", "taxi") == ("123دحب", "")


def test_saudi_latin_row_preferred_and_arabic_row_as_fallback() -> None:
    # Arabic row misread (ن instead of ب), Latin row right: the Latin row wins.
    assert parse(_tokens("12دحن12BJD"), "SA")[0] == "12-بحد"
    # Latin row unreadable (no Latin letters emitted): the Arabic row is used.
    assert parse(_tokens("12دحب"), "SA")[0] == "12-بحد"


def test_saudi_read_without_its_latin_row_is_incomplete() -> None:
    # An Egyptian plate's read (digits, letters, no Latin row) also parses as a Saudi plate whose Latin
    # row was unreadable; only the Saudi layout is missing a row.
    eg = _tokens("123دسب")
    assert parse(eg, "SA") is not None and parse(eg, "EG") is not None
    assert not complete(eg, "SA") and complete(eg, "EG")
    assert complete(_tokens("123دسب123BSD"), "SA")


def test_layouts_reject_wrong_shapes() -> None:
    assert parse(_tokens("12ب"), "MA") is None  # no region
    assert parse(_tokens("ب712"), "MA") is None  # two-line order but one row: split unknown
    assert parse(_tokens("123AB12"), "MR") is None  # 3 serial digits
    assert parse(_tokens("12ب"), "EG") is None  # EG needs 3-4 digits, 2-3 letters
    assert parse(_tokens("12-ب-95".replace("-", "")), "MA") is None  # region above 89


def test_a_one_line_read_is_never_split_into_an_invented_two_line_plate() -> None:
    """A Moroccan one-line plate whose serial is hidden reads as letter + region on one row. Before, its
    region was split at the widest gap between emitting positions into a serial and a region:
    6-ي-42 became 2-ي-4 at 0.96, and three frames agreed on it."""
    hidden = [Token("ي", 0, 0.99, 40), Token("4", 0, 0.99, 44), Token("2", 0, 0.99, 52)]
    assert parse(hidden, "MA") is None
    real = [
        Token("ي", 0, 0.99, 40),
        Token("4", 0, 0.99, 44),
        Token("2", 0, 0.99, 46),
        Token("6", 1, 0.99, 70),
    ]
    assert parse(real, "MA")[0] == "6-ي-42"  # a two-line read: serial on the second row
    # a one-line plate's characters are all on one row: a stray digit on the other is not its region
    assert parse(_tokens("12345ي67", top_len=7), "MA") is None
    assert parse(_tokens("12345ي67"), "MA")[0] == "12345-ي-67"
    assert parse(_tokens("1234AB07", top_len=7), "MR") is None
