"""The OCR's second look: candidate readings near the best path, and the choice over several looks.

Pure numpy on hand-made CTC outputs (the committed model's second look is tested in test_reader.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from device.anpr.card import OcrSpec
from device.anpr.grammar import is_valid
from device.anpr.plates import COUNTRIES, DIGITS, OCR_ALPHABET, PAD
from device.anpr.second_look import candidates, choose, widen

ALPHABET = list(OCR_ALPHABET)
BLANK = ALPHABET.index(PAD)
STEPS = 20  # per row


def _allowed(country: str) -> np.ndarray:
    ok = {PAD, *DIGITS, *COUNTRIES[country].letters}
    return np.array([c in ok for c in ALPHABET])


def _probs(row0: list[dict[str, float]], row1: list[dict[str, float]] = ()) -> np.ndarray:
    """Two rows of STEPS steps; each dict is one character step (class -> probability), blanks between."""
    p = np.full((2 * STEPS, len(ALPHABET)), 1e-4)
    p[:, BLANK] = 1.0
    for r, row in enumerate((row0, row1)):
        for i, dist in enumerate(row):
            t = r * STEPS + 2 * i + 1
            p[t, BLANK] = 1e-4
            for ch, q in dist.items():
                p[t, ALPHABET.index(ch)] = q
    return p / p.sum(axis=1, keepdims=True)


def _eg(digits: str, letters_visual: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{d: 0.98} for d in digits] + letters_visual


def test_candidates_are_valid_one_edit_neighbours_of_the_best_path() -> None:
    # Egyptian 4 digits + letters drawn right to left: visual "ب س د" is plate text "دسب".
    probs = _probs(_eg("1234", [{"ب": 0.98}, {"ح": 0.45, "ق": 0.35, "ف": 0.15}, {"د": 0.98}]))
    got = candidates(probs, _allowed("EG"), ALPHABET, PAD, 2, "EG")
    texts = list(got)
    assert texts[0] == "1234-دقب"  # the best path first, over the classes Egypt prints (ح is Saudi)
    assert "1234-دفب" in texts  # the runner-up letter at its step
    assert "234-دقب" in texts and "1234-دب" in texts  # dropped characters that still fit the layout
    assert all(is_valid(t, "EG") for t in texts)
    assert all(c.country == "EG" and c.complete for c in got.values())
    # A class below min_prob is not proposed.
    assert "1234-دفب" not in candidates(probs, _allowed("EG"), ALPHABET, PAD, 2, "EG", min_prob=0.3)


def test_the_look_that_sees_a_character_clearly_settles_it() -> None:
    unsure = _probs(_eg("123", [{"ب": 0.98}, {"ق": 0.55, "ف": 0.43}]))
    clear = _probs(_eg("123", [{"ب": 0.98}, {"ف": 0.95, "ق": 0.03}]))
    allowed = _allowed("EG")
    cands = {
        **candidates(clear, allowed, ALPHABET, PAD, 2, "EG"),
        **candidates(unsure, allowed, ALPHABET, PAD, 2, "EG"),
    }
    alone = choose([unsure], list(cands.values()), BLANK, 2)
    both = choose([unsure, clear], list(cands.values()), BLANK, 2)
    assert alone is not None and alone.candidate.text == "123-قب"
    assert both is not None and both.candidate.text == "123-فب"
    assert 0 < both.confidence < 1


def test_a_reading_missing_a_printed_row_is_weighted_down() -> None:
    # Saudi plates print a Latin row; the same Arabic row without it is less likely to be Saudi.
    arabic = [{"1": 0.98}, {"2": 0.98}, {"ب": 0.98}]
    full = _probs(arabic, [{"1": 0.98}, {"2": 0.98}, {"B": 0.98}])
    half = _probs(arabic)
    allowed = _allowed("SA") | np.array([c in COUNTRIES["SA"].letters.values() for c in ALPHABET])
    c_full = list(candidates(full, allowed, ALPHABET, PAD, 2, "SA").values())
    c_half = list(candidates(half, allowed, ALPHABET, PAD, 2, "SA").values())
    assert c_full[0].complete and not c_half[0].complete
    assert choose([half], c_half, BLANK, 2).confidence < choose([full], c_full, BLANK, 2).confidence / 2


def test_nothing_to_choose_from() -> None:
    assert choose([_probs([])], [], BLANK, 2) is None
    assert candidates(_probs([]), _allowed("MA"), ALPHABET, PAD, 2, "MA") == {}


def test_widen_adds_margins_by_fraction() -> None:
    crop = np.zeros((40, 100, 3), np.uint8)
    crop[:, 0] = 255
    out = widen(crop, 0.1, 0.25)
    assert out.shape == (60, 120, 3)
    assert (out[:, :11, 0] == 255).all()  # edge pixels repeated, not black


def test_card_second_look_needs_a_ctc_decoder() -> None:
    base = {"alphabet": ["<pad>", "1"], "pad": "<pad>", "slots": 4, "countries": ["MA"]}
    OcrSpec(**base, decoder="ctc", second_look_below=0.8, second_look_margins=[(0.04, 0.06)])
    with pytest.raises(ValueError, match="needs decoder 'ctc'"):
        OcrSpec(**base, decoder="slots", second_look_below=0.8)
    with pytest.raises(ValueError):
        OcrSpec(**base, decoder="ctc", second_look_below=0.8, second_look_margins=[(1.5, 0.0)])
