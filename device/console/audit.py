"""Audit trail of configuration changes: who, when, which field, old -> new (JSON Lines, append-only).

Why field-level records: the registry must be able to tell exactly when a limit, an angle or a tolerance
changed and who changed it; the same records travel to the daemon (``reload``) and end up in a signed
``event`` packet. The file lives in the console's state dir and is offered for download.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AuditRecord:
    who: str
    role: str
    when: str
    """UTC, ISO 8601 with microseconds."""
    field: str
    """Dotted path; list items with an ``id`` are addressed by it: ``site.lanes[id=1].limit_kmh``."""
    old: Any
    new: Any
    remote: str
    action: str = "config"
    """``config`` for field changes; ``account``/``login`` for security events (old/new then describe it)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


_MISSING = object()


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) and "id" in x for x in obj):
        for item in obj:
            _flatten(item, f"{prefix}[id={item['id']}]", out)
    else:
        out[prefix] = obj


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Field-level differences between two config dicts (``None`` stands for "absent")."""
    a: dict[str, Any] = {}
    b: dict[str, Any] = {}
    _flatten(old, "", a)
    _flatten(new, "", b)
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va != vb:
            out.append((key, None if va is _MISSING else va, None if vb is _MISSING else vb))
    return out


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, records: Iterable[AuditRecord]) -> None:
        lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, lines.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest last; a torn last line (power cut mid-write) is skipped, not fatal."""
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out[-limit:] if limit else out

    def raw(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
