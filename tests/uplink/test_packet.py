"""Packet format: COSE_Sign1 structure, independent verification (pycose), failure reasons, size cap."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from pycose.keys import OKPKey
from pycose.messages import Sign1Message

from device.uplink.keys import generate_key, raw_public
from device.uplink.packet import (
    ALG_EDDSA,
    PacketError,
    encoded_size,
    event_payload,
    fit_to_size,
    parse,
    seal_bytes,
    verify,
    violation_payload,
)
from device.uplink.sample import sample_context, sample_violation


@pytest.fixture
def key(tmp_path):
    return generate_key(tmp_path / "k.pem")


def _sealed(key, v=None, **extra):
    v = v or sample_violation(3)
    p = violation_payload(v, sample_context("dev-1", key.key_id)) | {"seq": 7, "prev_hash": "ab" * 32} | extra
    return v, seal_bytes(p, key)


def test_independent_cose_implementation_verifies(key):
    _, data = _sealed(key)
    # pycose 1.1 decode() expects a list and dict inside the tag; cbor2 6 yields immutable ones, so the tag is
    # unwrapped here and pycose does everything else (header parsing, Sig_structure, Ed25519 check).
    tag = cbor2.loads(data)
    assert tag.tag == 18
    protected, unprotected, payload, signature = tag.value
    msg = Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)
    msg.key = OKPKey(crv="Ed25519", x=raw_public(key.public_key))
    assert msg.verify_signature()
    assert msg.phdr  # alg, content type and kid travel in the protected header
    assert cbor2.loads(msg.payload)["seq"] == 7
    wrong = generate_key(key.path.with_name("other.pem"))
    msg.key = OKPKey(crv="Ed25519", x=raw_public(wrong.public_key))
    assert not msg.verify_signature()


def test_structure_and_every_field_unrounded(key):
    v, data = _sealed(key)
    tag = cbor2.loads(data)
    assert tag.tag == 18
    hdr = cbor2.loads(tag.value[0])
    assert hdr[1] == ALG_EDDSA and hdr[4] == key.key_id_bytes and isinstance(hdr[3], str)
    p = verify(data, key.public_key)
    assert p["packet_id"] == v.violation_id and p["device_id"] == "dev-1" and p["key_id"] == key.key_id
    assert p["time"]["utc_ns"] == v.clock.utc_ns and p["time"]["synchronized"] is v.clock.synchronized
    got = p["measurement"]["readings"]
    assert len(got) == len(v.pass_.readings)
    for g, r in zip(got, v.pass_.readings, strict=True):
        assert g["speed_kmh"] == r.speed_kmh and g["speed_raw"] == r.speed_raw  # exact float equality
        assert g["t_mono_ns"] == r.t_mono_ns and g["sensor_time"] == r.sensor_time
    d = v.decision
    assert p["measurement"]["enforced_kmh"] == d.enforced_kmh
    assert p["decision"]["fine_max"] == d.fine_max and p["decision"]["settleable"] == d.settleable
    assert set(p["decision"]) == set(d.__dataclass_fields__)
    assert p["plate"]["text"] == v.plate.text and p["plate"]["status"] == "read"
    for img, src in zip(p["images"], v.images, strict=True):
        assert img["jpeg"] == src.jpeg and img["sha256"] == hashlib.sha256(src.jpeg).hexdigest()
    assert (
        p["site"]["limit_kmh"] == d.limit_kmh and p["measurement"]["radar"]["serial_number"] == "OPS-TEST-1"
    )


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda d: d[: len(d) // 2], "malformed CBOR"),
        (lambda d: b"", "empty"),
        (lambda d: cbor2.dumps([1, 2, 3]), "tag 18"),
        (lambda d: d[:-10] + bytes([d[-10] ^ 1]) + d[-9:], "bad signature"),
        (lambda d: d.replace(b"inbound", b"outbnd!", 1), "bad signature"),
    ],
)
def test_bad_packets_have_one_line_reasons(key, mangle, reason):
    _, data = _sealed(key)
    with pytest.raises(PacketError, match=reason) as exc:
        verify(mangle(data), key.public_key)
    assert "\n" not in str(exc.value)


def test_wrong_key_is_named(key, tmp_path):
    _, data = _sealed(key)
    other = generate_key(tmp_path / "o.pem")
    with pytest.raises(PacketError, match="key id"):
        verify(data, other.public_key)
    assert parse(data).kid == key.key_id


def test_fit_to_size_shrinks_images_never_the_measurement(key):
    v = sample_violation(1, image_bytes=120_000)
    p = violation_payload(v, sample_context("dev-1", key.key_id))
    cap = 80_000
    assert encoded_size(p) > cap
    f = fit_to_size(p, cap)
    assert encoded_size(f) <= cap
    assert f["measurement"] == p["measurement"] and f["decision"] == p["decision"]
    for img, orig in zip(f["images"], v.images, strict=True):
        assert img["original_sha256"] == orig.sha256
        assert img["sha256"] == hashlib.sha256(img["jpeg"]).hexdigest() != orig.sha256
        assert img["reencoded"]["quality"] < 90
    data = seal_bytes(f | {"seq": 1, "prev_hash": "0" * 64}, key)
    assert len(data) <= cap
    assert fit_to_size(p, 10_000_000) is p  # already fits: untouched


def test_fit_to_size_keeps_the_images_metadata_comment(key):
    """The COM segment holds the exact numbers behind the printed data bar; a re-encode that dropped it
    would leave the registry an image whose bar cannot be traced to the measurement."""
    import cv2
    import numpy as np

    from device.capture.evidence import encode_jpeg, jpeg_comment

    rng = np.random.default_rng(0)
    noisy = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (3, 3), 0)
    com = b'radarcam-evidence:{"bar":{"measured_kmh":118.0}}'
    jpeg = encode_jpeg(noisy, 95, comment=com)
    p = violation_payload(sample_violation(1), sample_context("dev-1", key.key_id))
    p["images"] = [p["images"][0] | {"jpeg": jpeg, "sha256": hashlib.sha256(jpeg).hexdigest()}]
    f = fit_to_size(p, encoded_size(p) // 2)
    assert f["images"][0]["reencoded"] and jpeg_comment(f["images"][0]["jpeg"]) == com


def test_fit_to_size_without_images_refuses_rather_than_cut(key):
    p = violation_payload(sample_violation(1, images=0), sample_context("d", key.key_id))
    with pytest.raises(PacketError, match="over the"):
        fit_to_size(p, 100)


def test_fit_to_size_images_only_never_refuses_a_large_body(key):
    """The over-quota cap bounds images, not an event's own fields: a large audit record is sealed as it
    is, and a packet whose images cannot make it fit has them left out (hashes kept), in their places."""
    p = violation_payload(sample_violation(1, images=0), sample_context("d", key.key_id))
    assert fit_to_size(p, 100, images_only=True) is p
    v = violation_payload(sample_violation(2, image_bytes=50_000), sample_context("d", key.key_id))
    body = encoded_size({**v, "images": []})
    f = fit_to_size(v, body // 2, images_only=True)
    assert [im["jpeg"] for im in f["images"]] == [None] * len(v["images"])
    assert [im["sha256"] for im in f["images"]] == [im["sha256"] for im in v["images"]]
    assert f["measurement"] == v["measurement"]
    with pytest.raises(PacketError, match="over the"):
        fit_to_size(v, body // 2)


def test_fit_to_size_again_keeps_left_out_images_and_shrinks_the_rest(key):
    """A packet fitted once (an image left out) and fitted again under a smaller cap: the left-out image
    stays left out in its place and the others are re-encoded (this used to fail on the missing JPEG)."""
    v = violation_payload(sample_violation(3, image_bytes=120_000), sample_context("d", key.key_id))
    assert len(v["images"]) >= 2
    v["images"][0] = {k: x for k, x in v["images"][0].items() if k != "jpeg"} | {
        "jpeg": None,
        "omitted": "packet size cap",
    }
    cap = encoded_size(v) * 2 // 3
    f = fit_to_size(v, cap)
    assert encoded_size(f) <= cap
    assert f["images"][0] == v["images"][0]
    assert all(im["reencoded"] for im in f["images"][1:])


def test_a_jpeg_that_cannot_be_shrunk_is_left_out_not_the_violation(key):
    """Before, a torn camera JPEG (cut to half its length) made fit_to_size raise: the violation was
    kept in memory, retried for ever and lost at shutdown. It is left out, with its hash and why."""
    v = violation_payload(sample_violation(4, image_bytes=120_000), sample_context("d", key.key_id))
    torn = v["images"][0]["jpeg"][: len(v["images"][0]["jpeg"]) // 2]
    v["images"][0] = v["images"][0] | {"jpeg": torn, "sha256": hashlib.sha256(torn).hexdigest()}
    cap = encoded_size(v) * 2 // 3
    f = fit_to_size(v, cap)
    assert encoded_size(f) <= cap and f["measurement"] == v["measurement"]
    first = f["images"][0]
    assert (
        first["jpeg"] is None
        and "decodable" in first["omitted"]
        and first["sha256"] == v["images"][0]["sha256"]
    )
    assert all(im["reencoded"] for im in f["images"][1:])


def test_a_second_fit_records_the_scale_of_the_camera_frame_and_omits_with_the_originals_hash(key):
    """Fitted once to 0.75 and again under the quota's cap: ``reencoded.scale`` said the last step's
    scale (0.5) though the image was 0.375 of the frame; an image then left out kept the hash of a
    discarded re-encode instead of the camera's."""
    v = violation_payload(sample_violation(5, image_bytes=120_000), sample_context("d", key.key_id))
    originals = [im["sha256"] for im in v["images"]]
    once = fit_to_size(v, encoded_size(v) // 4)
    twice = fit_to_size(once, encoded_size(once) * 2 // 3)
    for a, b in zip(once["images"], twice["images"], strict=True):
        if b.get("jpeg") is not None and a.get("reencoded") and b["reencoded"] is not a["reencoded"]:
            assert b["reencoded"]["scale"] <= a["reencoded"]["scale"]
            assert b["width"] <= a["width"]
    gone = fit_to_size(once, 1, images_only=True)
    assert [im["sha256"] for im in gone["images"]] == originals
    assert all(im["jpeg"] is None and "reencoded" not in im for im in gone["images"])


def test_events(key):
    ctx = sample_context("dev-1", key.key_id)
    v = sample_violation(1)
    clock = v.clock
    e = event_payload("plate_amendment", {"amends": v.violation_id, "text": "1-A-2"}, ctx, clock)
    assert e["kind"] == "event" and e["event"] == "plate_amendment" and e["body"]["amends"] == v.violation_id
    assert verify(seal_bytes(e | {"seq": 2, "prev_hash": "0" * 64}, key), key)["body"]["text"] == "1-A-2"
    with pytest.raises(PacketError, match="amends"):
        event_payload("plate_amendment", {}, ctx, clock)
    with pytest.raises(PacketError, match="unknown event kind"):
        event_payload("nonsense", {}, ctx, clock)


def test_verify_refuses_rewrapped_packets(key):
    """The stored, hashed and acked bytes must be exactly what was signed: a middlebox that appended
    bytes or unsigned headers produced a packet that verified, was stored first, and made the genuine
    one a "replay" (and its ack never matched the device's digest)."""
    from device.uplink.packet import CONTENT_TYPE, sig_structure

    ctx = sample_context("cam-1", key.key_id)
    payload = violation_payload(sample_violation(1, image_bytes=500), ctx) | {"seq": 1, "prev_hash": "0" * 64}
    good = seal_bytes(payload, key)
    assert verify(good, key.public_key)["seq"] == 1
    prot, _, body, sig = cbor2.loads(good).value

    def resigned(headers: dict, body: bytes = body) -> bytes:
        p = cbor2.dumps(headers)
        return cbor2.dumps(cbor2.CBORTag(18, [p, {}, body, key.sign(sig_structure(p, body))]))

    kid = key.key_id_bytes
    bad = {
        "trailing bytes": good + b"\x00GARBAGE",
        "unprotected header": cbor2.dumps(cbor2.CBORTag(18, [prot, {4: b"evil"}, body, sig])),
        "no kid": resigned({1: -8, 3: CONTENT_TYPE}),
        "other content type": resigned({1: -8, 3: "application/cbor", 4: kid}),
        "payload names another key": resigned(
            {1: -8, 3: CONTENT_TYPE, 4: kid}, cbor2.dumps(payload | {"key_id": "00" * 16})
        ),
    }
    # The same items, framed differently: each verified, with its own sha256 (the reviewer's cases).
    assert good[0] == 0xD2 and good[1] == 0x84  # tag 18 in one byte, a definite 4-item array
    bad["tag 18 as d8 12"] = b"\xd8\x12" + good[1:]
    bad["indefinite-length array"] = good[:1] + b"\x9f" + good[2:] + b"\xff"
    sig_at = good.rindex(b"\x58\x40" + sig)
    bad["longer signature length"] = good[:sig_at] + b"\x59\x00\x40" + sig
    bad["indefinite-length unprotected map"] = good.replace(
        b"\xa0" + cbor2.dumps(body), b"\xbf\xff" + cbor2.dumps(body), 1
    )
    for name, data in bad.items():
        assert data != good, name
        with pytest.raises(PacketError):
            verify(data, key.public_key)
            pytest.fail(f"accepted: {name}")
