"""Daemon answers -> the shapes the console's pages and JS use.

Why a translation layer: the daemon and the console are built (and upgraded) separately, and the
daemon's status grows as stages are added. The console accepts both the documented shapes
(device/control.py) and the daemon's richer native ones (``utc_ns``, ``live_speed``, ``components.outbox``,
evidence ``images``), fills gaps with None, and turns full-size evidence JPEGs into small thumbnails so
a phone on the maintenance port does not pull megabytes every poll.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import io
import json
import math
import re
import threading
from collections import OrderedDict
from typing import Any

_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
THUMB_WIDTH = 320


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return x


def _str(x: Any, limit: int = 300) -> str:
    if x is None:
        return ""
    s = x if isinstance(x, str) else json.dumps(x, ensure_ascii=False, default=str, sort_keys=True)
    return s[:limit]


def utc_iso(ns: Any) -> str | None:
    if not isinstance(ns, int) or isinstance(ns, bool):
        return None
    t = dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 1_000_000_000:09d}"[:3] + "Z"


def _when(item: dict[str, Any]) -> str | None:
    return item.get("t_utc") if isinstance(item.get("t_utc"), str) else utc_iso(item.get("utc_ns"))


class Thumbnailer:
    """Downscales JPEGs (base64) to THUMB_WIDTH, remembering the last few results."""

    def __init__(self, size: int = 64):
        self.size = size
        self._cache: OrderedDict[tuple[int, str], str | None] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, b64: Any, width: int = THUMB_WIDTH) -> str | None:
        if not isinstance(b64, str) or not _B64.match(b64):
            return None
        key = (width, hashlib.blake2b(b64.encode("ascii"), digest_size=16).hexdigest())
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        out = self._shrink(b64, width)
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return out

    @staticmethod
    def _shrink(b64: str, width: int) -> str | None:
        from PIL import Image, UnidentifiedImageError

        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            return None
        if not raw.startswith(b"\xff\xd8"):
            return None
        if len(raw) <= 40_000:
            return b64
        try:
            with Image.open(io.BytesIO(raw)) as img:
                img.draft("RGB", (width, width))  # JPEG DCT scaling: decode at 1/2..1/8 size, cheap
                img = img.convert("RGB")
                if img.width > width:
                    img = img.resize((width, max(1, round(img.height * width / img.width))))
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=75)
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        return base64.b64encode(buf.getvalue()).decode("ascii")


def _component(c: Any) -> dict[str, str]:
    c = _d(c)
    state = c.get("state")
    detail = c.get("detail") or c.get("last_error") or ""
    if not isinstance(state, str) and "pending" in c:  # the outbox's stats
        state = "degraded" if c.get("quota_exceeded") or c.get("disk_full") else "ok"
        detail = detail or f"pending {c.get('pending')}, sent {c.get('sent')}, acked {c.get('acked')}"
    if not isinstance(state, str):
        state = "ok" if c.get("connected") else ("down" if "connected" in c else "unknown")
    return {"state": state[:20], "detail": _str(detail, 200)}


def status(raw: Any) -> dict[str, Any]:
    raw = _d(raw)
    comps = _d(raw.get("components"))
    radar = _d(raw.get("radar"))
    live = _d(raw.get("live_speed"))
    outbox = _d(raw.get("outbox")) or _d(comps.get("outbox"))
    uplink = _d(raw.get("uplink")) or _d(comps.get("uplink"))
    clock = _d(raw.get("clock"))
    disk = _d(raw.get("disk"))
    tamper = _d(raw.get("tamper"))
    depth = outbox.get("depth")
    if depth is None and ("pending" in outbox or "sent" in outbox):
        depth = (outbox.get("pending") or 0) + (outbox.get("sent") or 0)
    offset_ms = _num(clock.get("offset_ms"))
    if offset_ms is None and _num(clock.get("offset_ns")) is not None:
        offset_ms = clock["offset_ns"] / 1e6
    synced = clock.get("synced", clock.get("synchronized"))
    tamper_open = tamper.get("open", tamper.get("cabinet_open"))
    return {
        "device_id": _str(raw.get("device_id"), 64),
        "firmware": _str(raw.get("firmware"), 64),
        "config_hash": _str(raw.get("config_hash"), 64),
        "state": _str(raw.get("state"), 20),
        "restart_required": bool(raw.get("restart_required")),
        "uptime_s": _num(raw.get("uptime_s")),
        "components": {str(k)[:32]: _component(v) for k, v in comps.items()},
        "radar": {
            "live_speed_kmh": _num(radar.get("live_speed_kmh", live.get("kmh"))),
            "direction": _str(radar.get("direction", live.get("direction")), 16) or None,
        },
        "outbox": {
            "depth": _num(depth),
            "pending": _num(outbox.get("pending")),
            "last_ack_seq": _num(outbox.get("last_ack_seq")),
            "last_ack_utc": outbox.get("last_ack_utc")
            if isinstance(outbox.get("last_ack_utc"), str)
            else utc_iso(outbox.get("last_ack_time_ns")),
        },
        "uplink": {
            "connected": bool(uplink.get("connected")),
            "broker": _str(uplink.get("broker"), 120) or None,
        },
        "clock": {
            "utc": clock.get("utc") if isinstance(clock.get("utc"), str) else utc_iso(clock.get("utc_ns")),
            "synced": bool(synced) if synced is not None else None,
            "source": _str(clock.get("source"), 32) or None,
            "offset_ms": offset_ms,
        },
        "disk": {"free_bytes": _num(disk.get("free_bytes")), "total_bytes": _num(disk.get("total_bytes"))},
        "cpu_temp_c": _num(raw.get("cpu_temp_c")),
        "tamper": {"open": bool(tamper_open) if tamper_open is not None else None},
    }


def _plate(p: Any) -> dict[str, Any] | None:
    p = _d(p)
    if not p.get("text"):
        return None
    return {
        "text": _str(p.get("text"), 32),
        "text_latin": _str(p.get("text_latin"), 32),
        "country": _str(p.get("country"), 8),
        "confidence": _num(p.get("confidence")),
    }


def _first_image(item: dict[str, Any]) -> Any:
    if item.get("thumbnail_jpeg_b64"):
        return item["thumbnail_jpeg_b64"]
    images = item.get("images")
    if isinstance(images, list) and images:
        return _d(images[0]).get("jpeg_b64")
    return None


def recent(raw: Any, thumbs: Thumbnailer) -> dict[str, list[dict[str, Any]]]:
    raw = _d(raw)
    passes = []
    for p in raw.get("passes") or []:
        p = _d(p)
        passes.append(
            {
                "t_utc": _when(p),
                "lane": _str(p.get("lane"), 16) or None,
                "direction": _str(p.get("direction"), 16),
                "peak_kmh": _num(p.get("peak_kmh")),
                "median_kmh": _num(p.get("median_kmh")),
                "readings": _num(p.get("readings")),
                "valid": bool(p.get("valid")),
            }
        )
    violations = []
    for v in raw.get("violations") or []:
        v = _d(v)
        violations.append(
            {
                "seq": _num(v.get("seq")),
                "t_utc": _when(v),
                "lane": _str(v.get("lane"), 16) or None,
                "speed_kmh": _num(v.get("speed_kmh", v.get("enforced_kmh"))),
                "limit_kmh": _num(v.get("limit_kmh")),
                "thumbnail_jpeg_b64": thumbs(_first_image(v)),
                "plate": _plate(v.get("plate")),
            }
        )
    return {"passes": passes, "violations": violations}


def trigger(raw: Any, thumbs: Thumbnailer) -> tuple[dict[str, Any] | None, str | None]:
    """(result, error): the daemon may answer ``{"ok": false, "detail": ...}`` when it has no frame."""
    raw = _d(raw)
    if raw.get("ok") is False:
        return None, _str(raw.get("detail")) or "test trigger failed"
    b64 = _first_image(raw)
    t_utc = raw.get("t_utc") if isinstance(raw.get("t_utc"), str) else None
    if t_utc is None and isinstance(raw.get("images"), list) and raw["images"]:
        t_utc = utc_iso(_d(raw["images"][0]).get("utc_ns"))
    return {"thumbnail_jpeg_b64": thumbs(b64, 640), "t_utc": t_utc}, None


def uplink_test(raw: Any) -> dict[str, Any]:
    raw = _d(raw)
    return {"ok": bool(raw.get("ok")), "detail": _str(raw.get("detail"), 1000)}


def selftest(raw: Any) -> list[dict[str, Any]]:
    out = []
    for r in raw if isinstance(raw, list) else []:
        r = _d(r)
        out.append(
            {
                "check": _str(r.get("check"), 80),
                "ok": bool(r.get("ok")),
                "detail": _str(r.get("detail")),
                "fix": _str(r.get("fix")),
            }
        )
    return out
