"""Readings -> vehicle passes, with the plausibility checks that keep a speed off the wrong vehicle.

One pass is open per direction (an inbound and an outbound vehicle can be in the beam together: the
module reports them as separate objects of opposite sign). A pass ends when its direction has been
silent for ``gap_ms``. Within one report, the strongest object of a direction (lowest ``obj_index``)
is the pass's measurement; weaker objects of the same direction are kept in ``readings`` but only used
to detect a second target.

Plausibility (the pass is kept but ``valid=False`` with reasons, never guessed):

* ``too_few_readings``: fewer than ``min_readings`` measurements;
* ``implausible_acceleration``: between measurements at least 50 ms apart, |dv/dt| > ``max_accel_mps2``
  (the 50 ms floor stops USB batching, which gives several lines one receive time, from faking it);
* ``two_targets``: a weaker object of the same direction differing by more than ``two_target_kmh``;
* ``spread``: residuals of the measurements around a straight line in time span more than
  ``max_spread_kmh`` (a steady deceleration is not a spread; jumping between two vehicles is);
* ``too_long``: the pass lasted more than ``max_pass_s`` (it is cut there, so memory stays bounded);
* ``too_long_continuation``: the pass opened where a too-long one was cut, and its direction has not
  been silent for ``gap_ms`` since. It is the same unseparated stream (a platoon, a stuck target), so
  its peak belongs to no particular vehicle; the mark carries over further cuts until a real gap.
"""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass, field

from device.config import LaneConfig, TrackerConfig
from device.model import Direction, Pass, Reading

_MIN_ACCEL_DT_NS = 50_000_000


@dataclass
class _Open:
    direction: Direction
    primary: list[Reading] = field(default_factory=list)
    all: list[Reading] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)
    continuation: bool = False
    """Opened by a ``max_pass_s`` cut rather than after a ``gap_ms`` silence."""
    last_t: int = 0
    last_report: tuple[int, float | None, int] = (-1, None, -1)
    """(t_mono_ns, sensor_time, obj_index) of the last reading: a new report starts when a time changes
    or the object index does not increase (lines batched in one read share ``t_mono_ns``)."""


class PassTracker:
    def __init__(self, cfg: TrackerConfig, lanes: list[LaneConfig]) -> None:
        self.cfg = cfg
        self.lanes = list(lanes)
        self._open: dict[Direction, _Open] = {}
        self._gap_ns = cfg.gap_ms * 1_000_000
        self._max_ns = int(cfg.max_pass_s * 1e9)
        self.ignored = 0
        """Readings without a direction (zero speed): they cannot belong to a pass."""

    def push(self, r: Reading) -> list[Pass]:
        done = self.flush(r.t_mono_ns)
        d = r.direction
        if d is None:
            self.ignored += 1
            return done
        op = self._open.get(d)
        continuation = False
        if op is not None and r.t_mono_ns - op.primary[0].t_mono_ns > self._max_ns:
            op.reasons.add("too_long")
            done.append(self._close(op))
            op = None
            continuation = True  # no gap: this reading continues the stream that was just cut
        if op is None:
            op = self._open[d] = _Open(direction=d, continuation=continuation)
        op.all.append(r)
        # A new report for this direction: the first reading of it is the strongest object.
        last_t, last_st, last_idx = op.last_report
        is_new_report = (
            not op.primary or r.t_mono_ns != last_t or r.sensor_time != last_st or r.obj_index <= last_idx
        )
        if is_new_report:
            self._check_accel(op, r)
            op.primary.append(r)
        elif abs(r.speed_kmh - op.primary[-1].speed_kmh) > self.cfg.two_target_kmh:
            op.reasons.add("two_targets")
        op.last_report = (r.t_mono_ns, r.sensor_time, r.obj_index)
        op.last_t = r.t_mono_ns
        return done

    def flush(self, now_mono_ns: int) -> list[Pass]:
        done = []
        for op in list(self._open.values()):
            if now_mono_ns - op.last_t > self._gap_ns:
                done.append(self._close(op))
        return done

    def close(self) -> list[Pass]:
        done = [self._close(op) for op in list(self._open.values())]
        return sorted(done, key=lambda p: p.start_mono_ns)

    # ------------------------------------------------------------------ internals

    def _check_accel(self, op: _Open, r: Reading) -> None:
        for prev in reversed(op.primary):
            dt = r.t_mono_ns - prev.t_mono_ns
            if dt >= _MIN_ACCEL_DT_NS:
                accel = abs(r.speed_kmh - prev.speed_kmh) / 3.6 / (dt / 1e9)
                if accel > self.cfg.max_accel_mps2:
                    op.reasons.add("implausible_acceleration")
                return

    def _close(self, op: _Open) -> Pass:
        del self._open[op.direction]
        prim = op.primary
        speeds = [x.speed_kmh for x in prim]
        peak = max(prim, key=lambda x: x.speed_kmh)
        reasons = set(op.reasons)
        if op.continuation:
            reasons.add("too_long_continuation")
        if len(prim) < self.cfg.min_readings:
            reasons.add("too_few_readings")
        spread = _residual_spread(prim)
        if spread > self.cfg.max_spread_kmh:
            reasons.add("spread")
        lane = next((ln.id for ln in self.lanes if ln.direction == op.direction.value), None)
        return Pass(
            pass_id=str(uuid.uuid4()),
            start_mono_ns=op.all[0].t_mono_ns,
            end_mono_ns=op.all[-1].t_mono_ns,
            direction=op.direction,
            readings=tuple(op.all),
            peak_kmh=peak.speed_kmh,
            peak_mono_ns=peak.t_mono_ns,
            median_kmh=statistics.median(speeds),
            spread_kmh=spread,
            lane=lane,
            valid=not reasons,
            invalid_reasons=tuple(sorted(reasons)),
        )


def _residual_spread(prim: list[Reading]) -> float:
    """Range (max - min) of the residuals around the least-squares line speed(t); 0 for < 3 points."""
    n = len(prim)
    if n < 3:
        return (max(x.speed_kmh for x in prim) - min(x.speed_kmh for x in prim)) if n == 2 else 0.0
    t0 = prim[0].t_mono_ns
    ts = [(x.t_mono_ns - t0) / 1e9 for x in prim]
    vs = [x.speed_kmh for x in prim]
    mt = sum(ts) / n
    mv = sum(vs) / n
    sxx = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / sxx if sxx > 0 else 0.0
    res = [v - (mv + slope * (t - mt)) for t, v in zip(ts, vs, strict=True)]
    return max(res) - min(res)
