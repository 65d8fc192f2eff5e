"""Constrained decoding: the best VALID plate wins over the per-slot argmax."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.anpr.grammar import Grammar, decode_best, is_valid
from device.anpr.plates import COUNTRIES, OCR_ALPHABET, OCR_SLOTS, PAD
from device.anpr.synth import random_plate

A = list(OCR_ALPHABET)


def probs_for(text: str, alphabet: list[str] = A, slots: int = OCR_SLOTS, p: float = 0.9) -> np.ndarray:
    out = np.full((slots, len(alphabet)), (1 - p) / (len(alphabet) - 1))
    for i in range(slots):
        out[i, alphabet.index(text[i] if i < len(text) else PAD)] = p
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(sorted(COUNTRIES)))
def test_valid_plates_decode_to_themselves(seed: int, country: str) -> None:
    text, _ = random_plate(country, random.Random(seed))
    assert is_valid(text, country)
    d = Grammar(country, A, PAD).decode(probs_for(text))
    assert d is not None and d.text == text
    assert len(d.char_confidences) == len(text.replace("-", ""))
    assert all(abs(c - 0.9) < 1e-9 for c in d.char_confidences)


def test_region_above_89_is_never_produced() -> None:
    # argmax says region "95": invalid in Morocco, so the decoder must pick the best valid alternative.
    p = probs_for("123-ب-95")
    d = Grammar("MA", A, PAD).decode(p)
    assert d is not None and is_valid(d.text, "MA")
    assert d.text != "123-ب-95"
    # Make "85" the clear runner-up for the first region digit: it must win.
    p[6, A.index("8")] = 0.5
    p[6, A.index("9")] = 0.5
    assert Grammar("MA", A, PAD).decode(p).text == "123-ب-85"


def test_letter_outside_country_set_is_replaced_by_best_allowed() -> None:
    p = probs_for("123-ج-5")  # ج is not a Moroccan plate letter
    p[4, A.index("ب")] = 0.08
    d = Grammar("MA", A, PAD).decode(p)
    assert d is not None and d.text == "123-ب-5"
    assert d.char_confidences[3] == pytest.approx(0.08)


def test_leading_zero_and_group_lengths_enforced() -> None:
    d = Grammar("MA", A, PAD).decode(probs_for("0123-ب-5"))
    assert d is not None and not d.text.startswith("0") and is_valid(d.text, "MA")
    assert not is_valid("123456-ب-5", "MA")
    assert not is_valid("12-AB-12", "MR")
    assert is_valid("0012-AB-07", "MR")


def test_no_valid_plate_fits_returns_none() -> None:
    assert Grammar("MR", A, PAD).decode(probs_for("1234", slots=4)) is None


def test_alphabet_without_separator_still_groups() -> None:
    b = [c for c in A if c != "-"]
    d = Grammar("MA", b, PAD).decode(probs_for("12345ب67", b))
    assert d is not None and d.text == "12345-ب-67"
    d = Grammar("MR", b, PAD).decode(probs_for("0042ZX03", b))
    assert d is not None and d.text == "0042-ZX-03"


def test_confidence_is_joint_probability() -> None:
    text = "7-و-12"
    d = Grammar("MA", A, PAD).decode(probs_for(text, p=0.8))
    assert d.confidence == pytest.approx(0.8**OCR_SLOTS)


def test_country_prior_breaks_ties() -> None:
    gr = [Grammar(c, A, PAD) for c in ("SA", "EG")]
    p = probs_for("123-بد")  # valid in both
    assert decode_best(p, gr, {"SA": 0.9, "EG": 0.1})[0] == "SA"
    assert decode_best(p, gr, {"SA": 0.1, "EG": 0.9})[0] == "EG"


def test_bad_alphabets_rejected() -> None:
    with pytest.raises(ValueError):
        Grammar("MA", ["a", PAD], PAD)
    with pytest.raises(ValueError):
        Grammar("XX", A, PAD)
    with pytest.raises(ValueError):
        Grammar("MA", A, "#")
