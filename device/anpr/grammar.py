"""Plate grammars and constrained decoding: the most probable VALID plate, not the per-slot argmax.

An OCR with fixed slots gives, for each slot, a probability over its alphabet (pad = no character).
A country's plate is a sequence of groups (digits / letters, with length bounds, no leading zero,
Moroccan region <= 89). The grammar is a small automaton; a Viterbi pass over the slots finds the
valid string with the highest joint probability. Alphabets without ``-`` (models trained elsewhere
often skip separators) are handled by moving between groups without consuming a slot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from device.anpr.plates import COUNTRIES, DIGITS, CountrySpec

_NEG = -1e30


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    """Plate text with ``-`` between groups, whether or not the model emits separators."""
    char_confidences: tuple[float, ...]
    """Probability of each printed character (separators excluded), in text order."""
    log_prob: float
    """Joint log probability of the whole slot sequence (characters, separators and pads)."""

    @property
    def confidence(self) -> float:
        return math.exp(self.log_prob)


def is_valid(text: str, country: str) -> bool:
    spec = COUNTRIES[country]
    groups = text.split("-")
    if len(groups) != len(spec.groups):
        return False
    for i, (s, g) in enumerate(zip(groups, spec.groups, strict=True)):
        if not g.min_len <= len(s) <= g.max_len:
            return False
        if g.kind == "digits":
            if not all(c in DIGITS for c in s) or (g.first_nonzero and s[0] == "0"):
                return False
            if spec.region_max is not None and i == len(groups) - 1 and not 1 <= int(s) <= spec.region_max:
                return False
        elif not all(c in spec.letters for c in s):
            return False
    return True


class Grammar:
    """Decoder for one country and one OCR alphabet (built once per model, reused per plate)."""

    def __init__(self, country: str, alphabet: Sequence[str], pad: str):
        if country not in COUNTRIES:
            raise ValueError(f"unknown country {country!r}")
        self.country = country
        self.spec: CountrySpec = COUNTRIES[country]
        self.alphabet = list(alphabet)
        index = {c: i for i, c in enumerate(self.alphabet)}
        if pad not in index:
            raise ValueError(f"pad symbol {pad!r} not in alphabet")
        self.pad = index[pad]
        self.dash = index.get("-")
        missing = [c for c in DIGITS if c not in index]
        if missing:
            raise ValueError(f"alphabet lacks digits {missing}")
        self.digit_idx = np.array([index[c] for c in DIGITS])
        self.nonzero_idx = np.array([index[c] for c in DIGITS[1:]])
        letters = [c for c in self.spec.letters if c in index]
        if not letters:
            raise ValueError(f"alphabet has none of the {country} plate letters")
        self.letter_idx = np.array([index[c] for c in letters])

    # A state is (group, count, cat). ``cat`` matters only for a group with a maximum value (Moroccan
    # region <= 89): after its first digit, 0 = below the maximum's first digit, 1 = equal, 2 = above.
    def _tracks_value(self, g: int) -> bool:
        return self.spec.region_max is not None and g == len(self.spec.groups) - 1

    def _subsets(self) -> dict[str, np.ndarray]:
        subsets = {"digit": self.digit_idx, "nonzero": self.nonzero_idx, "letter": self.letter_idx}
        rmax = self.spec.region_max
        if rmax is not None:
            hi, lo = divmod(rmax, 10)
            digs = np.array([int(self.alphabet[j]) for j in self.digit_idx])
            if rmax >= 10:
                subsets["first_lt"] = self.digit_idx[(digs >= 1) & (digs < hi)]
                subsets["first_eq"] = self.digit_idx[digs == hi]
                subsets["first_gt"] = self.digit_idx[digs > hi]
                subsets["second_eq"] = self.digit_idx[digs <= lo]
            else:
                subsets["first_lt"] = self.digit_idx[(digs >= 1) & (digs <= rmax)]
        return {k: v for k, v in subsets.items() if len(v)}

    def _moves(self, state: tuple) -> list[tuple[str, tuple]]:
        """(class subset, next state) pairs that consume one slot; '-' and 'pad' are single classes."""
        g, k, cat = state
        grp = self.spec.groups[g]
        last = len(self.spec.groups) - 1
        out: list[tuple[str, tuple]] = []
        if k < grp.max_len:
            if grp.kind == "letters":
                out.append(("letter", (g, k + 1, 0)))
            elif self._tracks_value(g):
                if k == 0:
                    out += [(n, (g, 1, c)) for c, n in enumerate(("first_lt", "first_eq", "first_gt"))]
                elif k == 1 and cat == 0:
                    out.append(("digit", (g, 2, 0)))
                elif k == 1 and cat == 1:
                    out.append(("second_eq", (g, 2, 0)))
            else:
                out.append(("nonzero" if k == 0 and grp.first_nonzero else "digit", (g, k + 1, 0)))
        if k >= grp.min_len:
            if g < last and self.dash is not None:
                out.append(("dash", (g + 1, 0, 0)))
            elif g == last:
                out.append(("pad", ("end",)))
        return out

    def decode(self, probs: np.ndarray) -> Decoded | None:
        """``probs``: (slots, classes) probabilities. None when no valid plate fits in the slots."""
        probs = np.asarray(probs, np.float64)
        lp = np.log(np.clip(probs, 1e-12, 1.0))
        n = lp.shape[0]
        best_lp: dict[str, list[float]] = {}
        best_j: dict[str, list[int]] = {}
        for name, idx in self._subsets().items():
            sub = lp[:, idx]
            a = sub.argmax(axis=1)
            best_lp[name] = sub[np.arange(n), a].tolist()
            best_j[name] = idx[a].tolist()
        best_lp["pad"] = lp[:, self.pad].tolist()
        best_j["pad"] = [self.pad] * n
        if self.dash is not None:
            best_lp["dash"] = lp[:, self.dash].tolist()
            best_j["dash"] = [self.dash] * n
        end = ("end",)
        # layer[i]: state -> (score, previous state, class index or -1 for a free group boundary)
        layers: list[dict[tuple, tuple[float, tuple | None, int]]] = [
            self._closure({(0, 0, 0): (0.0, None, -2)})
        ]
        for i in range(n):
            nxt: dict[tuple, tuple[float, tuple | None, int]] = {}
            for state, (score, _, _) in layers[-1].items():
                moves = [("pad", end)] if state == end else self._moves(state)
                for name, st in moves:
                    if name not in best_lp:
                        continue
                    sc = score + best_lp[name][i]
                    if sc > nxt.get(st, (_NEG,))[0]:
                        nxt[st] = (sc, state, best_j[name][i])
            layers.append(self._closure(nxt))
        final = [(v[0], st) for st, v in layers[-1].items() if st == end or self._complete(st)]
        if not final:
            return None
        score, st = max(final, key=lambda t: t[0])
        # Walk back: each layer may hold free boundary hops (class -1) inside the same slot.
        chars: list[tuple[int, int]] = []  # (slot, class); class -1 = free group boundary
        i = n
        while True:
            _sc, prev, j = layers[i][st]
            if j == -2:  # the start state
                break
            if j == -1:
                chars.append((-1, -1))
            else:
                chars.append((i - 1, j))
                i -= 1
            st = prev  # type: ignore[assignment]
        chars.reverse()
        text: list[str] = []
        confs: list[float] = []
        for slot, j in chars:
            if j == -1:
                text.append("-")
            elif j != self.pad:
                ch = self.alphabet[j]
                text.append(ch)
                if ch != "-":
                    confs.append(float(probs[slot, j]))
        return Decoded("".join(text), tuple(confs), float(score))

    def _complete(self, st: tuple) -> bool:
        if st == ("end",):
            return True
        g, k, _cat = st
        return g == len(self.spec.groups) - 1 and k >= self.spec.groups[g].min_len

    def _closure(self, layer: dict) -> dict:
        """Without a separator class, a finished group may hand over to the next one for free."""
        if self.dash is not None:
            return layer
        out = dict(layer)
        for st in sorted((s for s in layer if s != ("end",)), key=lambda s: s[0]):
            g, k, _cat = st
            if g < len(self.spec.groups) - 1 and k >= self.spec.groups[g].min_len:
                nst = (g + 1, 0, 0)
                if out[st][0] > out.get(nst, (_NEG,))[0]:
                    out[nst] = (out[st][0], st, -1)
        return out


def decode_best(
    probs: np.ndarray, grammars: Sequence[Grammar], country_probs: dict[str, float] | None = None
) -> tuple[str, Decoded] | None:
    """Best valid reading over several countries, weighting each by the model's country probability."""
    best: tuple[float, str, Decoded] | None = None
    for gr in grammars:
        d = gr.decode(probs)
        if d is None:
            continue
        prior = (country_probs or {}).get(gr.country, 1.0)
        score = d.log_prob + math.log(max(prior, 1e-9))
        if best is None or score > best[0]:
            best = (score, gr.country, d)
    return None if best is None else (best[1], best[2])
