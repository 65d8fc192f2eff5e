"""TFLite interpreter loading: LiteRT (``ai_edge_litert``) first, ``tflite_runtime`` as fallback.

The two expose the same ``Interpreter`` API; which one ran is reported in the model inventory so a
packet says exactly what produced the plate read.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.anpr.card import CardError

_BACKENDS = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)


class RuntimeUnavailable(RuntimeError):
    pass


def interpreter_class(preferred: tuple[str, ...] | None = None) -> tuple[type, str]:
    """(Interpreter class, backend name) of the first importable backend."""
    errors = []
    for module, dist in _BACKENDS:
        if preferred and module not in preferred:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            errors.append(f"{module}: {exc}")
            continue
        try:
            from importlib.metadata import version

            ver = version(dist)
        except Exception:  # the backend works even when its metadata is missing
            ver = "unknown"
        return mod.Interpreter, f"{dist} {ver}"
    raise RuntimeUnavailable(
        "no TFLite runtime importable (install ai-edge-litert or tflite-runtime): " + "; ".join(errors)
    )


@dataclass
class TensorIO:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    scale: float
    zero_point: int


class Model:
    """One loaded .tflite with quantisation-aware input/output helpers."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int = 2,
        preferred: tuple[str, ...] | None = None,
        sha256: str | None = None,
    ):
        """``sha256``: the card's; the interpreter is built from the very bytes hashed, so the hash a
        packet names is that of the model that ran (opening the file again could read a replaced one)."""
        cls, self.backend = interpreter_class(preferred)
        self.path = Path(path)
        data = self.path.read_bytes()
        if sha256 is not None and (actual := hashlib.sha256(data).hexdigest()) != sha256:
            raise CardError(f"{self.path}: sha256 {actual} does not match its card ({sha256})")
        try:
            self.interp = cls(model_content=data, num_threads=threads)
        except TypeError:  # very old tflite-runtime without num_threads
            self.interp = cls(model_content=data)
        self.interp.allocate_tensors()
        self.inputs = [self._io(d) for d in self.interp.get_input_details()]
        self.outputs = [self._io(d) for d in self.interp.get_output_details()]

    @staticmethod
    def _io(d: dict) -> TensorIO:
        scale, zp = d.get("quantization", (0.0, 0))
        return TensorIO(
            d["index"], d["name"], tuple(int(s) for s in d["shape"]), d["dtype"], float(scale), int(zp)
        )

    def set_input(self, x: np.ndarray, *, pixel_scale: float, pixel_offset: float) -> None:
        """``x`` holds raw pixels (0..255); the model sees ``x * pixel_scale + pixel_offset``.

        Quantised inputs get that value re-expressed in the tensor's own scale/zero point, so a uint8
        model with scale 1/255 receives the raw pixels unchanged.
        """
        inp = self.inputs[0]
        if inp.dtype in (np.uint8, np.int8) and inp.scale > 0:
            v = (x.astype(np.float32) * pixel_scale + pixel_offset) / inp.scale + inp.zero_point
            info = np.iinfo(inp.dtype)
            arr = np.clip(np.rint(v), info.min, info.max).astype(inp.dtype)
        else:
            arr = (x.astype(np.float32) * pixel_scale + pixel_offset).astype(inp.dtype)
        self.interp.set_tensor(inp.index, arr.reshape(inp.shape))

    def run(self) -> list[np.ndarray]:
        self.interp.invoke()
        outs = []
        for o in self.outputs:
            t = self.interp.get_tensor(o.index)
            if o.dtype in (np.uint8, np.int8) and o.scale > 0:
                t = (t.astype(np.float32) - o.zero_point) * o.scale
            outs.append(np.array(t, dtype=np.float32))
        return outs
