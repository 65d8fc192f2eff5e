"""Acks are bound to packet content: only an ack naming the exact stored bytes marks a row acked.

Acked rows are the only ones retention deletes, so an ack that any client could publish (bare seqs, wrong
digest) would let it erase evidence the registry never stored. All through a real mosquitto on loopback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from device.uplink import topics
from device.uplink.outbox import Outbox
from device.uplink.testing_broker import MosquittoBroker, wait_for
from device.uplink.testing_broker import MqttPeer as Peer


def _ack_topic(rig) -> str:
    return topics.topic("radarcam/v1", rig.device, topics.ACK)


def test_registry_ack_names_stored_digest_also_for_duplicates(rig):
    """The device relies on ``acks[].sha256``; a re-delivered duplicate must be acked with it too."""
    reg = rig.registry()
    obs = Peer(rig.broker, _ack_topic(rig))
    try:
        rig.client()
        rig.seal(3)
        rig.assert_delivered(3, reg)
        want = {s: rig.outbox.get(s).sha256 for s in (1, 2, 3)}
        got = {}
        for m in obs.on(topics.ACK):
            for a in json.loads(m.payload)["acks"]:
                got[a["seq"]] = a["sha256"]
        assert got == want
        n = len(obs.on(topics.ACK))
        obs.publish(topics.topic("radarcam/v1", rig.device, topics.VIOLATION), rig.outbox.get(2).data)
        wait_for(lambda: len(obs.on(topics.ACK)) > n, 5, "ack for the duplicate")
        dup = json.loads(obs.on(topics.ACK)[-1].payload)
        assert dup["acks"] == [{"seq": 2, "sha256": want[2]}] and dup["seqs"] == [2]
        assert reg.duplicates == 1 and rig.clients[0].bad_acks == 0
    finally:
        obs.close()


def _forgeries(ob: Outbox) -> dict[str, tuple[bytes, int]]:
    """name -> (payload a third client publishes on the device's ack topic, ack entries it should reject)."""
    d1, d2 = ob.get(1).sha256, ob.get(2).sha256
    return {
        "seqs_only": (json.dumps({"seqs": [1, 2], "registry": "evil"}).encode(), 1),
        "missing_digest": (json.dumps({"acks": [{"seq": 1}, {"seq": 2}], "seqs": [1, 2]}).encode(), 2),
        "wrong_digest": (json.dumps({"acks": [{"seq": 1, "sha256": "0" * 64}, {"seq": 2, "sha256": "ab" * 32}],
                                     "seqs": [1, 2]}).encode(), 2),
        "swapped_digests": (json.dumps({"acks": [{"seq": 1, "sha256": d2}, {"seq": 2, "sha256": d1}],
                                        "seqs": [1, 2]}).encode(), 2),
        "unknown_seq": (json.dumps({"acks": [{"seq": 99, "sha256": d1}], "seqs": [99]}).encode(), 1),
        "not_json": (b"\xff{seqs: [1, 2]", 1),
    }  # fmt: skip


@pytest.mark.parametrize(
    "kind", ["seqs_only", "missing_digest", "wrong_digest", "swapped_digests", "unknown_seq", "not_json"]
)
def test_forged_ack_marks_nothing_and_row_is_still_delivered(rig, kind):
    """Registry down (rows only PUBACKed), a third client forges an ack: nothing is acked, retention under
    quota pressure deletes nothing, and once the registry is up the same rows arrive and are acked."""
    c = rig.client(ack_timeout_s=1.0)
    rig.seal(2)
    wait_for(lambda: rig.outbox.stats()["sent"] == 2, 10, "broker PUBACKs with no registry listening")
    payload, n_bad = _forgeries(rig.outbox)[kind]
    forger = Peer(rig.broker, "radarcam/v1/nobody/#")
    try:
        forger.publish(_ack_topic(rig), payload)
        handled = lambda: c.health().get("bad_acks", 0) >= n_bad or rig.outbox.stats()["acked"]  # noqa: E731
        wait_for(handled, 5, f"{n_bad} rejected ack entries")
    finally:
        forger.close()
    assert [rig.outbox.state(s) for s in (1, 2)] == ["sent", "sent"]
    assert c.health()["bad_acks"] == n_bad
    assert "ignored ack" in c.health()["last_error"]
    quota = rig.outbox.quota_bytes
    rig.outbox.quota_bytes = 1  # every acked row would be deleted now
    assert rig.outbox.retention(now_ns=2**62) == 0
    rig.outbox.quota_bytes = quota
    assert rig.outbox.get(1) is not None and rig.outbox.get(2) is not None
    reg = rig.registry()
    rig.assert_delivered(2, reg)  # republished after the ack timeout: the forgery stopped nothing
    assert c.health()["resends"] >= 1 and c.health()["bad_acks"] == n_bad


def test_mixed_ack_only_matching_entries_count(rig):
    """One message with a genuine and a forged entry: the genuine one acks its row, the other is ignored."""
    c = rig.client(ack_timeout_s=30)
    rig.seal(2)
    wait_for(lambda: rig.outbox.stats()["sent"] == 2, 10, "broker PUBACKs")
    forger = Peer(rig.broker, "radarcam/v1/nobody/#")
    try:
        entries = [{"seq": 1, "sha256": rig.outbox.get(1).sha256}, {"seq": 2, "sha256": "f" * 64}]
        forger.publish(_ack_topic(rig), json.dumps({"acks": entries, "seqs": [1, 2]}).encode())
        wait_for(lambda: rig.outbox.state(1) == "acked", 5, "seq 1 acked")
        assert rig.outbox.state(2) == "sent"
        wait_for(lambda: c.health().get("bad_acks") == 1, 5, "seq 2's forged entry rejected")
    finally:
        forger.close()


# ---------------------------------------------------------------------- the documented broker ACL

USERS = {"registry": "reg-pw", "cam-test-01": "dev-pw", "cam-other": "other-pw"}


def _documented_acl() -> str:
    text = (Path(__file__).resolve().parents[2] / "docs" / "packet.md").read_text()
    m = re.search(r"```acl\n(.*?)```", text, re.S)
    assert m, "docs/packet.md lost its ```acl example"
    return m.group(1)


class AclBroker(MosquittoBroker):
    """The test broker with passwords and the ACL block from docs/packet.md; no anonymous clients."""

    def _write_conf(self) -> None:
        super()._write_conf()
        pw, acl = self.workdir / "passwd", self.workdir / "acl"
        for i, (user, password) in enumerate(USERS.items()):
            cmd = ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), user, password]
            subprocess.run(cmd, check=True, capture_output=True)
        acl.write_text(_documented_acl())
        conf = self.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
        self.conf.write_text(conf + f"password_file {pw}\nacl_file {acl}\n")


@pytest.fixture
def acl_broker(tmp_path):
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs mosquitto_passwd")
    broker = AclBroker(workdir=tmp_path / "acl-broker").start()
    try:
        yield broker
    finally:
        broker.close()


def test_documented_acl_keeps_other_clients_off_the_ack_topic(acl_broker, rig, tmp_path):
    """Under the docs' ACL another device's ack (even with the right digests) is refused by the broker,
    while the device's packets and the registry's acks flow as usual."""
    rig.broker = acl_broker  # requested before rig: torn down after rig's clients and registries
    (tmp_path / "dev.pw").write_text(USERS[rig.device] + "\n")
    c = rig.client(username=rig.device, password_file=tmp_path / "dev.pw", ack_timeout_s=1.0)
    rig.seal(3)
    wait_for(lambda: rig.outbox.stats()["sent"] == 3, 10, "PUBACKs: the device may write its own topics")
    forger = Peer(acl_broker, _ack_topic(rig), "cam-other", USERS["cam-other"])
    try:
        entries = [{"seq": s, "sha256": rig.outbox.get(s).sha256} for s in (1, 2, 3)]
        rc = forger.publish(_ack_topic(rig), json.dumps({"acks": entries, "seqs": [1, 2, 3]}).encode())
        assert rc.is_failure, f"broker accepted another device's ack: {rc}"
        reg = rig.registry(username="registry", password=USERS["registry"])
        rig.assert_delivered(3, reg)
        assert not forger.on(topics.ACK), "another device could read this device's acks"
    finally:
        forger.close()
    assert c.health()["bad_acks"] == 0


def test_registry_command_logs_in_under_the_documented_acl(acl_broker, rig, tmp_path):
    """``radarcam registry run --username/--password-file``: the CLI registry can take the ACL's
    'registry' role, so its acks reach the device (anonymous, it could not even connect)."""
    import sys

    from device.uplink.keys import public_pem

    rig.broker = acl_broker
    (tmp_path / "dev.pw").write_text(USERS[rig.device] + "\n")
    (tmp_path / "reg.pw").write_text(USERS["registry"] + "\n")
    (tmp_path / "dev.pub.pem").write_text(public_pem(rig.key))
    rig.client(username=rig.device, password_file=tmp_path / "dev.pw", ack_timeout_s=1.0)
    rig.seal(2)
    cmd = [
        sys.executable, "-m", "device.cli", "registry", "run", "--db", str(tmp_path / "cli-registry.db"),
        "--broker", f"{acl_broker.host}:{acl_broker.port}", "--device-key", f"{rig.device}={tmp_path / 'dev.pub.pem'}",
        "--username", "registry", "--password-file", str(tmp_path / "reg.pw"), "--connect-timeout", "10",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: rig.outbox.state(1) == "acked" and rig.outbox.state(2) == "acked", 30, "CLI acks")
    finally:
        proc.terminate()
        err = proc.communicate(timeout=10)[1]
    assert "subscribed on" in err, err


def test_refusing_puback_leaves_the_row_pending_and_backs_off(acl_broker, rig, tmp_path):
    """MQTT 5 PUBACK 0x87: a unit logged in under another device's name may not write this device's
    topics. Nothing reached the broker, so the rows stay pending (not 'sent'), the reason is reported and
    they wait out a back-off; given its own credentials, the unit delivers the same rows."""
    rig.broker = acl_broker
    (tmp_path / "other.pw").write_text(USERS["cam-other"] + "\n")
    c = rig.client(username="cam-other", password_file=tmp_path / "other.pw", ack_timeout_s=30)
    rig.seal(2)
    wait_for(lambda: c.health()["puback_failures"] >= 2, 10, "the broker's refusing PUBACKs")
    assert [rig.outbox.state(s) for s in (1, 2)] == ["pending", "pending"]
    h = c.health()
    assert "PUBACK 0x87 Not authorized" in h["last_error"], h["last_error"]
    assert h["backoff"] == 2 and h["oldest_stuck_seq"] == 1 and "0x87" in h["oldest_stuck_error"]
    assert h["oldest_stuck_retry_in_s"] > 20  # 30 s (the ack timeout) after a first failure
    # mosquitto grants the subscription and filters what it delivers (the read ACL): SUBACK says ok
    assert h["ack_subscription"] == "ok"
    assert {s: n for s, (n, _t, _e) in rig.outbox.backoff().items()} == {1: 1, 2: 1}
    published = c.published
    c.stop()
    assert published == 2  # refused once each, not resent at once
    (tmp_path / "dev.pw").write_text(USERS[rig.device] + "\n")
    reg = rig.registry(username="registry", password=USERS["registry"])
    rig.client(username=rig.device, password_file=tmp_path / "dev.pw")
    rig.assert_delivered(2, reg)  # the restart retried them once: kept, never skipped
    assert rig.outbox.backoff() == {}


def test_a_missing_password_file_leaves_the_uplink_down_and_retried_not_the_daemon_stopped(
    acl_broker, rig, tmp_path
):
    """Before, UplinkClient.start() raised on a password file that did not exist (a console save of a
    path not yet created), the daemon exited and systemd restarted it into the same error: no
    enforcement at all. Now the uplink says why it is down and sets itself up once the file is there."""
    from device.uplink.mqtt import UplinkClient

    rig.broker = acl_broker
    pw = tmp_path / "later.pw"
    c = UplinkClient(
        rig.cfg(username=rig.device, password_file=pw, ack_timeout_s=1.0), rig.device, rig.outbox
    )
    c.setup_retry_s = 0.5
    rig.clients.append(c)
    c.start()  # does not raise
    h = c.health()
    assert h["state"] == "fault" and "later.pw" in h["setup_error"] and not h["connected"]
    rig.seal(2)  # evidence goes on being sealed meanwhile
    pw.write_text(USERS[rig.device] + "\n")
    pw.chmod(0o600)
    wait_for(
        lambda: c.health().get("state") is None and c.connected, 10, "the uplink set up once the file exists"
    )
    reg = rig.registry(username="registry", password=USERS["registry"])
    rig.assert_delivered(2, reg)


def test_a_broker_that_refuses_the_ack_subscription_is_said_in_health(rig):
    """Brokers that apply the ACL at SUBSCRIBE (not mosquitto, which filters at delivery) answer with a
    failing SUBACK: nothing would ever be acked, and health says why instead of looking like a slow
    registry. Paho's own reason codes, as its network thread hands them to the callback."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    c = rig.client()
    wait_for(lambda: c.health()["ack_subscription"] == "ok", 10, "the ack subscription granted")
    c._on_subscribe(None, None, 1, [ReasonCode(PacketTypes.SUBACK, "Not authorized")], None)
    h = c.health()
    assert h["ack_subscription"] == "refused: Not authorized" and "ack subscription" in h["last_error"]
