"""Latin transliteration of plate text, per country (tables in :mod:`device.anpr.plates`).

Digits are already ASCII in plate text and stay as they are; each letter maps to exactly one Latin
letter and back, so ``from_latin(to_latin(t, c), c) == t`` for every valid plate. Choices:

* Morocco: أ A, ب B, د D, ه H, و W, ط T, ي Y (the registry's letters).
* Saudi Arabia: the Latin letter printed on the plate's lower row (ح J, ص X, ع E, ق G, م Z, و U, ى V ...).
* Egypt: this project's one-to-one table (ج G, ص C, ع E, ق Q, ى Y ...); Egyptian plates print no Latin.
* Mauritania: letters are printed in Latin already (identity).
"""

from __future__ import annotations

from device.anpr.plates import ARABIC_INDIC, COUNTRIES, DIGITS

_NORMALISE_DIGITS = str.maketrans(ARABIC_INDIC + "۰۱۲۳۴۵۶۷۸۹", DIGITS + DIGITS)


class TranslitError(ValueError):
    pass


def normalise_digits(text: str) -> str:
    """Arabic-Indic (and Persian) digits to ASCII."""
    return text.translate(_NORMALISE_DIGITS)


def to_latin(text: str, country: str) -> str:
    spec = COUNTRIES.get(country)
    if spec is None:
        raise TranslitError(f"unknown country {country!r}")
    out = []
    for ch in normalise_digits(text):
        if ch.isdigit() or ch == "-":
            out.append(ch)
        elif ch in spec.letters:
            out.append(spec.letters[ch])
        else:
            raise TranslitError(f"{ch!r} is not a {country} plate letter")
    return "".join(out)


def from_latin(latin: str, country: str) -> str:
    spec = COUNTRIES.get(country)
    if spec is None:
        raise TranslitError(f"unknown country {country!r}")
    back = {v: k for k, v in spec.letters.items()}
    out = []
    for ch in latin.upper():
        if ch.isdigit() or ch == "-":
            out.append(ch)
        elif ch in back:
            out.append(back[ch])
        else:
            raise TranslitError(f"{ch!r} has no {country} plate letter")
    return "".join(out)
