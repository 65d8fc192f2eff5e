"""Registry logic without a broker: out-of-order arrivals fill gaps, broken links are flagged."""

from __future__ import annotations

import hashlib
import sqlite3

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


def _packet(
    key, *, device: str = "cam-1", image_bytes: int = 2_000, n: int = 0, bad_image: bool = False
) -> bytes:
    """Seq 1, validly signed by ``key``; ``device`` is the signed id, ``bad_image`` alters one image byte."""
    from device.uplink.packet import seal_bytes

    p = violation_payload(sample_violation(n, image_bytes=image_bytes), sample_context(device, key.key_id))
    if bad_image:
        jpeg = bytearray(p["images"][0]["jpeg"])
        jpeg[len(jpeg) // 2] ^= 0xFF
        p["images"][0] = {**p["images"][0], "jpeg": bytes(jpeg)}
    return seal_bytes(p | {"seq": 1, "prev_hash": "0" * 64}, key)


def _rejection_blobs(reg) -> tuple[int, int]:
    return reg.db.q("SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM rejections")[0]


def test_a_resent_rejection_is_stored_once_with_a_count_and_a_capped_blob(tmp_path, key):
    """Devices resend what is never acked: 30 deliveries of one refused 200 KB packet are one record of at
    most 64 KiB, not 30 blobs; another refused packet is a record of its own."""
    from device.uplink.registry import REJECTED_BLOB_BYTES

    reg = Registry(tmp_path / "r.db", keys={"cam-1": key.public_key})
    data = _packet(key, device="cam-old", image_bytes=100_000)
    assert len(data) > 3 * REJECTED_BLOB_BYTES
    results = [reg.handle(TOPIC, data) for _ in range(30)]
    assert {r["result"] for r in results} == {"rejected"} and not reg.acks_for(results)
    (rej,) = reg.rejections()
    assert rej["deliveries"] == 30 and rej["last_received_ns"] > rej["received_ns"]
    assert rej["sha256"] == hashlib.sha256(data).hexdigest() and rej["size"] == len(data)
    assert rej["stored_bytes"] == REJECTED_BLOB_BYTES and "signed device_id 'cam-old'" in rej["reason"]
    assert _rejection_blobs(reg) == (1, REJECTED_BLOB_BYTES)
    assert reg.stats()["rejected"] == 30
    other = _packet(key, device="cam-old", n=1)
    reg.handle(TOPIC, other)
    reg.handle("radarcam/v1/cam-9/violation", data)  # same bytes, another device: another record
    assert [(r["deliveries"], r["stored_bytes"]) for r in reg.rejections()][1:] == [
        (1, len(other)), (1, REJECTED_BLOB_BYTES)
    ]  # fmt: skip
    reg.close()


def test_rejections_of_an_older_registry_database_are_migrated(tmp_path, key):
    """A database written before rejections were de-duplicated gains the new columns on open; its rows
    read as one delivery each, and a repeat of an old rejection counts on the old row."""
    data = _packet(key, device="cam-old")
    db = sqlite3.connect(tmp_path / "r.db")
    db.execute(
        "CREATE TABLE rejections (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT, topic TEXT NOT NULL,"
        " seq INTEGER, reason TEXT NOT NULL, sha256 TEXT NOT NULL, received_ns INTEGER NOT NULL, data BLOB)"
    )
    row = (
        "cam-1",
        TOPIC,
        1,
        "signed device_id 'cam-old' != topic",
        hashlib.sha256(data).hexdigest(),
        5,
        data,
    )
    db.executemany(
        "INSERT INTO rejections(device_id, topic, seq, reason, sha256, received_ns, data) VALUES(?,?,?,?,?,?,?)",
        [row, row],  # the old code stored every resend
    )
    db.commit()
    db.close()
    reg = Registry(tmp_path / "r.db", keys={"cam-1": key.public_key})
    assert [r["deliveries"] for r in reg.rejections()] == [1, 1]
    assert reg.handle(TOPIC, data)["result"] == "rejected"
    assert [r["deliveries"] for r in reg.rejections()] == [2, 1] and _rejection_blobs(reg)[0] == 2
    reg.close()


def test_a_packet_whose_image_bytes_do_not_match_their_hash_is_rejected_not_acked(tmp_path, key):
    """The signature covers the image's claimed sha256, not its bytes (docs/packet.md): the registry must
    check the match before it stores and acks, like ``radarcam packet verify`` does."""
    reg = Registry(tmp_path / "r.db", keys={"cam-1": key.public_key})
    bad = _packet(key, bad_image=True)
    res = reg.handle(TOPIC, bad)
    assert (
        res["result"] == "rejected" and "image hash mismatch" in res["reason"] and "image 0" in res["reason"]
    )
    assert reg.count() == 0 and not reg.acks_for([res])
    good = _packet(key, n=1)
    assert reg.handle(TOPIC, good)["result"] == "stored"  # the same seq with matching images
    assert [r["sha256"] for r in reg.packets("cam-1")] == [hashlib.sha256(good).hexdigest()]
    reg.close()


class _Rekeyed:
    """A device that signed seqs with ``old`` and, after ``keys init --force``, with ``new``; chained."""

    def __init__(self, tmp_path):
        from device.uplink.keys import generate_key

        self.old, self.new = generate_key(tmp_path / "old.pem"), generate_key(tmp_path / "new.pem")

    def packet(self, key, seq: int) -> bytes:
        from device.uplink.packet import seal_bytes

        p = violation_payload(sample_violation(seq), sample_context("cam-1", key.key_id))
        return seal_bytes(p | {"seq": seq, "prev_hash": "0" * 64}, key)  # links are not what is tested


def _rekeyed_registry(tmp_path):
    """The device registered with its old key, one packet stored, then registered again with the new."""
    dev = _Rekeyed(tmp_path)
    reg = Registry(tmp_path / "r.db", keys={"cam-1": dev.old.public_key})
    dev.first = dev.packet(dev.old, 1)
    assert reg.handle(TOPIC, dev.first)["result"] == "stored"
    reg.close()
    return dev, Registry(tmp_path / "r.db", keys={"cam-1": dev.new.public_key})


def test_a_replaced_key_signs_nothing_past_its_replacements_first_packet(tmp_path):
    """Before, every key a device had ever had verified new packets for ever: whoever held a retired
    (perhaps stolen) key could add evidence at any fresh seq. Once the new key's first packet (seq 3) is
    stored, the old key is good only below it: the unacked packets it signed before the re-key."""
    dev, reg = _rekeyed_registry(tmp_path)
    assert reg.handle(TOPIC, dev.packet(dev.new, 3))["result"] == "stored"
    assert reg.handle(TOPIC, dev.packet(dev.old, 2))["result"] == "stored"  # sealed before, delivered late
    forged = reg.handle(TOPIC, dev.packet(dev.old, 4))
    assert forged["result"] == "rejected" and f"retired key {dev.old.key_id}" in forged["reason"]
    assert "from seq 3" in forged["reason"]
    assert reg.handle(TOPIC, dev.packet(dev.new, 4))["result"] == "stored"  # the seq is still free for it
    ch = reg.chain("cam-1")
    assert ch["retired_key_seqs"] == [] and ch["revoked_key_seqs"] == [] and reg.count("cam-1") == 4
    assert [r["seq"] for r in reg.rejections()] == [4]


def test_an_old_key_packet_stored_before_the_new_keys_first_is_flagged_in_the_chain(tmp_path):
    """Order of arrival cannot always tell: an old-key seq 5 that arrives before the new key's first
    packet (seq 3) is stored, and the chain report names it once seq 3 shows it came after the re-key."""
    dev, reg = _rekeyed_registry(tmp_path)
    assert reg.handle(TOPIC, dev.packet(dev.old, 5))["result"] == "stored"
    assert reg.chain("cam-1")["retired_key_seqs"] == []
    assert reg.handle(TOPIC, dev.packet(dev.new, 3))["result"] == "stored"
    assert reg.chain("cam-1")["retired_key_seqs"] == [5]


def test_a_revoked_key_is_refused_by_every_instance_and_its_stored_packets_are_listed(tmp_path):
    from device.cli import main

    dev, reg = _rekeyed_registry(tmp_path)
    other = Registry(tmp_path / "r.db", keys={"cam-1": dev.new.public_key})  # a second instance, same db
    args = ["registry", "revoke-key", "--db", str(tmp_path / "r.db"), "--device", "cam-1"]
    assert main([*args, "--key-id", "0" * 32]) == 2  # not a key of this device: nothing changes
    assert main([*args, "--key-id", dev.old.key_id, "--reason", "unit stolen 2026-11-30"]) == 0
    for r in (reg, other):
        res = r.handle(TOPIC, dev.packet(dev.old, 2))
        assert (
            res["result"] == "rejected" and "revoked key" in res["reason"] and "unit stolen" in res["reason"]
        )
    assert reg.handle(TOPIC, dev.first)["result"] == "duplicate"  # stored before the revocation: acked again
    assert reg.chain("cam-1")["revoked_key_seqs"] == [1] and reg.count("cam-1") == 1
    assert other.handle(TOPIC, dev.packet(dev.new, 2))["result"] == "stored"


def test_a_database_written_before_key_ids_were_kept_is_migrated(tmp_path):
    """Rows of an older registry have no key id and keys no registration time: the first start reads the
    key id from each stored packet, so the retirement rule sees the packets stored before it."""
    dev, reg = _rekeyed_registry(tmp_path)
    assert reg.handle(TOPIC, dev.packet(dev.new, 3))["result"] == "stored"
    reg.close()
    db = sqlite3.connect(tmp_path / "r.db")
    db.execute("DROP INDEX packets_key")
    db.execute("ALTER TABLE packets DROP COLUMN key_id")
    for col in ("registered_ns", "revoked_ns", "revoked_reason"):
        db.execute(f"ALTER TABLE device_keys DROP COLUMN {col}")
    db.commit()
    db.close()
    reg = Registry(tmp_path / "r.db", keys={"cam-1": dev.new.public_key})
    forged = reg.handle(TOPIC, dev.packet(dev.old, 4))
    assert forged["result"] == "rejected" and "retired key" in forged["reason"]
    rows = (
        sqlite3.connect(tmp_path / "r.db").execute("SELECT seq, key_id FROM packets ORDER BY seq").fetchall()
    )
    assert rows == [(1, dev.old.key_id), (3, dev.new.key_id)]


def test_a_malformed_signed_packet_is_rejected_alone_not_with_its_whole_batch(tmp_path, key):
    """Before, a signed packet whose images were not a list of maps, or whose seq did not fit SQLite's
    integer, raised inside handle_batch: the transaction rolled back and every message of the batch
    (other devices' too) went unacked."""
    from device.uplink.packet import seal_bytes

    reg = Registry(tmp_path / "r.db", keys={"cam-1": key.public_key})
    base = violation_payload(sample_violation(1, image_bytes=500), sample_context("cam-1", key.key_id))
    good = seal_bytes(base | {"seq": 1, "prev_hash": "0" * 64}, key)
    odd = [
        seal_bytes(base | {"packet_id": "a", "seq": 2, "prev_hash": "0" * 64, "images": "x"}, key),
        seal_bytes(base | {"packet_id": "b", "seq": 3, "prev_hash": "0" * 64, "images": [1]}, key),
        seal_bytes(base | {"packet_id": "c", "seq": 2**63, "prev_hash": "0" * 64}, key),
    ]
    results = reg.handle_batch([(TOPIC, d) for d in [*odd, good]])
    assert [r["result"] for r in results] == ["rejected", "rejected", "rejected", "stored"]
    assert reg.count("cam-1") == 1


def test_registry_command_refuses_a_client_certificate_without_tls(tmp_path, key):
    """``--cert/--key`` without ``--ca`` were ignored: the registry connected in plain text."""
    from device.cli import main
    from device.uplink.keys import public_pem

    (tmp_path / "dev.pub.pem").write_text(public_pem(key.public_key))
    rc = main(["registry", "run", "--db", str(tmp_path / "r.db"), "--device-key", f"cam-1={tmp_path / 'dev.pub.pem'}",
               "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem")])  # fmt: skip
    assert rc == 2
