"""Form -> configuration file: parse typed values, validate the whole config, diff, write atomically.

Why patch the raw TOML instead of re-dumping the model: the file keeps only what the technician set
(defaults stay defaults, and future default changes still apply). Form field names ARE the config paths
(``site.lanes.0.limit_kmh``), so a validation error's location points straight at the field to show it
next to. Every text that reaches the file passes a type-specific check here first (ids, hosts, paths,
time zones); pydantic then validates the complete result; nothing half-valid is ever written.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import math
import re
import threading
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import tomli_w

from device import config as cfgmod

from .audit import AuditLog, AuditRecord, diff, utc_now

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CTRL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*$"
)
_MQTT_NAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,64}$")
_TOPIC = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*$")
_WINDOW = re.compile(
    r"^(?P<days>\*|[a-z]{3}(?:,[a-z]{3})*)\s+(?P<start>\d\d:\d\d)-(?P<end>\d\d:\d\d)\s+(?P<limit>\S+)$"
)


class FieldError(Exception):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class StaleForm(Exception):
    """The file changed since the form was rendered (another technician, or a hand edit)."""


# --------------------------------------------------------------------------- typed field parsers
def _text(max_len: int, optional: bool = False) -> Callable[[str], Any]:
    def conv(v: str) -> Any:
        v = v.strip()
        if not v and optional:
            return None
        if not v:
            raise ValueError("required")
        if _CTRL.search(v):
            raise ValueError("control or bidi-override characters are not allowed")
        if len(v) > max_len:
            raise ValueError(f"at most {max_len} characters")
        return v

    return conv


def _ident(max_len: int = 64) -> Callable[[str], str]:
    def conv(v: str) -> str:
        v = v.strip()
        if not _IDENT.match(v) or len(v) > max_len or ".." in v:
            raise ValueError(
                f"letters, digits, '_', '.', '-' only (at most {max_len}), not starting with a symbol"
            )
        return v

    return conv


def _float(lo: float | None = None, hi: float | None = None, optional: bool = False) -> Callable[[str], Any]:
    def conv(v: str) -> Any:
        v = v.strip().replace(",", ".")
        if not v and optional:
            return None
        try:
            x = float(v)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(x):
            raise ValueError("not a finite number")
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise ValueError(f"must be between {lo:g} and {hi:g}")
        return x

    return conv


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def conv(v: str) -> int:
        try:
            x = int(v.strip())
        except ValueError:
            raise ValueError("not a whole number") from None
        if not lo <= x <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return x

    return conv


def _bool(v: str) -> bool:
    if v not in ("0", "1", "on", ""):
        raise ValueError("not a yes/no value")
    return v in ("1", "on")


def _choice(*options: str) -> Callable[[str], str]:
    def conv(v: str) -> str:
        if v not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return v

    return conv


def _timezone(v: str) -> str:
    v = v.strip()
    # Membership, not ZoneInfo(v): the latter would try to open whatever path the string names.
    if v not in zoneinfo.available_timezones():
        raise ValueError("unknown time zone (use an IANA name such as Africa/Casablanca)")
    return v


def _host(v: str) -> str:
    v = v.strip()
    if _CTRL.search(v) or "%" in v:  # ip_address() takes anything as an IPv6 zone id ("fe80::1%...")
        raise ValueError("not a host name or IP address (no zone ids or control characters)")
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    if not _HOST.match(v):
        raise ValueError("not a host name or IP address")
    return v


def _mqtt_name(v: str) -> str | None:
    v = v.strip()
    if not v:
        return None
    if not _MQTT_NAME.match(v):
        raise ValueError("letters, digits and _ . @ : - only, at most 64")
    return v


def _topic(v: str) -> str:
    v = v.strip()
    if not _TOPIC.match(v) or ".." in v.split("/"):
        raise ValueError("levels of letters, digits, '_', '.', '-' separated by '/', no wildcards")
    return v


def _path(allowed: list[Path], keep: str | None = None) -> Callable[[str], str | None]:
    """``keep``: the path already in the file, accepted as it is even outside ``allowed`` (set by hand,
    or under an older, wider default): re-submitting a form must not fail on a field nobody changed,
    and keeping it gives the console nothing it did not have. Any new path must be under ``allowed``."""

    def conv(v: str) -> str | None:
        v = v.strip()
        if not v:
            return None
        if keep is not None and v == keep:
            return v
        if _CTRL.search(v) or "\\" in v:
            raise ValueError("control characters or backslashes are not allowed")
        p = PurePosixPath(v)
        if not p.is_absolute():
            raise ValueError("must be an absolute path")
        if ".." in p.parts or "." in v.split("/")[1:]:
            raise ValueError("'..' and '.' components are not allowed")
        if not any(PurePosixPath(a) in p.parents for a in allowed):  # a file in it, never the folder
            raise ValueError("must be under " + " or ".join(str(a) for a in allowed) + " (a file in it)")
        return str(p)

    return conv


def _roi(v: str) -> list[float] | None:
    v = v.strip()
    if not v:
        return None
    try:
        parts = [float(x) for x in v.replace(";", ",").split(",")]
    except ValueError:
        raise ValueError("four numbers x,y,w,h between 0 and 1") from None
    if len(parts) != 4 or not all(math.isfinite(x) and 0 <= x <= 1 for x in parts):
        raise ValueError("four numbers x,y,w,h between 0 and 1")
    x, y, w, h = parts
    if w <= 0 or h <= 0 or x + w > 1 + 1e-9 or y + h > 1 + 1e-9:
        raise ValueError("the region must lie inside the frame")
    return parts


def _windows(v: str) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(v.strip().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = _WINDOW.match(line)
        if not m:
            raise ValueError(f"line {n}: expected 'mon,tue 07:00-09:00 30' (days or *, start-end, limit)")
        days = list(DAYS) if m["days"] == "*" else m["days"].split(",")
        if any(d not in DAYS for d in days):
            raise ValueError(f"line {n}: days are {', '.join(DAYS)}")
        try:
            limit = float(m["limit"])
        except ValueError:
            raise ValueError(f"line {n}: limit is not a number") from None
        out.append({"days": days, "start": m["start"], "end": m["end"], "limit_kmh": limit})
    return out


def windows_text(windows: list[dict[str, Any]]) -> str:
    lines = []
    for w in windows:
        days = w.get("days", list(DAYS))
        d = "*" if list(days) == list(DAYS) else ",".join(days)
        lines.append(f"{d} {w.get('start', '00:00')}-{w.get('end', '24:00')} {w['limit_kmh']:g}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- form specs
def site_fields() -> dict[str, Callable[[str], Any]]:
    return {
        "site.name": _text(120),
        "site.name_local": _text(120, optional=True),
        "site.latitude": _float(-90, 90),
        "site.longitude": _float(-180, 180),
        "site.timezone": _timezone,
        "site.jurisdiction": _choice("MA", "SA", "EG", "MR"),
        "site.mount_angle_deg": _float(0, 45),
        "enforcement.tolerance.override": _bool,
        "enforcement.tolerance.fixed_kmh": _float(0, 20),
        "enforcement.tolerance.threshold_kmh": _float(0, 300),
        "enforcement.tolerance.percent": _float(0, 20),
    }


LANE_FIELDS: dict[str, Callable[[str], Any]] = {
    "id": _ident(16),
    "direction": _choice("inbound", "outbound"),
    "limit_kmh": _float(0, 300),
    "roi": _roi,
    "windows": _windows,
    "delete": _bool,
}


def uplink_fields(
    allowed_dirs: list[Path], current: cfgmod.Config | None = None
) -> dict[str, Callable[[str], Any]]:
    """``current``: the config the form was made from (its file paths may stay as they are)."""
    u = current.uplink if current is not None else None

    def p(name: str) -> Callable[[str], str | None]:
        obj: Any = u
        for part in name.split("."):
            obj = getattr(obj, part, None)
        return _path(allowed_dirs, keep=str(obj) if obj is not None else None)

    return {
        "uplink.enabled": _bool,
        "uplink.host": _host,
        "uplink.port": _int(1, 65535),
        "uplink.protocol": _choice("mqttv5", "mqttv311"),
        "uplink.client_id": _mqtt_name,
        "uplink.username": _mqtt_name,
        "uplink.password_file": p("password_file"),
        "uplink.topic_prefix": _topic,
        "uplink.keepalive_s": _int(5, 3600),
        "uplink.tls.enabled": _bool,
        "uplink.tls.ca_file": p("tls.ca_file"),
        "uplink.tls.cert_file": p("tls.cert_file"),
        "uplink.tls.key_file": p("tls.key_file"),
        "uplink.tls.insecure_skip_verify": _bool,
    }


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    if value is None:
        d.pop(keys[-1], None)
    else:
        d[keys[-1]] = value


_LANE_KEY = re.compile(r"^site\.lanes\.(\d{1,2})\.(.+)$")


def apply_form(
    raw: dict[str, Any], form: dict[str, str], fields: dict[str, Callable[[str], Any]]
) -> dict[str, Any]:
    """Returns a patched deep copy of ``raw``. Unknown form keys are refused (no writing arbitrary paths)."""
    new = copy.deepcopy(raw)
    errors: dict[str, str] = {}
    lanes_patch: dict[int, dict[str, Any]] = {}
    tol: dict[str, Any] = {}
    n_lanes = len(raw.get("site", {}).get("lanes") or [{}])
    add_row_empty = not form.get(f"site.lanes.{n_lanes}.id", "").strip()
    for key, value in form.items():
        if key.startswith("_") or key == "csrf":
            continue
        m = _LANE_KEY.match(key)
        if m and add_row_empty and int(m.group(1)) == n_lanes:
            continue  # the blank "add a lane" row
        conv = fields.get(key) or (LANE_FIELDS.get(m.group(2)) if m and "site.name" in fields else None)
        if conv is None:
            errors[key] = "unknown field"
            continue
        try:
            val = conv(value)
        except ValueError as exc:
            errors[key] = str(exc)
            continue
        if m:
            lanes_patch.setdefault(int(m.group(1)), {})[m.group(2)] = val
        elif key.startswith("enforcement.tolerance."):
            tol[key.rsplit(".", 1)[1]] = val
        else:
            _set(new, key, val)
    if errors:
        raise FieldError(errors)
    if tol:
        if tol.pop("override", None) is False:
            new.get("enforcement", {}).pop("tolerance", None)
        elif tol:
            base = dict(new.get("enforcement", {}).get("tolerance", {}))
            base.update(tol)
            new.setdefault("enforcement", {})["tolerance"] = base
    if lanes_patch:
        new.setdefault("site", {})["lanes"] = _patch_lanes(
            copy.deepcopy(raw.get("site", {}).get("lanes") or [{"id": "1", "limit_kmh": 60.0}]), lanes_patch
        )
    return new


def _patch_lanes(lanes: list[dict[str, Any]], patch: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    errors = {}
    out = list(lanes)
    for idx in sorted(patch):
        p = patch[idx]
        if idx < len(lanes):
            lane = out[idx]
        elif idx == len(lanes):  # the empty "add a lane" row
            if not p.get("id") or p.get("delete"):
                continue
            lane = {}
            out.append(lane)
        else:
            errors[f"site.lanes.{idx}.id"] = "no such lane"
            continue
        for k, v in p.items():
            if k == "delete":
                continue
            if v is None:
                lane.pop(k, None)
            else:
                lane[k] = v
    if errors:
        raise FieldError(errors)
    deleted = {id(out[i]) for i, p in patch.items() if p.get("delete") and i < len(lanes)}
    return [lane for lane in out if id(lane) not in deleted]


def config_errors(exc: cfgmod.ConfigError) -> dict[str, str]:
    """Splits :func:`device.config.parse`'s message into {dotted field path: reason}."""
    out: dict[str, str] = {}
    for line in str(exc).splitlines()[1:]:
        path, _, reason = line.strip().partition(": ")
        out[path] = reason or line.strip()
    return out or {"(config)": str(exc)}


# --------------------------------------------------------------------------- the write path
@dataclass(frozen=True)
class ChangeResult:
    records: list[AuditRecord]
    config_hash: str


class ConfigEditor:
    """The ONLY way the console changes configuration: validate -> audit -> atomic write."""

    def __init__(self, path: Path, audit: AuditLog):
        self.path = Path(path)
        self.audit = audit
        self._lock = threading.Lock()

    def read(self) -> tuple[bytes, dict[str, Any], cfgmod.Config]:
        data = self.path.read_bytes()
        try:  # a file broken by hand gets the console's config-error page, not "400 bad request"
            raw = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise cfgmod.ConfigError(f"{self.path}: not valid UTF-8 TOML: {exc}") from None
        return data, raw, cfgmod.parse(raw, source=str(self.path))

    @staticmethod
    def version(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def change(
        self,
        form: dict[str, str],
        fields: dict[str, Callable[[str], Any]],
        *,
        who: str,
        role: str,
        remote: str,
        base_version: str,
    ) -> ChangeResult:
        with self._lock:
            data, raw, old_cfg = self.read()
            if base_version != self.version(data):
                raise StaleForm()
            new_raw = apply_form(raw, form, fields)
            try:
                new_cfg = cfgmod.parse(new_raw, source=str(self.path))
            except cfgmod.ConfigError as exc:
                raise FieldError(config_errors(exc)) from None
            text = tomli_w.dumps(new_raw)
            # What the daemon will load is exactly what we validated: re-parse the serialised bytes.
            if cfgmod.config_hash(cfgmod.parse(tomllib.loads(text))) != cfgmod.config_hash(new_cfg):
                raise FieldError({"(config)": "value does not survive TOML serialisation"})
            when = utc_now()
            records = [
                AuditRecord(who=who, role=role, when=when, field=f, old=o, new=n, remote=remote)
                for f, o, n in diff(cfgmod.to_dict(old_cfg), cfgmod.to_dict(new_cfg))
            ]
            if not records:
                return ChangeResult([], cfgmod.config_hash(old_cfg))
            self.audit.append(records)  # intent first: no change without its record
            mode = self.path.stat().st_mode & 0o777
            try:
                cfgmod.atomic_write(self.path, text.encode("utf-8"), mode=mode)
            except OSError as exc:
                self.audit.append(
                    [
                        AuditRecord(
                            who, role, utc_now(), "(write)", None, str(exc), remote, action="write_failed"
                        )
                    ]
                )
                raise
            return ChangeResult(records, cfgmod.config_hash(new_cfg))
