"""Property: feed() never raises and yields the same readings and counters whatever the chunking."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.sensors.ops24x import Ops24xDriver

VALID_LINES = [
    b"12.5",
    b"-3.25",
    b"137.429,3.6",
    b"137.429,812.5,-4.25",
    b'"kmph",-12.3',
    b'{"speed":12.5}',
    b'{"speed":"-7.25","direction":"outbound","time":1.5,"magnitude":30}',
    b'{"speed":[12.1,-30.5],"magnitude":[900,400]}',
    b'{"Units":"km-per-hr"}',
    b'{"Units":"mph"}',
    b'{"Product":"OPS243"}',
    b"",
    b"0",
    b"nan",
    b'{"speed":NaN}',
    b"1e999",
    b"\x00\x00",
    b"9" * 80,
]

line = st.one_of(st.sampled_from(VALID_LINES), st.binary(max_size=90))
eol = st.sampled_from([b"\n", b"\r\n", b"\r", b""])
stream = st.lists(st.tuples(line, eol), max_size=40).map(lambda xs: b"".join(a + b for a, b in xs))


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    pts = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*pts, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=stream, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_same_readings_whatever_the_split_points(data: bytes, cuts: list[int]) -> None:
    whole = Ops24xDriver(units="kmh", max_line_bytes=64)
    expected = whole.feed(data, 7)
    split = Ops24xDriver(units="kmh", max_line_bytes=64)
    got = []
    for c in _chunks(data, cuts):
        got += split.feed(c, 7)
    assert got == expected
    assert split.stats == whole.stats
    assert whole.stats["lines"] == data.count(b"\n")
    for r in got:
        assert math.isfinite(r.speed_kmh) and r.speed_kmh > 0
        assert r.direction is not None
        assert r.magnitude is None or math.isfinite(r.magnitude)
        assert r.sensor_time is None or math.isfinite(r.sensor_time)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20))
def test_arbitrary_bytes_never_crash_and_every_line_is_accounted_for(data: bytes, cuts: list[int]) -> None:
    d = Ops24xDriver(units=None, max_line_bytes=128)
    n = sum(len(d.feed(c, 1)) for c in _chunks(data, cuts))
    st_ = d.stats
    assert st_["readings"] == n
    assert st_["lines"] == data.count(b"\n")
    # every complete line is a reading source, a reply, a blank report or a counted skip
    assert st_["lines"] <= st_["readings"] + st_["replies"] + st_["blank"] + st_["skipped"]
    assert st_["replies"] + st_["blank"] + st_["skipped"] <= st_["lines"]
