"""Judging a candidate OCR file against the deployed one, on development sets, before any card set is read.

A new stage is kept only if it reads neither clean nor degraded crops worse than the file it would
replace (the rule fixed before the CPU stages of models/README.md were measured). The sets here are
held-out fonts with seeds of their own (31337-31343), never the card's test sets (``models.train eval``),
so choosing a model on them does not bias the card's figures. Both files are read as the device reads
them: the runtime, the deployed detector and card settings (second look included), four countries.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEV_SETS = (
    ("clean", 31337, False, "glyphs"),
    ("degraded", 31338, True, "glyphs"),
    ("strings", 31341, False, "strings"),
    ("joined", 31343, False, "joined"),
)
"""(name, seed, degraded, typeset). The typeset sets (other generators' habits) get a third of ``n``."""

KEEP_ON = ("clean", "degraded")
"""The sets a candidate must not lose on; the others are reported, not judged."""


@dataclass(frozen=True)
class DevScores:
    model: str
    sha256: str
    n: int
    exact: dict[str, float]
    """Plate-level exact match per set, and per set for Egyptian plates (``<set>_EG``)."""


def dev_scores(ocr_path: Path, models_dir: Path, n: int = 1500) -> DevScores:
    """Reads the development sets with ``ocr_path`` in place of the deployed OCR (its card copied, with
    the candidate's sha256, so the runtime's hash check passes for this file and no other)."""
    from device.anpr.card import file_sha256
    from device.anpr.evaluate import eval_crops
    from device.anpr.reader import PlateReader
    from device.config import AnprConfig

    with tempfile.TemporaryDirectory(prefix="radarcam-candidate-") as tmp:
        d = Path(tmp)
        for name in ("anpr_detector.tflite", "anpr_detector.json"):
            shutil.copy(models_dir / name, d / name)
        shutil.copy(ocr_path, d / "anpr_ocr.tflite")
        card = json.loads((models_dir / "anpr_ocr.json").read_text())
        card["sha256"] = file_sha256(d / "anpr_ocr.tflite")
        (d / "anpr_ocr.json").write_text(json.dumps(card, ensure_ascii=False))
        reader = PlateReader(
            AnprConfig(countries=["MA", "SA", "EG", "MR"], threads=2, min_confidence=0.0), models_dir=d
        )
        exact: dict[str, float] = {}
        for name, seed, degraded, typeset in DEV_SETS:
            m = n if typeset == "glyphs" else max(1, n // 3)
            t = eval_crops(reader, m, seed, degraded=degraded, fixed_country=True, typeset=typeset)
            exact[name] = t.accuracy
            eg = t.summary()["by"].get("country:EG")
            if eg is not None:
                exact[f"{name}_EG"] = eg["exact"]
        return DevScores(ocr_path.name, card["sha256"], n, exact)


def decide(candidate: DevScores, baseline: DevScores) -> tuple[bool, str]:
    """Keep only when no ``KEEP_ON`` set drops; a tie is not a drop. The reason names every change."""
    if candidate.n != baseline.n:
        raise ValueError(f"compared on different set sizes ({candidate.n} vs {baseline.n})")
    drops = [k for k in KEEP_ON if candidate.exact[k] < baseline.exact[k]]
    changes = ", ".join(
        f"{k} {100 * baseline.exact[k]:.2f} -> {100 * candidate.exact[k]:.2f} %"
        for k in baseline.exact
        if k in candidate.exact
    )
    if drops:
        return False, f"reject: {' and '.join(drops)} dropped ({changes})"
    return True, f"keep: neither {' nor '.join(KEEP_ON)} dropped ({changes})"
