"""``radarcam anpr read``: one JSON line per good image, one stderr line per bad one, batch goes on."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

from device.anpr.synth.samples import crop_sample
from device.anpr.synth.scene import make_scene


def _huge_png(path: Path, w: int = 20000, h: int = 20000) -> None:
    """A valid PNG header claiming 400 Mpx (the pixels are never needed: size is checked first)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_read_batch_with_bad_files(tmp_path: Path) -> None:
    rng = random.Random(31337)
    crop = crop_sample(rng, split="heldout", degraded=False, country="MR")
    scene = make_scene(rng, split="heldout", min_plates=1, max_plates=1, degraded=False, countries=("MR",))
    good_crop = tmp_path / "crop.png"
    cv2.imwrite(str(good_crop), crop.image)
    frame = tmp_path / "frame.jpg"
    cv2.imwrite(str(frame), scene.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(frame.read_bytes()[: len(frame.read_bytes()) // 2])
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), crop.image[:1, :1])
    huge = tmp_path / "huge.png"
    _huge_png(huge)
    missing = tmp_path / "missing.png"

    def run(*files: Path, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "device.cli", "anpr", "read", *extra, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    bad = [empty, trunc, text, tiny, huge, missing]
    p = run(frame, *bad, good_crop, extra=("--country", "MR"))
    assert p.returncode == 1
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(frame), str(good_crop)]
    for r in rows:
        assert set(r) == {"file", "text", "text_latin", "country", "confidence"}
    assert rows[0]["text"] == scene.plates[0].text and rows[0]["text_latin"] == scene.plates[0].latin
    # The crop read as a frame may or may not find a plate; read as a crop it must be right.
    errs = p.stderr.strip().splitlines()
    for f in bad:
        assert any(str(f) in line for line in errs), (f, p.stderr)
    assert "empty" in p.stderr and "truncated" in p.stderr and "not an image" in p.stderr
    assert "too small" in p.stderr and "too large" in p.stderr

    p = run(good_crop, extra=("--crop",))
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)
    assert row["text"] == crop.text and row["country"] == "MR" and row["text_latin"] == crop.latin
    assert 0.0 < row["confidence"] <= 1.0


def test_no_plate_gives_null_text(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((720, 1280, 3), 90, np.uint8))
    p = subprocess.run(
        [sys.executable, "-m", "device.cli", "anpr", "read", str(blank)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout)
    assert row["text"] is None and row["text_latin"] is None and row["country"] is None


def test_options_out_of_range_are_refused_like_the_config_file(tmp_path: Path) -> None:
    """Before, ``--min-confidence -1`` (every read reported, however unsure) and ``--threads 100`` went
    through unchecked: the options were copied into the config without its validation."""
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((48, 160, 3), 90, np.uint8))
    for flag in (["--min-confidence", "-1"], ["--min-confidence", "5"], ["--threads", "100"]):
        p = subprocess.run(
            [sys.executable, "-m", "device.cli", "anpr", "read", "--crop", *flag, str(blank)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 2 and "bad option" in p.stderr and not p.stdout, (flag, p.stderr)
