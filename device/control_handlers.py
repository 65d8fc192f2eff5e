"""The daemon's side of the console control protocol (see device/control.py for the wire format).

Each handler takes the request's ``args`` dict and returns JSON-able data. Only public information
leaves through here: the signing key never does (``keys`` answers with its id and fingerprint).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device.daemon import Daemon


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _jsonable(obj: Any) -> Any:
    """Health dicts carry enums (directions, states): their string values go on the wire."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(getattr(obj, "value", None), str):
        return obj.value
    return obj


def handlers_for(d: Daemon) -> dict[str, Callable[[dict], Any]]:
    from device import selftest
    from device.capture.evidence import encode_jpeg

    def status(_: dict) -> Any:
        return _jsonable(d.status())

    def recent(args: dict) -> Any:
        n = max(1, min(int(args.get("limit", 20)), 50))
        return {"passes": list(d.recent_passes)[:n], "violations": list(d.recent_violations)[:n]}

    def logs(args: dict) -> Any:
        import logging

        from device.daemon import LogRing

        n = max(1, min(int(args.get("lines", 200)), 2000))
        ring = next((h for h in logging.getLogger().handlers if isinstance(h, LogRing)), None)
        return {"lines": list(ring.lines)[-n:] if ring is not None else []}

    def preview(_: dict) -> Any:
        img = d.camera.preview()
        if img is None:
            latest = d.ring.latest()
            img = None if latest is None else latest.bgr()
        if img is None:
            return {"jpeg_b64": None, "width": 0, "height": 0, "t_mono_ns": None}
        return {
            "jpeg_b64": _b64(encode_jpeg(img, 70)),
            "width": int(img.shape[1]),
            "height": int(img.shape[0]),
            "t_mono_ns": time.monotonic_ns(),
        }

    def test_trigger(_: dict) -> Any:
        """Evidence from the ring right now, marked TEST; nothing is sealed or counted."""
        from device.capture.evidence import DataBar, build_evidence, select_frames
        from device.violations import utc_of

        now = time.monotonic_ns()
        frames = d.ring.window(now - 1_000_000_000, now)
        if not frames:
            return {"ok": False, "detail": "no camera frames in the ring"}
        picked = select_frames(frames, now, 1)
        stamp = d.clock.stamp()
        bar = DataBar(
            utc_ns=utc_of(stamp, picked[0].t_mono_ns),
            clock_synchronized=stamp.synchronized,
            clock_source=stamp.source,
            measured_kmh=float(d.last_speed["kmh"]) if d.last_speed else 0.0,
            limit_kmh=d.cfg.site.lanes[0].limit_kmh,
            direction="test",
            site_id=d.cfg.site.id,
            site_name=d.cfg.site.name,
            site_name_local=d.cfg.site.name_local,
            device_id=d.cfg.device.id,
            packet_id="TEST-TRIGGER",
            lane=None,
        )
        images = build_evidence(picked, bar, clock=lambda m: utc_of(stamp, m), quality=80)
        if d.gpio is not None:
            d.gpio.flash()
        from device.daemon import _iso, thumbnail_b64

        overview = images[0]
        return {
            "ok": True,
            "thumbnail_jpeg_b64": thumbnail_b64(overview.jpeg, 640),
            "width": overview.width,
            "height": overview.height,
            "t_utc": _iso(overview.t_utc_ns),
        }

    def reload(args: dict) -> Any:
        return d.reload(audit=list(args.get("audit") or []))

    def audit(args: dict) -> Any:
        return {"event_seq": d.seal_console_audit(args.get("records"))}

    def run_selftest(_: dict) -> Any:
        return selftest.as_dicts(selftest.run_live(d))

    def uplink_test(_: dict) -> Any:
        if d.uplink is None:
            return {"ok": False, "detail": "uplink disabled in config"}
        h = d.uplink.health()
        return {"ok": bool(h.get("connected")), "detail": _jsonable(h)}

    def keys(_: dict) -> Any:
        return {"key_id": d.key.key_id, "fingerprint": d.key.fingerprint}

    return {
        "status": status,
        "recent": recent,
        "preview": preview,
        "test_trigger": test_trigger,
        "reload": reload,
        "audit": audit,
        "selftest": run_selftest,
        "uplink_test": uplink_test,
        "keys": keys,
        "logs": logs,
    }
