"""Plate OCR: small CNN read like a page with CTC over the two rows of its feature map.

The image (48x160 gray) becomes a 2 x 40 grid of columns; the output sequence is the top row's 40
steps then the bottom row's 40 (so two-row plates read top row first), each a softmax over the
alphabet with the pad symbol as CTC blank. Builtin TFLite ops only (CONV_2D, MAX_POOL_2D, RESHAPE,
SOFTMAX). Targets are the plate's visual reading order (device.anpr.layout.visual_target).
"""

from __future__ import annotations

import numpy as np

from device.anpr.plates import OCR_ALPHABET

H, W = 48, 160
ROWS, STEPS = 2, 40
MAX_LABEL = 16
BATCH = 64


def encode(targets: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(OCR_ALPHABET)}
    y = np.zeros((len(targets), MAX_LABEL), np.int32)
    for i, t in enumerate(targets):
        for j, c in enumerate(t):
            y[i, j] = index[c]
    return y


def build(tf, *, softmax: bool):
    L = tf.keras.layers
    inp = L.Input((H, W, 1), name="image")

    def block(x, ch, k=3):
        x = L.Conv2D(ch, k, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU()(x)

    x = block(inp, 16)
    x = L.MaxPool2D()(x)  # 24x80
    x = block(x, 32)
    x = L.MaxPool2D()(x)  # 12x40
    x = block(x, 64)
    x = block(x, 64)
    x = L.MaxPool2D((3, 1))(x)  # 4x40
    x = block(x, 96)
    x = L.MaxPool2D((2, 1))(x)  # 2x40
    x = block(x, 128, (1, 5))
    x = L.Dropout(0.1)(x)
    x = L.Conv2D(len(OCR_ALPHABET), 1)(x)
    x = L.Reshape((ROWS * STEPS, len(OCR_ALPHABET)))(x)
    if softmax:
        x = L.Softmax(name="chars")(x)
    return tf.keras.Model(inp, x)


def ctc_loss(tf):
    def loss(y, logits):
        y = tf.cast(y, tf.int32)
        label_len = tf.reduce_sum(tf.cast(y > 0, tf.int32), axis=1)
        logit_len = tf.fill([tf.shape(logits)[0]], ROWS * STEPS)
        return tf.reduce_mean(
            tf.nn.ctc_loss(y, logits, label_len, logit_len, logits_time_major=False, blank_index=0)
        )

    return loss


def greedy(probs: np.ndarray) -> list[str]:
    out = []
    for p in probs:
        a = p.argmax(-1)
        s, prev = [], 0
        for k in a:
            if k != prev and k != 0:
                s.append(OCR_ALPHABET[k])
            prev = k
        out.append("".join(s))
    return out


def train(
    tf,
    x: np.ndarray,
    targets: list[str],
    *,
    seed: int,
    epochs: int,
    log,
    checkpoint=None,
    resume=None,
    peak=3e-3,
):
    tf.keras.utils.set_random_seed(seed)
    y = encode(targets)
    n_val = min(1000, len(x) // 10)
    xv, tv = x[:n_val], targets[:n_val]
    xt, yt = x[n_val:], y[n_val:]
    model = build(tf, softmax=False)
    if resume is not None:  # second stage: continue from the first stage's weights
        model.set_weights(tf.keras.models.load_model(resume, compile=False).get_weights())
    steps = epochs * int(np.ceil(len(xt) / BATCH))
    lr = tf.keras.optimizers.schedules.CosineDecay(
        1e-4, max(1, steps - 200), alpha=0.01, warmup_target=peak, warmup_steps=min(200, steps // 2)
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(lr, clipnorm=5.0), loss=ctc_loss(tf))

    def aug(img, a):
        img = tf.cast(img, tf.float32)[..., None] / 255.0
        img = tf.image.random_brightness(img, 0.15)
        img = tf.image.random_contrast(img, 0.7, 1.3)
        return tf.clip_by_value(img, 0.0, 1.0), a

    ds = (
        tf.data.Dataset.from_tensor_slices((xt, yt))
        .shuffle(len(xt), seed=seed)
        .map(aug, num_parallel_calls=2)
        .batch(BATCH)
        .prefetch(2)
    )

    class Log(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            p = self.model.predict((xv.astype(np.float32) / 255.0)[..., None], verbose=0)
            exact = float(np.mean([a == b for a, b in zip(greedy(p), tv, strict=True)]))
            log(f"ocr epoch {epoch + 1}/{epochs} loss={logs['loss']:.4f} val_exact_greedy={exact:.4f}")
            if checkpoint is not None:
                self.model.save(checkpoint)  # usable even if the run is cut short

    model.fit(ds, epochs=epochs, verbose=0, callbacks=[Log()])
    return model


def with_softmax(tf, trained):
    """The exported model: same weights, softmax on the output (probabilities for the runtime)."""
    m = build(tf, softmax=True)
    m.set_weights(trained.get_weights())
    return m
