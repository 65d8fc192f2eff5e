"""Fixed-slot plate OCR: small CNN, one softmax per character slot (pad = empty) plus a country head.

Builtin TFLite ops only (CONV_2D, MAX_POOL_2D, FULLY_CONNECTED, RESHAPE, SOFTMAX), so it runs on
plain tflite-runtime / LiteRT on a Pi.
"""

from __future__ import annotations

import numpy as np

from device.anpr.plates import COUNTRY_CODES, OCR_ALPHABET, OCR_SLOTS, PAD

H, W = 48, 160
BATCH = 64


def encode(texts: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(OCR_ALPHABET)}
    y = np.full((len(texts), OCR_SLOTS), index[PAD], np.int32)
    for i, t in enumerate(texts):
        for j, c in enumerate(t):
            y[i, j] = index[c]
    return y


def build(tf):
    L = tf.keras.layers
    inp = L.Input((H, W, 1), name="image")

    def block(x, ch, stride=1):
        x = L.Conv2D(ch, 3, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU()(x)

    x = block(inp, 16, 2)  # 24x80
    x = block(x, 32)
    x = L.MaxPool2D()(x)  # 12x40
    x = block(x, 64)
    x = L.MaxPool2D()(x)  # 6x20
    x = block(x, 96)
    x = L.MaxPool2D()(x)  # 3x10
    x = block(x, 128)
    x = L.Flatten()(x)
    x = L.Dense(256, activation="relu")(x)
    x = L.Dropout(0.1)(x)
    chars = L.Reshape((OCR_SLOTS, len(OCR_ALPHABET)))(L.Dense(OCR_SLOTS * len(OCR_ALPHABET))(x))
    chars = L.Softmax(name="chars")(chars)
    country = L.Dense(len(COUNTRY_CODES), activation="softmax", name="country")(x)
    return tf.keras.Model(inp, [chars, country])


def train(
    tf, x: np.ndarray, texts: list[str], countries: list[str], *, seed: int, epochs: int, log, checkpoint=None
) -> object:
    tf.keras.utils.set_random_seed(seed)
    y = encode(texts)
    yc = np.array([COUNTRY_CODES.index(c) for c in countries], np.int32)
    n_val = min(2000, len(x) // 10)
    xv, yv, ycv = x[:n_val], y[:n_val], yc[:n_val]
    xt, yt, yct = x[n_val:], y[n_val:], yc[n_val:]
    model = build(tf)
    steps = epochs * int(np.ceil(len(xt) / BATCH))
    lr = tf.keras.optimizers.schedules.CosineDecay(
        1e-4, steps - 300, alpha=0.01, warmup_target=3e-3, warmup_steps=300
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(lr),
        loss={"chars": "sparse_categorical_crossentropy", "country": "sparse_categorical_crossentropy"},
        loss_weights={"chars": 1.0, "country": 0.3},
    )

    def aug(img, a, b):
        img = tf.cast(img, tf.float32)[..., None] / 255.0
        img = tf.image.random_brightness(img, 0.15)
        img = tf.image.random_contrast(img, 0.7, 1.3)
        return tf.clip_by_value(img, 0.0, 1.0), {"chars": a, "country": b}

    ds = (
        tf.data.Dataset.from_tensor_slices((xt, yt, yct))
        .shuffle(len(xt), seed=seed)
        .map(aug, num_parallel_calls=2)
        .batch(BATCH)
        .prefetch(2)
    )
    vds = tf.data.Dataset.from_tensor_slices(
        ((xv.astype(np.float32) / 255.0)[..., None], {"chars": yv, "country": ycv})
    ).batch(256)

    class Log(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            p, _ = self.model.predict(vds, verbose=0)
            exact = float(np.mean(np.all(p.argmax(-1) == yv, axis=1)))
            log(
                f"ocr epoch {epoch + 1}/{epochs} loss={logs['loss']:.4f} val_loss={logs.get('val_loss', 0):.4f} "
                f"val_exact_argmax={exact:.4f}"
            )
            if checkpoint is not None:
                self.model.save(checkpoint)  # usable even if the run is cut short

    model.fit(ds, epochs=epochs, validation_data=vds, verbose=0, callbacks=[Log()])
    return model
