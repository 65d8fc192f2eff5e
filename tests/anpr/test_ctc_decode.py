"""CTC best-path decoding of the two-line OCR output (pure numpy: no model needed)."""

from __future__ import annotations

import numpy as np

from device.anpr.layout import parse
from device.anpr.ocr import best_path_tokens

ALPHABET = ["<pad>", "1", "2", "7", "ب"]


def _probs(line1: list[int], line2: list[int]) -> np.ndarray:
    seq = line1 + line2
    p = np.full((len(seq), len(ALPHABET)), 0.01)
    for t, k in enumerate(seq):
        p[t, k] = 0.96
    return p


def test_repeats_merge_within_a_line_but_not_across_lines() -> None:
    # Line 1 ends with "7", line 2 starts with "7": two characters, not one.
    toks = best_path_tokens(_probs([4, 4, 0, 3], [3, 0, 1, 0]), ALPHABET, "<pad>", 2)
    assert [(t.char, t.row) for t in toks] == [("ب", 0), ("7", 0), ("7", 1), ("1", 1)]
    assert [t.step for t in toks] == [0, 3, 4, 6]


def test_blank_separates_doubled_characters() -> None:
    toks = best_path_tokens(_probs([1, 0, 1, 1, 2], [0, 0, 0, 0, 0]), ALPHABET, "<pad>", 2)
    assert "".join(t.char for t in toks) == "112"


def test_two_line_moroccan_read_becomes_plate_text() -> None:
    # First line: letter + region "ب7"; second line: serial "12".
    toks = best_path_tokens(_probs([0, 4, 0, 3, 0], [1, 0, 2, 0, 0]), ALPHABET, "<pad>", 2)
    assert parse(toks, "MA") == ("12-ب-7", tuple(t.prob for t in (toks[2], toks[3], toks[0], toks[1])))
