"""Traffic statistics per interval, per lane and direction: what road authorities ask for besides fines.

Counts every pass (valid or not), mean and V85 (the 85th-percentile speed used to set limits), a 10 km/h
histogram and the share of valid passes over the limit. Pure bookkeeping: the daemon feeds it passes and
decisions and publishes :meth:`TrafficStats.snapshot` on the ``stats`` topic each interval.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from device.model import Decision, Pass

BIN_KMH = 10


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (same definition as numpy's default), None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class _Bucket:
    speeds: list[float] = field(default_factory=list)
    invalid: int = 0
    over_limit: int = 0
    violations: int = 0


class TrafficStats:
    """Thread-safe accumulator; :meth:`snapshot` returns the interval's figures and starts a new one."""

    def __init__(self, start_utc_ns: int = 0) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = defaultdict(_Bucket)
        self._start_utc_ns = start_utc_ns

    def add(self, p: Pass, d: Decision) -> None:
        key = (p.lane or "?", p.direction.value if p.direction else "unknown")
        with self._lock:
            b = self._buckets[key]
            if not p.valid:
                b.invalid += 1
                return
            b.speeds.append(d.corrected_kmh)
            if d.limit_kmh is not None and d.corrected_kmh > d.limit_kmh:
                b.over_limit += 1
            if d.violation:
                b.violations += 1

    def snapshot(self, now_utc_ns: int, *, reset: bool = True) -> dict:
        with self._lock:
            buckets, start = self._buckets, self._start_utc_ns
            if reset:
                self._buckets = defaultdict(_Bucket)
                self._start_utc_ns = now_utc_ns
        groups = []
        for (lane, direction), b in sorted(buckets.items()):
            hist: dict[str, int] = {}
            for v in b.speeds:
                lo = int(v // BIN_KMH) * BIN_KMH
                k = f"{lo}-{lo + BIN_KMH}"
                hist[k] = hist.get(k, 0) + 1
            n = len(b.speeds)
            groups.append(
                {
                    "lane": lane,
                    "direction": direction,
                    "count": n + b.invalid,
                    "valid": n,
                    "invalid": b.invalid,
                    "mean_kmh": (sum(b.speeds) / n) if n else None,
                    "v85_kmh": percentile(b.speeds, 85),
                    "max_kmh": max(b.speeds) if n else None,
                    "over_limit": b.over_limit,
                    "share_over_limit": (b.over_limit / n) if n else None,
                    "violations": b.violations,
                    "histogram_kmh": dict(sorted(hist.items(), key=lambda kv: int(kv[0].split("-")[0]))),
                }
            )
        return {"interval_start_utc_ns": start, "interval_end_utc_ns": now_utc_ns, "groups": groups}
