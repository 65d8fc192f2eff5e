"""``radarcam camera snapshot`` and ``radarcam camera check``: the technician's two camera tools."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _load_cfg(path: str | None) -> Any:
    from device import config as cfgmod

    return cfgmod.load(path) if path else cfgmod.Config()


def _scenario(args: argparse.Namespace) -> Any:
    if getattr(args, "scenario", None):
        from device.sim.scenario import Scenario

        return Scenario.load(args.scenario)
    return None


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from device.capture.camera import open_camera

    cfg = _load_cfg(args.config)
    return cfg, open_camera(cfg.camera, scenario=_scenario(args))


def _snapshot(args: argparse.Namespace) -> int:
    import cv2

    from device.capture.camera import CameraError
    from device.capture.evidence import encode_jpeg
    from device.config import atomic_write

    cfg, cam = _open(args)
    try:
        cam.start()
        deadline = time.monotonic() + args.timeout
        frame = None
        skip = args.skip
        while time.monotonic() < deadline:
            frame = cam.read(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
            if frame is not None:
                if skip <= 0:
                    break
                skip -= 1
                frame = None
    except CameraError as exc:
        print(f"radarcam camera: {exc}", file=sys.stderr)
        return 1
    finally:
        cam.stop()
    if frame is None:
        print(f"radarcam camera: no frame within {args.timeout:g} s ({cam.health()})", file=sys.stderr)
        return 1
    out = str(args.out)
    if out.lower().endswith(".png"):
        _, buf = cv2.imencode(".png", frame.bgr())
        data = buf.tobytes()
    else:
        data = encode_jpeg(frame.bgr(), cfg.camera.jpeg_quality)
    atomic_write(out, data)
    w, h = frame.size
    print(
        f"{out}: {w}x{h} frame {frame.frame_no} t_mono_ns {frame.t_mono_ns} "
        f"exposure_us {frame.exposure_us} gain {frame.analogue_gain} ({len(data)} bytes)"
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from device.capture.camera import CameraThread
    from device.capture.ring import FrameRing

    cfg, cam = _open(args)
    ring = FrameRing(cfg.camera.ring_seconds, cfg.camera.fps)
    seen: dict[str, Any] = {}

    def on_frame(f: Any) -> None:
        seen.setdefault("first", f)
        seen["last"] = f

    thread = CameraThread(cam, ring, on_frame=on_frame)
    t0 = time.monotonic_ns()
    thread.start()
    try:
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
    finally:
        thread.stop()
    elapsed = (time.monotonic_ns() - t0) / 1e9
    health = thread.health()
    frame, first = seen.get("last"), seen.get("first")
    span_ns = frame.t_mono_ns - first.t_mono_ns if frame is not None and first is not None else 0
    # frames delivered per second of *camera* time (start-up excluded), dropped frames included as gaps
    fps = (thread.frames - 1) * 1e9 / span_ns if span_ns > 0 else 0.0
    report = {
        "backend": cfg.camera.backend,
        "seconds": round(elapsed, 3),
        "frames": thread.frames,
        "fps_target": cfg.camera.fps,
        "fps_achieved": round(fps, 2),
        "fps_measured": round(health.get("fps_measured", 0.0), 2),
        "dropped": thread.dropped,
        "camera_dropped": health.get("dropped"),
        "reconnects": health.get("reconnects"),
        "exposure_us": frame.exposure_us if frame else None,
        "analogue_gain": frame.analogue_gain if frame else None,
        "resolution": list(frame.size) if frame else None,
        "ring_frames": len(ring),
        "state": health.get("state"),
        "last_error": health.get("last_error") or health.get("thread_error"),
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for k, v in report.items():
            print(f"{k:>15}: {v}")
    ok = thread.frames > 0 and fps >= 0.9 * cfg.camera.fps and thread.dropped == 0
    if not ok:
        print("radarcam camera check: FAILED (no frames, low frame rate or dropped frames)", file=sys.stderr)
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("camera", help="camera snapshot and health check")
    csub = p.add_subparsers(dest="camera_cmd", required=True)
    s = csub.add_parser("snapshot", help="save one frame (JPEG, or PNG by extension)")
    s.add_argument("--out", required=True, help="output file (.jpg or .png)")
    s.add_argument("--config", help="config TOML (default: built-in defaults)")
    s.add_argument("--scenario", help="synthetic backend: scenario JSON to render")
    s.add_argument("--skip", type=int, default=0, help="frames to skip first (auto exposure settling)")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a frame")
    s.set_defaults(func=_snapshot)
    c = csub.add_parser("check", help="run the camera for a while: frame rate, dropped frames, exposure")
    c.add_argument("--config", help="config TOML (default: built-in defaults)")
    c.add_argument("--scenario", help="synthetic backend: scenario JSON to render")
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_check)
