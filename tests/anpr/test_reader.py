"""PlateReader behaviour beyond accuracy: voting, bad input, deployer models by config."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.anpr.card import CardError
from device.anpr.reader import ImageError, PlateReader
from device.anpr.synth.scene import make_scene
from device.anpr.vote import vote
from device.config import AnprConfig
from device.model import PlateRead


def _read(text: str | None, conf: float, frame: int = 0) -> PlateRead:
    return PlateRead(
        text=text, text_latin=None, country="MA" if text else None, confidence=conf, frame_no=frame
    )


def test_vote_majority_beats_single_confident_frame() -> None:
    reads = [_read("1-ب-2", 0.7, 0), _read("1-ب-2", 0.6, 1), _read("7-ب-2", 0.95, 2), _read(None, 0.0, 3)]
    v = vote(reads)
    assert v is not None and v.text == "1-ب-2" and v.frames_voted == 2 and v.frame_no == 0
    assert v.confidence == pytest.approx(0.7 * (1.3 / 2.25))
    assert vote([_read(None, 0.1)]) is None
    assert vote([]) is None


def test_read_frames_votes_one_pass(reader: PlateReader) -> None:
    rng = random.Random(4713)  # a 161 px MR plate: voting is under test here, not small-plate accuracy
    scene = make_scene(rng, split="heldout", min_plates=1, max_plates=1, degraded=False, countries=("MR",))
    truth = scene.plates[0]
    frames = [scene.image, np.zeros_like(scene.image), cv2.GaussianBlur(scene.image, (3, 3), 0)]
    v = reader.read_frames(frames, country="MR")
    assert v is not None and v.text == truth.text and v.box is not None
    assert v.frame_no in (0, 2) and v.frames_voted == 2
    x, y, w, h = v.box
    tx, ty, tw, th = truth.box
    assert abs(x + w / 2 - (tx + tw / 2)) < tw / 4 and abs(y + h / 2 - (ty + th / 2)) < th
    assert v.ocr_model_sha256 == reader.models()["ocr"]["sha256"]
    assert reader.read_frames([np.zeros((720, 1280, 3), np.uint8)]) is None


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((50, 50, 3), np.float32),
        "not an image",
        np.zeros((10, 10, 5), np.uint8),
    ],
)
def test_bad_images_raise_clear_error(reader: PlateReader, bad: object) -> None:
    with pytest.raises(ImageError):
        reader.read_image(bad)  # type: ignore[arg-type]


def test_deployer_model_plugs_in_by_config(reader: PlateReader, tmp_path: Path) -> None:
    """A renamed model with its own card (one country, no country head used) loads via config only."""
    src = reader.ocr_path
    dst = tmp_path / "their_ocr.tflite"
    shutil.copy(src, dst)
    card = json.loads(src.with_suffix(".json").read_text(encoding="utf-8"))
    card["name"] = "deployer-ocr"
    card["ocr"]["countries"] = ["MR"]
    card["ocr"]["country_codes"] = []
    dst.with_suffix(".json").write_text(json.dumps(card, ensure_ascii=False), encoding="utf-8")
    r = PlateReader(AnprConfig(countries=["MR"], ocr_model=dst), models_dir=reader.det_path.parent)
    assert r.models()["ocr"]["name"] == "deployer-ocr"
    from device.anpr.synth.samples import crop_sample

    s = crop_sample(random.Random(5), split="heldout", country="MR", degraded=False)
    assert r.read_crop(s.image).text == s.text
    with pytest.raises(ValueError):
        r.read_crop(s.image, country="SA")  # not in the deployer card's countries


def test_card_hash_mismatch_refused(reader: PlateReader, tmp_path: Path) -> None:
    dst = tmp_path / "ocr.tflite"
    shutil.copy(reader.ocr_path, dst)
    card = json.loads(reader.ocr_path.with_suffix(".json").read_text(encoding="utf-8"))
    card["sha256"] = "0" * 64
    dst.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(CardError, match="sha256"):
        PlateReader(AnprConfig(ocr_model=dst), models_dir=reader.det_path.parent)
    dst.with_suffix(".json").unlink()
    with pytest.raises(CardError, match="card not found"):
        PlateReader(AnprConfig(ocr_model=dst), models_dir=reader.det_path.parent)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"height": 320, "width": 192}, "model expects"),  # same element count: a reshape would "work"
        ({"channels": 3, "color": "bgr"}, "grey frames"),
        ({"resize": "stretch"}, "letterbox"),
    ],
)
def test_detector_card_that_does_not_fit_the_model_is_refused(
    reader: PlateReader, tmp_path: Path, change: dict, match: str
) -> None:
    """The OCR already checked its card's input against the model; the detector did not, and a swapped
    height/width silently scrambled every frame (no plate found)."""
    dst = tmp_path / "det.tflite"
    shutil.copy(reader.det_path, dst)
    card = json.loads(reader.det_path.with_suffix(".json").read_text(encoding="utf-8"))
    card["input"] |= change
    dst.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(CardError, match=match):
        PlateReader(AnprConfig(detector_model=dst), models_dir=reader.ocr_path.parent)


@pytest.mark.parametrize(
    ("kind", "section", "change", "match"),
    [
        ("det", "detector", {"channels": ["heat", "dy", "dx", "log_h", "log_w"]}, "decodes detector outputs"),
        ("ocr", "input", {"resize": "letterbox"}, "stretched crops"),
    ],
)
def test_card_settings_the_runtime_would_ignore_are_refused(
    reader: PlateReader, tmp_path: Path, kind: str, section: str, change: dict, match: str
) -> None:
    """Before, a deployer's detector with another output order loaded and had its x/y offsets and
    width/height swapped silently; an OCR card asking for letterboxed crops was fed stretched ones."""
    src = reader.det_path if kind == "det" else reader.ocr_path
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    card = json.loads(src.with_suffix(".json").read_text(encoding="utf-8"))
    card[section] |= change
    dst.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    given = {"detector_model": dst} if kind == "det" else {"ocr_model": dst}
    with pytest.raises(CardError, match=match):
        PlateReader(AnprConfig(**given), models_dir=reader.ocr_path.parent)


def test_low_confidence_gives_no_text(reader: PlateReader) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (48, 160, 3), dtype=np.uint8)
    read = reader.read_crop(noise, country="MA")
    assert read.text is None or read.confidence >= reader.cfg.min_confidence
    assert (read.text is None) == (read.text_latin is None)


def _one_hot_path(alphabet: list[str], pad: str, rows: list[str], steps_per_row: int) -> np.ndarray:
    """CTC probabilities that spell ``rows`` (one string per row), each character between blanks."""
    probs = np.full((steps_per_row * len(rows), len(alphabet)), 0.001, np.float32)
    probs[:, alphabet.index(pad)] = 0.95
    for r, text in enumerate(rows):
        for i, ch in enumerate(text):
            step = r * steps_per_row + 2 * i + 1
            probs[step] = 0.001
            probs[step, alphabet.index(ch)] = 0.95
    return probs / probs.sum(axis=1, keepdims=True)


def test_country_choice_prefers_the_layout_that_explains_every_row(reader: PlateReader) -> None:
    spec = reader.ocr.spec
    steps = spec.slots // spec.rows
    # Digits and letters, no Latin row: Egyptian, although "123-بسد" is also a valid Saudi plate.
    eg = _one_hot_path(spec.alphabet, spec.pad, ["123دسب", ""], steps)
    got = reader.ocr.decode_ctc(eg, ["MA", "SA", "EG", "MR"])
    assert (got.text, got.country) == ("123-بسد", "EG")
    # The same Arabic row with its Latin row is Saudi.
    sa = _one_hot_path(spec.alphabet, spec.pad, ["123دسب", "123BSD"], steps)
    got = reader.ocr.decode_ctc(sa, ["MA", "SA", "EG", "MR"])
    assert (got.text, got.country) == ("123-بسد", "SA")
    # Configured for Saudi Arabia alone, a plate whose Latin row is unreadable still reads (less sure).
    alone = reader.ocr.decode_ctc(eg, ["SA"])
    assert alone.text == "123-بسد" and alone.confidence < reader.ocr.decode_ctc(sa, ["SA"]).confidence


def test_lane_region_keeps_the_plate_of_the_car_in_the_lane(reader: PlateReader) -> None:
    """Two cars in view: without the lane's region the most confident plate won, whichever lane it was in."""
    from device.anpr.synth.scene import make_scene

    checked = 0
    for seed in range(200):
        sc = make_scene(
            random.Random(seed), split="train", degraded=False, countries=("MA",), min_plates=2, max_plates=2
        )
        w = sc.image.shape[1]
        left = [p for p in sc.plates if p.box[0] + p.box[2] / 2 < w / 2]
        right = [p for p in sc.plates if p.box[0] + p.box[2] / 2 >= w / 2]
        if len(left) != 1 or len(right) != 1:
            continue
        for plate, roi in ((left[0], (0.0, 0.0, 0.5, 1.0)), (right[0], (0.5, 0.0, 0.5, 1.0))):
            v = reader.read_frames([sc.image] * 2, country="MA", roi=roi)
            if v is None:
                continue
            cx = (v.box[0] + v.box[2] / 2) / w
            assert roi[0] <= cx <= roi[0] + roi[2], (seed, v.text, plate.text)
            checked += 1
        if checked >= 6:
            break
    assert checked >= 6


def test_the_interpreter_runs_the_bytes_that_were_hashed(reader: PlateReader, tmp_path: Path) -> None:
    """The card check hashed the file, then the interpreter opened it again by path: a file replaced in
    between ran under the old hash. The model is now built from the hashed bytes themselves."""
    from device.anpr.card import file_sha256
    from device.anpr.runtime import Model

    good = file_sha256(reader.ocr_path)
    m = Model(reader.ocr_path, threads=1, sha256=good)
    assert m.inputs and m.outputs
    with pytest.raises(CardError, match="does not match its card"):
        Model(reader.ocr_path, threads=1, sha256="0" * 64)
