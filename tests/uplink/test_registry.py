"""Registry logic without a broker: out-of-order arrivals fill gaps, broken links are flagged."""

from __future__ import annotations

from device.uplink.outbox import Outbox
from device.uplink.packet import violation_payload
from device.uplink.registry import Registry
from device.uplink.sample import sample_context, sample_violation

TOPIC = "radarcam/v1/cam-1/violation"


def _seal(ob, key, n):
    ctx = sample_context("cam-1", key.key_id)
    return [ob.seal(violation_payload(sample_violation(i, image_bytes=2_000), ctx)) for i in range(n)]


def test_gap_then_late_delivery_closes_it(tmp_path, key):
    s = _seal(Outbox(tmp_path / "o.db", key), key, 3)
    reg = Registry(tmp_path / "r.db", keys={"cam-1": key.public_key})
    assert reg.handle(TOPIC, s[0].data)["prev_ok"] == 1
    assert reg.handle(TOPIC, s[2].data)["prev_ok"] is None
    ch = reg.chain("cam-1")
    assert ch["gaps"] == [2] and not ch["intact"]
    assert reg.handle(TOPIC, s[1].data)["result"] == "stored"  # late, below the highest seq: accepted
    assert reg.chain("cam-1")["intact"]
    assert reg.handle(TOPIC, s[1].data)["result"] == "duplicate"
    assert reg.count("cam-1") == 3 and reg.stats()["duplicates"] == 1


def test_broken_prev_hash_is_flagged(tmp_path, key):
    a = _seal(Outbox(tmp_path / "a.db", key), key, 2)
    b = _seal(Outbox(tmp_path / "b.db", key), key, 3)  # a second chain with the same key (e.g. restored unit)
    reg = Registry(tmp_path / "r.db", keys={"cam-1": key.public_key})
    for data in (a[0].data, a[1].data, b[2].data):
        assert reg.handle(TOPIC, data)["result"] == "stored"
    ch = reg.chain("cam-1")
    assert ch["broken_links"] == [3] and not ch["gaps"] and not ch["intact"]


def test_wrong_topic_device_and_kind_are_rejected(tmp_path, key):
    s = _seal(Outbox(tmp_path / "o.db", key), key, 1)
    reg = Registry(tmp_path / "r.db", keys={"cam-1": key.public_key, "cam-2": key.public_key})
    assert reg.handle("radarcam/v1/cam-2/violation", s[0].data)["result"] == "rejected"
    assert reg.handle("radarcam/v1/cam-1/event", s[0].data)["result"] == "rejected"
    assert reg.handle("radarcam/v1/cam-1/status", s[0].data)["result"] == "rejected"
    reasons = [r["reason"] for r in reg.rejections()]
    assert "signed device_id" in reasons[0] and "published on 'event'" in reasons[1]
    assert reg.count() == 0
