"""Pass -> enforcement Decision: limit, cosine correction, tolerance, then the jurisdiction schedule.

The order, and every intermediate number, is recorded in the Decision (see docs/radar.md):

0. ``lane``: the pass's lane, else the first lane of its direction. Traffic in a direction that no
   lane carries is not enforced (a receding car is not fined against the approach lane's limit), nor
   is a pass whose lane id now names a lane of the other direction (a reload renumbered the lanes).
1. ``limit``: the lane's limit, or its per-class limit when one is set for the vehicle class; if time
   windows of the lane match the local time (site timezone, ``start <= hh:mm < end`` on a listed
   day), the lowest of that and their limits. Windows are applied only on a synchronised clock:
   an unsynchronised one (fake-hwclock after a power cut) could put 22:00 inside a school window, so
   without a trusted time the lane's own, higher limit applies.
2. ``corrected = measured_peak * calibration_factor * cosine_factor`` with ``cosine_factor =
   1 / cos(correction_angle)``: the radar sees only the speed component along the line to the vehicle,
   and that angle varies across the beam, smallest (highest reading: the peak) at the beam's inner
   edge. So ``correction_angle = max(0, mount_angle - beam_half_angle)``, which can only under-correct;
   ``1 / cos(mount_angle)`` overstated every vehicle seen nearer the beam's edge. Beam width unknown:
   no correction. The calibration factor comes from the radar's verification report (1.0 when none).
3. ``tolerance = fixed_kmh`` if ``corrected <= threshold_kmh`` else ``corrected * percent / 100``
   (the enforcement config's tolerance when set, else the jurisdiction's); ``enforced = corrected -
   tolerance``.
4. ``excess = enforced - limit`` (on the *enforced* speed, unrounded). A violation needs ``excess > 0``
   and a band of the jurisdiction containing it (bands are ``[min, max)``).

Invalid passes (plausibility failed) are never violations unless ``enforce_invalid_passes`` is set.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from device.config import Config, EnforcementConfig, LaneConfig, RadarCalibration, SiteConfig
from device.jurisdictions import Jurisdiction, JurisdictionError, Tolerance, load_jurisdiction
from device.model import Decision, Pass
from device.speeds import format_kmh

__all__ = ["Decision", "Enforcer", "Jurisdiction", "JurisdictionError", "load_jurisdiction"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _excess(x: float) -> str:
    """The excess as the reason states it: truncated like the data bar's speeds, so the text never
    rounds into the next band (19.996 is "19.996", not "20.00" beside the band for under 20), and a
    positive excess is never written as 0."""
    s = format_kmh(x)
    return repr(x) if x > 0 and s == "0" else s


NEVER_ENFORCED = frozenset({"near_alias_limit", "step_after_silence", "stall_continuation", "two_targets"})
"""Invalid-pass reasons that ``enforce_invalid_passes`` does not override: each says the speed may not
be this vehicle's (an aliased faster car of the other direction, two cars merged across a silence, the
rest of a pass cut by a stalled host, two targets in the beam). A plausibility doubt may be overridden
by a deployer; a speed that may belong to another vehicle never is."""


class Enforcer:
    def __init__(
        self,
        site: SiteConfig,
        enforcement: EnforcementConfig,
        *,
        calibration_factor: float = 1.0,
        calibration: RadarCalibration | None = None,
        beam_half_angle_deg: float | None = None,
    ) -> None:
        """``beam_half_angle_deg``: the radar's azimuth half beam width (``RadarConfig.beam_half_angle``);
        None (unknown) corrects nothing, the only angle that can never overstate for any beam."""
        self.site = site
        self.calibration_factor = calibration_factor
        self.calibration = calibration
        self.cfg = enforcement
        self.jurisdiction = load_jurisdiction(site.jurisdiction)
        self.tolerance: Tolerance = (
            Tolerance(**enforcement.tolerance.model_dump())
            if enforcement.tolerance is not None
            else self.jurisdiction.tolerance
        )
        self.tolerance_rule = self.tolerance.model_dump() | {
            "source": "site" if enforcement.tolerance is not None else "jurisdiction"
        }
        self.tz = ZoneInfo(site.timezone)
        self.beam_half_angle_deg = beam_half_angle_deg
        self.correction_angle_deg = (
            0.0 if beam_half_angle_deg is None else max(0.0, site.mount_angle_deg - beam_half_angle_deg)
        )
        self.cosine_factor = 1.0 / math.cos(math.radians(self.correction_angle_deg))

    @classmethod
    def for_config(cls, cfg: Config) -> Enforcer:
        """The enforcer a unit runs with ``cfg``: the one place that says which radar settings (its
        calibration, its beam width) go into a decision, so the daemon, a reload, ``radar monitor`` and
        the demo's ground truth can never decide the same pass differently."""
        return cls(
            cfg.site,
            cfg.enforcement,
            calibration_factor=cfg.radar.calibration.scale_factor,
            calibration=cfg.radar.calibration,
            beam_half_angle_deg=cfg.radar.beam_half_angle(),
        )

    def lane_for(self, p: Pass) -> LaneConfig | None:
        """The pass's lane by id; else the first lane of its direction; None when no lane carries its
        direction, or when the pass's lane id names a lane of the other direction (the decision's
        reason says which). A pass without a direction (a module that reports none) takes the first lane."""
        return self._lane(p)[0]

    def _lane(self, p: Pass) -> tuple[LaneConfig | None, str | None]:
        lanes = self.site.lanes
        direction = p.direction.value if p.direction else None
        for lane in lanes:
            if lane.id == p.lane:
                if direction is not None and lane.direction != direction:
                    # A lane id from before a reload that now names the other carriageway: its limit
                    # is not this vehicle's. Not guessed from the direction either: refused.
                    return None, (
                        f"not enforced: lane {lane.id} carries {lane.direction} traffic, "
                        f"the pass is {direction}"
                    )
                return lane, None
        if direction is None:
            return lanes[0], None
        for lane in lanes:
            if lane.direction == direction:
                return lane, None
        return None, f"not enforced: no lane configured for {direction} traffic"

    def limit_for(
        self, lane: LaneConfig, vehicle_class: str, when: datetime, *, time_trusted: bool = True
    ) -> tuple[float, str]:
        """(limit km/h, how it was chosen) for this lane, class and instant. ``time_trusted`` False (the
        clock is not synchronised) skips the time windows: they only ever lower the limit."""
        limit = lane.class_limits_kmh.get(vehicle_class, lane.limit_kmh)  # type: ignore[call-overload]
        how = f"class {vehicle_class}" if vehicle_class in lane.class_limits_kmh else "lane"
        if not time_trusted:
            return limit, how
        local = when.astimezone(self.tz)
        day = _DAYS[local.weekday()]
        minute = local.hour * 60 + local.minute
        for w in lane.windows:  # every window that applies, not the first: the lowest limit wins
            if day in w.days and _minutes(w.start) <= minute < _minutes(w.end) and w.limit_kmh < limit:
                limit, how = w.limit_kmh, f"window {','.join(w.days)} {w.start}-{w.end}"
        return limit, how

    def calibration_valid(self, when: datetime, time_trusted: bool) -> bool | None:
        """The measurement's local date within the certificate's dates; None when unknowable."""
        cal = self.calibration
        if cal is None or (cal.valid_until is None and cal.date is None) or not time_trusted:
            return None
        day = when.astimezone(self.tz).date()  # compared as dates (config checks they are real ones)
        start = None if cal.date is None else date.fromisoformat(cal.date)
        end = None if cal.valid_until is None else date.fromisoformat(cal.valid_until)
        return (start is None or start <= day) and (end is None or day <= end)

    def decide(
        self,
        p: Pass,
        *,
        vehicle_class: str | None = None,
        when: datetime | None = None,
        time_trusted: bool = True,
    ) -> Decision:
        """``when``: the instant of the measurement (the daemon passes the peak reading's time: a
        school window that opens while the car is still in the beam does not apply to a speed measured
        before it); ``time_trusted``: whether it comes from a synchronised clock (see step 1)."""
        vclass = vehicle_class or self.cfg.default_vehicle_class
        when = when or datetime.now(UTC)
        if when.tzinfo is None:
            raise ValueError("decide(when=...) needs an aware datetime")
        at_ns = (when - _EPOCH) // timedelta(microseconds=1) * 1000
        lane, refusal = self._lane(p)
        measured = p.peak_kmh
        corrected = measured * self.calibration_factor * self.cosine_factor
        tol = self.tolerance.deduction_kmh(corrected)
        enforced = corrected - tol
        j = self.jurisdiction
        common = dict(  # the measurement and the schedule: in every decision, enforced or not
            jurisdiction=j.code,
            vehicle_class=vclass,
            measured_kmh=measured,
            cosine_factor=self.cosine_factor,
            calibration_factor=self.calibration_factor,
            mount_angle_deg=self.site.mount_angle_deg,
            correction_angle_deg=self.correction_angle_deg,
            beam_half_angle_deg=self.beam_half_angle_deg,
            corrected_kmh=corrected,
            tolerance_kmh=tol,
            enforced_kmh=enforced,
            currency=j.currency,
            verified_schedule=j.verified,
            schedule_source=j.source,
            schedule_sha256=j.table_sha256,
            tolerance_rule=dict(self.tolerance_rule),
            vehicle_class_source="given" if vehicle_class else "default",
            limit_at_utc_ns=at_ns,
        )
        if lane is None:
            return Decision(
                violation=False,
                reason=refusal or "not enforced: no lane",
                lane=None,
                limit_kmh=None,
                excess_kmh=None,
                **common,
            )
        limit, how = self.limit_for(lane, vclass, when, time_trusted=time_trusted)
        cal_ok = self.calibration_valid(when, time_trusted)
        # said in the reason, which the packet carries
        note = (
            "; time windows not applied: clock not synchronised" if lane.windows and not time_trusted else ""
        )
        excess = enforced - limit
        base = dict(common, lane=lane.id, limit_kmh=limit, excess_kmh=excess, calibration_valid=cal_ok)
        if cal_ok is False:  # a measurement outside the radar's verification is no evidence
            cal = self.calibration
            assert cal is not None
            return Decision(
                violation=False,
                reason=f"radar verification {cal.reference} not valid on this date ({cal.date} to {cal.valid_until})",
                **base,
            )
        never = sorted(set(p.invalid_reasons) & NEVER_ENFORCED)
        if never or (not p.valid and not self.cfg.enforce_invalid_passes):
            return Decision(violation=False, reason=f"invalid pass: {', '.join(p.invalid_reasons)}", **base)
        if excess <= 0:
            return Decision(
                violation=False, reason=f"within limit ({how} limit {limit:g} km/h{note})", **base
            )
        band = j.band_for(excess)
        if band is None:
            return Decision(
                violation=False,
                reason=f"excess {format_kmh(excess)} km/h below the first {j.code} band ({how} limit {limit:g} km/h{note})",
                **base,
            )
        return Decision(
            violation=True,
            rule_id=band.id,
            degree=band.degree,
            fine_min=band.fine_min,
            fine_max=band.fine_max,
            points=band.points,
            settleable=band.settleable,
            reason=(
                f"{how} limit {limit:g} km/h{note}, excess {_excess(excess)} km/h -> {band.id}"
                + (f" ({band.note})" if band.note else "")
                + ("" if j.verified else " [UNVERIFIED schedule]")
            ),
            **base,
        )
