"""Keras model -> TFLite flatbuffer (float32, float16 or full-integer int8 with uint8 image input)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def to_tflite(tf, model, quant: str, rep: np.ndarray | None = None) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = (
        [tf.lite.OpsSet.TFLITE_BUILTINS] if quant != "int8" else [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    )
    if quant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quant == "int8":
        assert rep is not None
        conv.optimizations = [tf.lite.Optimize.DEFAULT]

        def gen():
            for i in range(min(300, len(rep))):
                yield [(rep[i : i + 1].astype(np.float32) / 255.0)[..., None]]

        conv.representative_dataset = gen
        conv.inference_input_type = tf.uint8  # raw pixels go in; scale 1/255 is in the input quantisation
    return conv.convert()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
