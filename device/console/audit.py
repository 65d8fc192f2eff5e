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
from collections.abc import Callable, Iterable
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


def _jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode("utf-8")


def _write_synced(path: Path, data: bytes, flags: int, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Oldest first; a torn last line (power cut mid-write) is skipped, not fatal."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, records: Iterable[AuditRecord]) -> None:
        data = _jsonl(r.to_dict() for r in records)
        if not data:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            _write_synced(self.path, data, os.O_APPEND, 0o600)

    def read(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest last; a torn last line (power cut mid-write) is skipped, not fatal."""
        out = _read_jsonl(self.path)
        return out[-limit:] if limit else out

    def raw(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""


class PendingAudit:
    """Records the daemon has not sealed yet (JSON Lines in the console's state dir, fsynced).

    The local audit log is the console's; the registry sees only what the daemon seals. Records go here
    when they have no other way up (sign-ins, accounts) or their way failed (a ``reload`` while the daemon
    was down), and leave only once the daemon has answered ``audit`` for them: at-least-once, so a lost
    reply may send a batch twice (each record carries its own time and author to tell).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._hand_over = threading.Lock()
        """Held across peek -> send -> drop: two requests flushing at once would both send the same
        oldest records and then each drop that many, the second dropping records nobody sent."""

    MAX_VALUE_CHARS = 1000
    """Longer old/new values are cut (and say so): the daemon refuses records over 4 KiB, and one such
    record must not hold back every record behind it."""

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        data = _jsonl(self._bounded(r) for r in records)
        if not data:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            _write_synced(self.path, data, os.O_APPEND, 0o600)

    @classmethod
    def _bounded(cls, r: dict[str, Any]) -> dict[str, Any]:
        out = dict(r)
        for k in ("old", "new", "field", "who", "remote"):
            text = json.dumps(out.get(k), ensure_ascii=False)
            if len(text) > cls.MAX_VALUE_CHARS:
                out[k] = text[: cls.MAX_VALUE_CHARS] + f"... ({len(text)} characters, cut)"
        return out

    def peek(self, limit: int) -> list[dict[str, Any]]:
        """The oldest ``limit`` records (a torn last line is skipped until it is complete)."""
        with self._lock:
            return _read_jsonl(self.path)[:limit]

    def hand_over(self, send: Callable[[list[dict[str, Any]]], None], batch: int) -> int:
        """Sends the pending records oldest first, ``batch`` at a time, dropping each batch once ``send``
        returned; an exception from ``send`` stops it (the rest stay pending) and propagates. One hand-over
        at a time: a second caller waits, then finds what the first left (usually nothing). Returns how
        many records went."""
        sent = 0
        with self._hand_over:
            while records := self.peek(batch):
                send(records)
                self.drop(len(records))
                sent += len(records)
        return sent

    def drop(self, n: int) -> None:
        """Forgets the oldest ``n`` (sealed by the daemon); records added meanwhile stay."""
        with self._lock:
            rest = _read_jsonl(self.path)[n:]
            if not rest:
                self.path.unlink(missing_ok=True)
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            _write_synced(tmp, _jsonl(rest), os.O_TRUNC, 0o600)
            os.replace(tmp, self.path)
