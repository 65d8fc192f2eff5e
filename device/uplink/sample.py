"""Synthetic violations for tests, the uplink benchmark and demos of the packet format.

Numbers are made up but shaped like real ones (several readings, a Moroccan decision, two JPEGs) so
that packet size, encoding and signing cost are representative.
"""

from __future__ import annotations

import time
import uuid
from functools import lru_cache

from device.config import RadarConfig, SiteConfig
from device.model import ClockStamp, Decision, Direction, EvidenceImage, Pass, PlateRead, Reading, Violation
from device.uplink.packet import PacketContext


def sample_context(device_id: str, key_id: str) -> PacketContext:
    return PacketContext(
        device_id=device_id,
        firmware_version="0.1.0-test",
        config_hash="c" * 64,
        key_id=key_id,
        site=SiteConfig(),
        radar=RadarConfig(serial_number="OPS-TEST-1"),
        anpr_models={"detector": {"name": "det.tflite", "sha256": "d" * 64}},
    )


@lru_cache(maxsize=8)
def noise_jpeg(target_bytes: int, seed: int = 0) -> tuple[bytes, int, int]:
    """A JPEG of roughly ``target_bytes`` (noise compresses badly, like a busy road scene at q90)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    side = 64
    while True:
        img = rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (3, 3), 0)
        _ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), 90])
        if len(buf) >= target_bytes or side > 4096:
            return buf.tobytes(), img.shape[1], img.shape[0]
        side = int(side * max(1.05, min(2.0, (target_bytes / len(buf)) ** 0.5)))


def sample_violation(n: int = 0, *, image_bytes: int = 20_000, images: int = 2) -> Violation:
    t0 = time.monotonic_ns()
    readings = tuple(
        Reading(
            t_mono_ns=t0 + i * 50_000_000,
            speed_kmh=84.3 + i * 0.1 + n * 1e-3,
            direction=Direction.INBOUND,
            magnitude=812.5,
            sensor_time=12.05 + i * 0.05,
            speed_raw=(84.3 + i * 0.1 + n * 1e-3) / 3.6,
            unit="mps",
        )
        for i in range(6)
    )
    p = Pass(
        pass_id=f"pass-{n}",
        start_mono_ns=readings[0].t_mono_ns,
        end_mono_ns=readings[-1].t_mono_ns,
        direction=Direction.INBOUND,
        readings=readings,
        peak_kmh=readings[-1].speed_kmh,
        peak_mono_ns=readings[-1].t_mono_ns,
        median_kmh=readings[3].speed_kmh,
        spread_kmh=0.5,
        lane="1",
    )
    measured = p.peak_kmh
    d = Decision(
        violation=True, jurisdiction="MA", lane="1", vehicle_class="car", limit_kmh=60.0,
        measured_kmh=measured, cosine_factor=1.0, mount_angle_deg=0.0, corrected_kmh=measured,
        tolerance_kmh=3.0, enforced_kmh=measured - 3.0, excess_kmh=measured - 63.0, rule_id="MA-2",
        degree="2", fine_min=500.0, fine_max=1000.0, currency="MAD", points=4,
    )  # fmt: skip
    clock = ClockStamp(time.time_ns(), t0, True, "ntp", offset_ns=1234, max_error_ns=2_000_000)
    imgs = []
    for i in range(images):
        jpeg, w, h = noise_jpeg(image_bytes, i)
        role = "overview" if i == 0 else "plate"
        imgs.append(EvidenceImage(role, jpeg, t0 + i, clock.utc_ns + i, 100 + i, w, h))
    plate = PlateRead("12345-أ-6", "12345-A-6", "MA", 0.93, (0.9, 0.95), (10, 20, 120, 30), 101, 3)
    return Violation(str(uuid.uuid4()), p, d, clock, tuple(imgs), plate)
