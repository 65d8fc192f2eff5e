"""Plate detector: tiny fully-convolutional CenterNet-style net on a 320x192 grayscale frame.

Output at stride 8 (24 x 40 cells): channel 0 = plate-centre heatmap (sigmoid), 1-2 = centre offset in
the cell, 3-4 = log of box width/height in cells. Builtin TFLite ops only.
"""

from __future__ import annotations

import numpy as np

H, W, STRIDE = 192, 320, 8
GH, GW = H // STRIDE, W // STRIDE


def targets(boxes: list[list[tuple[float, float, float, float]]]) -> np.ndarray:
    """(N, GH, GW, 6): heat, dx, dy, logw, logh, regression mask."""
    t = np.zeros((len(boxes), GH, GW, 6), np.float32)
    yy, xx = np.mgrid[0:GH, 0:GW].astype(np.float32)
    for i, bs in enumerate(boxes):
        for x, y, w, h in bs:
            cx, cy = (x + w / 2) / STRIDE, (y + h / 2) / STRIDE
            ix, iy = min(GW - 1, int(cx)), min(GH - 1, int(cy))
            sx = max(0.5, w / STRIDE / 4)
            sy = max(0.5, h / STRIDE / 3)
            g = np.exp(-((xx - ix) ** 2) / (2 * sx * sx) - ((yy - iy) ** 2) / (2 * sy * sy))
            t[i, :, :, 0] = np.maximum(t[i, :, :, 0], g)
            t[i, iy, ix, 0] = 1.0
            t[i, iy, ix, 1:5] = (cx - ix, cy - iy, np.log(max(w, 1) / STRIDE), np.log(max(h, 1) / STRIDE))
            t[i, iy, ix, 5] = 1.0
    return t


def build(tf):
    L = tf.keras.layers
    inp = L.Input((H, W, 1), name="image")

    def block(x, ch, stride=1, dil=1):
        x = L.Conv2D(ch, 3, strides=stride, padding="same", dilation_rate=dil, use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU()(x)

    x = block(inp, 12, 2)  # 96x160
    x = block(x, 16, 2)  # 48x80
    x = block(x, 32, 2)  # 24x40
    x = block(x, 32)
    x = block(x, 32, dil=2)
    x = block(x, 32, dil=4)  # receptive field ~130 px at /4: the largest two-row plates fit
    x = block(x, 32)
    heat = L.Conv2D(1, 1, activation="sigmoid", bias_initializer=tf.keras.initializers.Constant(-4.0))(x)
    reg = L.Conv2D(4, 1)(x)
    out = L.Concatenate(name="out")([heat, reg])
    return tf.keras.Model(inp, out)


def loss_fn(tf):
    def loss(y, p):
        heat_t, reg_t, mask = y[..., 0:1], y[..., 1:5], y[..., 5:6]
        heat = tf.clip_by_value(p[..., 0:1], 1e-4, 1 - 1e-4)
        pos = tf.cast(heat_t >= 1.0, tf.float32)
        pos_l = -tf.math.log(heat) * (1 - heat) ** 2 * pos
        neg_l = -tf.math.log(1 - heat) * heat**2 * (1 - heat_t) ** 4 * (1 - pos)
        n = tf.maximum(tf.reduce_sum(pos), 1.0)
        focal = (tf.reduce_sum(pos_l) + tf.reduce_sum(neg_l)) / n
        l1 = tf.reduce_sum(tf.abs(p[..., 1:5] - reg_t) * mask) / n
        return focal + l1

    return loss


def train(tf, x: np.ndarray, boxes, *, seed: int, epochs: int, log) -> object:
    tf.keras.utils.set_random_seed(seed)
    y = targets(boxes)
    model = build(tf)
    steps = epochs * int(np.ceil(len(x) / 32))
    model.compile(
        optimizer=tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(2e-3, steps, 0.02)),
        loss=loss_fn(tf),
    )

    def prep(img, t):
        return tf.cast(img, tf.float32)[..., None] / 255.0, t

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).map(prep).batch(32).prefetch(2)

    class Log(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            log(f"det epoch {epoch + 1}/{epochs} loss={logs['loss']:.4f}")

    model.fit(ds, epochs=epochs, verbose=0, callbacks=[Log()])
    return model
