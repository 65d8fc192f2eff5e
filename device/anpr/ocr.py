"""Plate OCR: any fixed-slot TFLite model described by its card, decoded under the plate grammars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.anpr.card import CardError, ModelCard, load_card
from device.anpr.ctc import best_path_tokens
from device.anpr.grammar import Grammar, decode_best
from device.anpr.layout import INCOMPLETE_READ_WEIGHT, complete, parse
from device.anpr.plates import COUNTRIES, DIGITS
from device.anpr.preprocess import to_gray
from device.anpr.runtime import Model
from device.anpr.second_look import candidates, choose, widen


@dataclass(frozen=True, slots=True)
class OcrResult:
    text: str | None
    country: str | None
    confidence: float
    char_confidences: tuple[float, ...] = ()
    looks: int = 1
    """Model runs behind the read: 1, or 1 + the card's second-look margins (device.anpr.second_look)."""


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class PlateOcr:
    def __init__(self, path: Path, *, threads: int = 2):
        self.card: ModelCard = load_card(path)
        if self.card.task != "ocr" or self.card.ocr is None:
            raise CardError(f"{path}: not an OCR model card")
        self.spec = self.card.ocr
        if self.card.input.resize != "stretch":  # the crop is stretched to the input (see _prepare)
            raise CardError(
                f"{path}: this runtime feeds OCR models stretched crops (card: resize {self.card.input.resize!r})"
            )
        self.model = Model(path, threads=threads, sha256=self.card.sha256)
        self.path = Path(path)
        shape = self.model.inputs[0].shape
        inp = self.card.input
        if tuple(shape[1:3]) != (inp.height, inp.width):
            raise CardError(f"{path}: card input {inp.height}x{inp.width} but model expects {shape}")
        n = self.spec.slots * len(self.spec.alphabet)
        self._chars = self.spec.chars_output
        if self._chars is None:
            fits = [i for i, o in enumerate(self.model.outputs) if int(np.prod(o.shape)) == n]
            if not fits:
                raise CardError(f"{path}: no output of size slots x alphabet = {n}")
            self._chars = fits[0]
        self._grammars: dict[str, Grammar] = {}
        self._masks: dict[str, np.ndarray] = {}
        index = {ch: i for i, ch in enumerate(self.spec.alphabet)}
        for c in self.spec.countries:
            if self.spec.decoder == "slots":
                self._grammars[c] = Grammar(c, self.spec.alphabet, self.spec.pad)
            else:
                allowed = {self.spec.pad, *DIGITS, *COUNTRIES[c].letters}
                if c == "SA":  # the Latin row of Saudi plates
                    allowed |= set(COUNTRIES[c].letters.values())
                self._masks[c] = np.array([ch in allowed for ch in self.spec.alphabet])
                if not all(d in index for d in DIGITS):
                    raise CardError(f"{path}: alphabet lacks digits")

    @property
    def countries(self) -> list[str]:
        return list(self.spec.countries)

    def _prepare(self, crop_bgr: np.ndarray) -> np.ndarray:
        inp = self.card.input
        if inp.channels == 1:
            img = to_gray(crop_bgr)
        else:
            img = crop_bgr if crop_bgr.ndim == 3 else cv2.cvtColor(crop_bgr, cv2.COLOR_GRAY2BGR)
            if inp.color == "rgb":
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        interp = cv2.INTER_AREA if img.shape[0] > inp.height else cv2.INTER_LINEAR
        return cv2.resize(img, (inp.width, inp.height), interpolation=interp)

    def scores(self, crop_bgr: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """(slots x classes) probabilities and the country head's probabilities (empty without one)."""
        inp = self.card.input
        self.model.set_input(
            self._prepare(crop_bgr), pixel_scale=inp.pixel_scale, pixel_offset=inp.pixel_offset
        )
        outs = self.model.run()
        chars = outs[self._chars].reshape(self.spec.slots, len(self.spec.alphabet))
        if self.spec.scores == "logits":
            chars = _softmax(chars)
        country: dict[str, float] = {}
        if self.spec.country_codes:
            idx = self.spec.country_output
            if idx is None:
                idx = next(
                    i
                    for i, o in enumerate(self.model.outputs)
                    if int(np.prod(o.shape)) == len(self.spec.country_codes)
                )
            cp = outs[idx].reshape(-1)
            country = {c: float(p) for c, p in zip(self.spec.country_codes, cp, strict=True)}
        return chars, country

    def _ctc(self, probs: np.ndarray, country: str) -> tuple[str, tuple[float, ...], float] | None:
        """Best path under the country's character set, collapsed, then parsed by its layouts."""
        masked = np.where(self._masks[country][None, :], probs, 0.0)
        tokens = best_path_tokens(masked, self.spec.alphabet, self.spec.pad, self.spec.rows)
        parsed = parse(tokens, country)
        if parsed is None:
            return None
        text, confs = parsed
        # Product of the emitted characters' probabilities, times the geometric mean over all steps of
        # the chosen class's probability (a step that only weakly preferred blank lowers it too).
        steps = float(np.exp(np.mean(np.log(masked.max(axis=1) + 1e-12))))
        conf = float(np.prod([tk.prob for tk in tokens])) * steps
        if not complete(tokens, country):
            conf *= INCOMPLETE_READ_WEIGHT
        return text, confs, conf

    def decode_ctc(self, chars: np.ndarray, countries: list[str]) -> OcrResult:
        """The most confident layout among ``countries`` for (steps x classes) probabilities ``chars``."""
        results = [(c, r) for c in countries if (r := self._ctc(chars, c)) is not None]
        if not results:
            return OcrResult(None, None, 0.0)
        country, (text, confs, conf) = max(results, key=lambda cr: cr[1][2])
        return OcrResult(text, country, conf, confs)

    def second_look(self, looks: list[np.ndarray], countries: list[str]) -> OcrResult:
        """The most likely valid reading over several looks' (steps x classes) probabilities."""
        cands = {}
        for c in countries:
            for probs in looks:
                for text, cand in candidates(
                    probs, self._masks[c], self.spec.alphabet, self.spec.pad, self.spec.rows, c
                ).items():
                    cands.setdefault((c, text), cand)
        best = choose(looks, list(cands.values()), self.spec.alphabet.index(self.spec.pad), self.spec.rows)
        if best is None:
            return OcrResult(None, None, 0.0, looks=len(looks))
        cand = best.candidate
        # Confidence on the first look's scale, so that one min_confidence serves both: the looks'
        # mean first-read confidence in this text (a look that read something else adds 0); a text no
        # look read outright (a one-character edit) has its CTC probability, lower for the same evidence.
        agree = [r for p in looks if (r := self.decode_ctc(p, [cand.country])).text == cand.text]
        conf = max(best.confidence, sum(r.confidence for r in agree) / len(looks))
        chars = max(agree, key=lambda r: r.confidence).char_confidences if agree else cand.char_confidences
        return OcrResult(cand.text, cand.country, conf, chars, len(looks))

    def read(
        self, crop_bgr: np.ndarray, countries: list[str] | None = None, *, second_look: bool = True
    ) -> OcrResult:
        """Best valid reading of a plate crop; ``second_look=False`` keeps it to one model run."""
        if self.spec.decoder == "ctc":
            wanted = [c for c in (countries or self.spec.countries) if c in self._masks]
            if not wanted:
                raise ValueError(f"OCR model supports {self.spec.countries}, asked for {countries}")
            chars, _ = self.scores(crop_bgr)
            first = self.decode_ctc(chars, wanted)
            below = self.spec.second_look_below
            if not second_look or below is None or first.confidence >= below:
                return first
            more = [self.scores(widen(crop_bgr, fx, fy))[0] for fx, fy in self.spec.second_look_margins]
            return self.second_look([chars, *more], wanted)
        wanted = [c for c in (countries or self.spec.countries) if c in self._grammars]
        if not wanted:
            raise ValueError(f"OCR model supports {self.spec.countries}, asked for {countries}")
        chars, cprobs = self.scores(crop_bgr)
        best = decode_best(chars, [self._grammars[c] for c in wanted], cprobs if len(wanted) > 1 else None)
        if best is None:
            return OcrResult(None, None, 0.0)
        country, dec = best
        conf = dec.confidence
        if len(wanted) > 1 and cprobs:
            conf *= cprobs.get(country, 1.0)
        return OcrResult(dec.text, country, float(conf), dec.char_confidences)
