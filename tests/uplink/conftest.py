"""Fixtures for the uplink tests: a real mosquitto on loopback, a test PKI, keys, a wired-up rig."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device.config import TlsConfig, UplinkConfig
from device.model import ClockStamp
from device.uplink.keys import SigningKey, generate_key
from device.uplink.mqtt import UplinkClient
from device.uplink.outbox import Outbox
from device.uplink.packet import verify, violation_payload
from device.uplink.registry import Registry
from device.uplink.sample import sample_context, sample_violation
from device.uplink.testing_broker import MosquittoBroker, TestPki, make_test_pki, wait_for

DEVICE = "cam-test-01"


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> TestPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mosquitto(pki, tmp_path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tls=pki, workdir=tmp_path / "broker").start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def key(tmp_path) -> SigningKey:
    return generate_key(tmp_path / "keys" / "signing-key.pem")


def uplink_cfg(broker: MosquittoBroker, **kw) -> UplinkConfig:
    base = dict(
        host=broker.host, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5, ack_timeout_s=1.5,
        keepalive_s=5, max_inflight=10,
    )  # fmt: skip
    base.update(kw)
    return UplinkConfig(**base)


def tls_for(pki: TestPki, *, rogue: bool = False) -> TlsConfig:
    return TlsConfig(
        enabled=True,
        ca_file=pki.ca_file,
        cert_file=pki.rogue_cert if rogue else pki.client_cert,
        key_file=pki.rogue_key if rogue else pki.client_key,
    )


@dataclass
class Rig:
    broker: MosquittoBroker
    key: SigningKey
    outbox: Outbox
    tmp: Path
    registries: list[Registry]
    clients: list[UplinkClient]
    pki: TestPki
    device: str = DEVICE

    def cfg(self, **kw) -> UplinkConfig:
        return uplink_cfg(self.broker, **kw)

    def clock(self) -> ClockStamp:
        return ClockStamp(time.time_ns(), time.monotonic_ns(), True, "ntp")

    def tls(self, *, rogue: bool = False) -> TlsConfig:
        return tls_for(self.pki, rogue=rogue)

    def seal(self, n: int, *, image_bytes: int = 8_000) -> list[int]:
        ctx = sample_context(DEVICE, self.key.key_id)
        seqs = []
        for i in range(n):
            seqs.append(
                self.outbox.seal(violation_payload(sample_violation(i, image_bytes=image_bytes), ctx)).seq
            )
        for c in self.clients:
            c.wake()
        return seqs

    def registry(self, *, db: Path | None = None, tls: TlsConfig | None = None, **kw) -> Registry:
        port = self.broker.tls_port if tls else self.broker.port
        reg = Registry(
            db or self.tmp / "registry.db", host=self.broker.host, port=port, tls=tls,
            keys={DEVICE: self.key.public_key}, **kw,
        )  # fmt: skip
        self.registries.append(reg)
        return reg.start()

    def client(self, **cfg) -> UplinkClient:
        c = UplinkClient(self.cfg(**cfg), DEVICE, self.outbox)
        self.clients.append(c)
        c.start()
        return c

    def assert_delivered(
        self, n: int, reg: Registry | None = None, timeout: float = 10.0, outbox: Outbox | None = None
    ) -> None:
        """Exactly n packets, each once, all verified on arrival, chain intact, all acked on the device."""
        reg = reg or self.registries[-1]
        ob = outbox or self.outbox
        wait_for(lambda: reg.count(DEVICE) >= n, timeout, f"registry to hold {n} packets")
        wait_for(lambda: ob.stats()["acked"] == n, timeout, f"device to see {n} acks")
        rows = reg.packets(DEVICE)
        assert [r["seq"] for r in rows] == list(range(1, n + 1))
        assert len({r["packet_id"] for r in rows}) == n
        chain = reg.chain(DEVICE)
        assert chain["intact"], chain
        for r in rows:  # stored bytes are exactly what the device sealed
            assert r["data"] == ob.get(r["seq"]).data
            verify(r["data"], self.key)
        assert not reg.rejections()


@pytest.fixture
def rig(mosquitto, key, pki, tmp_path) -> Iterator[Rig]:
    ob = Outbox(tmp_path / "outbox.db", key)
    r = Rig(mosquitto, key, ob, tmp_path, [], [], pki)
    try:
        yield r
    finally:
        for c in r.clients:
            c.stop()
        for reg in r.registries:
            reg.close()
        ob.close()
