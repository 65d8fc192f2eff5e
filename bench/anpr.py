"""ANPR latency: OCR per plate (one look, and with the second look at unsure plates) and detector per
1280x720 frame (p50/p99, 1 and 2 threads; also with its second look at each plate), model sizes, decode
time, peak RSS. Inputs are seeded synthetic crops and frames (held-out fonts)."""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000.0, q))


def run() -> list[dict]:
    from device.anpr.detector import PlateDetector
    from device.anpr.ocr import PlateOcr
    from device.anpr.reader import DETECTOR_FILE, OCR_FILE, default_models_dir
    from device.anpr.synth.samples import crop_sample
    from device.anpr.synth.scene import make_scene

    base = default_models_dir()
    rng = random.Random(4242)
    crops = [crop_sample(rng, split="heldout").image for _ in range(60)]
    frames = [make_scene(rng, split="heldout", min_plates=1).image for _ in range(12)]
    rows: list[dict] = []

    def row(metric: str, value: float, unit: str, target: str | None = None, note: str | None = None) -> None:
        rows.append(
            {"bench": "anpr", "metric": metric, "value": value, "unit": unit, "target": target, "note": note}
        )

    for threads in (1, 2):
        ocr = PlateOcr(base / OCR_FILE, threads=threads)
        for c in crops[:10]:
            ocr.scores(c)  # warm-up
        inf, first, full, looks = [], [], [], []
        for _ in range(5):
            for c in crops:
                t0 = time.perf_counter()
                ocr.scores(c)
                t1 = time.perf_counter()
                ocr.read(c, ["MA", "SA", "EG", "MR"], second_look=False)
                t2 = time.perf_counter()
                looks.append(ocr.read(c, ["MA", "SA", "EG", "MR"]).looks)
                t3 = time.perf_counter()
                inf.append(t1 - t0)
                first.append(t2 - t1)
                full.append(t3 - t2)
        row(f"ocr_infer_p50_t{threads}", _pct(inf, 50), "ms", "<= 3 ms/plate", "preprocess + TFLite invoke")
        row(f"ocr_infer_p99_t{threads}", _pct(inf, 99), "ms", None, None)
        row(
            f"ocr_read_one_look_p50_t{threads}",
            _pct(first, 50),
            "ms",
            None,
            "invoke + grammar decode over 4 countries",
        )
        row(
            f"ocr_read_p50_t{threads}",
            _pct(full, 50),
            "ms",
            "<= 3 ms/plate",
            "what the reader runs: + the second look at unsure plates",
        )
        row(
            f"ocr_read_p99_t{threads}",
            _pct(full, 99),
            "ms",
            None,
            "a plate looked at again: 3 invokes + search",
        )
        row(
            f"ocr_second_look_share_t{threads}",
            100.0 * float(np.mean(np.array(looks) > 1)),
            "%",
            None,
            "plates whose first read was below the card's second_look_below",
        )
        det = PlateDetector(base / DETECTOR_FILE, threads=threads)
        for f in frames[:3]:
            det.detect(f)
        for name, fn, note in (
            ("detector_frame", det.detect, "1280x720 BGR in, boxes out"),
            ("detector_refined", det.detect_refined, "+ a second look at each plate (what the reader runs)"),
        ):
            dt = []
            for _ in range(5):
                for f in frames:
                    t0 = time.perf_counter()
                    fn(f)
                    dt.append(time.perf_counter() - t0)
            row(f"{name}_p50_t{threads}", _pct(dt, 50), "ms", "<= 40 ms/frame", note)
            row(f"{name}_p99_t{threads}", _pct(dt, 99), "ms", None, None)
    row("ocr_model_size", (base / OCR_FILE).stat().st_size / 1e6, "MB", "< 5 MB", None)
    row("detector_model_size", (base / DETECTOR_FILE).stat().st_size / 1e6, "MB", "< 5 MB", None)
    row(
        "reader_peak_rss",
        _reader_peak_rss_mb(frames[:4]),
        "MB",
        None,
        "a fresh process: runtime, both models, 4 frames and 4 crops read at 2 threads",
    )
    return rows


def _reader_peak_rss_mb(frames: list[np.ndarray]) -> float:
    """Peak RSS of the plate reader alone, in its own process (``VmHWM``, see ``bench.e2e.peak_rss_kb``):
    this process's maximum would be that of every bench run before it (the capture bench's 1080p rings,
    the synthetic data above)."""
    code = (
        "import sys,numpy as np;"
        "from device.anpr.reader import PlateReader;from device.config import AnprConfig;"
        "d=np.load(sys.argv[1]);r=PlateReader(AnprConfig(countries=['MA','SA','EG','MR'],threads=2));"
        "[r.read_image(f) for f in d['frames']];[r.read_crop(f[:48,:160]) for f in d['frames']];"
        "from bench.e2e import peak_rss_kb;print(peak_rss_kb())"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.npz"
        np.savez(path, frames=np.stack(frames))
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
        )
    return int(out.stdout.strip().splitlines()[-1]) / 1024.0
