"""The OCR's second look at an unsure plate: more views of the crop, and the most likely valid reading.

A first read (CTC best path) below the model card's ``second_look_below`` is read again from the crop
widened by each of the card's ``second_look_margins``. Every look proposes its best path's valid reading
and that reading's neighbours (an emitted character swapped for one of its step's next-best classes, or
dropped), each checked against the country's layouts. Each candidate is then scored by its exact CTC
likelihood (all alignments) averaged in log space over the looks, a product of experts: a character
one view is unsure of is settled by the views that see it clearly. Almost all of a plate's errors on
unseen type faces are one wrong character, which this search covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from device.anpr.ctc import best_path_tokens, log_likelihoods
from device.anpr.layout import INCOMPLETE_READ_WEIGHT, Token, complete, parse


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str
    country: str
    rows: tuple[tuple[int, ...], ...]
    """Class indices per output row, in visual order: what the CTC likelihood is computed for."""
    char_confidences: tuple[float, ...]
    """Probability of each character (text order) in the look that proposed it."""
    complete: bool
    """Whether it has every row its country prints (:func:`device.anpr.layout.complete`)."""


@dataclass(frozen=True, slots=True)
class Choice:
    candidate: Candidate
    confidence: float
    """Geometric mean over the looks of the reading's CTC probability, down-weighted when incomplete."""


def widen(crop: np.ndarray, fx: float, fy: float) -> np.ndarray:
    """The crop with ``fx`` of its width and ``fy`` of its height added on each side (edges repeated):
    the glyphs shift and shrink a little, so the model sees them at a slightly different scale."""
    h, w = crop.shape[:2]
    mx, my = round(w * fx), round(h * fy)
    return cv2.copyMakeBorder(crop, my, my, mx, mx, cv2.BORDER_REPLICATE)


def candidates(
    probs: np.ndarray,
    allowed: np.ndarray,
    alphabet: list[str],
    blank_symbol: str,
    rows: int,
    country: str,
    *,
    alternatives: int = 2,
    min_prob: float = 0.01,
) -> dict[str, Candidate]:
    """Valid readings of ``country`` at one edit from the best path, keyed by plate text.

    ``allowed`` masks the classes the country can print. Each emitted character is swapped for up to
    ``alternatives`` other classes its step gives at least ``min_prob``, or dropped; the best path
    itself comes first.
    """
    index = {c: i for i, c in enumerate(alphabet)}
    blank = index[blank_symbol]
    masked = np.where(allowed[None, :], probs, 0.0)
    path = best_path_tokens(masked, alphabet, blank_symbol, rows)
    out: dict[str, Candidate] = {}

    def propose(tokens: list[Token]) -> None:
        parsed = parse(tokens, country)
        if parsed is None or parsed[0] in out:
            return
        text, confs = parsed
        per_row = tuple(tuple(index[t.char] for t in tokens if t.row == r) for r in range(rows))
        out[text] = Candidate(text, country, per_row, confs, complete(tokens, country))

    propose(path)
    for i, tok in enumerate(path):
        if tok.step >= 0:
            for k in np.argsort(-masked[tok.step])[: alternatives + 1]:
                p = float(masked[tok.step, k])
                if k != blank and alphabet[k] != tok.char and p >= min_prob:
                    propose([*path[:i], Token(alphabet[k], tok.row, p, tok.step), *path[i + 1 :]])
        propose(path[:i] + path[i + 1 :])
    return out


def choose(looks: list[np.ndarray], cands: list[Candidate], blank: int, rows: int) -> Choice | None:
    """The candidate with the highest mean log likelihood over ``looks`` ((rows * steps, classes) each)."""
    if not cands:
        return None
    # One batch of (look, row, distinct row text) sequences: candidates often share a row (one-line
    # plates: all of row 2 is empty), and one forward pass over the batch costs about one sequence.
    distinct = [list(dict.fromkeys(c.rows[r] for c in cands)) for r in range(rows)]
    seqs, steps = [], []
    for probs in looks:
        per_row = probs.shape[0] // rows
        lp = np.log(np.clip(probs, 1e-9, 1.0))
        for r in range(rows):
            seqs += distinct[r]
            steps += [lp[r * per_row : (r + 1) * per_row]] * len(distinct[r])
    ll = iter(log_likelihoods(np.stack(steps), seqs, blank).tolist())
    total = np.zeros(len(cands))
    for _ in looks:
        for r in range(rows):
            at = {seq: next(ll) for seq in distinct[r]}
            total += [at[c.rows[r]] for c in cands]
    total /= len(looks)
    total += np.array([0.0 if c.complete else math.log(INCOMPLETE_READ_WEIGHT) for c in cands])
    best = int(total.argmax())
    return Choice(cands[best], float(math.exp(total[best])))
