"""Plate OCR: a small CNN that reads each column of the plate, with one CTC head per text line.

The image (48x160 gray) is reduced to one row of 40 columns whose features see the full plate height;
two 1x1 heads read that row, one for the plate's first line and one for its second (empty on one-line
plates). The output is the first line's 40 steps then the second's, each a softmax over the alphabet
with the pad symbol as CTC blank, so a two-line plate's rows are never interleaved and the runtime knows
which line each character came from. Targets come from device.anpr.layout.visual_lines.
Builtin TFLite ops only (CONV_2D, MAX_POOL_2D, RESHAPE, CONCATENATION, SOFTMAX).
"""

from __future__ import annotations

import numpy as np

from device.anpr.ocr import best_path_tokens
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


def build(tf, *, softmax: bool):
    L = tf.keras.layers
    inp = L.Input((H, W, 1), name="image")

    def block(x, ch, k=3, padding="same"):
        x = L.Conv2D(ch, k, padding=padding, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU()(x)

    x = block(inp, 24)
    x = L.MaxPool2D()(x)  # 24x80
    x = block(x, 40)
    x = L.MaxPool2D()(x)  # 12x40
    x = block(x, 64)
    x = block(x, 64)
    x = L.MaxPool2D((2, 1))(x)  # 6x40
    x = block(x, 96)
    x = block(x, 96)
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
    return tf.keras.Model(inp, x)


def ctc_loss(tf):
    def loss(y, logits):
        y = tf.cast(y, tf.int32)
        total = 0.0
        for r in range(ROWS):
            yr = y[:, r * MAX_LABEL : (r + 1) * MAX_LABEL]
            lr = logits[:, r * STEPS : (r + 1) * STEPS]
            label_len = tf.reduce_sum(tf.cast(yr > 0, tf.int32), axis=1)
            logit_len = tf.fill([tf.shape(lr)[0]], STEPS)
            total += tf.nn.ctc_loss(yr, lr, label_len, logit_len, logits_time_major=False, blank_index=0)
        return tf.reduce_mean(total)

    return loss


def greedy(probs: np.ndarray) -> list[str]:
    """Best path per line, lines joined: the runtime's decoding (compare with layout.visual_target)."""
    return [
        "".join(t.char for t in best_path_tokens(p, list(OCR_ALPHABET), OCR_ALPHABET[0], ROWS)) for p in probs
    ]


def train(
    tf,
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
):
    """Adam on a warm-up + cosine schedule; ``xv``/``tv`` (held-out fonts) are scored after each epoch.

    ``morph`` thins or thickens the strokes of 40 % of the crops (grey erosion/dilation): type faces
    differ most in stroke weight, and the held-out ones are not in the training pool. ``shear`` slants
    half the crops by up to +-0.35 (x shift per row): oblique and calligraphic faces lean that way.
    """
    tf.keras.utils.set_random_seed(seed)
    y = encode(lines)
    model = build(tf, softmax=False)
    if resume is not None:
        model.set_weights(tf.keras.models.load_model(resume, compile=False).get_weights())
    steps = epochs * int(np.ceil(len(x) / BATCH))
    lr = tf.keras.optimizers.schedules.CosineDecay(
        1e-4, max(1, steps - 300), alpha=0.02, warmup_target=peak, warmup_steps=min(300, steps // 2)
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(lr, clipnorm=5.0), loss=ctc_loss(tf))

    def aug(img, a):
        img = tf.cast(img, tf.float32)[..., None] / 255.0
        img = tf.image.random_brightness(img, 0.15)
        img = tf.image.random_contrast(img, 0.7, 1.3)
        if morph:
            r = tf.random.uniform([])
            lighter = tf.nn.max_pool2d(img[None], 2, 1, "SAME")[0]  # dark strokes thinner
            darker = -tf.nn.max_pool2d(-img[None], 2, 1, "SAME")[0]  # dark strokes thicker
            img = tf.where(r < 0.2, lighter, tf.where(r < 0.4, darker, img))
        if shear:
            k = tf.random.uniform([], -0.35, 0.35) * tf.cast(tf.random.uniform([]) < 0.5, tf.float32)
            t = tf.stack([1.0, k, -k * H / 2, 0.0, 1.0, 0.0, 0.0, 0.0])[None]
            img = tf.raw_ops.ImageProjectiveTransformV3(
                images=img[None],
                transforms=t,
                output_shape=tf.constant([H, W]),
                fill_value=0.0,
                interpolation="BILINEAR",
                fill_mode="NEAREST",
            )[0]
        return tf.clip_by_value(img, 0.0, 1.0), a

    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed)
        .map(aug, num_parallel_calls=2)
        .batch(BATCH)
        .prefetch(2)
    )

    class Log(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            p = self.model.predict((xv.astype(np.float32) / 255.0)[..., None], verbose=0, batch_size=256)
            exact = float(np.mean([a == b for a, b in zip(greedy(p), tv, strict=True)]))
            log(f"ocr epoch {epoch + 1}/{epochs} loss={logs['loss']:.4f} heldout_exact_greedy={exact:.4f}")
            if checkpoint is not None:
                self.model.save(checkpoint)  # usable even if the run is cut short

    model.fit(ds, epochs=epochs, verbose=0, callbacks=[Log()])
    return model


def with_softmax(tf, trained):
    """The exported model: same weights, softmax on the output (probabilities for the runtime)."""
    m = build(tf, softmax=True)
    m.set_weights(trained.get_weights())
    return m
