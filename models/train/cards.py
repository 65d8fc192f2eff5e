"""Writes the model cards: static description first (so the runtime can load the model), then the
held-out evaluation through the real runtime (device.anpr.reader), then the final card with metrics."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from device.anpr.card import file_sha256
from device.anpr.plates import COUNTRY_CODES, OCR_ALPHABET, PAD

EVAL_N = {"crops": 600, "frames": 200, "typeset": 300}
"""Per condition with the country known (a device is configured for its country); half as many with
the country inferred from the read. ``typeset``: per kind and condition of the typeset test sets."""

RECIPE = (
    "Synthetic plates from device.anpr.synth (Debian fonts, training pool only; layouts MA one/two-line, "
    "SA two-row Arabic+Latin, EG banded, MR), random perspective, loose crop margins, photometric jitter; "
    "half the crops degraded with 1-3 of motion blur, noise, night, IR, JPEG, shadow, occlusion, low "
    "resolution, glare. Frames: road backdrop, vehicle shapes, Arabic/Latin/digit distractor signs, 0-2 "
    "plates 80-300 px wide, half degraded."
)


GPU_MACHINE = (
    "one NVIDIA H100 80GB, Keras 3 on its JAX backend (scripts/gpu_train.sh); crops generated on 16 CPU "
    "cores; exported to TFLite with TensorFlow on the CPU machine"
)
GPU_STAGES = {
    7: "as stage 6 on 300 000 fresh crops (wide font pool, variety, slant); from the stage 6 weights, "
    "warm-up to 3e-4, cosine decay",
    8: "as stage 7 on 300 000 more fresh crops; from the stage 7 weights, warm-up to 2e-4, cosine decay",
    9: "the network grown by two residual 3x3 blocks after each of its 12x40 and 6x40 stages, each block "
    "starting as the identity (last batch-norm scale 0), so training starts from stage 8's accuracy; "
    "250 000 fresh crops, warm-up to 3e-4, cosine decay",
    10: "a second pass over the stage 9 crops (same seed) at warm-up to 1.5e-4, cosine decay",
}
"""Stages trained on a lent GPU machine; the same commands run (slowly) on a CPU."""


STAGES = {
    2: "fresh crops from the extended training font pool (train + 11 Arabic and 12 Latin "
    "faces, never the held-out ones), crop margins up to 25 % / 45 % of the plate (the reader's "
    "wide retry crop), 6 % hollow (outline) lettering; stroke thinning/thickening on 40 % of "
    "crops; Adam from the stage 1 weights, 300 warm-up steps to 1e-3, cosine decay",
    3: "as stage 2, plus crop_sample(variety=True): half the plates' glyph outlines bent "
    "by a smooth random displacement field (augment.glyph_warp, 1.5-3.5 % of the plate height), "
    "plates down to 18 px (one-line) / 26 px high, country mix MA 30 / SA 15 / EG 35 / MR 20 %; "
    "Adam from the stage 2 weights, warm-up to 7e-4, cosine decay",
    4: "a second pass over the stage 3 crops (same seed) with half of them slanted by a "
    "random horizontal shear of up to +-0.35 (oblique and calligraphic faces); from the stage 3 "
    "weights, warm-up to 5e-4, cosine decay",
    5: "as stage 4 (variety crops, slant) on fresh crops from the wide font pool: the "
    "extended pool plus 48 Arabic faces of other Debian packages (Uyghur, Persian, West African, "
    "geometric; device.anpr.synth.fonts.ARABIC_TRAIN_WIDE, never a held-out face or another "
    "weight of a held-out family); from the stage 4 weights, warm-up to 5e-4, cosine decay",
    6: "as stage 5 on fresh crops; from the stage 5 weights, warm-up to 3e-4, cosine decay",
    **GPU_STAGES,
}
"""Each fine-tuning stage's recipe, for the card (models.train.__main__.FINETUNE runs them)."""


def builtin_ops(path: Path) -> list[str]:
    """The operators the flatbuffer really uses, read by a TFLite interpreter (not a hand-kept list):
    LiteRT's (the runtime's own), or TensorFlow's where LiteRT is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    it = Interpreter(model_path=str(path))
    return sorted({d["op_name"] for d in it._get_ops_details()})


def _timing(root: Path, work: Path) -> dict:
    """Run times recorded by the training commands (work/timing.json), over those of the committed
    cards: a machine that trained only a new stage, or none (``eval`` alone), keeps the earlier stages'
    recorded times instead of writing them as unknown."""
    return {**_card_timing(root), **_json(work / "timing.json")}


def _json(p: Path) -> dict:
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def _card_timing(root: Path) -> dict:
    """timing.json's keys as the committed cards in ``root`` hold them."""
    ocr, det = (
        _json(root / "anpr_ocr.json").get("training", {}),
        _json(root / "anpr_detector.json").get("training", {}),
    )
    out = {
        "ocr_s": ocr.get("run_time_s"),
        "ocr_train_s": ocr.get("run_time_train_s"),
        "detector_s": det.get("run_time_s"),
    }
    for key, stage in ocr.items():
        if key.startswith("stage") and isinstance(stage, dict):
            out[f"ocr_{key}_s"] = stage.get("run_time_s")
            out[f"ocr_{key}_data_s"] = stage.get("data_time_s")
    return {k: v for k, v in out.items() if v is not None}


def _quant(root: Path, work: Path, name: str, record: str) -> str:
    """The export's quantisation (work/<record>), else the committed card's if it describes this very
    file (same sha256), else unknown."""
    if (work / record).exists():
        return (work / record).read_text().strip()
    card = _json(root / f"{name}.json")
    if card.get("sha256") == file_sha256(root / f"{name}.tflite") and card.get("quantisation"):
        return str(card["quantisation"]).split(" ")[0]
    return "unknown"


SECOND_LOOK_BELOW = 0.8
SECOND_LOOK_MARGINS = ((0.04, 0.06), (0.08, 0.12))
"""The OCR's second look (device.anpr.second_look), chosen on a development set of held-out-font crops
(seeds 31337/31338, 1500 clean + 1500 degraded; not the card's test set): three looks re-ranked gave
+1.7 / +2.0 points over one look; below 0.8, 12 % of clean and 19 % of degraded first reads look again,
and that gains as much as looking again at every plate."""


def ocr_card(root: Path, work: Path, seeds: dict, sizes: dict, metrics: dict) -> dict:
    path = root / "anpr_ocr.tflite"
    quant = _quant(root, work, "anpr_ocr", "ocr_quant.txt")
    timing = _timing(root, work)
    return {
        "name": "radarcam-anpr-ocr",
        "version": "1.1.0",
        "task": "ocr",
        "file": path.name,
        "sha256": file_sha256(path),
        "input": {
            "height": 48,
            "width": 160,
            "channels": 1,
            "color": "gray",
            "pixel_scale": 1 / 255,
            "pixel_offset": 0.0,
            "resize": "stretch",
        },
        "ocr": {
            "alphabet": list(OCR_ALPHABET),
            "pad": PAD,
            "slots": 80,
            "decoder": "ctc",
            "rows": 2,
            "countries": list(COUNTRY_CODES),
            "chars_output": 0,
            "country_output": None,
            "country_codes": [],
            "scores": "probabilities",
            "second_look_below": SECOND_LOOK_BELOW,
            "second_look_margins": [list(m) for m in SECOND_LOOK_MARGINS],
        },
        "quantisation": quant + (" (uint8 image input, float32 outputs)" if quant == "int8" else ""),
        "ops": builtin_ops(path),
        "notes": "1.1.0: the weights of 1.0.0; the card adds the second look at unsure plates "
        "(ocr.second_look_below, ocr.second_look_margins)",
        "training": {
            "recipe": RECIPE,
            "samples": sizes["ocr_train"],
            "epochs": sizes["ocr_epochs"],
            **{
                f"stage{k}": {
                    "samples": sizes.get(f"ocr{k}_train"),
                    "epochs": sizes.get(f"ocr{k}_epochs"),
                    "data_seed": seeds.get(f"ocr{k}_train"),
                    "recipe": recipe,
                    "run_time_s": timing.get(f"ocr_stage{k}_s"),
                    **({"data_time_s": timing.get(f"ocr_stage{k}_data_s")} if k in GPU_STAGES else {}),
                    **({"machine": GPU_MACHINE} if k in GPU_STAGES else {}),
                }
                for k, recipe in STAGES.items()
            },
            "architecture": "CNN (24-40-64-64-96-96 channels, 3x3) pooled to one row of 40 columns that "
            "see the full height, two (1x5) context convs, one 1x1 CTC head per text line (2 x 40 steps); "
            "from stage 9, two residual 3x3 blocks after each of the 12x40 (64 ch) and 6x40 (96 ch) stages "
            "(models.train.ocr.build grow=2)",
            "schedule": "Adam, batch 64, sum of the two lines' CTC losses; 300 warm-up steps to 3e-3, "
            "cosine decay to 6e-5; brightness/contrast jitter",
            "seeds": {
                "data": seeds["ocr_train"],
                "tensorflow": seeds["tf"],
                "selection": seeds["ocr_select"],
            },
            "command": "python -m models.train ocr (stages 1-10 + export); ocrN = from stage N",
            "run_time_s": timing.get("ocr_s"),
            "run_time_train_s": timing.get("ocr_train_s"),
            "machine": f"{platform.machine()} {platform.processor() or ''} (2 shared CPU cores)".strip(),
            "text_format": "groups joined by '-', ASCII digits, letters in the plate's script, Arabic "
            "letter groups in logical order",
            "line_targets": "device.anpr.layout.visual_lines: (first line, second line) as printed, left to "
            "right; MA two-line = (letter+region, serial), SA = (Arabic row, Latin row), others one line",
        },
        "metrics": metrics,
    }


def det_card(root: Path, work: Path, seeds: dict, sizes: dict, metrics: dict) -> dict:
    path = root / "anpr_detector.tflite"
    quant = _quant(root, work, "anpr_detector", "det_quant.txt")
    timing = _timing(root, work)
    return {
        "name": "radarcam-anpr-detector",
        "version": "1.0.0",
        "task": "detector",
        "file": path.name,
        "sha256": file_sha256(path),
        "input": {
            "height": 192,
            "width": 320,
            "channels": 1,
            "color": "gray",
            "pixel_scale": 1 / 255,
            "pixel_offset": 0.0,
            "resize": "letterbox",
        },
        "detector": {
            "kind": "centernet",
            "stride": 8,
            "channels": ["heat", "dx", "dy", "log_w", "log_h"],
            "score_threshold": 0.3,
            "max_plates": 4,
            # Training plates are 20-75 px wide in the 320 px input; the second look puts them at 52.
            "second_look_plate_width": 0.16,
        },
        "quantisation": quant + (" (uint8 image input, float32 outputs)" if quant == "int8" else ""),
        "ops": builtin_ops(path),
        "training": {
            "recipe": RECIPE,
            "frames": sizes["det_train"],
            "epochs": sizes["det_epochs"],
            "seeds": {
                "data": seeds["det_train"],
                "tensorflow": seeds["tf"],
                "selection": seeds["det_select"],
            },
            "command": "python -m models.train detector",
            "run_time_s": timing.get("detector_s"),
        },
        "metrics": metrics,
    }


def _write(path: Path, card: dict) -> None:
    path.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_cards(root: Path, work: Path, seeds: dict, sizes: dict, *, log) -> None:
    _write(root / "anpr_ocr.json", ocr_card(root, work, seeds, sizes, {}))
    _write(root / "anpr_detector.json", det_card(root, work, seeds, sizes, {}))

    from device.anpr.evaluate import eval_crops, eval_frames
    from device.anpr.reader import PlateReader
    from device.config import AnprConfig

    cfg = AnprConfig(countries=list(COUNTRY_CODES), threads=2, min_confidence=0.0)
    reader = PlateReader(cfg, models_dir=root)
    s = seeds["eval"]
    t0 = time.time()
    m: dict = {
        "test_set": f"held-out fonts only, seeds {s}..{s + 7}, generated by device.anpr.evaluate",
        "min_confidence": reader.cfg.min_confidence,
    }
    for fixed in (True, False):
        key = "country_known" if fixed else "country_auto"
        div = 1 if fixed else 2
        clean = eval_crops(reader, EVAL_N["crops"] // div, s, degraded=False, fixed_country=fixed)
        deg = eval_crops(reader, EVAL_N["crops"] // div, s + 1, degraded=True, fixed_country=fixed)
        frames, false_reads = eval_frames(reader, EVAL_N["frames"] // div, s + 2, fixed_country=fixed)
        m[key] = {
            "clean_crops": clean.summary(),
            "degraded_crops": deg.summary(),
            "frames_end_to_end": {**frames.summary(), "false_reads": false_reads},
        }
        log(
            f"eval {key}: clean {clean.accuracy:.4f} degraded {deg.accuracy:.4f} frames {frames.accuracy:.4f} "
            f"(false reads {false_reads}) errors clean {clean.errors[:5]} deg {deg.errors[:5]}"
        )
    # Plates drawn as other generators draw them (device.anpr.synth.render.Typeset): each group set
    # as one string by the layout engine (kerning, no even gaps), and Arabic letter groups joined.
    m["typeset"] = {}
    for i, kind in enumerate(("strings", "joined")):
        n = EVAL_N["typeset"]
        clean = eval_crops(reader, n, s + 4 + 2 * i, degraded=False, fixed_country=True, typeset=kind)
        deg = eval_crops(reader, n, s + 5 + 2 * i, degraded=True, fixed_country=True, typeset=kind)
        m["typeset"][kind] = {"clean_crops": clean.summary(), "degraded_crops": deg.summary()}
        log(f"eval typeset {kind}: clean {clean.accuracy:.4f} degraded {deg.accuracy:.4f}")
    # The same test sets read with the first look alone: what the card's second look adds.
    one = PlateReader(
        AnprConfig(countries=list(COUNTRY_CODES), threads=2, min_confidence=0.0), models_dir=root
    )
    one.ocr.spec = one.ocr.spec.model_copy(update={"second_look_below": None})
    m["country_known_one_look"] = {
        "clean_crops": round(
            eval_crops(one, EVAL_N["crops"], s, degraded=False, fixed_country=True).accuracy, 4
        ),
        "degraded_crops": round(
            eval_crops(one, EVAL_N["crops"], s + 1, degraded=True, fixed_country=True).accuracy, 4
        ),
        "frames_end_to_end": round(
            eval_frames(one, EVAL_N["frames"], s + 2, fixed_country=True)[0].accuracy, 4
        ),
    }
    log(f"eval country_known, first look only: {m['country_known_one_look']}")
    m["eval_time_s"] = round(time.time() - t0, 1)
    _write(root / "anpr_ocr.json", ocr_card(root, work, seeds, sizes, m))
    _write(
        root / "anpr_detector.json",
        det_card(
            root,
            work,
            seeds,
            sizes,
            {"frames_end_to_end": {k: m[k]["frames_end_to_end"] for k in ("country_known", "country_auto")}},
        ),
    )
