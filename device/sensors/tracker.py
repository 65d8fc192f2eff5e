"""Readings -> vehicle passes, with the plausibility checks that keep a speed off the wrong vehicle.

One pass is open per direction (an inbound and an outbound vehicle can be in the beam together: the
module reports them as separate objects of opposite sign). A pass ends when its direction has been
silent for ``gap_ms``. Within one report, the strongest object of a direction (lowest ``obj_index``)
is the pass's measurement; weaker objects of the same direction are kept in ``readings`` but only used
to detect a second target.

Time between readings is measured on the module's own clock (``sensor_time``, from the ``OT`` output
the init turns on) when both readings carry it, else on the host receive time: a host stall delivers
the lines it held back all at once with one receive time, which must not look like a silence.

Plausibility (the pass is kept but ``valid=False`` with reasons, never guessed):

* ``too_few_readings``: fewer than ``min_readings`` measurements;
* ``implausible_acceleration``: between measurements at least 50 ms apart, |dv/dt| > ``max_accel_mps2``
  (the 50 ms floor stops USB batching, which gives several lines one receive time, from faking it);
* ``two_targets``: a weaker object of the same direction differing by more than ``two_target_kmh``;
* ``spread``: residuals of the measurements around a straight line in time span more than
  ``max_spread_kmh`` (a steady deceleration is not a spread; jumping between two vehicles is);
* ``step_after_silence``: a silence longer than ``SILENCE_PERIODS`` report periods (but shorter than
  ``gap_ms``, or the pass would have ended) across which the measured speed changes by more than the
  metrological tolerance (``STEP_KMH`` / ``STEP_PERCENT``): a following vehicle may have taken over
  (car A at 80, 300 ms of silence, car B at 70 would otherwise be one pass with A's peak and B's end);
* ``near_alias_limit``: some reading of the pass (any object) lay in the top 10 % of the sampling
  rate's unambiguous range (flagged by the driver in ``Reading.alias_max_kmh``): a faster vehicle of the
  other direction folds into exactly that zone, so neither the speed nor the direction can be trusted;
* ``too_long``: the pass lasted more than ``max_pass_s`` (it is cut there, so memory stays bounded);
* ``too_long_continuation``: the pass opened where a too-long one was cut, and its direction has not
  been silent for ``gap_ms`` since. It is the same unseparated stream (a platoon, a stuck target), so
  its peak belongs to no particular vehicle; the mark carries over further cuts until a real gap;
* ``stall_continuation``: the silence that opened this pass may have been a host stall, not a gap on
  the road: the module's clock shows less than ``gap_ms`` since the previous pass of the direction
  (closed by :meth:`PassTracker.flush` on host time while the lines were held back), or, without
  module times, the first readings after the silence arrived in one batch. The vehicle's speed is
  already in the previous pass; this piece must not be enforced a second time.
"""

from __future__ import annotations

import itertools
import statistics
import uuid
from dataclasses import dataclass, field

from device.config import LaneConfig, TrackerConfig
from device.model import Direction, Pass, Reading

_MIN_ACCEL_DT_NS = 50_000_000

SILENCE_PERIODS = 1.5
"""A silence inside a pass longer than this many report periods (the lower quartile of the intervals
between its measurements: dropped reports lengthen the median, which let a 150 ms silence between two
cars pass at 50 ms reports) is a place where another vehicle may have taken over the measurement. One
dropped report is such a silence too: across it a car's own speed changes by less than the tolerance
unless it brakes harder than about 8 m/s2."""
STEP_KMH = 3.0
STEP_PERCENT = 3.0
"""Across such a silence a speed change above ``max(STEP_KMH, STEP_PERCENT % of the higher speed)``
marks the pass ``step_after_silence``. The numbers are the usual metrological tolerance (3 km/h, 3 %
above 100 km/h): a change bigger than the tolerance could put a different vehicle's speed in the
evidence by more than the tolerance absorbs. Deliberately not configurable."""

_NO_GAP = -1
"""Sentinel from :func:`_dt_ns` for a module clock that went backwards (module reset): a break."""


def _dt_ns(prev: Reading, r: Reading) -> int:
    """Time from ``prev`` to ``r``: on the module clock when both carry it, else on host receive time.
    A module clock running backwards (power cycle), or a difference no clock can have (garbage such as
    ``1e300`` passed the parser as a finite time), returns ``_NO_GAP``: treat as an unbounded gap."""
    if prev.sensor_time is not None and r.sensor_time is not None:
        d = (r.sensor_time - prev.sensor_time) * 1e9
        return round(d) if 0 <= d <= _MAX_SENSOR_DT_NS else _NO_GAP
    return r.t_mono_ns - prev.t_mono_ns


_MAX_SENSOR_DT_NS = 1e18
"""About 32 years: a larger (or non-finite) module-clock difference is garbage, not a gap to round."""


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
    after_host_gap: bool = False
    """Opened after a silence seen only on host time (no module times): a batched start is suspect."""


class PassTracker:
    def __init__(self, cfg: TrackerConfig, lanes: list[LaneConfig]) -> None:
        self.cfg = cfg
        self.lanes = list(lanes)
        self._open: dict[Direction, _Open] = {}
        self._gap_ns = cfg.gap_ms * 1_000_000
        self._max_ns = int(cfg.max_pass_s * 1e9)
        self._ended: dict[Direction, Reading] = {}
        """Last reading of the previous pass of each direction that ended on a silence."""
        self.ignored = 0
        """Readings without a direction (zero speed): they cannot belong to a pass."""

    def set_lanes(self, lanes: list[LaneConfig]) -> None:
        """Replace the lanes (config reload). Passes still open take their lane when they close, from
        the new list: the enforcer checks the lane's direction anyway."""
        self.lanes = list(lanes)

    def push(self, r: Reading) -> list[Pass]:
        done = []
        for op in list(self._open.values()):  # silences measured against this reading's time
            dt = _dt_ns(op.all[-1], r)
            if dt == _NO_GAP or dt > self._gap_ns:
                done.append(self._close(op, ended_on_silence=True))
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
            self._check_stall(op, r)
        op.all.append(r)
        if r.alias_max_kmh is not None:  # near the rate's maximum: may be a folded faster car
            op.reasons.add("near_alias_limit")
        # A new report for this direction: the first reading of it is the strongest object.
        last_t, last_st, last_idx = op.last_report
        is_new_report = (
            not op.primary or r.t_mono_ns != last_t or r.sensor_time != last_st or r.obj_index <= last_idx
        )
        if is_new_report:
            if op.after_host_gap and op.primary and r.t_mono_ns == op.primary[0].t_mono_ns:
                op.reasons.add("stall_continuation")  # two reports in the first read after the silence
            self._check_accel(op, r)
            op.primary.append(r)
        elif abs(r.speed_kmh - op.primary[-1].speed_kmh) > self.cfg.two_target_kmh:
            op.reasons.add("two_targets")
        op.last_report = (r.t_mono_ns, r.sensor_time, r.obj_index)
        op.last_t = r.t_mono_ns
        return done

    def flush(self, now_mono_ns: int) -> list[Pass]:
        """Closes passes silent for ``gap_ms`` of host time. Call it with the receive time of the last
        reading delivered while more readings are still queued, not with the wall clock: lines held
        back by a stall would otherwise end a pass that is still going on."""
        done = []
        for op in list(self._open.values()):
            if now_mono_ns - op.last_t > self._gap_ns:
                done.append(self._close(op, ended_on_silence=True))
        return done

    def close(self) -> list[Pass]:
        done = [self._close(op) for op in list(self._open.values())]
        return sorted(done, key=lambda p: p.start_mono_ns)

    # ------------------------------------------------------------------ internals

    def _check_stall(self, op: _Open, r: Reading) -> None:
        """Marks a pass that opens where the previous one of its direction may only have been cut by
        a host stall (see ``stall_continuation``)."""
        prev = self._ended.pop(op.direction, None)
        if prev is None or op.continuation:
            return
        if prev.sensor_time is not None and r.sensor_time is not None:
            dt = _dt_ns(prev, r)
            if 0 <= dt <= self._gap_ns:
                op.reasons.add("stall_continuation")
        elif r.t_mono_ns - prev.t_mono_ns <= self._max_ns:
            op.after_host_gap = True

    def _check_accel(self, op: _Open, r: Reading) -> None:
        for prev in reversed(op.primary):
            dt = _dt_ns(prev, r)
            if dt >= _MIN_ACCEL_DT_NS:
                accel = abs(r.speed_kmh - prev.speed_kmh) / 3.6 / (dt / 1e9)
                if accel > self.cfg.max_accel_mps2:
                    op.reasons.add("implausible_acceleration")
                return

    def _close(self, op: _Open, *, ended_on_silence: bool = False) -> Pass:
        del self._open[op.direction]
        if ended_on_silence:
            self._ended[op.direction] = op.all[-1]
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
        if _step_after_silence(prim):
            reasons.add("step_after_silence")
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


def _step_after_silence(prim: list[Reading]) -> bool:
    """True when some silence longer than ``SILENCE_PERIODS`` report periods separates measurements
    that differ by more than the tolerance-sized step (see the module docstring)."""
    dts = [_dt_ns(a, b) for a, b in itertools.pairwise(prim)]
    positive = [d for d in dts if d > 0]
    if not positive:
        return False
    period = sorted(positive)[len(positive) // 4]  # the report period, which dropped reports only lengthen
    for (a, b), dt in zip(itertools.pairwise(prim), dts, strict=True):
        if dt > SILENCE_PERIODS * period:
            step = abs(b.speed_kmh - a.speed_kmh)
            if step > max(STEP_KMH, STEP_PERCENT / 100 * max(a.speed_kmh, b.speed_kmh)):
                return True
    return False


def _residual_spread(prim: list[Reading]) -> float:
    """Range (max - min) of the residuals around the least-squares line speed(t); 0 for < 3 points.
    Times on the module clock when every measurement carries it (host batching skews receive times)."""
    n = len(prim)
    if n < 3:
        return (max(x.speed_kmh for x in prim) - min(x.speed_kmh for x in prim)) if n == 2 else 0.0
    if all(x.sensor_time is not None for x in prim):
        s0 = prim[0].sensor_time
        ts = [x.sensor_time - s0 for x in prim]  # type: ignore[operator]
    else:
        t0 = prim[0].t_mono_ns
        ts = [(x.t_mono_ns - t0) / 1e9 for x in prim]
    vs = [x.speed_kmh for x in prim]
    mt = sum(ts) / n
    mv = sum(vs) / n
    sxx = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / sxx if sxx > 0 else 0.0
    res = [v - (mv + slope * (t - mt)) for t, v in zip(ts, vs, strict=True)]
    return max(res) - min(res)
