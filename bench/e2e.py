"""End to end: the demo's setup (pty radar, synthetic camera, mosquitto, registry, real daemon) at
increasing traffic, each run in its own process so peak RSS is that run's alone.

Reports trigger->sealed and trigger->acked p50/p99, violations sealed per second, readings dropped,
CPU seconds and peak RSS (and, at 1 vehicle/s, peak RSS with the ring holding BGR instead of YUV 4:2:0
frames), and over a longer 720p run how fast RSS still grows once the ring and caches are full.
Targets: trigger->sealed p99 < 300 ms at 5 vehicles/s, no reading dropped at 20 vehicles/s, RSS < 300 MB
with 1080p frames.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATES = (1.0, 5.0, 20.0)
REPO = Path(__file__).resolve().parents[1]
"""The children import ``bench.e2e`` (``peak_rss_kb``), so they run from the repository root."""
SECONDS = float(os.environ.get("RADARCAM_BENCH_E2E_SECONDS", "20"))
LONG_SECONDS = float(os.environ.get("RADARCAM_BENCH_E2E_LONG_SECONDS", "120"))


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def peak_rss_kb() -> int:
    """This process's own peak RSS: ``VmHWM``. Not ``ru_maxrss``, which Linux carries over from the parent
    at fork and keeps across exec, so a child of a large bench process would report the parent's size."""
    try:
        return _status_kb("VmHWM:")
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(argv: list[str]) -> int:
    """Runs ``radarcam demo`` in this process, sampling its RSS once a second, and reports on stderr."""
    import resource
    import threading

    from device.cli import main

    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not done.wait(1.0):
            samples.append((time.monotonic() - t0, _status_kb("VmRSS:")))

    threading.Thread(target=sample, daemon=True).start()
    rc = main(argv)
    done.set()
    r = resource.getrusage(resource.RUSAGE_SELF)
    out = {"rc": rc, "cpu_s": r.ru_utime + r.ru_stime, "maxrss_kb": peak_rss_kb(), "rss_samples": samples}
    print("BENCH", json.dumps(out), file=sys.stderr)
    return rc


def growth_mb_per_min(samples: list[tuple[float, int]], window_s: float) -> float:
    """RSS slope over the last ``window_s`` seconds: the median of its second half minus that of its first
    half. The window starts after a warm-up as long again (the heap takes ~40 s to reach its working
    size at 5 vehicles/s), so a long-running unit's growth (a leak) is what is left."""
    import statistics

    end = max((t for t, _ in samples), default=0.0)
    first = [kb for t, kb in samples if end - window_s <= t < end - window_s / 2]
    second = [kb for t, kb in samples if end - window_s / 2 <= t <= end]
    if not first or not second:
        return float("nan")
    return (statistics.median(second) - statistics.median(first)) / 1024 / (window_s / 2 / 60)


def _one(
    rate: float, width: int, height: int, fps: float, layout: str = "yuv420", seconds: float = SECONDS
) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from bench.e2e import child; child(sys.argv[1:])",
            "demo",
            "--json",
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--seed",
            "3",
            "--width",
            str(width),
            "--height",
            str(height),
            "--fps",
            str(fps),
            "--beam-far",
            "18",
            "--frame-layout",
            layout,
            "--out",
            out,
        ]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 6 + 120, cwd=REPO)
        wall = time.perf_counter() - t0
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    extra = json.loads(next(line for line in p.stderr.splitlines() if line.startswith("BENCH"))[6:])
    return {"summary": summary, "wall_s": wall, **extra}


def run() -> list[dict]:
    rows: list[dict] = []

    def row(metric: str, value: float, unit: str, target: str | None = None, note: str | None = None) -> None:
        rows.append(
            {"bench": "e2e", "metric": metric, "value": value, "unit": unit, "target": target, "note": note}
        )

    for rate in RATES:
        r = _one(rate, 1920, 1080, 15.0)
        s = r["summary"]
        tag = f"rate{rate:g}"
        row(f"{tag}.vehicles", s["vehicles"], "count", note=f"{s['passes']} passes over {SECONDS:g} s")
        row(
            f"{tag}.violations_enforceable",
            s["violations_expected"],
            "count",
            note="speeders alone in the beam in their direction (a Doppler radar cannot split closer ones)",
        )
        row(f"{tag}.violations_sealed_per_s", s["packets_sealed"] / SECONDS, "1/s")
        for leg in ("trigger_to_sealed", "trigger_to_acked"):
            lat = s["latency_ms"][leg]
            if not lat["n"]:
                continue  # nothing enforceable at this density: no latency to report
            for q in ("p50", "p99"):
                target = "< 300 at 5/s" if (leg, q, rate) == ("trigger_to_sealed", "p99", 5.0) else None
                row(f"{tag}.{leg}_{q}", lat[q], "ms", target, f"n={lat['n']}")
        row(f"{tag}.readings_dropped", s["readings_dropped"], "count", "0 at 20/s" if rate == 20 else None)
        if s["plates_total"]:
            row(f"{tag}.plates_correct", s["plates_correct"], "count", None, f"of {s['plates_total']} read")
        row(f"{tag}.cpu_s", r["cpu_s"], "s", note=f"wall {r['wall_s']:.0f} s")
        row(
            f"{tag}.peak_rss",
            r["maxrss_kb"] / 1024,
            "MB",
            "< 300 (1080p)",
            "1920x1080 @ 15 fps, whole demo process",
        )
    # the same 1 vehicle/s run with the ring holding BGR frames (camera.frame_layout = "bgr")
    r = _one(1.0, 1920, 1080, 15.0, "bgr")
    row("rate1_bgr.peak_rss", r["maxrss_kb"] / 1024, "MB", None, "as rate1 with frame_layout bgr")
    s = r["summary"]
    row("rate1_bgr.plates_correct", s["plates_correct"], "count", None, f"of {s['plates_total']} read")
    # a longer run at the demo's default 720p: does the process keep growing once everything is full?
    r = _one(5.0, 1280, 720, 15.0, seconds=LONG_SECONDS)
    row(
        "steady5_720p.rss_growth",
        growth_mb_per_min(r["rss_samples"], LONG_SECONDS / 2),
        "MB/min",
        "~0 (no leak)",
        f"5 vehicles/s, 1280x720 @ 15 fps, {LONG_SECONDS:g} s: over the last half (medians of its quarters)",
    )
    row(
        "steady5_720p.peak_rss",
        r["maxrss_kb"] / 1024,
        "MB",
        None,
        f"same run, {r['summary']['vehicles']} vehicles",
    )
    return rows
