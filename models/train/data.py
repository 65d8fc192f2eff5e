"""Dataset generation in worker processes: seeded chunks, so the result does not depend on scheduling."""

from __future__ import annotations

import multiprocessing as mp
import random

import numpy as np

from device.anpr.layout import visual_target
from device.anpr.preprocess import detector_input, ocr_input
from device.anpr.synth.samples import crop_sample, frame_sample

CHUNK = 500


def _ocr_chunk(args: tuple[int, int, int, int, int, str]) -> tuple[np.ndarray, list[str], list[str]]:
    seed, idx, n, h, w, split = args
    rng = random.Random(seed * 1_000_003 + idx)
    xs = np.zeros((n, h, w), np.uint8)
    texts, targets = [], []
    for i in range(n):
        s = crop_sample(rng, split=split)
        xs[i] = ocr_input(s.image, h, w)
        texts.append(s.text)
        targets.append(visual_target(s.text, s.country, s.style))
    return xs, texts, targets


def ocr_dataset(n: int, seed: int, h: int, w: int, split: str = "train", workers: int = 2):
    jobs = [(seed, i, min(CHUNK, n - i * CHUNK), h, w, split) for i in range((n + CHUNK - 1) // CHUNK)]
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_ocr_chunk, jobs)
    return (
        np.concatenate([p[0] for p in parts]),
        [t for p in parts for t in p[1]],
        [c for p in parts for c in p[2]],
    )


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
