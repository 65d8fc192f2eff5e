"""Accuracy on seeded held-out synthetic sets (fonts never used in training): model cards and tests.

Exact plate match = the read's text equals the printed text, groups and all (and, without a fixed
country, the country is right too).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from device.anpr.reader import PlateReader
from device.anpr.synth.samples import crop_sample
from device.anpr.synth.scene import make_scene


@dataclass
class Tally:
    n: int = 0
    ok: int = 0
    by: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    errors: list[tuple[str, str | None]] = field(default_factory=list)

    def add(self, ok: bool, keys: list[str], truth: str, got: str | None) -> None:
        self.n += 1
        self.ok += ok
        for k in keys:
            self.by[k][0] += ok
            self.by[k][1] += 1
        if not ok and len(self.errors) < 20:
            self.errors.append((truth, got))

    @property
    def accuracy(self) -> float:
        return self.ok / self.n if self.n else 0.0

    def summary(self) -> dict:
        return {
            "n": self.n,
            "exact": round(self.accuracy, 4),
            "by": {k: {"n": v[1], "exact": round(v[0] / v[1], 4)} for k, v in sorted(self.by.items())},
        }


def eval_crops(reader: PlateReader, n: int, seed: int, *, degraded: bool, fixed_country: bool) -> Tally:
    rng = random.Random(seed)
    t = Tally()
    for _ in range(n):
        s = crop_sample(rng, split="heldout", degraded=degraded)
        r = reader.read_crop(s.image, country=s.country if fixed_country else None)
        ok = r.text == s.text and r.country == s.country
        t.add(ok, [f"country:{s.country}", *(f"condition:{c}" for c in s.conditions)], s.text, r.text)
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
            t.add(
                p.text in texts,
                [f"country:{p.country}", *(f"condition:{c}" for c in cond)],
                p.text,
                texts[0] if texts else None,
            )
    return t, false_reads
