"""The OCR's training network rebuilt from the committed ``.tflite``: a checkpoint to fine-tune from.

Training checkpoints live in the git-ignored ``models/train/work/`` and are gone on a fresh machine, so
without this every improvement would start again at stage 1 (hours of CPU before the first new step).
The exported file holds all the network's weights: each convolution with its batch norm folded in
(int8 per-channel or float16). They go back into :func:`models.train.ocr.build` with each batch norm
set to compute exactly that fold in inference, and with statistics measured on real crops so that in
training mode (batch statistics) it starts from the same function too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _constant(interp, details: dict, ops_by_output: dict, index: int) -> np.ndarray:
    """A constant tensor as float32: dequantized (per channel) or through the DEQUANTIZE op that
    feeds it (a float16 export)."""
    if index in ops_by_output and ops_by_output[index]["op_name"] == "DEQUANTIZE":
        return _constant(interp, details, ops_by_output, ops_by_output[index]["inputs"][0])
    t = details[index]
    value = interp.get_tensor(index)
    q = t["quantization_parameters"]
    if value.dtype in (np.int8, np.uint8, np.int32) and len(q["scales"]):
        shape = [1] * value.ndim
        if len(q["scales"]) > 1:
            shape[q["quantized_dimension"]] = -1
        scale = q["scales"].reshape(shape)
        zero = q["zero_points"].reshape(shape)
        return ((value.astype(np.float64) - zero) * scale).astype(np.float32)
    return value.astype(np.float32)


def folded_convolutions(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel (kh, kw, in, out), bias (out,)) of every CONV_2D of the file, in graph order."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    details = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    by_output = {o: op for op in ops for o in op["outputs"]}
    out = []
    for op in ops:
        if op["op_name"] == "CONV_2D":
            _, w, b = op["inputs"][:3]
            kernel = _constant(interp, details, by_output, w).transpose(1, 2, 3, 0)  # OHWI -> HWIO
            out.append((kernel, _constant(interp, details, by_output, b)))
    return out


def _graph_order(model) -> list:
    """The layers in the order :func:`.ocr.build` calls them (depth first from the output, inputs of
    each merge in order), which is the order of the file's operators: ``model.layers`` is not."""
    order, seen = [], set()

    def visit(tensor) -> None:
        op, node_index, _ = tensor._keras_history
        if id(op) in seen:
            return
        for t in op._inbound_nodes[node_index].input_tensors:
            visit(t)
        seen.add(id(op))
        order.append(op)

    for out in model.outputs:
        visit(out)
    return order


def keras_from_tflite(keras, path: Path, calibration: np.ndarray):
    """The training network (logits, no softmax) with the weights of the OCR file at ``path``.

    ``calibration`` is a batch of crops (N, 48, 160) uint8 on which each batch norm's statistics are
    measured. Raises ValueError when the file's convolutions do not match :func:`.ocr.build`.
    """
    from models.train import ocr

    convs = folded_convolutions(path)
    base = 11  # seven 3x3 blocks, the (3x1) and two (1x5) convs, two heads
    grow, rest = divmod(len(convs) - base, 4)  # per grow step, a 2-conv residual block at 12x40 and 6x40
    if rest or grow < 0:
        raise ValueError(f"{path}: {len(convs)} convolutions do not match models.train.ocr.build")
    model = ocr.build(keras, softmax=False, grow=grow)
    layers = [layer for layer in _graph_order(model) if layer.weights]
    kernels = iter(convs)
    pending: list[tuple[object, np.ndarray]] = []  # batch norms and the bias each must add
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = next(kernels)
            if tuple(layer.kernel.shape) != kernel.shape:
                raise ValueError(
                    f"{path}: {layer.name} expects {tuple(layer.kernel.shape)}, file has {kernel.shape}"
                )
            if layer.use_bias:
                layer.set_weights([kernel, bias])
            else:
                last_bias = bias
                layer.set_weights([kernel])
        elif isinstance(layer, keras.layers.BatchNormalization):
            eps = layer.epsilon
            ch = last_bias.shape[0]
            # Exact in inference: (z - 0) / sqrt(1 - eps + eps) * 1 + bias = z + bias.
            layer.set_weights([np.ones(ch), last_bias, np.zeros(ch), np.full(ch, 1.0 - eps)])
            pending.append((layer, last_bias))
    x = (calibration.astype(np.float32) / 255.0)[..., None]
    for layer, bias in pending:  # in order: every layer upstream is already exact
        z = np.asarray(keras.Model(model.inputs, layer.input).predict(x, verbose=0, batch_size=256))
        mean, var = z.mean(axis=(0, 1, 2)), z.var(axis=(0, 1, 2))
        # Still z + bias in inference; in training mode the batch statistics are close to these.
        layer.set_weights([np.sqrt(var + layer.epsilon), mean + bias, mean, var])
    return model
