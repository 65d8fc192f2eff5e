"""``radarcam keys``, ``radarcam packet verify`` and ``radarcam registry export`` through the real CLI."""

from __future__ import annotations

import json
import stat

from device.cli import main
from device.uplink.keys import load_signing_key
from device.uplink.outbox import Outbox
from device.uplink.packet import verify, violation_payload
from device.uplink.registry import Registry
from device.uplink.sample import sample_context, sample_violation


def test_keys_init_show_and_refuse_overwrite(tmp_path, capsys):
    path = tmp_path / "keys" / "signing-key.pem"
    assert main(["keys", "init", "--path", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    assert main(["keys", "init", "--path", str(path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert main(["keys", "show", "--path", str(path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["key_id"] == info["key_id"] == load_signing_key(path).key_id
    assert main(["keys", "show", "--path", str(path), "--pem"]) == 0
    assert capsys.readouterr().out.startswith("-----BEGIN PUBLIC KEY-----")
    assert main(["keys", "init", "--path", str(path), "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["key_id"] != info["key_id"]
    assert main(["keys", "show", "--path", str(tmp_path / "missing.pem")]) == 1


def test_keys_default_path_from_config(tmp_path, capsys):
    cfg = tmp_path / "radarcam.toml"
    cfg.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n')
    assert main(["keys", "init", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert (tmp_path / "state" / "keys" / "signing-key.pem").exists()


def test_packet_verify_and_registry_export(tmp_path, capsys, key):
    ob = Outbox(tmp_path / "o.db", key)
    v = sample_violation(1)
    sealed = ob.seal(violation_payload(v, sample_context("cam-9", key.key_id)))
    reg = Registry(tmp_path / "reg.db", keys={"cam-9": key.public_key})
    assert reg.handle("radarcam/v1/cam-9/violation", sealed.data)["result"] == "stored"
    reg.close()
    out = tmp_path / "export"
    assert main(["registry", "export", "--db", str(tmp_path / "reg.db"), "--out", str(out)]) == 0
    capsys.readouterr()
    cose, pem = out / "cam-9-1.cose", out / "cam-9.pub.pem"
    assert cose.read_bytes() == sealed.data
    assert main(["packet", "verify", str(cose), "--pubkey", str(pem)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] and doc["packet"]["packet_id"] == v.violation_id
    img = doc["packet"]["images"][0]["jpeg"]
    assert img == {"bytes": len(v.images[0].jpeg), "sha256": v.images[0].sha256}
    assert doc["packet"]["measurement"]["readings"][0]["speed_kmh"] == v.pass_.readings[0].speed_kmh

    bad = tmp_path / "bad.cose"
    raw = bytearray(sealed.data)
    raw[len(raw) // 2] ^= 0x01
    bad.write_bytes(bytes(raw))
    trunc = tmp_path / "trunc.cose"
    trunc.write_bytes(sealed.data[:100])
    for f, reason in ((bad, "bad signature"), (trunc, "malformed"), (tmp_path / "nope.cose", "cannot read")):
        assert main(["packet", "verify", str(f), "--pubkey", str(pem)]) == 1
        err = capsys.readouterr().err.strip()
        assert reason in err and len(err.splitlines()) == 1, err
    assert verify(cose.read_bytes(), key)["seq"] == 1


def test_packet_verify_checks_image_bytes_and_the_chain(tmp_path, capsys, key):
    """A valid signature over an image's sha256 says nothing about the bytes beside it, and single files
    say nothing about the chain: `packet verify` checks both."""
    import cbor2

    from device.uplink.keys import public_pem
    from device.uplink.packet import sig_structure

    ob = Outbox(tmp_path / "o.db", key)
    ctx = sample_context("cam-9", key.key_id)
    rows = [ob.seal(violation_payload(sample_violation(i), ctx)) for i in range(3)]
    pem = tmp_path / "cam-9.pub.pem"
    pem.write_text(public_pem(key))
    files = []
    for r in rows:
        f = tmp_path / f"{r.seq}.cose"
        f.write_bytes(r.data)
        files.append(str(f))
    assert main(["packet", "verify", *files, "--pubkey", str(pem)]) == 0
    assert '"links_checked": 2, "broken": []' in capsys.readouterr().err

    # re-signed (by the device key, e.g. a bug in a re-packer) with other image bytes than its sha256 names
    prot, _, body, _ = cbor2.loads(rows[0].data).value
    payload = cbor2.loads(body)
    payload["images"][0]["jpeg"] = payload["images"][0]["jpeg"][:-10] + b"\0" * 10
    body2 = cbor2.dumps(payload)
    swapped = tmp_path / "swapped.cose"
    swapped.write_bytes(
        cbor2.dumps(cbor2.CBORTag(18, [prot, {}, body2, key.sign(sig_structure(prot, body2))]))
    )
    assert main(["packet", "verify", str(swapped), "--pubkey", str(pem)]) == 1
    assert "bytes do not match its sha256" in capsys.readouterr().err

    # seq 1 replaced by another validly signed packet with the same seq: seq 2 no longer links to it
    other = tmp_path / "other1.cose"
    p1 = cbor2.loads(cbor2.loads(rows[0].data).value[2]) | {"packet_id": "forged"}
    b1 = cbor2.dumps(p1)
    other.write_bytes(cbor2.dumps(cbor2.CBORTag(18, [prot, {}, b1, key.sign(sig_structure(prot, b1))])))
    assert main(["packet", "verify", str(other), files[1], files[2], "--pubkey", str(pem)]) == 1
    assert "BROKEN CHAIN" in capsys.readouterr().err
