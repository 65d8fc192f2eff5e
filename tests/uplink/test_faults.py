"""End-to-end delivery through a real mosquitto, with the faults listed in issue 3.

Each test seals N packets, injects a fault, recovers, then checks that the registry holds exactly the N
packets, each once, verified, chain intact, and that the device saw every ack (``Rig.assert_delivered``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cbor2

from device.uplink import topics
from device.uplink.keys import generate_key, public_pem
from device.uplink.outbox import Outbox
from device.uplink.packet import event_payload, seal_bytes, verify
from device.uplink.registry import Registry
from device.uplink.sample import sample_context
from device.uplink.testing_broker import MqttPeer, wait_for

REPO = Path(__file__).resolve().parents[2]


class Observer(MqttPeer):
    """What a third party on the broker sees, with the unit's latest retained status."""

    def status(self) -> dict | None:
        st = self.on(topics.STATUS)
        return json.loads(st[-1].payload) if st else None


def test_delivery_status_lwt_and_content_type(rig):
    reg = rig.registry()
    obs = Observer(rig.broker, f"radarcam/v1/{rig.device}/#")
    try:
        c = rig.client()
        wait_for(lambda: (obs.status() or {}).get("state") == "online", 5, "retained online status")
        rig.seal(19)
        ev = event_payload(
            "tamper", {"door": "open"}, sample_context(rig.device, rig.key.key_id), rig.clock()
        )
        assert rig.outbox.seal(ev, kind="event").seq == 20
        c.wake()
        rig.assert_delivered(20, reg)
        assert reg.packets(rig.device)[-1]["kind"] == "event"
        assert len(obs.on(topics.EVENT)) >= 1 and obs.on(topics.EVENT)[0].properties.ContentType
        packets = obs.on(topics.VIOLATION)
        assert packets and all(m.properties.ContentType == topics.COSE_CONTENT_TYPE for m in packets)
        assert c.publish_status({"health": "ok", "outbox": rig.outbox.stats()["pending"]})
        wait_for(lambda: (obs.status() or {}).get("health") == "ok", 5, "status update")
        assert c.publish_stats({"count": 3})
        wait_for(lambda: obs.on(topics.STATS), 5, "stats message")
        h = c.health()
        assert h["connected"] and h["protocol"] == "mqttv5" and h["inflight"] == 0 and h["last_ack"]
        c.stop()
        wait_for(lambda: (obs.status() or {}).get("state") == "offline", 5, "retained offline status")
    finally:
        obs.close()


def test_fault1_broker_killed_mid_stream_and_restarted(rig):
    reg = rig.registry()
    c = rig.client()
    rig.seal(15)
    wait_for(lambda: reg.count(rig.device) >= 3, 10, "first packets stored")
    rig.broker.kill()
    wait_for(lambda: not c.connected, 5, "client to notice the broker is gone")
    rig.seal(15)  # sealed while the broker is down: recorded locally, nothing lost
    assert rig.outbox.stats()["last_seq"] == 30
    rig.broker.start()
    rig.assert_delivered(30, reg)
    assert c.health()["reconnects"] >= 1


def test_fault2_sender_sigkilled_mid_publish_and_restarted(rig, tmp_path):
    reg = rig.registry()
    obs = Observer(rig.broker, f"radarcam/v1/{rig.device}/{topics.STATUS}")
    key_path, ob_path, n = str(rig.key.path), str(tmp_path / "sender-outbox.db"), 40
    cmd = [sys.executable, str(Path(__file__).with_name("sender_proc.py")), ob_path, key_path,
           rig.broker.host, str(rig.broker.port), str(n), rig.device]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_for(lambda: reg.count(rig.device) >= 8, 15, "sender to deliver some packets")
        p.send_signal(signal.SIGKILL)
        p.wait(5)
        killed_at = reg.count(rig.device)
        assert killed_at < n, "killed too late to test anything"
        wait_for(lambda: (obs.status() or {}).get("state") == "offline", 5, "LWT offline after SIGKILL")
        p2 = subprocess.run(cmd, env=env, capture_output=True, timeout=40, text=True)
        assert p2.returncode == 0, p2.stdout
        ob = Outbox(ob_path, rig.key)
        try:
            rig.assert_delivered(n, reg, outbox=ob)
        finally:
            ob.close()
    finally:
        obs.close()


def test_fault3_registry_down_then_up(rig):
    reg = rig.registry()
    c = rig.client()
    rig.seal(10)
    wait_for(lambda: rig.outbox.stats()["acked"] == 10, 10, "first 10 stored and acked")
    reg.stop()
    rig.seal(10)
    wait_for(lambda: rig.outbox.stats()["sent"] == 10, 10, "broker PUBACKs with no registry listening")
    assert rig.outbox.stats()["acked"] == 10 and reg.count(rig.device) == 10
    reg2 = rig.registry()  # same database, new instance
    rig.assert_delivered(20, reg2)
    assert c.health()["resends"] >= 1


def test_fault4_two_registries_share_one_group(rig):
    r1, r2 = rig.registry(), rig.registry()
    rig.client(max_inflight=20)
    rig.seal(40)
    rig.assert_delivered(40, r1)
    by = {row["instance"] for row in r1.packets(rig.device)}
    assert by == {r1.instance, r2.instance}, "shared subscription did not split the load"
    assert r1.stored + r2.stored == 40 and r1.count() == 40


def test_fault5_tampered_and_replayed_packets_rejected(rig, tmp_path):
    reg = rig.registry()
    rig.client()
    rig.seal(5)
    rig.assert_delivered(5, reg)
    topic = topics.packet_topic("radarcam/v1", rig.device, "violation")
    # tampered: the speed changed after signing, signature kept
    tag = cbor2.loads(rig.outbox.get(3).data)
    payload = cbor2.loads(tag.value[2])
    payload["measurement"]["enforced_kmh"] -= 20.0
    tampered = cbor2.dumps(cbor2.CBORTag(18, [tag.value[0], {}, cbor2.dumps(payload), tag.value[3]]))
    # replayed: an exact copy of a stored packet
    replay = rig.outbox.get(4).data
    # forged: a new seq signed by some other key
    other = generate_key(tmp_path / "attacker.pem")
    forged = seal_bytes({**payload, "seq": 6, "packet_id": "forged"}, other)
    # seq reuse: different content under an already stored seq, validly signed (e.g. a restored backup)
    reused = seal_bytes({**payload, "seq": 2, "packet_id": "reused"}, rig.key)
    attacker = Observer(rig.broker, "nothing/here")
    try:
        for data in (tampered, replay, forged, reused):
            attacker.publish(topic, data)
        attacker.publish(topics.packet_topic("radarcam/v1", "cam-other", "violation"), replay)
        wait_for(lambda: len(reg.rejections()) >= 4 and reg.duplicates >= 1, 5, "rejections recorded")
    finally:
        attacker.close()
    reasons = [r["reason"] for r in reg.rejections()]
    assert any("bad signature" in r for r in reasons), reasons
    assert any("key id" in r for r in reasons), reasons
    assert any("replay: seq 2" in r for r in reasons), reasons
    assert any("unknown device 'cam-other'" in r for r in reasons), reasons
    rows = reg.packets(rig.device)
    assert len(rows) == 5 and rows[3]["deliveries"] == 2  # replay stored once
    assert (
        verify(rows[2]["data"], rig.key)["measurement"]["enforced_kmh"]
        != payload["measurement"]["enforced_kmh"]
    )
    assert reg.chain(rig.device)["intact"]
    rig.seal(1)  # the device's own seq 6 still goes through after the forged one was refused
    wait_for(lambda: reg.count(rig.device) == 6, 10, "seq 6 stored")
    assert reg.chain(rig.device)["intact"]


def test_fault6_quota_reached_no_pending_removed(rig):
    ob = Outbox(rig.tmp / "small.db", rig.key, quota_bytes=150_000, degraded_max_bytes=40_000)
    rig.outbox.close()
    rig.outbox = ob
    rig.client()
    rig.seal(12, image_bytes=25_000)  # nobody acks: no registry yet
    st = ob.stats()
    assert st["quota_exceeded"] and st["last_seq"] == 12 and st["acked"] == 0
    assert ob.retention() == 0 and len(ob.next_unacked(100)) == 12
    reg = rig.registry()
    rig.assert_delivered(12, reg)
    assert ob.retention() > 0


def test_mutual_tls(rig):
    reg = rig.registry(tls=rig.tls())
    c = rig.client(port=rig.broker.tls_port, tls=rig.tls())
    rig.seal(5)
    rig.assert_delivered(5, reg)
    assert c.health()["tls"] is True


def test_wrong_client_certificate_refused(rig):
    reg = rig.registry()
    bad = rig.client(port=rig.broker.tls_port, tls=rig.tls(rogue=True))
    rig.seal(2)
    wait_for(lambda: bad.connect_failures >= 2, 10, "refused TLS connection attempts")
    assert not bad.connected and reg.count() == 0
    assert rig.outbox.stats()["pending"] == 2  # nothing lost while refused


def test_mqtt311(rig):
    reg = rig.registry()
    c = rig.client(protocol="mqttv311")
    rig.seal(8)
    rig.assert_delivered(8, reg)
    assert c.health()["protocol"] == "mqttv311"


class Mqtt311OnlyBroker:
    """A TCP front for mosquitto that behaves like a 3.1.1-only broker: an MQTT 5 CONNECT gets the
    3.1.1 answer "unacceptable protocol version" (CONNACK 20 02 00 01); anything else is proxied."""

    def __init__(self, upstream) -> None:
        import socket

        self.upstream = upstream
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.refused_v5 = 0
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            head = b""
            while len(head) < 12:  # fixed header (1 + up to 4 length bytes) + "\0\4MQTT" + level
                chunk = conn.recv(12 - len(head))
                if not chunk:
                    break
                head += chunk
            n = 1
            while n < len(head) and head[n] & 0x80:  # remaining-length varint
                n += 1
            level = head[n + 7] if len(head) > n + 7 else None
            if level == 5:
                self.refused_v5 += 1
                conn.sendall(b"\x20\x02\x00\x01")
                conn.close()
                continue
            up = socket.create_connection((self.upstream.host, self.upstream.port))
            up.sendall(head)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._stop.set()
        self.srv.close()


def test_mqtt5_falls_back_to_311_on_an_old_broker(rig):
    reg = rig.registry()
    old = Mqtt311OnlyBroker(rig.broker)
    try:
        c = rig.client(port=old.port)  # configured for MQTT 5
        rig.seal(6)
        rig.assert_delivered(6, reg)
        assert old.refused_v5 >= 1 and c.health()["protocol"] == "mqttv311"
    finally:
        old.close()


def _default_sigint() -> None:
    """In the child: SIGINT back to its default (a test run started in the background ignores it, and
    children inherit that), since Ctrl-C is how the process is stopped here."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_registry_cli_process(rig, tmp_path):
    pem = tmp_path / f"{rig.device}.pub.pem"
    pem.write_text(public_pem(rig.key))
    db = tmp_path / "cli-registry.db"
    cmd = [sys.executable, "-m", "device.cli", "registry", "run", "--db", str(db), "--broker",
           f"{rig.broker.host}:{rig.broker.port}", "--device-key", f"{rig.device}={pem}", "--stats-every", "0.2"]  # fmt: skip
    p = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    try:
        assert "subscribed" in p.stderr.readline()
        rig.client()
        rig.seal(5)
        wait_for(lambda: rig.outbox.stats()["acked"] == 5, 10, "acks from the registry process")
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
        p.stderr.close()
    reg = Registry(db, keys={})  # keys remembered in the database
    try:
        assert reg.count(rig.device) == 5 and reg.chain(rig.device)["intact"]
        assert reg.export(tmp_path / "out") == 5
        assert (tmp_path / "out" / f"{rig.device}.pub.pem").read_text() == pem.read_text()
    finally:
        reg.close()
