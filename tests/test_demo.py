"""`radarcam demo` end to end (the README's first command), checked against the scenario's ground truth."""

from __future__ import annotations

import json
import subprocess
import sys

from device.uplink.packet import verify


def test_demo_json_summary_matches_ground_truth_and_exports_verifiable_packets(tmp_path):
    export = tmp_path / "export"
    p = subprocess.run(
        [sys.executable, "-m", "device.cli", "demo", "--vehicles", "8", "--seed", "5", "--json",
         "--width", "640", "--height", "360", "--out", str(tmp_path / "out"), "--export-packets", str(export)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads(p.stdout)
    for key in ("vehicles", "passes", "violations_expected", "violations", "packets_sealed", "packets_acked",
                "plates_total", "plates_correct", "latency_ms", "evidence_dir"):  # fmt: skip
        assert key in s, key
    assert s["vehicles"] == 8 and s["passes"] == 8
    assert s["violations_expected"] >= 1, "scenario precondition: at least one speeder"
    assert s["violations"] == s["violations_expected"] == s["violations_matched"]
    assert s["packets_sealed"] == s["packets_acked"] == s["packets_in_registry"] == s["violations"]
    assert s["plates_total"] == s["violations"]
    assert s["registry_chain"]["intact"] and s["registry_rejections"] == 0
    lat = s["latency_ms"]
    assert 0 < lat["trigger_to_sealed"]["p50"] <= lat["trigger_to_acked"]["p50"]

    # Exported packets verify offline with the exported public key, with the CLI a registry would use.
    pems = [
        p for p in export.glob("*.pub.pem") if p.name.count("-") == 1
    ]  # the current key, <device>.pub.pem
    by_kid = list(export.glob("*-*-*.pub.pem"))  # and each key the device has had, <device>-<kid>.pub.pem
    coses = sorted(export.glob("*.cose"))
    assert len(pems) == 1 and len(by_kid) == 1 and by_kid[0].read_bytes() == pems[0].read_bytes()
    assert len(coses) == s["packets_verified"]
    v = subprocess.run(
        [sys.executable, "-m", "device.cli", "packet", "verify", *map(str, coses), "--pubkey", str(pems[0])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert v.returncode == 0, v.stderr
    from device.uplink.keys import load_public_key

    kinds = [verify(c.read_bytes(), load_public_key(pems[0]))["kind"] for c in coses]
    assert kinds.count("violation") == s["violations"]
    evidence = list((tmp_path / "out").glob("run-*/evidence/*.jpg"))
    assert len(evidence) >= s["violations"]
