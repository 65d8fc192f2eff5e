"""Registry logic without a broker: out-of-order arrivals fill gaps, broken links are flagged."""

from __future__ import annotations

import hashlib

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


def test_a_re_keyed_device_keeps_its_old_packets_verifiable(tmp_path):
    """`keys init --force` promises old packets stay valid: the registry keeps every key a device has had
    (by key id), verifies each packet with the key that signed it, and exports all of them; an export
    no longer rewrites the stored key either."""
    from device.cli import main
    from device.uplink.keys import generate_key
    from device.uplink.packet import seal_bytes, verify, violation_payload
    from device.uplink.sample import sample_context, sample_violation

    old, new = generate_key(tmp_path / "old.pem"), generate_key(tmp_path / "new.pem")

    def sealed(key, seq: int, prev: str) -> bytes:
        p = violation_payload(sample_violation(seq), sample_context("cam-1", key.key_id))
        return seal_bytes(p | {"seq": seq, "prev_hash": prev}, key)

    first = sealed(old, 1, "0" * 64)
    reg = Registry(tmp_path / "r.db", keys={"cam-1": old.public_key})
    assert reg.handle("radarcam/v1/cam-1/violation", first)["result"] == "stored"
    reg.close()
    reg = Registry(tmp_path / "r.db", keys={"cam-1": new.public_key})  # re-registered after re-keying
    late = sealed(old, 2, hashlib.sha256(first).hexdigest())  # sealed before the re-key, delivered after
    assert reg.handle("radarcam/v1/cam-1/violation", late)["result"] == "stored"
    third = sealed(new, 3, hashlib.sha256(late).hexdigest())
    assert reg.handle("radarcam/v1/cam-1/violation", third)["result"] == "stored"
    reg.close()
    out = tmp_path / "export"
    assert main(["registry", "export", "--db", str(tmp_path / "r.db"), "--out", str(out)]) == 0
    pems = {p.name for p in out.glob("*.pem")}
    assert pems == {"cam-1.pub.pem", f"cam-1-{old.key_id}.pub.pem", f"cam-1-{new.key_id}.pub.pem"}
    from device.uplink.keys import load_public_key

    assert verify((out / "cam-1-1.cose").read_bytes(), load_public_key(out / f"cam-1-{old.key_id}.pub.pem"))
    assert verify((out / "cam-1-3.cose").read_bytes(), load_public_key(out / "cam-1.pub.pem"))
    # exporting with another key given does not change the registry's key
    from device.uplink.keys import key_id_of, public_pem

    other = generate_key(tmp_path / "other.pem")
    (tmp_path / "other.pub.pem").write_text(public_pem(other))
    args = ["registry", "export", "--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "x")]
    assert main([*args, "--device-key", f"cam-1={tmp_path / 'other.pub.pem'}"]) == 0
    reg = Registry(tmp_path / "r.db", keys={})
    assert key_id_of(reg.keys["cam-1"]) == new.key_id
    reg.close()


def test_keys_dir_of_an_export_loads_devices_not_their_key_history(tmp_path):
    """`registry run --keys-dir <export>`: `<device>-<kid>.pub.pem` files are earlier keys, not devices."""
    from device.uplink.keys import generate_key, public_pem
    from device.uplink.registry import load_keys

    k = generate_key(tmp_path / "k.pem")
    (tmp_path / "cam-1.pub.pem").write_text(public_pem(k))
    (tmp_path / f"cam-1-{k.key_id}.pub.pem").write_text(public_pem(k))
    assert set(load_keys(tmp_path)) == {"cam-1"}
