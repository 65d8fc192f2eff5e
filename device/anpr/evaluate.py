"""Accuracy on seeded held-out synthetic sets (fonts never used in training): model cards and tests.

Exact plate match = the read's text equals the printed text, groups and all (and the country is right).
Accuracy is measured on the reader's best reading (use a reader with ``min_confidence=0``);
``at_threshold`` shows what a confidence cut-off keeps and how often what it keeps is right.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from device.anpr.reader import PlateReader
from device.anpr.synth.render import Typeset
from device.anpr.synth.samples import crop_sample
from device.anpr.synth.scene import make_scene


@dataclass
class Tally:
    n: int = 0
    ok: int = 0
    by: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    errors: list[tuple[str, str | None]] = field(default_factory=list)
    confidences: list[tuple[bool, float]] = field(default_factory=list)

    def add(self, ok: bool, keys: list[str], truth: str, got: str | None, confidence: float = 0.0) -> None:
        self.n += 1
        self.ok += ok
        self.confidences.append((ok, confidence))
        for k in keys:
            self.by[k][0] += ok
            self.by[k][1] += 1
        if not ok and len(self.errors) < 20:
            self.errors.append((truth, got))

    @property
    def accuracy(self) -> float:
        return self.ok / self.n if self.n else 0.0

    def at_threshold(self, thr: float) -> dict:
        """Reads at or above ``thr``: what a device with ``min_confidence = thr`` reports."""
        kept = [ok for ok, c in self.confidences if c >= thr]
        return {
            "threshold": thr,
            "reported": round(len(kept) / max(1, self.n), 4),
            "exact_of_reported": round(sum(kept) / max(1, len(kept)), 4),
        }

    def summary(self) -> dict:
        return {
            "n": self.n,
            "exact": round(self.accuracy, 4),
            "at_min_confidence": [self.at_threshold(t) for t in (0.1, 0.3, 0.5)],
            "by": {k: {"n": v[1], "exact": round(v[0] / v[1], 4)} for k, v in sorted(self.by.items())},
        }


def eval_crops(
    reader: PlateReader,
    n: int,
    seed: int,
    *,
    degraded: bool,
    fixed_country: bool,
    typeset: Typeset = "glyphs",
) -> Tally:
    """``typeset`` draws the plates as another generator might (:data:`device.anpr.synth.render.Typeset`):
    groups set as whole strings, or Arabic letter groups joined."""
    rng = random.Random(seed)
    t = Tally()
    for _ in range(n):
        s = crop_sample(rng, split="heldout", degraded=degraded, typeset=typeset)
        r = reader.read_crop(s.image, country=s.country if fixed_country else None)
        ok = r.text == s.text and r.country == s.country
        keys = [f"country:{s.country}", *(f"condition:{c}" for c in s.conditions)]
        t.add(ok, keys, s.text, r.text, r.confidence)
    return t


def eval_frames(reader: PlateReader, n: int, seed: int, *, fixed_country: bool) -> tuple[Tally, int]:
    """Per ground-truth plate: read correctly somewhere in its frame. Also counts wrong extra reads."""
    rng = random.Random(seed)
    t = Tally()
    false_reads = 0
    for _ in range(n):
        sc = make_scene(rng, split="heldout", min_plates=1, max_plates=2)
        country = sc.plates[0].country if fixed_country and sc.plates else None
        reads = reader.read_image(sc.image, country=country)
        texts = [r.text for r in reads if r.text]
        truths = [p.text for p in sc.plates]
        false_reads += sum(1 for x in texts if x not in truths)
        cond = list(sc.conditions) or ["clean"]
        for p in sc.plates:
            if fixed_country and p.country != country:
                continue
            conf = max((r.confidence for r in reads if r.text == p.text), default=0.0)
            keys = [f"country:{p.country}", *(f"condition:{c}" for c in cond)]
            t.add(p.text in texts, keys, p.text, texts[0] if texts else None, conf)
    return t, false_reads
