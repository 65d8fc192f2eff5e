"""The OPS24x parser on every output form the module documents, and on what the wire can mangle."""

from __future__ import annotations

import math

import pytest

from device.config import RadarConfig
from device.model import Direction
from device.sensors.ops24x import TO_KMH, Ops24xDriver, max_speed_kmh, pick_sample_rate
from device.sensors.radar import RadarDriver, make_driver


def feed(text: bytes, **kw):
    d = Ops24xDriver(**kw)
    return d, d.feed(text, 123)


def test_plain_signed_numbers_default_mps() -> None:
    d, rs = feed(b"12.5\r\n-3\r\n+0.5\n")
    assert [r.speed_raw for r in rs] == [12.5, -3.0, 0.5]
    assert [r.speed_kmh for r in rs] == [12.5 * 3.6, 3.0 * 3.6, 0.5 * 3.6]
    assert [r.direction for r in rs] == [Direction.INBOUND, Direction.OUTBOUND, Direction.INBOUND]
    assert all(r.unit == "mps" and r.t_mono_ns == 123 and r.sensor_time is None for r in rs)
    assert d.stats["lines"] == 3 and d.stats["readings"] == 3 and d.stats["skipped"] == 0


@pytest.mark.parametrize("units", ["mps", "kmh", "mph", "fps", "cmps"])
def test_unit_conversion_is_unrounded(units: str) -> None:
    _, [r] = feed(b"-33.337\n", units=units)
    assert r.speed_kmh == 33.337 * TO_KMH[units]
    assert r.speed_raw == -33.337 and r.unit == units


def test_ot_time_speed_and_om_time_magnitude_speed() -> None:
    _, rs = feed(b"137.429,3.6\r\n137.480,812.5,-4.25\r\n", units="kmh")
    assert (rs[0].sensor_time, rs[0].magnitude, rs[0].speed_raw) == (137.429, None, 3.6)
    assert (rs[1].sensor_time, rs[1].magnitude, rs[1].speed_raw) == (137.48, 812.5, -4.25)
    assert rs[1].direction is Direction.OUTBOUND


def test_ou_unit_prefix_overrides_current_units() -> None:
    d, rs = feed(b'"kmph",-12.3\r\n"mph",10\r\n"mps",137.4,2\r\n', units="mps")
    assert [(r.unit, r.speed_raw) for r in rs] == [("kmh", -12.3), ("mph", 10.0), ("mps", 2.0)]
    assert rs[1].speed_kmh == 10 * 1.609344
    assert rs[2].sensor_time == 137.4
    assert d.units == "mps"  # a per-line unit does not change the module's setting


def test_json_number_and_string_speed_with_fields() -> None:
    lines = (
        b'{"speed":12.5}\r\n'
        b'{"speed":"-7.25"}\r\n'
        b'{"unit":"mph","direction":"inbound","time":105.2,"magnitude":"33.5","speed":"7"}\r\n'
        b'{ "time" : 1, "speed" : 3 , "direction": "OUTBOUND" }\n'
    )
    d, rs = feed(lines, units="kmh")
    assert [r.speed_raw for r in rs] == [12.5, -7.25, 7.0, 3.0]
    assert rs[0].unit == "kmh" and rs[0].speed_kmh == 12.5
    assert rs[2].unit == "mph" and rs[2].speed_kmh == 7 * 1.609344
    assert (rs[2].sensor_time, rs[2].magnitude, rs[2].direction) == (105.2, 33.5, Direction.INBOUND)
    # an explicit JSON direction wins over the sign
    assert rs[3].direction is Direction.OUTBOUND and rs[3].speed_raw == 3.0
    assert d.stats["readings"] == 4 and d.stats["skipped"] == 0


def test_multi_object_json_arrays_in_report_order() -> None:
    line = b'{"time":5.5,"magnitude":[900.1,400,"55.5"],"speed":[12.1,"-30.5",8]}\r\n'
    _, rs = feed(line, units="kmh")
    assert [r.obj_index for r in rs] == [0, 1, 2]
    assert [r.speed_raw for r in rs] == [12.1, -30.5, 8.0]
    assert [r.magnitude for r in rs] == [900.1, 400.0, 55.5]
    assert [r.direction for r in rs] == [Direction.INBOUND, Direction.OUTBOUND, Direction.INBOUND]
    assert all(r.sensor_time == 5.5 for r in rs)


def test_multi_object_plain_with_time_and_magnitude() -> None:
    _, rs = feed(b"5.5,900,400,12.1,-30.5\r\n", units="kmh", objects=2)
    assert [(r.magnitude, r.speed_raw, r.obj_index) for r in rs] == [(900.0, 12.1, 0), (400.0, -30.5, 1)]


def test_blank_reports_are_not_readings() -> None:
    d, rs = feed(b'\r\n\n \r\n0\r\n0.0\n{"speed":[]}\n{"speed":0}\n', units="kmh")
    assert rs == []
    assert d.stats["blank"] == 7 and d.stats["skipped"] == 0


def test_banners_and_replies_are_not_readings_and_units_reply_switches() -> None:
    d = Ops24xDriver(units=None)
    rs = d.feed(
        b'12.0\r\n{"Product":"OPS243"}\r\n{"Version":"1.3.1"}\r\n{"Units":"km-per-hr"}\r\n12.0\r\n', 1
    )
    assert [(r.speed_kmh, r.unit) for r in rs] == [(12.0, "kmh")]
    assert d.stats["skipped_units_unknown"] == 1 and d.stats["replies"] == 3 and d.product == "OPS243"
    rs = d.feed(b'{"Units":"mph"}\r\n10\r\n{"Units":"m-per-sec"}\n10\n', 2)
    assert [(r.speed_kmh, r.unit) for r in rs] == [(10 * 1.609344, "mph"), (36.0, "mps")]
    d.reset()  # after a reconnect the module may have rebooted: units unknown again
    assert d.feed(b"10\n", 3) == [] and d.stats["skipped_units_unknown"] == 2


def test_partial_lines_across_reads_and_crlf_split() -> None:
    d = Ops24xDriver(units="kmh")
    assert d.feed(b"12.", 1) == []
    assert d.feed(b"5\r", 2) == []
    [r] = d.feed(b"\n-4", 3)
    assert (r.speed_raw, r.t_mono_ns) == (12.5, 3)
    [r] = d.feed(b"\r\n", 4)
    assert (r.speed_raw, r.t_mono_ns) == (-4.0, 4)


def test_json_direction_beside_a_signed_speed_must_agree_with_it() -> None:
    """A direction field wins over the sign only where they cannot disagree. Before, one scalar
    ``direction`` was given to every object of a multi-object report, so ``[12.1, -30.5]`` with
    ``"inbound"`` made the receding car an approaching one."""
    lines = (
        b'{"speed":[12.1,-30.5],"direction":["inbound","outbound"]}\r\n'  # per object, agreeing
        b'{"speed":[-12.1,-30.5],"direction":"outbound"}\r\n'  # one for all, agreeing
        b'{"speed":[12.1,30.5],"direction":"outbound"}\r\n'  # unsigned speeds: the field says
        b'{"speed":"-7.25","direction":"outbound"}\r\n'
    )
    d, rs = feed(lines, units="kmh")
    assert [(r.speed_raw, r.direction) for r in rs] == [
        (12.1, Direction.INBOUND),
        (-30.5, Direction.OUTBOUND),
        (-12.1, Direction.OUTBOUND),
        (-30.5, Direction.OUTBOUND),
        (12.1, Direction.OUTBOUND),
        (30.5, Direction.OUTBOUND),
        (-7.25, Direction.OUTBOUND),
    ]
    assert d.stats["skipped"] == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\x00\x00\x00", "garbage"),
        (b"12\x005", "garbage"),
        (b"\xff\xfe\x80junk", "garbage"),
        (b"1_0", "garbage"),
        (b"abc", "garbage"),
        (b"12.5.3", "garbage"),
        (b"nan", "garbage"),
        (b"inf", "garbage"),
        (b"1e999", "non_finite"),
        (b"-1e400", "non_finite"),
        (b'{"speed":NaN}', "non_finite"),
        (b'{"speed":-Infinity}', "non_finite"),
        (b'{"speed":"nan"}', "bad_number"),
        (b'{"speed":1' + b"0" * 400 + b"}", "non_finite"),
        (b'{"speed":true}', "bad_number"),
        (b'{"speed":null}', "bad_number"),
        (b'{"speed":"\xd9\xa3"}', "bad_number"),
        (b'{"speed":[1,2],"magnitude":[1]}', "mismatched_arrays"),
        (b'{"speed":1,"direction":"sideways"}', "bad_direction"),
        (b"1e300,70", "out_of_range"),  # a module time no clock can have (OT layout: time,speed)
        (b'{"time":1e300,"speed":70}', "out_of_range"),
        (b'{"time":"-5","speed":[70,-40]}', "out_of_range"),
        (b'{"speed":"-12.5","direction":"inbound"}', "direction_conflict"),
        (b'{"speed":[12.1,-30.5],"direction":"inbound"}', "direction_conflict"),
        (b'{"speed":[12.1,-30.5],"direction":"outbound"}', "direction_conflict"),
        (b'{"speed":[12.1,-30.5],"direction":["inbound","inbound"]}', "direction_conflict"),
        (b'{"unit":"kmph","speed":-9,"direction":"inbound"}', "direction_conflict"),
        (b'{"speed":1,"unit":"furlongs"}', "unknown_unit"),
        (b'"parsecs",1', "unknown_unit"),
        (b'{"speed":1', "bad_json"),
        (b"{" * 500, "bad_json"),
        (b'{"speed":1}{"speed":2}', "bad_json"),
        (b"[1,2]", "garbage"),
        (b"{\xff}", "bad_json"),
    ],
)
def test_garbage_is_counted_and_skipped(line: bytes, reason: str) -> None:
    d = Ops24xDriver(units="kmh")
    rs = d.feed(line + b"\r\n12\r\n", 1)
    assert [r.speed_raw for r in rs] == [12.0], "the good line after the bad one must survive"
    assert d.stats[f"skipped_{reason}"] == 1 and d.stats["skipped"] == 1


def test_absurdly_long_lines_are_dropped_without_growing_the_buffer() -> None:
    d = Ops24xDriver(units="kmh", max_line_bytes=64)
    for _ in range(1000):  # 1 MB without a newline, fed like a serial stream
        assert d.feed(b"9" * 1000, 1) == []
        assert len(d._buf) <= 64
    rs = d.feed(b"999\r\n-5\r\n" + b"7" * 65 + b"\n3\n", 2)
    assert [r.speed_raw for r in rs] == [-5.0, 3.0]
    assert d.stats["skipped_too_long"] == 2


def test_non_finite_and_absurd_values_never_reach_a_reading() -> None:
    d, rs = feed(
        b'{"speed":5,"magnitude":NaN}\n{"speed":5,"time":Infinity}\n1e308\n{"speed":[1,1e308]}\n-277\n-278\n',
        units="mps",
    )
    # 1e308 m/s would overflow to inf km/h; anything above 1000 km/h is a corrupted number
    assert [r.speed_raw for r in rs] == [-277.0]
    assert all(math.isfinite(r.speed_kmh) for r in rs)
    assert d.stats["skipped_non_finite"] == 2 and d.stats["skipped_out_of_range"] == 3


def test_init_commands_follow_config() -> None:
    cfg = RadarConfig(units="mph", min_speed_kmh=16.09344, direction_filter="inbound", objects=3)
    drv = make_driver(cfg)
    assert isinstance(drv, RadarDriver)
    cmds = [c.rstrip(b"\r\n") for c in drv.init_commands(cfg, 60.0)]
    assert all(c.endswith(b"\r\n") for c in drv.init_commands(cfg, 60.0))
    assert cmds[0] == b"US" and b"OJ" in cmds and b"OT" in cmds and b"OM" in cmds and b"O3" in cmds
    assert b"R>10" in cmds  # the minimum speed is sent in the module's units
    assert b"R+" in cmds
    assert b"S2" in cmds  # 60 km/h limit: must measure 120+ km/h, beyond SX's ~112 km/h
    assert cmds[-1] == b"??"
    cfg2 = RadarConfig(sample_rate="SX", direction_filter="both")
    assert b"SX" in [c.rstrip() for c in drv.init_commands(cfg2, 120.0)]


def test_sample_rate_choice_keeps_twice_the_limit_plus_forty() -> None:
    """A car past the rate's maximum aliases into the other direction, so auto keeps a wide margin."""
    assert 110 < max_speed_kmh("SX") < 113 and 220 < max_speed_kmh("S2") < 226
    assert pick_sample_rate(20.0) == "SX"  # 80 km/h needed: SX's ~112 still has the margin
    assert pick_sample_rate(40.0) == "S2"  # SX tops out ~112: a 120 km/h car would read outbound
    assert pick_sample_rate(60.0) == "S2"
    assert pick_sample_rate(90.0) == "S2"
    assert pick_sample_rate(100.0) == "SL"
    assert pick_sample_rate(200.0) == "SL"
    for limit in (20.0, 30.0, 40.0, 50.0, 80.0, 120.0, 180.0):
        reach = max_speed_kmh(pick_sample_rate(limit))
        assert reach >= 2 * limit + 40 and reach >= limit + 60
