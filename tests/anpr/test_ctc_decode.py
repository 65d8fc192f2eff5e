"""CTC decoding of the two-line OCR output: best path and exact likelihood (pure numpy: no model)."""

from __future__ import annotations

import itertools

import numpy as np

from device.anpr.ctc import best_path_tokens, log_likelihoods
from device.anpr.layout import parse

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


def _brute_force(probs: np.ndarray, blank: int) -> dict[tuple[int, ...], float]:
    """P(labels) by enumerating every path: merge repeats, drop blanks, add up the path probabilities."""
    out: dict[tuple[int, ...], float] = {}
    steps, classes = probs.shape
    for path in itertools.product(range(classes), repeat=steps):
        labels = tuple(k for i, k in enumerate(path) if k != blank and (i == 0 or k != path[i - 1]))
        out[labels] = out.get(labels, 0.0) + float(np.prod(probs[np.arange(steps), path]))
    return out


def test_log_likelihood_is_the_sum_over_every_alignment() -> None:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(4), size=6)  # 6 steps, blank 0 and three characters
    truth = _brute_force(probs, 0)
    labels = [(), (1,), (1, 1), (1, 2), (2, 1, 3), (3, 3, 3), (1, 2, 1, 2)]
    got = np.exp(log_likelihoods(np.log(probs), labels, 0))
    np.testing.assert_allclose(got, [truth.get(seq, 0.0) for seq in labels], rtol=1e-9, atol=1e-300)
    # Doubled characters need a blank between them: (1, 1, 1, 1) needs 7 steps, there are 6.
    assert log_likelihoods(np.log(probs), [(1, 1, 1, 1)], 0)[0] < -1e20
    assert (1, 1, 1, 1) not in truth


def test_log_likelihood_with_one_row_of_steps_per_sequence() -> None:
    rng = np.random.default_rng(8)
    a, b = (np.log(rng.dirichlet(np.ones(4), size=6)) for _ in range(2))
    labels = [(1, 2), (3,), ()]
    batched = log_likelihoods(np.stack([a, b, a]), labels, 0)
    np.testing.assert_allclose(
        batched,
        [
            log_likelihoods(a, [labels[0]], 0)[0],
            log_likelihoods(b, [labels[1]], 0)[0],
            log_likelihoods(a, [()], 0)[0],
        ],
    )
