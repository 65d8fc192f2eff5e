"""The self-test's reference plate: one clean plate image per jurisdiction with the text the committed
OCR reads from it.

`radarcam selftest` reads it with the installed runtime and models and expects exactly this text. That is
a function check of the deployed chain (runtime, model file, decoding, grammar), not an accuracy figure:
the accuracy is in the model card. The plate is the first clean one-line render (fixed seeds) that the
committed model reads exactly with at least the default confidence, so the choice is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import cv2

COUNTRIES = ("MA", "SA", "EG", "MR")
STYLE = {"MA": "one_line"}


def write_references(models_dir: Path, *, tries: int = 300) -> dict[str, dict]:
    from device.anpr.reader import PlateReader
    from device.anpr.synth import random_plate, render_plate
    from device.config import AnprConfig

    reader = PlateReader(AnprConfig(countries=list(COUNTRIES)), models_dir=models_dir)
    min_conf = AnprConfig().min_confidence
    out: dict[str, dict] = {}
    for country in COUNTRIES:
        for seed in range(tries):
            rng = random.Random(10_000 + seed)
            text, latin = random_plate(country, rng)
            img = render_plate(text, country, rng, height_px=96, style=STYLE.get(country))
            read = reader.read_crop(img, country=country)
            if read.text == text and read.confidence >= min_conf:
                name = f"reference_plate_{country}.png"
                cv2.imwrite(str(models_dir / name), img)
                data = (models_dir / name).read_bytes()
                out[country] = {
                    "image": name,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "text": text,
                    "text_latin": latin,
                    "seed": 10_000 + seed,
                    "ocr_sha256": reader.models()["ocr"]["sha256"],
                }
                break
    (models_dir / "reference_plates.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    return out


if __name__ == "__main__":
    print(json.dumps(write_references(Path(__file__).resolve().parents[1]), ensure_ascii=False, indent=1))
