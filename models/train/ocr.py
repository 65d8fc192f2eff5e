"""Plate OCR: a small CNN that reads each column of the plate, with one CTC head per text line.

The image (48x160 gray) is reduced to one row of 40 columns whose features see the full plate height;
two 1x1 heads read that row, one for the plate's first line and one for its second (empty on one-line
plates). The output is the first line's 40 steps then the second's, each a softmax over the alphabet
with the pad symbol as CTC blank, so a two-line plate's rows are never interleaved and the runtime knows
which line each character came from. Targets come from device.anpr.layout.visual_lines.
Builtin TFLite ops only (the card lists the ones the exported file uses).
"""

from __future__ import annotations

import numpy as np

from device.anpr.ctc import best_path_tokens
from device.anpr.plates import OCR_ALPHABET

H, W = 48, 160
ROWS, STEPS = 2, 40
"""ROWS = text lines (one CTC head each); STEPS = columns per line."""
MAX_LABEL = 16
BATCH = 64


def encode(lines: list[tuple[str, str]]) -> np.ndarray:
    """(N, 2 * MAX_LABEL) class indices: first line then second line, each 0-padded."""
    index = {c: i for i, c in enumerate(OCR_ALPHABET)}
    y = np.zeros((len(lines), ROWS * MAX_LABEL), np.int32)
    for i, pair in enumerate(lines):
        for r, line in enumerate(pair):
            for j, c in enumerate(line):
                y[i, r * MAX_LABEL + j] = index[c]
    return y


def build(keras, *, softmax: bool, grow: int = 0):
    """The network; ``grow`` adds that many residual 3x3 blocks after each of the 12x40 and 6x40 stages.

    A residual block's last batch-norm scale starts at zero, so a grown network computes exactly what
    the network it grew from computed (:func:`transfer`) and fine-tuning starts from its accuracy.
    """
    L = keras.layers

    def block(x, ch, k=3, padding="same"):
        x = L.Conv2D(ch, k, padding=padding, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU()(x)

    def residual(x, ch, name):
        y = L.Conv2D(ch, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
        y = L.ReLU(name=f"{name}_relu1")(L.BatchNormalization(name=f"{name}_bn1")(y))
        y = L.Conv2D(ch, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = L.BatchNormalization(gamma_initializer="zeros", name=f"{name}_bn2")(y)
        return L.ReLU(name=f"{name}_relu2")(L.Add(name=f"{name}_add")([x, y]))

    inp = L.Input((H, W, 1), name="image")
    x = block(inp, 24)
    x = L.MaxPool2D()(x)  # 24x80
    x = block(x, 40)
    x = L.MaxPool2D()(x)  # 12x40
    x = block(x, 64)
    x = block(x, 64)
    for i in range(grow):
        x = residual(x, 64, f"res12_{i}")
    x = L.MaxPool2D((2, 1))(x)  # 6x40
    x = block(x, 96)
    x = block(x, 96)
    for i in range(grow):
        x = residual(x, 96, f"res6_{i}")
    x = L.MaxPool2D((2, 1))(x)  # 3x40
    x = block(x, 128, (3, 1), padding="valid")  # 1x40: each column sees the whole plate height
    x = block(x, 128, (1, 5))
    x = block(x, 128, (1, 5))
    x = L.Dropout(0.1)(x)
    heads = []
    for r in range(ROWS):
        h = L.Conv2D(len(OCR_ALPHABET), 1, name=f"line{r + 1}")(x)
        heads.append(L.Reshape((STEPS, len(OCR_ALPHABET)))(h))
    x = L.Concatenate(axis=1)(heads)
    if softmax:
        x = L.Softmax(name="chars")(x)
    return keras.Model(inp, x)


def transfer(source, target) -> None:
    """Copies ``source``'s weights into ``target``, a network of the same or a larger ``grow``: layers
    are matched in order, skipping the target's residual blocks (which keep their identity start)."""
    keep = grown(source) > 0  # an already-grown source brings its residual blocks along
    src = [layer for layer in source.layers if layer.weights]
    dst = [layer for layer in target.layers if layer.weights and (keep or not layer.name.startswith("res"))]
    if len(src) != len(dst):
        raise ValueError(f"cannot grow a {len(src)}-layer network into one of {len(dst)} base layers")
    for a, b in zip(src, dst, strict=True):
        b.set_weights(a.get_weights())


def ctc_loss(keras):
    """Sum of the two lines' CTC losses (blank = class 0 = the pad symbol), batch mean."""
    ops = keras.ops

    def loss(y, logits):
        y = ops.cast(y, "int32")
        total = 0.0
        for r in range(ROWS):
            yr = y[:, r * MAX_LABEL : (r + 1) * MAX_LABEL]
            lr = logits[:, r * STEPS : (r + 1) * STEPS]
            label_len = ops.sum(ops.cast(yr > 0, "int32"), axis=1)
            logit_len = ops.full((ops.shape(lr)[0],), STEPS, dtype="int32")
            total = total + ops.ctc_loss(yr, lr, label_len, logit_len, mask_index=0)
        return ops.mean(total)

    return loss


def augmenter(keras, *, seed: int, morph: bool, shear: bool):
    """Training-time jitter as a Keras layer on raw uint8 crops (scaled to 0..1 like the runtime's input).

    Brightness +-0.15 and contrast x0.7..1.3 on every crop. ``morph`` thins or thickens the strokes of
    40 % of the crops (grey erosion/dilation): type faces differ most in stroke weight, and the held-out
    ones are not in the training pool. ``shear`` slants half the crops by up to +-0.35 (x shift per row):
    oblique and calligraphic faces lean that way. Written in ``keras.ops`` so the same recipe trains
    under TensorFlow on a CPU or under JAX on a GPU; it has no weights, so the trained network's
    weights are the exported model's.
    """
    ops, rnd = keras.ops, keras.random

    class Augment(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.gen = rnd.SeedGenerator(seed)

        def call(self, x, training=None):
            x = ops.cast(x, "float32")[..., None] / 255.0
            if not training:
                return x
            n = ops.shape(x)[0]
            x = x + rnd.uniform((n, 1, 1, 1), -0.15, 0.15, seed=self.gen)
            mean = ops.mean(x, axis=(1, 2), keepdims=True)
            x = (x - mean) * rnd.uniform((n, 1, 1, 1), 0.7, 1.3, seed=self.gen) + mean
            if morph:
                r = rnd.uniform((n, 1, 1, 1), seed=self.gen)
                lighter = ops.max_pool(x, 2, 1, "same")  # dark strokes thinner
                darker = -ops.max_pool(-x, 2, 1, "same")  # dark strokes thicker
                x = ops.where(r < 0.2, lighter, ops.where(r < 0.4, darker, x))
            if shear:
                on = ops.cast(rnd.uniform((n,), seed=self.gen) < 0.5, "float32")
                k = rnd.uniform((n,), -0.35, 0.35, seed=self.gen) * on
                one, zero = ops.ones_like(k), ops.zeros_like(k)
                t = ops.stack([one, k, -k * H / 2, zero, one, zero, zero, zero], axis=1)
                x = ops.image.affine_transform(x, t, interpolation="bilinear", fill_mode="nearest")
            return ops.clip(x, 0.0, 1.0)

    return Augment(name="augment")


def greedy(probs: np.ndarray) -> list[str]:
    """Best path per line, lines joined: the runtime's decoding (compare with layout.visual_target)."""
    return [
        "".join(t.char for t in best_path_tokens(p, list(OCR_ALPHABET), OCR_ALPHABET[0], ROWS)) for p in probs
    ]


def train(
    keras,
    x: np.ndarray,
    lines: list[tuple[str, str]],
    *,
    seed: int,
    epochs: int,
    log,
    xv: np.ndarray,
    tv: list[str],
    checkpoint=None,
    resume=None,
    peak=3e-3,
    morph: bool = False,
    shear: bool = False,
    grow: int = 0,
):
    """Adam on a warm-up + cosine schedule; ``xv``/``tv`` (held-out fonts) are scored after each epoch.

    Returns the network without its augmentation layer (:func:`augmenter`), the model to export.
    """
    keras.utils.set_random_seed(seed)
    y = encode(lines)
    model = build(keras, softmax=False, grow=grow)
    if resume is not None:
        transfer(keras.models.load_model(resume, compile=False), model)
    inp = keras.layers.Input((H, W), dtype="uint8", name="crop")
    trainer = keras.Model(inp, model(augmenter(keras, seed=seed, morph=morph, shear=shear)(inp)))
    steps = epochs * int(np.ceil(len(x) / BATCH))
    lr = keras.optimizers.schedules.CosineDecay(
        1e-4, max(1, steps - 300), alpha=0.02, warmup_target=peak, warmup_steps=min(300, steps // 2)
    )
    trainer.compile(optimizer=keras.optimizers.Adam(lr, clipnorm=5.0), loss=ctc_loss(keras))
    xv01 = (xv.astype(np.float32) / 255.0)[..., None]

    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            p = model.predict(xv01, verbose=0, batch_size=256)
            exact = float(np.mean([a == b for a, b in zip(greedy(p), tv, strict=True)]))
            log(f"ocr epoch {epoch + 1}/{epochs} loss={logs['loss']:.4f} heldout_exact_greedy={exact:.4f}")
            if checkpoint is not None:
                model.save(checkpoint)  # usable even if the run is cut short

    trainer.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0, callbacks=[Log()])
    return model


def grown(model) -> int:
    """The ``grow`` of a network built by :func:`build`."""
    return sum(layer.name.startswith("res12_") and layer.name.endswith("_add") for layer in model.layers)


def with_softmax(keras, trained):
    """The exported model: same weights, softmax on the output (probabilities for the runtime)."""
    m = build(keras, softmax=True, grow=grown(trained))
    m.set_weights(trained.get_weights())
    return m
