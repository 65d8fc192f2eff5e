"""The training pipeline's start-up checks and network code (no training here: that is `make models`).

The network tests run on Keras' JAX backend (on the CPU) unless KERAS_BACKEND says otherwise: they need
neither TensorFlow nor a GPU, and the same code trains under TensorFlow (CPU) or JAX (GPU).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported: it reads this once

import keras

from device.anpr.synth import fonts as F
from models.train import __main__ as train
from models.train import ocr

# Keras 3's Variable.__array__ predates NumPy 2's copy keyword and warns on every weight read (upstream).
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_wide_stages_refuse_to_start_without_their_fonts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training data must not silently depend on which fonts a machine happens to have."""
    monkeypatch.setattr(F, "ARABIC_TRAIN_WIDE", (*F.ARABIC_TRAIN_WIDE, "truetype/absent/Absent-Regular.ttf"))
    with pytest.raises(SystemExit, match="TRAINING_DEB_PKGS"):
        train._require_stage_fonts(tuple(train.FINETUNE))
    train._require_stage_fonts((2, 3, 4))  # stages on the extended pool need no extra package


def _randomised(model, seed: int):
    """Random weights everywhere (batch-norm variances kept positive), so identities are not trivial."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            np.abs(w) + 0.1 if "variance" in v.path else rng.normal(0, 0.3, w.shape).astype(np.float32)
            for v, w in zip(model.weights, model.get_weights(), strict=True)
        ]
    )
    return model


def _run(model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_grown_network_starts_where_its_source_left_off() -> None:
    """Stage 9 grows the network; its residual blocks must start as the identity, or fine-tuning would
    start from a broken model instead of stage 8's accuracy."""
    src = _randomised(ocr.build(keras, softmax=False), 1)
    dst = ocr.build(keras, softmax=False, grow=2)
    assert ocr.grown(src) == 0 and ocr.grown(dst) == 2
    x = np.random.default_rng(2).random((2, ocr.H, ocr.W, 1)).astype(np.float32)
    before = _run(dst, x)
    ocr.transfer(src, dst)
    after = _run(dst, x)
    assert np.abs(after - before).max() > 1e-3  # the weights really moved
    np.testing.assert_allclose(after, _run(src, x), atol=1e-4)
    again = ocr.build(keras, softmax=False, grow=2)
    ocr.transfer(_randomised(dst, 3), again)  # a grown source keeps its residual blocks
    np.testing.assert_allclose(_run(again, x), _run(dst, x), atol=1e-4)
    with pytest.raises(ValueError, match="cannot grow"):
        ocr.transfer(dst, ocr.build(keras, softmax=False))
    exported = ocr.with_softmax(keras, dst)
    np.testing.assert_allclose(_run(exported, x).sum(axis=-1), 1.0, rtol=1e-4)


def test_augmentation_only_in_training() -> None:
    """At inference the augmentation layer only scales pixels to 0..1 (what the runtime feeds the
    exported model); in training it changes them and keeps them in range."""
    aug = ocr.augmenter(keras, seed=5, morph=True, shear=True)
    x = np.random.default_rng(4).integers(0, 256, (16, ocr.H, ocr.W)).astype(np.uint8)
    plain = keras.ops.convert_to_numpy(aug(x, training=False))
    np.testing.assert_allclose(plain[..., 0], x / 255.0, atol=1e-6)
    jittered = keras.ops.convert_to_numpy(aug(x, training=True))
    assert jittered.shape == plain.shape
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0
    assert np.abs(jittered - plain).mean() > 0.02


def test_every_stage_has_a_command_seed_and_size() -> None:
    """A stage is one FINETUNE entry; its command, data seed and sizes must all exist."""
    for k, spec in train.FINETUNE.items():
        assert {f"ocr{k}_train", f"ocr{k}_epochs"} <= set(train.SIZES)
        assert f"ocr{k}_train" in train.SEEDS
        assert spec.get("grow", 0) >= train.FINETUNE.get(k - 1, {}).get("grow", 0)  # networks only grow
    with pytest.raises(SystemExit):  # argparse: no such stage
        train.main([f"ocr{max(train.FINETUNE) + 1}"])


def test_the_committed_model_is_what_the_default_pipeline_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages defined after the deployed one are recipes waiting for a GPU: they must not run by default
    (``make models`` would no longer reproduce the committed file), and the cards describe exactly the
    deployed stages."""
    import importlib
    import json

    from models.train import cards

    for k in train.NEXT_STAGES:
        monkeypatch.delenv(f"ANPR_OCR{k}_EPOCHS", raising=False)
    fresh = importlib.reload(train)
    try:
        assert fresh.NEXT_STAGES and min(fresh.NEXT_STAGES) == fresh.DEPLOYED_STAGE + 1
        assert all(fresh.SIZES[f"ocr{k}_epochs"] == 0 for k in fresh.NEXT_STAGES)
        assert all(fresh.SIZES[f"ocr{k}_epochs"] > 0 for k in fresh.FINETUNE if k <= fresh.DEPLOYED_STAGE)
        assert set(cards.STAGES) == {k for k in fresh.FINETUNE if k <= fresh.DEPLOYED_STAGE}
        card = json.loads((fresh.ROOT / "anpr_ocr.json").read_text())
        assert f"stage{fresh.DEPLOYED_STAGE}" in card["training"]
        assert f"stage{fresh.DEPLOYED_STAGE + 1}" not in card["training"]
    finally:
        importlib.reload(train)


def test_recover_rebuilds_the_deployed_stage(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """With the deployed stage's checkpoint present ``ocr-recover`` refuses (it would overwrite trained
    weights); it must not take a later, untrained stage's name for what the committed file holds."""
    from models.train import data

    def no_data(*a, **k):
        raise AssertionError("went on to rebuild: it did not see the deployed stage's checkpoint")

    monkeypatch.setattr(data, "ocr_dataset", no_data)
    monkeypatch.setattr(train, "WORK", tmp_path)
    (tmp_path / f"ocr{train.DEPLOYED_STAGE}.keras").write_bytes(b"trained")
    with pytest.raises(SystemExit, match=f"ocr{train.DEPLOYED_STAGE}.keras exists"):
        train.cmd_ocr_recover()


def test_recovered_network_computes_what_the_committed_file_computes() -> None:
    """``models.train ocr-recover``: a fresh machine has no checkpoint, so fine-tuning starts from the
    network rebuilt out of the committed file. It must read as the file reads, in inference and in
    training mode (batch statistics), or a new stage would start from a worse model than the deployed one."""
    import random

    from device.anpr.runtime import Model
    from device.anpr.synth.samples import crop_sample
    from models.train import recover
    from models.train.data import ocr_input

    path = train.ROOT / "anpr_ocr.tflite"
    rng = random.Random(5)
    x = np.stack([ocr_input(crop_sample(rng, split="heldout").image, ocr.H, ocr.W) for _ in range(96)])
    model = recover.keras_from_tflite(keras, path, x[:64])
    assert ocr.grown(model) == 2
    runtime = Model(path, threads=1)
    deployed = []
    for im in x:
        runtime.set_input(im, pixel_scale=1 / 255, pixel_offset=0.0)
        deployed.append(runtime.run()[0].reshape(ocr.ROWS * ocr.STEPS, -1))
    deployed = np.stack(deployed)
    x01 = (x / 255.0)[..., None].astype(np.float32)
    inference = keras.ops.convert_to_numpy(keras.ops.softmax(model(x01, training=False)))
    assert np.abs(inference - deployed).mean() < 2e-3  # int8 activations vs float: rounding only
    same = np.mean([a == b for a, b in zip(ocr.greedy(inference), ocr.greedy(deployed), strict=True)])
    assert same >= 0.9
    trained = keras.ops.convert_to_numpy(keras.ops.softmax(model(x01[64:], training=True)))
    same = np.mean([a == b for a, b in zip(ocr.greedy(trained), ocr.greedy(deployed[64:]), strict=True)])
    assert same >= 0.8
    with pytest.raises(ValueError, match="convolutions"):
        recover.keras_from_tflite(keras, train.ROOT / "anpr_detector.tflite", x[:8])


def test_cards_keep_the_committed_records_when_work_has_none(tmp_path) -> None:
    """``models.train eval`` on a machine that did not train (no work/timing.json, no quantisation
    record) must not turn the committed cards' run times and quantisation into null/unknown."""
    import json
    import shutil

    from models.train import cards

    root = tmp_path / "models"
    root.mkdir()
    for name in ("anpr_ocr", "anpr_detector"):
        for ext in (".tflite", ".json"):
            shutil.copy(train.ROOT / f"{name}{ext}", root / f"{name}{ext}")
    committed = json.loads((root / "anpr_ocr.json").read_text(encoding="utf-8"))
    work = tmp_path / "work"
    work.mkdir()
    card = cards.ocr_card(root, work, train.SEEDS, train.SIZES, {})
    assert card["quantisation"] == committed["quantisation"]
    assert card["ops"] == committed["ops"]
    for key in ("run_time_s", "run_time_train_s"):
        assert card["training"][key] == committed["training"][key] is not None
    assert card["training"]["stage10"]["run_time_s"] == committed["training"]["stage10"]["run_time_s"]
    det = cards.det_card(root, work, train.SEEDS, train.SIZES, {})
    assert det["training"]["run_time_s"] is not None and det["quantisation"] != "unknown"
    # A record of this machine's run wins; a file the card does not describe gets no borrowed quantisation.
    (work / "timing.json").write_text(json.dumps({"ocr_s": 1.5}))
    assert cards.ocr_card(root, work, train.SEEDS, train.SIZES, {})["training"]["run_time_s"] == 1.5
    (root / "anpr_ocr.tflite").write_bytes((root / "anpr_ocr.tflite").read_bytes() + b"\0")
    assert cards.ocr_card(root, work, train.SEEDS, train.SIZES, {})["quantisation"] == "unknown"
