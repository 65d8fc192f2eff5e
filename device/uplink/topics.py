"""MQTT topic names (DESIGN.md "MQTT topics"): one place so device, registry and tests agree."""

from __future__ import annotations

VIOLATION = "violation"
EVENT = "event"
ACK = "ack"
STATUS = "status"
STATS = "stats"

COSE_CONTENT_TYPE = 'application/cose; cose-type="cose-sign1"'
"""MQTT 5 content type of packets on ``violation`` and ``event``."""


def topic(prefix: str, device_id: str, leaf: str) -> str:
    return f"{prefix}/{device_id}/{leaf}"


def packet_topic(prefix: str, device_id: str, kind: str) -> str:
    """Violations go on ``violation``; every other sealed kind (events) on ``event``."""
    return topic(prefix, device_id, VIOLATION if kind == "violation" else EVENT)


def shared(group: str, filt: str) -> str:
    """MQTT 5 shared subscription: instances in one group split the messages between them."""
    return f"$share/{group}/{filt}"


def device_from_topic(prefix: str, t: str) -> tuple[str, str] | None:
    """``prefix/<device>/<leaf>`` -> (device, leaf); None for anything else."""
    if not t.startswith(prefix + "/"):
        return None
    rest = t[len(prefix) + 1 :].split("/")
    if len(rest) != 2 or not rest[0]:
        return None
    return rest[0], rest[1]
