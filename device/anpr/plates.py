"""Plate vocabulary per country: letters, their Latin transliteration and the group layout.

One table drives the generator, the grammar decoder and the transliteration, so the three cannot
disagree. Text format (as printed, see the issue): groups joined by ``-``, digits as ASCII (Egyptian
and Saudi Arabic-Indic digits are normalised), letters in the plate's own script. A group of several
Arabic letters is stored in logical (reading) order, as Unicode stores Arabic text; on the plate those
letters are drawn right to left.
"""

from __future__ import annotations

from dataclasses import dataclass

DIGITS = "0123456789"
ARABIC_INDIC = "٠١٢٣٤٥٦٧٨٩"

# Morocco: letters used on the registration plates; the Latin letter is the one the registry uses.
MA_LETTERS: dict[str, str] = {"أ": "A", "ب": "B", "د": "D", "ه": "H", "و": "W", "ط": "T", "ي": "Y"}

# Saudi Arabia: the 17 plate letters with the Latin letter printed on the plate's second row.
SA_LETTERS: dict[str, str] = {
    "ا": "A", "ب": "B", "ح": "J", "د": "D", "ر": "R", "س": "S", "ص": "X", "ط": "T", "ع": "E",
    "ق": "G", "ك": "K", "ل": "L", "م": "Z", "ن": "N", "ه": "H", "و": "U", "ى": "V",
}  # fmt: skip

# Egypt: Arabic-only plates. Latin is this project's own one-to-one choice (ص -> C, ع -> E, ى -> Y)
# so that a transliterated plate converts back without ambiguity.
EG_LETTERS: dict[str, str] = {
    "أ": "A", "ب": "B", "ج": "G", "د": "D", "ر": "R", "س": "S", "ص": "C", "ط": "T", "ع": "E",
    "ف": "F", "ق": "Q", "ك": "K", "ل": "L", "م": "M", "ن": "N", "ه": "H", "و": "W", "ى": "Y",
}  # fmt: skip

# Mauritania: letters are printed in Latin script; identity transliteration. I, O, Q are avoided
# (confusable with 1 and 0).
MR_LETTERS: dict[str, str] = {c: c for c in "ABCDEFGHJKLMNPRSTUVWXYZ"}


@dataclass(frozen=True, slots=True)
class Group:
    """One ``-``-separated group: ``kind`` is ``digits`` or ``letters``; length bounds inclusive."""

    kind: str
    min_len: int
    max_len: int
    first_nonzero: bool = False
    """A leading zero is not printed (serial numbers, regions)."""


@dataclass(frozen=True, slots=True)
class CountrySpec:
    code: str
    letters: dict[str, str]
    groups: tuple[Group, ...]
    region_max: int | None = None
    """Upper bound of the last numeric group (MA region 1..89); None = any."""


COUNTRIES: dict[str, CountrySpec] = {
    "MA": CountrySpec(
        "MA",
        MA_LETTERS,
        (Group("digits", 1, 5, True), Group("letters", 1, 1), Group("digits", 1, 2, True)),
        region_max=89,
    ),
    "SA": CountrySpec("SA", SA_LETTERS, (Group("digits", 1, 4, True), Group("letters", 1, 3))),
    "EG": CountrySpec("EG", EG_LETTERS, (Group("digits", 3, 4, True), Group("letters", 2, 3))),
    "MR": CountrySpec(
        "MR",
        MR_LETTERS,
        (Group("digits", 4, 4), Group("letters", 2, 2), Group("digits", 2, 2)),
    ),
}

ALL_LETTERS: tuple[str, ...] = tuple(
    sorted({c for spec in COUNTRIES.values() for c in spec.letters}, key=lambda c: (c.isascii(), c))
)

PAD = "<pad>"
OCR_ALPHABET: tuple[str, ...] = (PAD, "-", *DIGITS, *ALL_LETTERS)
"""Classes of the committed OCR's slots; a deployer's model brings its own list in its model card."""
OCR_SLOTS = 10
"""Longest plate text: Morocco ``12345-ب-89`` and Mauritania ``1234-AB-12`` are 10 characters."""
COUNTRY_CODES: tuple[str, ...] = ("MA", "SA", "EG", "MR")
