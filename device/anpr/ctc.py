"""CTC over the OCR's rows of output steps: the best path and the exact likelihood of a reading.

The best path (argmax per step, repeats merged, blanks dropped) is the fast first read. It is not the
most probable *text*: a text's probability is the sum over every alignment that spells it, which
:func:`log_likelihoods` computes (the CTC forward algorithm) to rank candidate readings on a second look.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from device.anpr.layout import Token

_NEG = -1e30


def best_path_tokens(probs: np.ndarray, alphabet: list[str], blank_symbol: str, rows: int) -> list[Token]:
    """CTC best path: argmax per step, repeats merged, blanks dropped, each token tagged with its line.

    ``probs`` is (rows * steps, classes), line after line. A new line starts a new path, so a
    character ending one line and the same character starting the next stay two characters.
    """
    best = probs.argmax(axis=1)
    blank = alphabet.index(blank_symbol)
    per_row = probs.shape[0] // max(1, rows)
    tokens: list[Token] = []
    prev = blank
    for t, k in enumerate(best):
        k = int(k)
        if t % per_row == 0:
            prev = blank
        if k != blank and k == prev and tokens:
            last = tokens[-1]
            tokens[-1] = Token(last.char, last.row, max(last.prob, float(probs[t, k])), last.step)
        elif k != blank:
            tokens.append(Token(alphabet[k], min(t // per_row, rows - 1), float(probs[t, k]), t))
        prev = k
    return tokens


def log_likelihoods(log_probs: np.ndarray, labels: Sequence[Sequence[int]], blank: int) -> np.ndarray:
    """``log P(label sequence | steps)`` for each of ``labels``, summed over all CTC alignments.

    ``log_probs`` is one row of steps, (steps, classes), shared by all sequences, or one such row per
    sequence, (sequences, steps, classes). The forward recursion runs over all sequences at once (one
    numpy pass per step), so ranking a few dozen candidates over several looks costs about one
    sequence's Python overhead. An empty sequence is the all-blank path; a sequence too long for the
    steps gets a log likelihood of about -1e30.
    """
    lp = np.asarray(log_probs, np.float64)
    steps = lp.shape[-2]
    n = len(labels)
    lens = np.array([2 * len(seq) + 1 for seq in labels], np.int64)
    width = max(3, int(lens.max(initial=1)))
    ext = np.full((n, width), blank, np.int64)  # blank, c1, blank, c2, ..., blank
    for i, seq in enumerate(labels):
        if len(seq):
            ext[i, 1 : 2 * len(seq) : 2] = np.asarray(seq, np.int64)
    # A jump over a blank is allowed between two different characters only.
    skip = np.zeros((n, width), bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    inside = np.arange(width)[None, :] < lens[:, None]
    # emit[t, i, s]: log probability at step t of sequence i's s-th extended label
    emit = lp[:, ext] if lp.ndim == 2 else np.take_along_axis(lp, ext[:, None, :], axis=2).transpose(1, 0, 2)
    alpha = np.full((n, width), _NEG)
    alpha[:, 0] = emit[0, :, 0]
    alpha[:, 1] = np.where(lens > 1, emit[0, :, 1], _NEG)
    pad1 = np.full((n, 1), _NEG)
    pad2 = np.full((n, 2), _NEG)
    for t in range(1, steps):
        stay_or_next = np.logaddexp(alpha, np.concatenate([pad1, alpha[:, :-1]], axis=1))
        jump = np.where(skip, np.concatenate([pad2, alpha[:, :-2]], axis=1), _NEG)
        alpha = np.where(inside, np.logaddexp(stay_or_next, jump) + emit[t], _NEG)
    rows = np.arange(n)
    last = alpha[rows, lens - 1]
    before = np.where(lens > 1, alpha[rows, np.maximum(lens - 2, 0)], _NEG)
    return np.logaddexp(last, before)
