"""The keep rule for a new OCR file (models/train/candidate.py): judged on development sets, against the
deployed file, read through the device's own runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.train import __main__ as train
from models.train.candidate import DevScores, decide, dev_scores

MODELS = Path(__file__).resolve().parents[2] / "models"


def scores(**exact: float) -> DevScores:
    return DevScores("m.tflite", "0" * 64, 1500, exact)


def test_a_candidate_may_not_lose_clean_or_degraded_crops() -> None:
    base = scores(clean=0.9587, degraded=0.9213, joined=0.836)
    keep, why = decide(scores(clean=0.9587, degraded=0.9220, joined=0.80), base)
    assert keep and why.startswith("keep") and "joined 83.60 -> 80.00 %" in why  # reported, not judged
    keep, why = decide(scores(clean=0.9580, degraded=0.9300, joined=0.90), base)
    assert not keep and "clean dropped" in why and "degraded" not in why.split("(")[0]
    keep, why = decide(scores(clean=0.95, degraded=0.91, joined=0.90), base)
    assert not keep and "clean and degraded dropped" in why
    with pytest.raises(ValueError, match="different set sizes"):
        decide(DevScores("m", "0", 300, base.exact), base)


def test_the_deployed_file_reads_the_dev_sets_and_ties_with_itself(tmp_path: Path) -> None:
    """Through the runtime, with the card's hash check: the candidate is a copy under another name (the
    runtime would refuse a file whose sha256 is not its card's, so the copied card carries the copy's)."""
    copy = tmp_path / "candidate.tflite"
    shutil.copy(MODELS / "anpr_ocr.tflite", copy)
    base = dev_scores(MODELS / "anpr_ocr.tflite", MODELS, n=24)
    cand = dev_scores(copy, MODELS, n=24)
    assert base.exact == cand.exact and base.sha256 == cand.sha256
    assert set(base.exact) >= {"clean", "degraded", "strings", "joined"}
    assert base.exact["clean"] > 0.8  # it really read plates
    assert decide(cand, base)[0]


def test_dev_eval_command_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "WORK", tmp_path / "work")  # its log, not the repository's
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a valid Flatbuffer"):  # the runtime's own words
        train.main(["dev-eval", str(broken), "--n", "6"])
    assert train.main(["dev-eval", str(MODELS / "anpr_ocr.tflite"), "--n", "6"]) == 0  # a tie keeps
    assert "dev-eval keep" in (tmp_path / "work" / "train.log").read_text()
    with pytest.raises(SystemExit):
        train.main(["dev-eval"])  # no candidate
    with pytest.raises(SystemExit):
        train.main(["eval", str(broken)])  # only dev-eval takes a file
