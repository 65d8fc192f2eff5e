"""Pass tracker on scripted traffic: exact pass count and peak, and every plausibility rule."""

from __future__ import annotations

import uuid

from device.config import LaneConfig, TrackerConfig
from device.model import Direction, Reading
from device.sensors.tracker import PassTracker

IN, OUT = Direction.INBOUND, Direction.OUTBOUND
LANES = [
    LaneConfig(id="1", direction="inbound", limit_kmh=60),
    LaneConfig(id="2", direction="outbound", limit_kmh=60),
    LaneConfig(id="3", direction="inbound", limit_kmh=80),
]
MS = 1_000_000


def reading(t_ms: float, kmh: float, d: Direction = IN, idx: int = 0) -> Reading:
    return Reading(int(t_ms * MS), kmh, d, None, None, kmh if d is IN else -kmh, "kmh", idx)


def run(readings: list[Reading], cfg: TrackerConfig | None = None) -> list:
    tr = PassTracker(cfg or TrackerConfig(), LANES)
    out = []
    for r in readings:
        out += tr.push(r)
    return out + tr.close()


def vehicle(t0_ms: float, speeds: list[float], d: Direction = IN, period_ms: float = 50) -> list[Reading]:
    return [reading(t0_ms + i * period_ms, v, d) for i, v in enumerate(speeds)]


def test_scripted_traffic_pass_count_and_exact_peaks() -> None:
    a = vehicle(0, [61.0, 61.5, 62.25, 62.0, 61.75])
    b = vehicle(1000, [-1 + 80.0, 80.5, 81.125, 80.9, 80.2, 80.0], OUT)
    c = vehicle(1500, [45.0, 45.5, 46.0, 45.75])  # inbound while b (outbound) is still in the beam
    merged = sorted(a + b + c, key=lambda r: r.t_mono_ns)
    passes = sorted(run(merged), key=lambda p: p.start_mono_ns)
    assert len(passes) == 3
    assert [p.peak_kmh for p in passes] == [62.25, 81.125, 46.0]
    assert [p.direction for p in passes] == [IN, OUT, IN]
    assert [p.lane for p in passes] == ["1", "2", "1"]  # first configured lane of the direction
    assert [p.count for p in passes] == [5, 6, 4]
    assert all(p.valid for p in passes), [p.invalid_reasons for p in passes]
    assert passes[0].peak_mono_ns == 100 * MS and passes[0].median_kmh == 61.75
    assert passes[0].start_mono_ns == 0 and passes[0].end_mono_ns == 200 * MS
    assert len({p.pass_id for p in passes}) == 3 and all(uuid.UUID(p.pass_id).version == 4 for p in passes)


def test_gap_splits_passes_and_flush_releases_them() -> None:
    tr = PassTracker(TrackerConfig(gap_ms=400), LANES)
    done = []
    for r in vehicle(0, [50, 50.5, 51, 50.5]):
        done += tr.push(r)
    assert done == [] and tr.flush(150 * MS + 400 * MS) == []  # exactly the gap: still open
    [p] = tr.flush(150 * MS + 400 * MS + 1)
    assert p.peak_kmh == 51 and tr.close() == []
    # a reading after the gap starts a new pass and completes the old one in push()
    for r in vehicle(0, [50, 50.5, 51, 50.5]):
        tr.push(r)
    [old] = tr.push(reading(1000, 70))
    assert old.count == 4
    [new] = tr.close()
    assert new.count == 1 and new.invalid_reasons == ("too_few_readings",)


def test_too_few_readings() -> None:
    [p] = run(vehicle(0, [50, 51, 52]), TrackerConfig(min_readings=4))
    assert not p.valid and p.invalid_reasons == ("too_few_readings",)
    [p] = run(vehicle(0, [50, 51, 52]), TrackerConfig(min_readings=3))
    assert p.valid


def test_impossible_acceleration() -> None:
    # 60 -> 66 km/h in 50 ms is 33 m/s^2: no car does that; a different target took over
    [p] = run(vehicle(0, [60, 60.2, 66, 66.1, 66.0]))
    assert "implausible_acceleration" in p.invalid_reasons and not p.valid
    # same change over 1 s (1.7 m/s^2) is fine
    [p] = run(vehicle(0, [60, 61.5, 63, 64.5, 66], period_ms=250))
    assert p.valid, p.invalid_reasons


def test_usb_batching_does_not_fake_acceleration() -> None:
    # lines that arrive in one read share a receive time: dt = 0 must not count as infinite accel
    rs = [reading(0, 60), reading(0, 60.3), reading(0, 60.1), reading(100, 60.4), reading(100, 60.2)]
    [p] = run(rs)
    assert p.valid, p.invalid_reasons


def test_two_targets_of_different_speed_in_the_beam() -> None:
    rs = []
    for i in range(6):
        rs.append(reading(i * 50, 60.0, IN, 0))
        rs.append(reading(i * 50, 48.0, IN, 1))  # a second, slower inbound vehicle in the same report
    [p] = run(rs)
    assert "two_targets" in p.invalid_reasons and p.peak_kmh == 60.0 and p.count == 12
    rs = []
    for i in range(6):  # the same vehicle seen twice (wheels / body) within 8 km/h: fine
        rs.append(reading(i * 50, 60.0, IN, 0))
        rs.append(reading(i * 50, 57.0, IN, 1))
    [p] = run(rs)
    assert p.valid and p.peak_kmh == 60.0
    # an outbound object in the same report belongs to the other direction's pass
    rs = [reading(i * 50, 60.0, IN, 0) for i in range(5)] + [reading(i * 50, 30.0, OUT, 1) for i in range(5)]
    passes = run(sorted(rs, key=lambda r: (r.t_mono_ns, r.obj_index)))
    assert sorted((p.direction.value, p.valid) for p in passes) == [("inbound", True), ("outbound", True)]


def test_spread_around_the_trend() -> None:
    [p] = run(vehicle(0, [60, 75, 60, 75, 60, 75], period_ms=400), TrackerConfig(max_accel_mps2=50))
    assert "spread" in p.invalid_reasons and p.spread_kmh > 12
    # a steady deceleration is a trend, not a spread
    [p] = run(vehicle(0, [80 - 2 * i for i in range(12)], period_ms=100))
    assert p.valid and p.spread_kmh < 1e-9


def test_too_long_pass_is_cut_and_marked() -> None:
    rs = vehicle(0, [30.0] * 240, period_ms=50)  # 12 s of one object
    passes = run(rs, TrackerConfig(max_pass_s=10.0))
    assert len(passes) == 2
    assert "too_long" in passes[0].invalid_reasons
    assert passes[0].end_mono_ns - passes[0].start_mono_ns <= 10_000 * MS


def test_rest_of_a_too_long_stream_is_never_a_fresh_valid_pass() -> None:
    """A 25 s platoon with no gap: every piece after the cut is invalid, until a real gap_ms silence."""
    cfg = TrackerConfig(max_pass_s=10.0, gap_ms=400)
    stream = vehicle(0, [82.0] * 500)  # 25 s at 20 Hz, steady: passes every other check
    after_gap = vehicle(26_000, [70.0] * 10)  # 1 s of silence (> gap_ms), then another vehicle
    passes = run(stream + after_gap, cfg)
    assert [p.count for p in passes] == [201, 201, 98, 10]
    assert passes[0].invalid_reasons == ("too_long",)
    assert passes[1].invalid_reasons == ("too_long", "too_long_continuation")
    assert passes[2].invalid_reasons == ("too_long_continuation",) and not passes[2].valid
    assert passes[3].valid and passes[3].peak_kmh == 70.0  # silence for > gap_ms ends the continuation


def test_zero_speed_readings_have_no_direction_and_are_ignored() -> None:
    tr = PassTracker(TrackerConfig(), LANES)
    assert tr.push(Reading(0, 0.0, None)) == [] and tr.ignored == 1 and tr.close() == []


def test_batched_lines_are_separate_reports_by_sensor_time() -> None:
    # two report lines arrive in one serial read (same receive time); in the second one the inbound
    # car is object 1 because an outbound vehicle became stronger. It is still a new measurement.
    def r(t_ms: float, st: float, kmh: float, d: Direction, idx: int) -> Reading:
        return Reading(int(t_ms * MS), kmh, d, 100.0, st, kmh if d is IN else -kmh, "kmh", idx)

    rs = [
        r(0, 1.00, 60.0, IN, 0),
        r(100, 1.05, 60.2, IN, 0),
        r(100, 1.10, 40.0, OUT, 0),
        r(100, 1.10, 60.4, IN, 1),
        r(150, 1.15, 60.6, IN, 0),
        r(200, 1.20, 60.8, IN, 0),
    ]
    passes = run(rs)
    inbound = next(p for p in passes if p.direction is IN)
    assert inbound.valid and inbound.count == 5 and inbound.peak_kmh == 60.8
    assert inbound.median_kmh == 60.4  # the object-1 reading counted as a measurement
