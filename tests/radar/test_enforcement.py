"""Enforcement: band edges for Morocco and Saudi Arabia, cosine correction, tolerance, limits by time."""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device.config import (
    EnforcementConfig,
    LaneConfig,
    RadarConfig,
    SiteConfig,
    TimeWindow,
    ToleranceConfig,
)
from device.enforcement import Enforcer, JurisdictionError, load_jurisdiction
from device.jurisdictions import Jurisdiction
from device.model import Direction, Pass

NOON = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday


def make_pass(
    peak: float, *, lane: str | None = "1", valid: bool = True, reasons: tuple[str, ...] = ()
) -> Pass:
    return Pass(
        pass_id=str(uuid.uuid4()),
        start_mono_ns=0,
        end_mono_ns=1,
        direction=Direction.INBOUND,
        readings=(),
        peak_kmh=peak,
        peak_mono_ns=0,
        median_kmh=peak,
        spread_kmh=0.0,
        lane=lane,
        valid=valid,
        invalid_reasons=reasons,
    )


def site(jur: str = "MA", limit: float = 60.0, angle: float = 0.0, **lane_kw) -> SiteConfig:
    return SiteConfig(
        jurisdiction=jur,
        mount_angle_deg=angle,
        lanes=[LaneConfig(id="1", direction="inbound", limit_kmh=limit, **lane_kw)],
    )


def peak_for_excess(excess: float, limit: float, tol_fixed: float = 3.0) -> float:
    """The measured peak (angle 0, below the 100 km/h threshold) that yields exactly this excess."""
    return limit + excess + tol_fixed


MA_EDGES = [
    (0.0, None),
    (0.1, "MA-52-05-C3"),
    (19.9, "MA-52-05-C3"),
    (20.0, "MA-52-05-C2"),
    (29.9, "MA-52-05-C2"),
    (30.0, "MA-52-05-C1"),
    (49.9, "MA-52-05-C1"),
    (50.0, "MA-52-05-DELIT"),
]


@pytest.mark.parametrize(("excess", "rule"), MA_EDGES)
def test_morocco_band_edges(excess: float, rule: str | None) -> None:
    limit = 40.0  # keeps corrected speed <= 100 km/h so the fixed 3 km/h tolerance applies
    d = Enforcer(site("MA", limit), EnforcementConfig()).decide(
        make_pass(peak_for_excess(excess, limit)), when=NOON
    )
    assert d.excess_kmh == pytest.approx(excess, abs=1e-9)
    assert d.enforced_kmh == d.corrected_kmh - 3.0 and d.excess_kmh == d.enforced_kmh - limit
    assert d.rule_id == rule and d.violation is (rule is not None)
    band = {b.id: b for b in load_jurisdiction("MA").bands}.get(rule)
    if band:
        assert (d.degree, d.fine_min, d.fine_max, d.points, d.settleable) == (
            band.degree,
            band.fine_min,
            band.fine_max,
            band.points,
            band.settleable,
        )
        assert d.currency == "MAD" and d.verified_schedule


def test_morocco_schedule_content() -> None:
    ma = {b.id: b for b in load_jurisdiction("MA").bands}
    assert (ma["MA-52-05-C3"].fine_min, ma["MA-52-05-C3"].fine_max, ma["MA-52-05-C3"].points) == (300, 600, 0)
    assert (ma["MA-52-05-C2"].fine_min, ma["MA-52-05-C2"].fine_max, ma["MA-52-05-C2"].points) == (
        500,
        1000,
        4,
    )
    assert (ma["MA-52-05-C1"].fine_min, ma["MA-52-05-C1"].fine_max, ma["MA-52-05-C1"].points) == (
        700,
        1400,
        4,
    )
    assert ma["MA-52-05-DELIT"].settleable is False and ma["MA-52-05-DELIT"].fine_min is None


SA_EDGES = [
    (9.9, None, None),
    (10.0, "SA-SPD-10", (150, 300)),
    (19.9, "SA-SPD-10", (150, 300)),
    (20.0, "SA-SPD-20", (300, 500)),
    (29.9, "SA-SPD-20", (300, 500)),
    (30.0, "SA-SPD-30", (800, 1000)),
    (39.9, "SA-SPD-30", (800, 1000)),
    (40.0, "SA-SPD-40", (1200, 1500)),
    (49.9, "SA-SPD-40", (1200, 1500)),
    (50.0, "SA-SPD-50", (1500, 2000)),
]


@pytest.mark.parametrize(("excess", "rule", "fines"), SA_EDGES)
def test_saudi_band_edges(excess: float, rule: str | None, fines: tuple[int, int] | None) -> None:
    limit = 40.0
    d = Enforcer(site("SA", limit), EnforcementConfig()).decide(
        make_pass(peak_for_excess(excess, limit)), when=NOON
    )
    assert d.excess_kmh == pytest.approx(excess, abs=1e-9)
    assert d.rule_id == rule and d.violation is (rule is not None)
    assert d.currency == "SAR"
    if fines:
        assert (d.fine_min, d.fine_max) == fines
    else:
        assert "below the first SA band" in d.reason


def test_tolerance_fixed_up_to_threshold_then_percent_of_corrected_speed() -> None:
    e = Enforcer(site("MA", 90.0), EnforcementConfig())
    d = e.decide(make_pass(100.0), when=NOON)  # exactly at the threshold: fixed
    assert d.tolerance_kmh == 3.0 and d.enforced_kmh == 97.0 and d.excess_kmh == 7.0
    d = e.decide(make_pass(150.0), when=NOON)
    assert d.tolerance_kmh == pytest.approx(4.5) and d.enforced_kmh == pytest.approx(145.5)
    assert d.excess_kmh == pytest.approx(55.5) and d.rule_id == "MA-52-05-DELIT" and not d.settleable
    # the enforcement config overrides the jurisdiction's tolerance
    e2 = Enforcer(
        site("MA", 90.0),
        EnforcementConfig(tolerance=ToleranceConfig(fixed_kmh=5, threshold_kmh=120, percent=5)),
    )
    assert e2.decide(make_pass(110.0), when=NOON).tolerance_kmh == 5.0
    assert e2.decide(make_pass(130.0), when=NOON).tolerance_kmh == pytest.approx(6.5)


def test_cosine_correction_before_tolerance() -> None:
    angle, half = 20.0, 10.0
    e = Enforcer(site("MA", 60.0, angle=angle), EnforcementConfig(), beam_half_angle_deg=half)
    measured = 70.0
    d = e.decide(make_pass(measured), when=NOON)
    k = 1 / math.cos(math.radians(angle - half))
    assert d.cosine_factor == pytest.approx(k) and d.mount_angle_deg == angle
    assert d.correction_angle_deg == angle - half and d.beam_half_angle_deg == half
    assert d.measured_kmh == measured and d.corrected_kmh == pytest.approx(measured * k)
    assert d.enforced_kmh == pytest.approx(measured * k - 3.0)
    assert d.excess_kmh == pytest.approx(measured * k - 3.0 - 60.0)
    # the same pass at 0 degrees: no correction
    d0 = Enforcer(site("MA", 60.0), EnforcementConfig()).decide(make_pass(measured), when=NOON)
    assert d0.cosine_factor == 1.0 and d0.corrected_kmh == measured and d0.excess_kmh < d.excess_kmh


def test_class_limits_and_time_windows_in_site_timezone() -> None:
    win = TimeWindow(days=["mon", "tue", "wed", "thu", "fri"], start="07:30", end="17:00", limit_kmh=30)
    s = site("MA", 60.0, class_limits_kmh={"truck": 50.0}, windows=[win])
    s = s.model_copy(update={"timezone": "Asia/Riyadh"})  # UTC+3, no DST
    e = Enforcer(s, EnforcementConfig())
    p = make_pass(45.0)
    # 04:29 UTC = 07:29 local Wednesday: window not yet active
    d = e.decide(p, when=datetime(2026, 3, 4, 4, 29, tzinfo=UTC))
    assert d.limit_kmh == 60.0 and not d.violation and d.vehicle_class == "car"
    d = e.decide(p, when=datetime(2026, 3, 4, 4, 30, tzinfo=UTC))  # 07:30 local: active
    assert d.limit_kmh == 30.0 and d.violation and d.excess_kmh == pytest.approx(12.0)
    d = e.decide(p, when=datetime(2026, 3, 4, 14, 0, tzinfo=UTC))  # 17:00 local: end excluded
    assert d.limit_kmh == 60.0
    d = e.decide(p, when=datetime(2026, 3, 7, 6, 0, tzinfo=UTC))  # Saturday
    assert d.limit_kmh == 60.0
    d = e.decide(make_pass(56.0), vehicle_class="truck", when=datetime(2026, 3, 7, 6, 0, tzinfo=UTC))
    assert d.limit_kmh == 50.0 and d.vehicle_class == "truck" and d.excess_kmh == pytest.approx(3.0)
    with pytest.raises(ValueError):
        e.decide(p, when=datetime(2026, 3, 4, 12, 0))


def test_time_windows_need_a_synchronised_clock() -> None:
    """A clock that is not synchronised (fake-hwclock after a power cut) may say 08:00 at 22:00: the
    school window's lower limit is not applied on its word, and the reason says so."""
    win = TimeWindow(days=["mon", "tue", "wed", "thu", "fri"], start="07:00", end="17:00", limit_kmh=30)
    e = Enforcer(site("MA", 60.0, windows=[win]), EnforcementConfig())
    p = make_pass(45.0)
    when = datetime(2026, 3, 4, 8, 0, tzinfo=UTC)  # 09:00 local on a Wednesday: inside the window
    trusted = e.decide(p, when=when, time_trusted=True)
    assert trusted.limit_kmh == 30.0 and trusted.violation
    untrusted = e.decide(p, when=when, time_trusted=False)
    assert untrusted.limit_kmh == 60.0 and not untrusted.violation
    assert "time windows not applied: clock not synchronised" in untrusted.reason
    # a fast pass is still a violation on the lane's own limit, and its reason says windows were skipped
    fast = e.decide(make_pass(85.0), when=when, time_trusted=False)
    assert fast.violation and fast.limit_kmh == 60.0 and "not applied" in fast.reason
    # no windows configured: nothing to say
    plain = Enforcer(site("MA", 60.0), EnforcementConfig()).decide(p, when=when, time_trusted=False)
    assert plain.limit_kmh == 60.0 and "not applied" not in plain.reason


def test_direction_without_a_lane_is_not_enforced() -> None:
    """One inbound lane, radar reporting both directions: a receding car at 90 km/h is not fined
    against the approach lane's 60 (it was: the lookup fell back to the first lane)."""
    e = Enforcer(site("MA", 60.0), EnforcementConfig())
    out = dataclasses.replace(make_pass(90.0, lane=None), direction=Direction.OUTBOUND)
    d = e.decide(out, when=NOON)
    assert not d.violation and d.lane is None and d.limit_kmh is None and d.excess_kmh is None
    assert "no lane configured for outbound traffic" in d.reason
    assert d.measured_kmh == 90.0  # the measurement itself is kept
    inbound = e.decide(make_pass(90.0, lane=None), when=NOON)
    assert inbound.violation and inbound.lane == "1"
    undirected = dataclasses.replace(make_pass(90.0, lane=None), direction=None)
    assert e.decide(undirected, when=NOON).lane == "1"  # a module without direction: the first lane


def test_invalid_pass_is_never_a_violation() -> None:
    e = Enforcer(site("MA", 60.0), EnforcementConfig())
    d = e.decide(make_pass(130.0, valid=False, reasons=("two_targets",)), when=NOON)
    assert not d.violation and "two_targets" in d.reason and d.excess_kmh > 50
    e2 = Enforcer(site("MA", 60.0), EnforcementConfig(enforce_invalid_passes=True))
    assert e2.decide(make_pass(130.0, valid=False, reasons=("spread",)), when=NOON).violation


@pytest.mark.parametrize(
    "reason", ["near_alias_limit", "step_after_silence", "stall_continuation", "two_targets"]
)
def test_a_speed_that_may_be_another_vehicles_is_never_enforced(reason: str) -> None:
    """``enforce_invalid_passes`` overrides a plausibility doubt, never a doubt about whose speed it is."""
    e = Enforcer(site("MA", 60.0), EnforcementConfig(enforce_invalid_passes=True))
    d = e.decide(make_pass(130.0, valid=False, reasons=(reason,)), when=NOON)
    assert not d.violation and reason in d.reason


def test_lane_lookup_falls_back_to_direction() -> None:
    s = SiteConfig(
        lanes=[
            LaneConfig(id="A", direction="outbound", limit_kmh=50),
            LaneConfig(id="B", direction="inbound", limit_kmh=70),
        ]
    )
    d = Enforcer(s, EnforcementConfig()).decide(make_pass(80.0, lane=None), when=NOON)
    assert d.lane == "B" and d.limit_kmh == 70.0


@pytest.mark.parametrize("code", ["EG", "MR"])
def test_stubs_are_marked_unverified(code: str) -> None:
    j = load_jurisdiction(code)
    assert j.verified is False and "UNVERIFIED" in j.source
    d = Enforcer(site(code, 60.0), EnforcementConfig()).decide(make_pass(80.0), when=NOON)
    assert d.verified_schedule is False and "UNVERIFIED" in d.reason


def test_bad_tables_are_rejected() -> None:
    with pytest.raises(JurisdictionError):
        load_jurisdiction("ZZ")
    good = load_jurisdiction("MA").model_dump()
    gap = dict(good, bands=[good["bands"][0], good["bands"][2]])
    with pytest.raises(ValueError, match="must end where"):
        Jurisdiction.model_validate(gap)
    with pytest.raises(ValueError):
        Jurisdiction.model_validate(dict(good, typo_key=1))
    bands = good["bands"]
    inverted = [dict(bands[0], max_excess_kmh=bands[0]["min_excess_kmh"]), *bands[1:]]
    with pytest.raises(ValueError, match="empty or inverted"):
        Jurisdiction.model_validate(dict(good, bands=inverted))
    capped = [*bands[:-1], dict(bands[-1], max_excess_kmh=bands[-1]["min_excess_kmh"] + 50)]
    with pytest.raises(ValueError, match="must have no upper edge"):
        Jurisdiction.model_validate(dict(good, bands=capped))


def test_measurement_outside_the_radar_verification_is_not_a_violation() -> None:
    """valid_until used only to be copied into the packet: an expired certificate still fined drivers."""
    from device.config import RadarCalibration

    cal = RadarCalibration(reference="LNM-2025-0042", date="2025-01-15", valid_until="2026-01-15")
    e = Enforcer(site("MA", 60.0), EnforcementConfig(), calibration=cal)
    fast = make_pass(90.0)
    inside = e.decide(fast, when=datetime(2025, 6, 1, 12, tzinfo=UTC))
    assert inside.violation and inside.calibration_valid is True
    last_day = e.decide(fast, when=datetime(2026, 1, 15, 22, 59, tzinfo=UTC))  # 23:59 in Casablanca
    assert last_day.violation and last_day.calibration_valid is True
    expired = e.decide(fast, when=datetime(2026, 1, 15, 23, 30, tzinfo=UTC))  # 16 Jan, 00:30 local
    assert not expired.violation and expired.calibration_valid is False
    assert "LNM-2025-0042 not valid on this date" in expired.reason
    before = e.decide(fast, when=datetime(2025, 1, 14, 12, tzinfo=UTC))
    assert not before.violation and before.calibration_valid is False
    # an untrusted clock cannot tell: enforced as before, the packet says "unknown" (None)
    unknown = e.decide(fast, when=datetime(2030, 1, 1, tzinfo=UTC), time_trusted=False)
    assert unknown.violation and unknown.calibration_valid is None
    none = Enforcer(site("MA", 60.0), EnforcementConfig(), calibration=RadarCalibration())
    assert none.decide(fast, when=NOON).calibration_valid is None


def test_every_decision_names_the_schedule_it_applied() -> None:
    """The fine comes from a table that can change between firmware versions: the decision carries the
    table file's sha256 and its legal source, so a registry can tell which schedule decided."""
    import hashlib
    from pathlib import Path

    import device.jurisdictions as jur

    table = Path(jur.__file__).with_name("ma.toml").read_bytes()
    d = Enforcer(site("MA", 60.0), EnforcementConfig()).decide(make_pass(90.0), when=NOON)
    assert d.violation and d.schedule_sha256 == hashlib.sha256(table).hexdigest()
    assert d.schedule_source == load_jurisdiction("MA").source and "52-05" in d.schedule_source
    out = dataclasses.replace(make_pass(90.0, lane=None), direction=Direction.OUTBOUND)
    assert Enforcer(site("MA", 60.0), EnforcementConfig()).decide(out, when=NOON).schedule_sha256


def test_cosine_correction_never_overstates_the_reviewers_case() -> None:
    """Mount 20 deg, OPS243-A (half beam 10 deg), limit 60: a car truly at 62 km/h, seen at 10 deg (the
    beam's inner edge, where the reading is highest) measures 62 cos 10 = 61.06. Corrected with the
    mount angle it became 64.98, enforced 61.98: a violation. With the smallest angle in the beam it
    is 62.0, enforced 59.0: inside the tolerance, as it truly is."""
    half = RadarConfig(model="OPS243-A").beam_half_angle()
    assert half == 10.0
    measured = 62.0 * math.cos(math.radians(10.0))
    e = Enforcer(site("MA", 60.0, angle=20.0), EnforcementConfig(), beam_half_angle_deg=half)
    d = e.decide(make_pass(measured), when=NOON)
    assert d.measured_kmh == measured  # the raw peak is untouched
    assert d.correction_angle_deg == 10.0 and d.beam_half_angle_deg == 10.0 and d.mount_angle_deg == 20.0
    assert d.corrected_kmh == pytest.approx(62.0) and d.enforced_kmh == pytest.approx(59.0)
    assert not d.violation
    old = measured / math.cos(math.radians(20.0)) - 3.0  # what the mount-angle correction gave
    assert old == pytest.approx(61.98, abs=0.01) and old > 60.0
    # beam width unknown: no correction at all, never more
    d0 = Enforcer(site("MA", 60.0, angle=20.0), EnforcementConfig()).decide(make_pass(measured), when=NOON)
    assert d0.cosine_factor == 1.0 and d0.correction_angle_deg == 0.0 and d0.beam_half_angle_deg is None
    # a beam wider than the mount angle: no correction either (the car can be seen head-on)
    d1 = Enforcer(site("MA", 60.0, angle=15.0), EnforcementConfig(), beam_half_angle_deg=21.0).decide(
        make_pass(measured), when=NOON
    )
    assert d1.cosine_factor == 1.0 and d1.correction_angle_deg == 0.0


@given(
    true_kmh=st.floats(5.0, 300.0),
    mount=st.floats(0.0, 45.0),
    half=st.floats(1.0, 30.0),
    where=st.floats(0.0, 1.0),
)
def test_enforced_speed_never_exceeds_the_true_speed_anywhere_in_the_beam(
    true_kmh: float, mount: float, half: float, where: float
) -> None:
    """Property: whatever the true speed and wherever in the beam (azimuth mount - half .. mount + half)
    the peak was read, corrected <= true and enforced < true."""
    lo, hi = max(0.0, mount - half), min(mount + half, 89.0)
    seen_at = lo + where * (hi - lo)
    measured = true_kmh * math.cos(math.radians(seen_at))
    e = Enforcer(site("MA", 60.0, angle=mount), EnforcementConfig(), beam_half_angle_deg=half)
    d = e.decide(make_pass(measured), when=NOON)
    assert d.corrected_kmh <= true_kmh * (1 + 1e-12)
    assert d.enforced_kmh < true_kmh


def test_lowest_applicable_window_limit_wins() -> None:
    """50 all day and 30 from 07:00 to 09:00: at 08:00 a car at 48 km/h is judged against 30, whichever
    window is listed first (the first lower window used to win)."""
    all_day = TimeWindow(limit_kmh=50)
    school = TimeWindow(start="07:00", end="09:00", limit_kmh=30)
    eight = datetime(2026, 3, 4, 7, 0, tzinfo=UTC)  # 08:00 in Casablanca (UTC+1)
    for windows in ([all_day, school], [school, all_day]):
        e = Enforcer(site("MA", 60.0, windows=windows), EnforcementConfig())
        d = e.decide(make_pass(48.0 + 3.0), when=eight)  # enforced 48 km/h
        assert d.enforced_kmh == pytest.approx(48.0)
        assert d.limit_kmh == 30.0 and d.violation and "07:00-09:00" in d.reason
    later = Enforcer(site("MA", 60.0, windows=[all_day, school]), EnforcementConfig())
    d = later.decide(make_pass(51.0), when=datetime(2026, 3, 4, 9, 0, tzinfo=UTC))  # 10:00 local
    assert d.limit_kmh == 50.0 and not d.violation


def test_pass_lane_of_the_other_direction_is_refused() -> None:
    """After a reload that swapped lane ids, a pass tagged lane "1" (inbound at start-up) meets a lane
    "1" that is now outbound: not enforced against that lane's limit, nor guessed from the direction."""
    s = SiteConfig(
        lanes=[
            LaneConfig(id="1", direction="outbound", limit_kmh=30),
            LaneConfig(id="2", direction="inbound", limit_kmh=90),
        ]
    )
    e = Enforcer(s, EnforcementConfig())
    p = make_pass(80.0, lane="1")  # inbound
    assert e.lane_for(p) is None
    d = e.decide(p, when=NOON)
    assert not d.violation and d.lane is None and d.limit_kmh is None
    assert d.reason == "not enforced: lane 1 carries outbound traffic, the pass is inbound"
    # the matching lane id and direction is used as before
    assert e.lane_for(make_pass(80.0, lane="2")).id == "2"


def test_the_reason_never_rounds_the_excess_into_the_next_band() -> None:
    """Before, ``{excess:.2f}`` wrote 19.996 as "20.00" beside the band for under 20, and a positive
    excess under 0.005 as "0.00" on a fined vehicle; the reason is signed text a court reads."""
    e = Enforcer(site("MA", 60.0), EnforcementConfig())
    for measured in (82.996, 92.9996, 63.004, 63.0004):
        d = e.decide(make_pass(measured), when=NOON)
        assert d.violation, measured
        printed = d.reason.split("excess ")[1].split(" km/h")[0]
        band = load_jurisdiction("MA").band_for(float(printed))
        assert 0 < float(printed) <= d.excess_kmh and band is not None and band.id == d.rule_id, (
            measured,
            printed,
        )


def test_the_decision_names_its_tolerance_rule_and_that_the_class_is_the_default() -> None:
    d = Enforcer(site("MA", 60.0), EnforcementConfig()).decide(make_pass(70.0), when=NOON)
    assert d.tolerance_rule == {
        "fixed_kmh": 3.0,
        "threshold_kmh": 100.0,
        "percent": 3.0,
        "source": "jurisdiction",
    }
    assert d.vehicle_class == "car" and d.vehicle_class_source == "default"
    assert d.limit_at_utc_ns == 1_772_625_600_000_000_000  # NOON, exactly
    override = EnforcementConfig(tolerance=ToleranceConfig(fixed_kmh=5, threshold_kmh=100, percent=5))
    d = Enforcer(site("MA", 60.0), override).decide(make_pass(70.0), vehicle_class="truck", when=NOON)
    assert d.tolerance_rule == {"fixed_kmh": 5.0, "threshold_kmh": 100.0, "percent": 5.0, "source": "site"}
    assert d.tolerance_kmh == 5.0 and d.vehicle_class_source == "given"
