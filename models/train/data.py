"""Dataset generation in worker processes: seeded chunks, so the result does not depend on scheduling."""

from __future__ import annotations

import multiprocessing as mp
import os
import random

import numpy as np

from device.anpr.layout import visual_lines
from device.anpr.preprocess import detector_input, ocr_input
from device.anpr.synth.samples import crop_sample, frame_sample

CHUNK = 500


def _ocr_chunk(
    args: tuple[int, int, int, int, int, str, str, bool, bool],
) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    seed, idx, n, h, w, split, margins, variety, restyle = args
    rng = random.Random(seed * 1_000_003 + idx)
    xs = np.zeros((n, h, w), np.uint8)
    meta = []
    for i in range(n):
        s = crop_sample(rng, split=split, margins=margins, variety=variety, restyle=restyle)
        xs[i] = ocr_input(s.image, h, w)
        meta.append((s.text, s.country, s.style))
    return xs, meta


def ocr_dataset(
    n: int,
    seed: int,
    h: int,
    w: int,
    split: str = "train",
    workers: int | None = None,
    margins: str = "tight",
    variety: bool = False,
    restyle: bool = False,
) -> dict:
    """Crops and their labels: ``x`` (n, h, w) uint8 and per-sample ``text``, ``country``, ``style``.

    ``workers`` defaults to every CPU this process may use (1: no worker processes); chunks are seeded
    by their index, so the crops do not depend on it."""
    jobs = [
        (seed, i, min(CHUNK, n - i * CHUNK), h, w, split, margins, variety, restyle)
        for i in range((n + CHUNK - 1) // CHUNK)
    ]
    if workers == 1:  # in this process: nothing forks (safe beside a loaded ML framework, e.g. in tests)
        parts = [_ocr_chunk(j) for j in jobs]
    else:
        with mp.get_context("fork").Pool(workers or len(os.sched_getaffinity(0))) as pool:
            parts = pool.map(_ocr_chunk, jobs)
    meta = [m for p in parts for m in p[1]]
    return {
        "x": np.concatenate([p[0] for p in parts]),
        "text": np.array([m[0] for m in meta]),
        "country": np.array([m[1] for m in meta]),
        "style": np.array([m[2] for m in meta]),
    }


def ocr_lines(d: dict) -> list[tuple[str, str]]:
    """The OCR's per-line targets for a dataset from :func:`ocr_dataset`."""
    return [
        visual_lines(str(t), str(c), str(s))
        for t, c, s in zip(d["text"], d["country"], d["style"], strict=True)
    ]


def _det_chunk(args: tuple[int, int, int, int, int, str]):
    seed, idx, n, h, w, split = args
    rng = random.Random(seed * 1_000_003 + idx)
    xs = np.zeros((n, h, w), np.uint8)
    boxes: list[list[tuple[float, float, float, float]]] = []
    for i in range(n):
        sc = frame_sample(rng, split=split)
        img, scale = detector_input(sc.image, h, w)
        xs[i] = img
        boxes.append(
            [(x * scale, y * scale, bw * scale, bh * scale) for (x, y, bw, bh) in (p.box for p in sc.plates)]
        )
    return xs, boxes


def det_dataset(n: int, seed: int, h: int, w: int, split: str = "train", workers: int = 2):
    chunk = 100
    jobs = [(seed, i, min(chunk, n - i * chunk), h, w, split) for i in range((n + chunk - 1) // chunk)]
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_det_chunk, jobs)
    return np.concatenate([p[0] for p in parts]), [b for p in parts for b in p[1]]
