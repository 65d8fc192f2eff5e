"""Latency bookkeeping stays bounded on a unit that runs for months, and still reads as the demo reads it."""

from __future__ import annotations

from device.daemon import TIMINGS_KEEP, Timings, _ObservedOutbox
from device.demo import _acked_violations
from device.uplink.keys import generate_key
from device.uplink.packet import violation_payload
from device.uplink.sample import sample_context, sample_violation


def test_each_map_keeps_only_the_most_recent_entries():
    """Four plain dicts used to gain an entry per violation (and per acked packet) forever."""
    t = Timings(keep=3)
    for i in range(10):
        vid = f"v{i}"
        t.decided_ns[vid], t.sealed_ns[vid], t.seq_of[vid] = i, i + 1, 100 + i
        t.acked_ns.setdefault(100 + i, i + 2)
    assert list(t.decided_ns) == list(t.sealed_ns) == list(t.seq_of) == ["v7", "v8", "v9"]
    assert dict(t.acked_ns) == {107: 9, 108: 10, 109: 11}
    assert t.acked_ns.setdefault(109, -1) == 11  # an ack seen again keeps its first time
    assert Timings().keep == TIMINGS_KEEP >= 1000  # far above any demo or benchmark run


def test_acks_noted_by_the_real_outbox_are_bounded_and_counted_as_the_demo_counts(tmp_path):
    key = generate_key(tmp_path / "signing-key.pem")
    ob = _ObservedOutbox(tmp_path / "outbox.sqlite", key)
    ob.timings = t = Timings(keep=4)
    ctx = sample_context("TEST-UNIT", key.key_id)
    try:
        for i in range(6):
            v = sample_violation(i, image_bytes=2_000)
            t.seq_of[v.violation_id] = ob.seal(violation_payload(v, ctx)).seq
        ob.mark_acked(range(1, 7))
    finally:
        ob.close()
    assert sorted(t.acked_ns) == [3, 4, 5, 6] and sorted(t.seq_of.values()) == [3, 4, 5, 6]
    assert _acked_violations(t) == 4  # the demo's progress line and summary
