"""Uplink benchmark on loopback with a real mosquitto: seal rate, publish->ack latency, backlog drain.

* seal: ``Outbox.seal`` (CBOR + Ed25519 + SQLite insert with synchronous=FULL) of packets carrying
  2 x 100 KB JPEGs (200 KB of images per packet); payloads are built beforehand.
* latency: one packet at a time, from ``wake()`` after sealing to the registry's ack being applied on
  the device (registry verify + durable insert + ack included); 200 KB images.
* drain: a backlog sealed while offline (small images, see note), then the client is started and the
  time until the last ack is measured. ``RADARCAM_BENCH_BACKLOG`` overrides the backlog size.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from device.config import UplinkConfig
from device.uplink.keys import generate_key
from device.uplink.mqtt import UplinkClient
from device.uplink.outbox import Outbox
from device.uplink.packet import violation_payload
from device.uplink.registry import Registry
from device.uplink.sample import sample_context, sample_violation
from device.uplink.testing_broker import MosquittoBroker, wait_for

DEVICE = "bench-cam"


class _TimedOutbox(Outbox):
    """Records when each seq's registry ack is applied (the end of the latency measurement)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.acked_at: dict[int, int] = {}
        self.acked_event = threading.Event()

    def mark_acked(self, seqs) -> int:
        seqs = list(seqs)
        n = super().mark_acked(seqs)
        now = time.perf_counter_ns()
        for s in seqs:
            self.acked_at.setdefault(int(s), now)
        self.acked_event.set()
        return n


def _row(metric: str, value: float, unit: str, target: str | None, note: str) -> dict:
    return {"bench": "uplink", "metric": metric, "value": value, "unit": unit, "target": target, "note": note}


def _seal_rate(tmp: Path, key) -> float:
    ctx = sample_context(DEVICE, key.key_id)
    rates = []
    for rep in range(3):
        ob = Outbox(tmp / f"seal{rep}.db", key)
        payloads = [violation_payload(sample_violation(i, image_bytes=100_000), ctx) for i in range(60)]
        t0 = time.perf_counter()
        for p in payloads:
            ob.seal(p)
        rates.append(len(payloads) / (time.perf_counter() - t0))
        ob.close()
        for f in tmp.glob(f"seal{rep}.db*"):
            f.unlink()
    return statistics.median(rates)


def _cfg(broker: MosquittoBroker, **kw) -> UplinkConfig:
    return UplinkConfig(host=broker.host, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=1.0, **kw)


def _latency(tmp: Path, key, broker: MosquittoBroker) -> list[float]:
    ob = _TimedOutbox(tmp / "lat.db", key)
    reg = Registry(
        tmp / "lat-reg.db", host=broker.host, port=broker.port, keys={DEVICE: key.public_key}
    ).start()
    client = UplinkClient(_cfg(broker), DEVICE, ob)
    client.start()
    wait_for(lambda: client.connected, 10, "uplink connected")
    ctx = sample_context(DEVICE, key.key_id)
    lat_ms = []
    try:
        for i in range(320):
            s = ob.seal(violation_payload(sample_violation(i, image_bytes=100_000), ctx))
            t0 = time.perf_counter_ns()
            client.wake()
            wait_for(lambda s=s: s.seq in ob.acked_at, 10, f"ack of {s.seq}", interval=0.0005)
            if i >= 20:  # warm-up excluded
                lat_ms.append((ob.acked_at[s.seq] - t0) / 1e6)
    finally:
        client.stop()
        reg.close()
        ob.close()
    return lat_ms


def _drain(tmp: Path, key, broker: MosquittoBroker, n: int) -> tuple[float, float]:
    ob = Outbox(tmp / "drain.db", key)
    ctx = sample_context(DEVICE, key.key_id)
    payload = violation_payload(sample_violation(0, image_bytes=3_000), ctx)
    t_seal = time.perf_counter()
    for i in range(n):
        ob.seal({**payload, "packet_id": f"drain-{i}"})
    seal_s = time.perf_counter() - t_seal
    reg = Registry(
        tmp / "drain-reg.db", host=broker.host, port=broker.port, keys={DEVICE: key.public_key}
    ).start()
    client = UplinkClient(_cfg(broker, max_inflight=100), DEVICE, ob)
    t0 = time.perf_counter()
    client.start()
    try:
        wait_for(lambda: ob.stats()["acked"] == n, 600, "backlog drained", interval=0.05)
        dt = time.perf_counter() - t0
        assert reg.count(DEVICE) == n and reg.chain(DEVICE)["intact"]
    finally:
        client.stop()
        reg.close()
        ob.close()
    return n / dt, n / seal_s


def run() -> list[dict]:
    backlog = int(os.environ.get("RADARCAM_BENCH_BACKLOG", "5000"))
    with tempfile.TemporaryDirectory(prefix="radarcam-bench-uplink-") as d:
        tmp = Path(d)
        key = generate_key(tmp / "key.pem")
        rows = [
            _row(
                "seal_rate",
                _seal_rate(tmp, key),
                "packets/s",
                ">= 200",
                "2 x 100 KB JPEG, SQLite FULL sync; median of 3 x 60",
            )
        ]
        with MosquittoBroker(workdir=tmp / "broker") as broker:
            lat = sorted(_latency(tmp, key, broker))
            p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
            note = f"{len(lat)} sequential packets, 200 KB images, wake -> registry ack applied on device"
            rows.append(_row("ack_latency_p50", statistics.median(lat), "ms", None, note))
            rows.append(_row("ack_latency_p99", p99, "ms", "< 50", note))
            rate, seal_small = _drain(tmp, key, broker, backlog)
            rows.append(
                _row("drain_rate", rate, "packets/s", ">= 300",
                     f"backlog of {backlog} packets (~11 KB each: 2 x 3 KB images), window 100, registry on SQLite")
            )  # fmt: skip
            rows.append(
                _row(
                    "backlog_seal_rate", seal_small, "packets/s", None, f"sealing the {backlog} small packets"
                )
            )
    return rows
