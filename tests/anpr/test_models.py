"""The committed models: load with the real runtime, match their cards, keep their measured accuracy.

Test sets are generated here from seeds that training never used and from held-out fonts only.
The issue's bar is exact plate match >= 98% clean crops, >= 92% degraded, >= 90% full frames (BAR).
The committed models reach it on frames but not yet on crops (models/anpr_ocr.json "metrics"); the
tests hold them to FLOOR, a regression guard a little under what they measure, so a worse model or a
broken pipeline fails here. Raise FLOOR towards BAR as retrained models get better.
"""

from __future__ import annotations

import json

import pytest

from device.anpr.card import card_path, file_sha256, load_card
from device.anpr.evaluate import eval_crops, eval_frames
from device.anpr.reader import PlateReader
from device.anpr.runtime import interpreter_class

SEED = 90210  # not a training seed (models/train/__main__.py SEEDS)
BAR = {"clean": 0.98, "degraded": 0.92, "frames": 0.90}
FLOOR = {"clean": 0.91, "degraded": 0.86, "frames": 0.86}  # measured here: 0.95, 0.895, 0.894
FLOOR_PER_COUNTRY_CLEAN = {"MR": 0.93, "SA": 0.95, "MA": 0.93}  # measured: MR 42/42, SA 40/40, MA 75/79
# (EG 33/39 is the weakest: Arabic letters and Arabic-Indic digits in unseen faces.)
FLOOR_COUNTRY_AUTO = 0.91  # measured: 0.94
FLOOR_EG_COUNTRY_AUTO = 0.65  # measured: 28/38 (without the layout-completeness weight: 0.30 on the card)
FLOOR_PRECISION = 0.94  # measured: 0.978 of the 92.5% of reads at confidence >= 0.5


def test_runtime_is_litert_or_tflite_runtime(reader: PlateReader) -> None:
    _cls, backend = interpreter_class()
    assert backend.split()[0] in ("ai-edge-litert", "tflite-runtime")
    inv = reader.models()
    for role in ("detector", "ocr"):
        m = inv[role]
        assert m["sha256"] == file_sha256(m["path"])
        assert m["runtime"] == backend


def test_cards_describe_the_files(reader: PlateReader) -> None:
    for path in (reader.ocr_path, reader.det_path):
        card = load_card(path)
        raw = json.loads(card_path(path).read_text(encoding="utf-8"))
        assert raw["sha256"] == file_sha256(path)
        assert path.stat().st_size < 5_000_000
        assert card.training.get("seeds") and card.metrics, "card lacks training recipe or metrics"
    ocr = load_card(reader.ocr_path).ocr
    assert ocr is not None and ocr.pad in ocr.alphabet and ocr.decoder == "ctc" and ocr.rows == 2


def test_clean_crops_accuracy(reader: PlateReader) -> None:
    t = eval_crops(reader, 200, SEED, degraded=False, fixed_country=True)
    assert t.accuracy >= FLOOR["clean"], (t.summary(), t.errors)
    for country, floor in FLOOR_PER_COUNTRY_CLEAN.items():
        ok, n = t.by[f"country:{country}"]
        assert n and ok / n >= floor, (country, ok, n)


def test_degraded_crops_accuracy(reader: PlateReader) -> None:
    t = eval_crops(reader, 200, SEED + 1, degraded=True, fixed_country=True)
    assert t.accuracy >= FLOOR["degraded"], (t.summary(), t.errors)


def test_full_frames_accuracy(reader: PlateReader) -> None:
    t, _false_reads = eval_frames(
        reader, 60, SEED + 2, fixed_country=True
    )  # min_confidence 0: every box reads
    assert t.n >= 60
    assert t.accuracy >= FLOOR["frames"], (t.summary(), t.errors)


def test_confident_reads_are_right(reader: PlateReader) -> None:
    """What a device reports at min_confidence 0.5 must be right far more often than not."""
    t = eval_crops(reader, 200, SEED + 3, degraded=False, fixed_country=True)
    kept = t.at_threshold(0.5)
    assert kept["reported"] > 0 and kept["exact_of_reported"] >= FLOOR_PRECISION, kept


def test_country_inferred_when_several_are_configured(reader: PlateReader) -> None:
    """A site configured for all four jurisdictions reads each plate as its own country's.

    Egyptian plates are the test: most of their letters are Saudi letters too, and only the missing
    Latin row says the plate is not Saudi."""
    t = eval_crops(reader, 200, SEED + 4, degraded=False, fixed_country=False)
    assert t.accuracy >= FLOOR_COUNTRY_AUTO, (t.summary(), t.errors)
    ok, n = t.by["country:EG"]
    assert n and ok / n >= FLOOR_EG_COUNTRY_AUTO, (ok, n, t.errors)


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_do_not_change_reads(threads: int, reader: PlateReader) -> None:
    import random

    from device.anpr.synth.samples import crop_sample
    from device.config import AnprConfig

    r2 = PlateReader(
        AnprConfig(countries=reader.countries, threads=threads, min_confidence=0.0),
        models_dir=reader.ocr_path.parent,
    )
    rng = random.Random(SEED + 5)
    for _ in range(10):
        s = crop_sample(rng, split="heldout")
        assert (
            r2.read_crop(s.image, country=s.country).text == reader.read_crop(s.image, country=s.country).text
        )


def test_ocr_second_look_fixes_more_reads_than_it_breaks(reader: PlateReader) -> None:
    """The card's second look (device.anpr.second_look) leaves confident first reads alone and, on the
    unsure ones, must get more plates right than the first look did. Measured here: 8 fixed, 1 broken,
    86 of 600 looked at again."""
    import random

    from device.anpr.synth.samples import crop_sample

    spec = reader.ocr.spec
    assert spec.second_look_below is not None and len(spec.second_look_margins) == 2
    rng = random.Random(SEED + 6)
    fixed = broken = looked = 0
    for _ in range(600):
        s = crop_sample(rng, split="heldout")  # half of them degraded
        one = reader.ocr.read(s.image, [s.country], second_look=False)
        two = reader.ocr.read(s.image, [s.country])
        if one.confidence >= spec.second_look_below:
            assert two == one
            continue
        looked += 1
        assert two.looks == 3
        assert two.text is not None or one.text is None  # the first read is always a candidate
        fixed += two.text == s.text and one.text != s.text
        broken += one.text == s.text and two.text != s.text
    assert looked and fixed > broken, (fixed, broken, looked)


def test_second_look_fits_boxes_better(reader: PlateReader) -> None:
    """The detector's second look at each plate gives boxes closer to the truth than its first."""
    import random

    import numpy as np

    from device.anpr.detector import _iou
    from device.anpr.synth.scene import make_scene

    det = reader.detector
    assert det.spec.second_look_plate_width is not None  # the committed card asks for it
    rng = random.Random(SEED + 7)
    first, second = [], []
    for _ in range(25):
        sc = make_scene(rng, split="heldout", min_plates=1, max_plates=2)
        for d in det.detect(sc.image):
            truth = max((p.box for p in sc.plates), key=lambda b: _iou(b, d.box))
            if _iou(truth, d.box) > 0.3:
                first.append(_iou(truth, d.box))
                second.append(_iou(truth, det.second_look(sc.image, d).box))
    assert len(first) >= 25
    assert np.median(second) > np.median(first), (np.median(first), np.median(second))
    # A card without the field (a deployer's own detector) gets exactly one look.
    import copy

    one_look = copy.copy(det)
    one_look.spec = det.spec.model_copy(update={"second_look_plate_width": None})
    d = det.detect(sc.image)[0]
    assert one_look.second_look(sc.image, d) is d
