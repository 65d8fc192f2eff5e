"""OmniPreSense OPS24x (OPS241-A / OPS242-A / OPS243-A) Doppler radar driver: init commands and parser.

The module speaks line-oriented ASCII (see docs/radar.md and OmniPreSense AN-010 "API Interface"):

* plain signed numbers, positive = inbound (``-12.3``); with ``OT`` ``time,speed``; with ``OT`` + ``OM``
  ``time,magnitude,speed``; with ``OU`` the unit first (``"kmph",-12.3``);
* JSON (``OJ``): ``{"speed":-12.3}`` or ``{"speed":"-12.3"}``, optionally ``unit``, ``direction``,
  ``time``, ``magnitude``; multi-object reports (``O3``..``O9``) carry arrays of speeds / magnitudes;
* command replies and banners, also JSON (``{"Product":"OPS243"}``, ``{"Units":"km-per-hr"}``): not
  readings, but a units reply changes how later unit-less numbers are read;
* blank reports (``BL``/``BS``/``BZ``: empty line, space or ``0``) when nothing passes the filters.

Nothing the wire can carry crashes the parser: CRLF, partial lines across reads, NUL and other garbage,
over-long lines and non-finite numbers are counted per reason in :attr:`Ops24xDriver.stats` and skipped.
Numbers are validated with a strict regex (``float()`` alone would accept ``nan``, ``1_0``, ``inf``).
Speeds are converted to km/h without rounding; the signed value as sent and its unit stay in the Reading.
"""

from __future__ import annotations

import dataclasses
import json
import json.scanner
import re
from typing import TYPE_CHECKING, Any

from device.model import Direction, Reading

if TYPE_CHECKING:
    from device.config import RadarConfig

#: km/h per unit (exact definitions: 1 mph = 1.609344 km/h, 1 ft = 0.3048 m).
TO_KMH: dict[str, float] = {"mps": 3.6, "kmh": 1.0, "mph": 1.609344, "fps": 1.09728, "cmps": 0.036}

MAX_KMH = 1000.0
"""Faster than any sampling rate of the module can report: a corrupted number, not a vehicle."""
MAX_SENSOR_TIME_S = 1e9
"""The module's ``OT`` clock counts seconds since power-on: a time below 0 or past about 31 years is a
corrupted number (``1e300`` is finite, and its differences overflowed the tracker's arithmetic)."""

#: every unit spelling the module uses (units replies, OU output, JSON ``unit``) -> canonical name.
UNIT_ALIASES: dict[str, str] = {
    "m-per-sec": "mps",
    "mps": "mps",
    "m/s": "mps",
    "km-per-hr": "kmh",
    "kmph": "kmh",
    "kph": "kmh",
    "kmh": "kmh",
    "km/h": "kmh",
    "mph": "mph",
    "miles-per-hr": "mph",
    "ft-per-sec": "fps",
    "fps": "fps",
    "ft/s": "fps",
    "cm-per-sec": "cmps",
    "cmps": "cmps",
    "cm/s": "cmps",
}
UNIT_COMMANDS: dict[str, bytes] = {"mps": b"UM", "kmh": b"UK", "mph": b"US", "fps": b"UF", "cmps": b"UC"}
#: the module's reply to a units command / ``U?`` and the spelling it uses in ``OU`` output.
UNIT_REPLIES: dict[str, str] = {
    "mps": "m-per-sec",
    "kmh": "km-per-hr",
    "mph": "mph",
    "fps": "ft-per-sec",
    "cmps": "cm-per-sec",
}
OU_NAMES: dict[str, str] = {"mps": "mps", "kmh": "kmph", "mph": "mph", "fps": "fps", "cmps": "cmps"}

#: sampling-rate commands -> samples/s (AN-010). The Doppler FFT sees at most fs/2, i.e. a radial
#: speed of fs * wavelength / 4 (24.125 GHz: 12.43 mm) -> SX (10 ksps) reaches ~112 km/h, S2 ~224 km/h.
SAMPLE_RATES: dict[str, int] = {"S1": 1000, "SV": 5000, "SX": 10000, "S2": 20000, "SL": 50000, "SC": 100000}
WAVELENGTH_M = 299_792_458.0 / 24.125e9


def max_speed_kmh(sample_rate_cmd: str) -> float:
    return _max_kmh(SAMPLE_RATES[sample_rate_cmd])


def _max_kmh(samples_per_s: int) -> float:
    """Unambiguous maximum speed (km/h) at a sampling rate: the Doppler shift of fs/2."""
    return samples_per_s * WAVELENGTH_M / 4 * 3.6


POWER_ON_RATE = "SX"
"""The module's sampling rate after power-on: what it runs at when the rate command was lost."""

NEAR_ALIAS_FRACTION = 0.9
"""A reading at or above this fraction of the rate's unambiguous maximum may be an aliased faster
vehicle of the other direction (a sampler folds ``v`` above the maximum to ``v - 2 x max``): it is
flagged ``near_alias_limit`` and its pass is not enforceable. The true speed is never guessed."""


def required_max_speed_kmh(max_limit_kmh: float) -> float:
    """The unambiguous maximum a site with this highest limit needs (``auto`` and an explicit rate)."""
    return max(2.0 * max_limit_kmh + 40.0, (max_limit_kmh + 60.0) * 1.1)


def pick_sample_rate(max_limit_kmh: float) -> str:
    """Slowest rate (finest speed resolution) whose unambiguous maximum is at least
    ``max(2 x limit + 40, (limit + 60) x 1.1)`` km/h.

    Enforcement must see offences of 50 km/h over the limit and more (Morocco's court band), and a
    vehicle faster than the maximum aliases into the opposite direction: the margin keeps ordinary
    offenders far below the ``near_alias_limit`` zone (40 km/h site: S2, ~224 km/h, not SX's ~112).
    """
    need = required_max_speed_kmh(max_limit_kmh)
    for cmd in ("SX", "S2", "SL", "SC"):
        if max_speed_kmh(cmd) >= need:
            return cmd
    return "SC"


def _rate_value(x: Any) -> int | None:
    """Samples/s from a ``SamplingRate`` reply value (number or quoted number), None if not one."""
    if type(x) is str and _NUM_STR.fullmatch(x):
        x = float(x)
    if type(x) in (int, float) and x == x and 0 < x < 1e7:
        return round(x)
    return None


def _fmt(v: float) -> bytes:
    return (f"{v:.2f}".rstrip("0").rstrip(".") or "0").encode()


_NUM = re.compile(rb"[ \t]*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?)[ \t\r]*")
_NUM_STR = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?\s*", re.ASCII)
_PLAIN_START = frozenset(b"+-.0123456789 \t")


_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # C scanner without json.loads' Python wrappers
_DIRS = {"inbound": Direction.INBOUND, "outbound": Direction.OUTBOUND}


class _Bad(Exception):
    """A line that is not a reading; ``args[0]`` is the skip reason."""


class Ops24xDriver:
    """Stateful OPS24x line parser (one instance per serial connection; not thread-safe)."""

    name = "ops24x"

    def __init__(self, *, units: str | None = "mps", objects: int = 1, max_line_bytes: int = 1024) -> None:
        """``units``: how unit-less numbers are read until the module says otherwise (``None`` = skip
        them as ``units_unknown`` until a units reply arrives; the module powers up in m/s)."""
        if units is not None and units not in TO_KMH:
            raise ValueError(f"unknown units {units!r}; allowed: {sorted(TO_KMH)}")
        self._initial_units = units
        self.units = units
        self.objects = objects
        self.max_line_bytes = max_line_bytes
        self._buf = b""
        self._discarding = False
        self._counts: dict[str, int] = {"lines": 0, "readings": 0, "replies": 0, "blank": 0}
        self._skips: dict[str, int] = {}
        self.last_reply: dict[str, Any] | None = None
        self.product: str | None = None
        self.confirmed_units: str | None = None
        """Units named by the module's last ``{"Units":...}`` reply since :meth:`reset` (None: none yet)."""
        self.sample_rate: str | None = None
        """Sampling-rate command of the last :meth:`init_commands` (None: not configured yet)."""
        self.confirmed_rate: int | None = None
        """Samples/s named by the module's last ``{"SamplingRate":...}`` reply (command reply or the
        ``??`` banner) since :meth:`reset` (None: none yet)."""
        self._set_alias()

    # ------------------------------------------------------------------ configuration

    def init_commands(self, cfg: RadarConfig, max_limit_kmh: float) -> list[bytes]:
        """Units, JSON output with time and magnitude, object count, minimum speed (in the module's
        units), direction filter and a sampling rate fast enough for the site. ``??`` last: its banner
        identifies the module in the log."""
        unit = cfg.units
        rate = cfg.sample_rate if cfg.sample_rate != "auto" else pick_sample_rate(max_limit_kmh)
        self.sample_rate = rate
        self._set_alias()
        direction = {"both": b"R|", "inbound": b"R+", "outbound": b"R-"}[cfg.direction_filter]
        cmds = [
            UNIT_COMMANDS[unit],
            b"OJ",
            b"OS",
            b"OT",
            b"OM",
            b"O%d" % cfg.objects,
            b"R>" + _fmt(cfg.min_speed_kmh / TO_KMH[unit]),
            direction,
            rate.encode(),
            b"??",
        ]
        return [c + b"\r\n" for c in cmds]

    def reset(self) -> None:
        self._buf = b""
        self._discarding = False
        self.units = self._initial_units
        self.confirmed_units = None
        self.confirmed_rate = None
        self._set_alias()

    @property
    def rate_confirmed(self) -> bool:
        """The module reported the configured sampling rate (always False before :meth:`init_commands`)."""
        return self.sample_rate is not None and self.confirmed_rate == SAMPLE_RATES[self.sample_rate]

    def _set_alias(self) -> None:
        """The maximum and the flag threshold readings are judged against (kept, not recomputed per line)."""
        self._alias_kmh = self._alias_max()
        self._alias_flag_kmh = NEAR_ALIAS_FRACTION * self._alias_kmh

    def _alias_max(self) -> float:
        """Unambiguous maximum (km/h) the readings are judged against: the rate the module reported,
        else the slower of the configured and the power-on rate (the command may not have taken)."""
        if self.confirmed_rate is not None:
            return _max_kmh(self.confirmed_rate)
        return _max_kmh(min(SAMPLE_RATES[self.sample_rate or POWER_ON_RATE], SAMPLE_RATES[POWER_ON_RATE]))

    @property
    def stats(self) -> dict[str, int]:
        out = dict(self._counts)
        skips = dict(self._skips)  # one C-level copy: the reader thread may add a reason meanwhile
        out["skipped"] = sum(skips.values())
        for k, v in skips.items():
            out[f"skipped_{k}"] = v
        return out

    def _skip(self, reason: str) -> None:
        self._skips[reason] = self._skips.get(reason, 0) + 1

    # ------------------------------------------------------------------ framing

    def feed(self, data: bytes, t_mono_ns: int) -> list[Reading]:
        buf = self._buf + data if self._buf else data
        out: list[Reading] = []
        start = 0
        maxlen = self.max_line_bytes
        find = buf.find
        counts = self._counts
        while True:
            nl = find(b"\n", start)
            if nl < 0:
                break
            counts["lines"] += 1
            if self._discarding:
                self._discarding = False
                self._skip("too_long")
            elif nl - start > maxlen:
                self._skip("too_long")
            else:
                n = len(out)
                self._line(buf[start:nl], t_mono_ns, out)
                flag = self._alias_flag_kmh  # judged with the rate known when this line arrived
                for i in range(n, len(out)):
                    if out[i].speed_kmh >= flag:  # near the top: maybe a faster car folded into this sign
                        out[i] = dataclasses.replace(out[i], alias_max_kmh=self._alias_kmh)
            start = nl + 1
        rest = buf[start:] if start else buf
        if self._discarding:
            rest = b""
        elif len(rest) > maxlen:  # no newline in sight: drop it now rather than grow without bound
            self._discarding = True
            rest = b""
        self._buf = rest
        counts["readings"] += len(out)
        return out

    # ------------------------------------------------------------------ one line

    def _line(self, line: bytes, t: int, out: list[Reading]) -> None:
        if not line:
            self._counts["blank"] += 1
            return
        first = line[0]
        if first in _PLAIN_START:
            m = _NUM.fullmatch(line)
            if m is not None:  # fast path: the module's default output, one signed number
                units = self.units
                if units is None:
                    self._skip("units_unknown")
                    return
                v = float(m.group(1))
                if v - v != 0.0:
                    self._skip("non_finite")
                    return
                if v == 0.0:
                    self._counts["blank"] += 1
                    return
                kmh = abs(v) * TO_KMH[units]
                if kmh > MAX_KMH:
                    self._skip("out_of_range")
                    return
                out.append(
                    Reading(
                        t,
                        kmh,
                        Direction.INBOUND if v > 0 else Direction.OUTBOUND,
                        None,
                        None,
                        v,
                        units,
                        0,
                    )
                )
                return
        try:
            if first == 0x7B:  # '{'
                self._json(line, t, out)
            else:
                stripped = line.strip()
                if not stripped:
                    self._counts["blank"] += 1
                    return
                self._csv(stripped, t, out)
        except _Bad as bad:
            self._skip(bad.args[0])

    def _csv(self, line: bytes, t: int, out: list[Reading]) -> None:
        unit = self.units
        fields = line.split(b",")
        if fields[0].startswith(b'"'):  # OU: "kmph",-12.3
            name = fields[0].strip(b'"').decode("ascii", "replace").lower()
            if name not in UNIT_ALIASES:
                raise _Bad("unknown_unit")
            unit = UNIT_ALIASES[name]
            fields = fields[1:]
        nums: list[float] = []
        for f in fields:
            m = _NUM.fullmatch(f)
            if m is None:
                raise _Bad("garbage")
            nums.append(float(m.group(1)))
        n = len(nums)
        if n == 0:
            raise _Bad("garbage")
        sensor_time: float | None = None
        mags: list[float | None]
        if n == 1:
            speeds, mags = nums, [None]
        elif n == 2:  # OT: time,speed
            sensor_time, speeds, mags = nums[0], nums[1:], [None]
        elif n == 3:  # OT + OM: time,magnitude,speed
            sensor_time, mags, speeds = nums[0], [nums[1]], nums[2:]
        elif n % 2 == 1:  # multi-object with OT + OM: time, mag1..magk, speed1..speedk
            k = (n - 1) // 2
            sensor_time, mags, speeds = nums[0], list(nums[1 : 1 + k]), nums[1 + k :]
        else:  # multi-object with OM: mag1..magk, speed1..speedk
            k = n // 2
            mags, speeds = list(nums[:k]), nums[k:]
        self._emit(t, speeds, mags, [None] * len(speeds), sensor_time, unit, out)

    def _json(self, line: bytes, t: int, out: list[Reading]) -> None:
        try:
            text = line.decode("utf-8")
            d, end = _SCAN(text, 0)
        except (ValueError, RecursionError, StopIteration):
            raise _Bad("bad_json") from None
        if end != len(text) and text[end:].strip(" \t\r"):
            raise _Bad("bad_json")
        if type(d) is not dict:
            raise _Bad("bad_json")
        if "speed" not in d:
            self._reply(d)
            return
        raw = d["speed"]
        if type(raw) is not list and "unit" not in d:
            self._json_single(d, raw, t, out)
            return
        unit = self.units
        if "unit" in d:
            u = d["unit"]
            if not isinstance(u, str) or u.strip().lower() not in UNIT_ALIASES:
                raise _Bad("unknown_unit")
            unit = UNIT_ALIASES[u.strip().lower()]
        raw = d["speed"]
        many = isinstance(raw, list)
        speeds = [x if type(x) is float else _num(x) for x in raw] if many else [_num(raw)]
        mags_raw = d.get("magnitude")
        if mags_raw is None:
            mags: list[float | None] = [None] * len(speeds)
        else:
            ml = mags_raw if isinstance(mags_raw, list) else [mags_raw]
            if len(ml) != len(speeds):
                raise _Bad("mismatched_arrays")
            mags = [x if type(x) is float else _num(x) for x in ml]
        dirs_raw = d.get("direction")
        dirs: list[Direction | None]
        if dirs_raw is None:
            dirs = [None] * len(speeds)
        else:
            dl = dirs_raw if isinstance(dirs_raw, list) else [dirs_raw] * len(speeds)
            if len(dl) != len(speeds):
                raise _Bad("mismatched_arrays")
            dirs = []
            for x in dl:
                if x is None:
                    dirs.append(None)
                elif isinstance(x, str) and x.strip().lower() in _DIRS:
                    dirs.append(_DIRS[x.strip().lower()])
                else:
                    raise _Bad("bad_direction")
        tm = d.get("time")
        sensor_time = None if tm is None else _num(tm)
        if not speeds:
            self._counts["blank"] += 1
            return
        if dirs_raw is not None:
            signed = any(v < 0 for v in speeds)
            for v, dr in zip(speeds, dirs, strict=True):
                if _conflicts(v, dr, signed):
                    raise _Bad("direction_conflict")
        self._emit(t, speeds, mags, dirs, sensor_time, unit, out)

    def _json_single(self, d: dict[str, Any], raw: Any, t: int, out: list[Reading]) -> None:
        """The common case (one object, module units) without the list machinery of the general path."""
        v = _num(raw)
        mg = d.get("magnitude")
        mag = None if mg is None else _num(mg)
        tm = d.get("time")
        sensor_time = None if tm is None else _num(tm)
        dr = d.get("direction")
        if dr is None:
            direction = Direction.INBOUND if v > 0 else Direction.OUTBOUND
        elif type(dr) is str and dr.strip().lower() in _DIRS:
            direction = _DIRS[dr.strip().lower()]
            if v < 0 and direction is Direction.INBOUND:
                raise _Bad("direction_conflict")
        else:
            raise _Bad("bad_direction")
        units = self.units
        if units is None:
            raise _Bad("units_unknown")
        if (
            v - v != 0.0
            or (mag is not None and mag - mag != 0.0)
            or (tm is not None and sensor_time - sensor_time != 0.0)
        ):
            raise _Bad("non_finite")
        if tm is not None and not 0.0 <= sensor_time <= MAX_SENSOR_TIME_S:  # type: ignore[operator]
            raise _Bad("out_of_range")
        if v == 0.0:
            self._counts["blank"] += 1
            return
        kmh = abs(v) * TO_KMH[units]
        if kmh > MAX_KMH:
            raise _Bad("out_of_range")
        out.append(Reading(t, kmh, direction, mag, sensor_time, v, units, 0))

    def _reply(self, d: dict[str, Any]) -> None:
        self._counts["replies"] += 1
        self.last_reply = d
        if "Units" in d:
            u = d["Units"]
            if isinstance(u, str) and u.strip().lower() in UNIT_ALIASES:
                self.units = self.confirmed_units = UNIT_ALIASES[u.strip().lower()]
        if "SamplingRate" in d:
            rate = _rate_value(d["SamplingRate"])
            if rate is not None:
                self.confirmed_rate = rate
                self._set_alias()
        if isinstance(d.get("Product"), str):
            self.product = d["Product"]

    def _emit(
        self,
        t: int,
        speeds: list[float],
        mags: list[float | None],
        dirs: list[Direction | None],
        sensor_time: float | None,
        unit: str | None,
        out: list[Reading],
    ) -> None:
        if unit is None:
            raise _Bad("units_unknown")
        # One pass for the finiteness check: a non-finite sum means some value may be; then look closely.
        total = sum(speeds) + (sensor_time or 0.0)
        for m in mags:
            if m is not None:
                total += m
        if total - total != 0.0:
            for v in (*speeds, *mags, sensor_time):
                if v is not None and v - v != 0.0:
                    raise _Bad("non_finite")
        if sensor_time is not None and not 0.0 <= sensor_time <= MAX_SENSOR_TIME_S:
            raise _Bad("out_of_range")
        k = TO_KMH[unit]
        got = []
        append = got.append
        for i, v in enumerate(speeds):
            if v == 0.0:
                continue
            kmh = abs(v) * k
            if kmh > MAX_KMH:
                raise _Bad("out_of_range")
            append(
                Reading(
                    t,
                    kmh,
                    dirs[i] or (Direction.INBOUND if v > 0 else Direction.OUTBOUND),
                    mags[i],
                    sensor_time,
                    v,
                    unit,
                    i,
                )
            )
        if not got:
            self._counts["blank"] += 1
        out.extend(got)


def _conflicts(v: float, direction: Direction | None, signed: bool) -> bool:
    """Whether a report's ``direction`` contradicts the sign of its speed ``v`` (positive = inbound).

    A negative speed is signed, so it must not be called inbound. A positive one called outbound is a
    contradiction only in a report that is visibly signed (``signed``: some speed of it is negative):
    firmware that sends unsigned speeds with a direction beside them is read by that direction. A report
    that contradicts itself is skipped whole: which vehicle went which way is part of the evidence."""
    if direction is Direction.INBOUND:
        return v < 0
    if direction is Direction.OUTBOUND:
        return v > 0 and signed
    return False


def _num(x: Any) -> float:
    """A JSON speed/magnitude/time: a number or a quoted number (both occur in OPS firmware)."""
    tx = type(x)
    if tx is float:
        return x
    if tx is int:
        try:
            return float(x)
        except OverflowError:  # a JSON integer with hundreds of digits
            raise _Bad("non_finite") from None
    if tx is str and _NUM_STR.fullmatch(x):
        return float(x)
    raise _Bad("bad_number")
