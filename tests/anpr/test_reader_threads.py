"""One PlateReader shared by threads (the ANPR worker and the control socket's selftest do this)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2

from device.anpr.reader import PlateReader
from device.config import AnprConfig

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_concurrent_reads_give_each_caller_its_own_plate() -> None:
    """A TFLite interpreter is not thread-safe: unlocked, reads raised ("reference to internal data")
    or returned another thread's plate text and confidence."""
    refs = json.loads((MODELS / "reference_plates.json").read_text())
    images = {c: cv2.imread(str(MODELS / ref["image"])) for c, ref in refs.items()}
    reader = PlateReader(AnprConfig(countries=["MA", "SA", "EG", "MR"], min_confidence=0.0))
    truth = {c: reader.read_crop(img, second_look=False) for c, img in images.items()}
    problems: list[str] = []

    def work(country: str) -> None:
        for _ in range(60):
            try:
                r = reader.read_crop(images[country], second_look=False)
            except Exception as exc:
                problems.append(f"{country}: {type(exc).__name__}: {exc}")
                continue
            t = truth[country]
            if (r.text, r.country, r.confidence) != (t.text, t.country, t.confidence):
                problems.append(f"{country}: read {r.text!r} ({r.country}), expected {t.text!r}")

    threads = [threading.Thread(target=work, args=(c,)) for c in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not problems, problems[:5]
