"""A minimal sending process for the SIGKILL fault test: seals up to N packets, publishes until all are acked.

Run as ``python sender_proc.py OUTBOX KEY HOST PORT N DEVICE``. Restarting it continues where the killed
one stopped: the outbox (not this process) knows what was sealed and what is still unacknowledged.
"""

from __future__ import annotations

import sys
import time

from device.config import UplinkConfig
from device.uplink.keys import load_signing_key
from device.uplink.mqtt import UplinkClient
from device.uplink.outbox import Outbox
from device.uplink.packet import violation_payload
from device.uplink.sample import sample_context, sample_violation


def main(outbox_path: str, key_path: str, host: str, port: str, n: str, device: str) -> int:
    key = load_signing_key(key_path)
    ob = Outbox(outbox_path, key)
    cfg = UplinkConfig(host=host, port=int(port), reconnect_min_s=0.1, reconnect_max_s=0.5, ack_timeout_s=1.5,
                       keepalive_s=5, max_inflight=5)  # fmt: skip
    client = UplinkClient(cfg, device, ob)
    client.start()
    ctx = sample_context(device, key.key_id)
    total = int(n)
    while ob.stats()["last_seq"] < total:
        ob.seal(violation_payload(sample_violation(ob.stats()["last_seq"], image_bytes=6_000), ctx))
        client.wake()
        print(f"sealed {ob.stats()['last_seq']}", flush=True)
        time.sleep(0.01)
    deadline = time.monotonic() + 30
    while ob.stats()["acked"] < total and time.monotonic() < deadline:
        time.sleep(0.05)
    client.stop()
    st = ob.stats()
    print(f"done acked={st['acked']}", flush=True)
    return 0 if st["acked"] == total else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
