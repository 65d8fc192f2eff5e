"""``radarcam anpr read IMAGE... [--country MA] [--crop]`` and ``radarcam anpr models``.

One JSON object per image per line on stdout. A bad file (empty, truncated, not an image, too small,
too large) gets one clear line on stderr and the batch goes on; the exit code is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MAX_PIXELS = 60_000_000


class BadImage(ValueError):
    pass


def load_image(path: Path) -> Any:
    """Decodes fully with Pillow (which, unlike OpenCV, refuses truncated files) and returns BGR uint8."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadImage(f"cannot read: {exc.strerror or exc}") from exc
    if size == 0:
        raise BadImage("empty file")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise BadImage(f"image too large ({w}x{h} > {MAX_PIXELS} pixels)")
            im.load()
            rgb = im.convert("RGB")
    except BadImage:
        raise
    except UnidentifiedImageError as exc:
        raise BadImage("not an image (unrecognised format)") from exc
    except Image.DecompressionBombError as exc:
        raise BadImage(f"image too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"corrupt or truncated image: {exc}") from exc
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def _read(args: argparse.Namespace) -> int:
    from device import config as cfgmod
    from device.anpr.card import CardError
    from device.anpr.reader import ImageError, PlateReader

    try:
        if args.config:
            cfg = cfgmod.load(args.config).anpr
        else:
            cfg = cfgmod.AnprConfig(countries=["MA", "SA", "EG", "MR"])
        updates: dict[str, Any] = {}
        if args.threads:
            updates["threads"] = args.threads
        if args.min_confidence is not None:
            updates["min_confidence"] = args.min_confidence
        if updates:  # validated like the file (model_copy would take --min-confidence -1 as given)
            try:
                cfg = type(cfg).model_validate(cfg.model_dump() | updates)
            except ValueError as exc:
                print(f"radarcam anpr: bad option: {exc}", file=sys.stderr)
                return 2
        reader = PlateReader(cfg, models_dir=Path(args.models_dir) if args.models_dir else None)
    except (CardError, ValueError, OSError, RuntimeError) as exc:
        print(f"radarcam anpr: cannot load models: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for name in args.images:
        try:
            img = load_image(Path(name))
            if args.crop:
                best = reader.read_crop(img, country=args.country)
            else:
                reads = reader.read_image(img, country=args.country)
                best = reads[0] if reads else None
        except (BadImage, ImageError) as exc:
            print(f"radarcam anpr: {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        except ValueError as exc:  # e.g. unsupported --country
            print(f"radarcam anpr: {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        row = {
            "file": name,
            "text": best.text if best else None,
            "text_latin": best.text_latin if best else None,
            "country": best.country if best else None,
            "confidence": round(best.confidence, 6) if best else 0.0,
        }
        print(json.dumps(row, ensure_ascii=False), flush=True)
    return 1 if failed else 0


def _models(args: argparse.Namespace) -> int:
    from device.anpr.card import CardError
    from device.anpr.reader import PlateReader
    from device.config import AnprConfig

    try:
        reader = PlateReader(
            AnprConfig(countries=["MA", "SA", "EG", "MR"]),
            models_dir=Path(args.models_dir) if args.models_dir else None,
        )
    except (CardError, ValueError, OSError, RuntimeError) as exc:
        print(f"radarcam anpr: cannot load models: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(reader.models(), indent=1))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("anpr", help="plate recognition tools")
    sub = p.add_subparsers(dest="anpr_command", required=True)
    r = sub.add_parser("read", help="read plates in image files (one JSON line per image)")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--country", choices=["MA", "SA", "EG", "MR"], default=None)
    r.add_argument("--crop", action="store_true", help="the images are already plate crops")
    r.add_argument("--config", default=None, help="config TOML; its [anpr] section is used")
    r.add_argument("--models-dir", default=None)
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--min-confidence", type=float, default=None)
    r.set_defaults(func=_read)
    m = sub.add_parser("models", help="print the loaded models (names, sha256, runtime)")
    m.add_argument("--models-dir", default=None)
    m.set_defaults(func=_models)
