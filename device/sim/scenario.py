"""Traffic scenarios: the single ground truth that drives both the radar emulator and the synthetic camera.

A scenario is a list of vehicles with entry time, lane, direction, true speed (optionally accelerating),
class and plate. Geometry is one-dimensional along the road, measured from the cabinet: the radar beam
covers ``[beam_near_m, beam_far_m]``; the camera's capture line (where plates are largest and sharpest)
is at ``capture_m``. Inbound vehicles approach (distance shrinks), outbound ones move away.

Scenario time is seconds from the scenario start; emulators add a shared monotonic epoch so radar
bytes and camera frames describe the very same vehicles at the very same instants.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from device.model import Direction

# Moroccan plate letters (printed Arabic, Latin transliteration used by the registry).
MA_LETTERS = {"أ": "A", "ب": "B", "د": "D", "ه": "H", "و": "W", "ط": "T", "ي": "Y"}


@dataclass(frozen=True)
class Geometry:
    beam_near_m: float = 6.0
    beam_far_m: float = 45.0
    capture_m: float = 14.0
    mount_angle_deg: float = 0.0
    """True angle between beam and road: the radar sees ``v * cos(angle)``."""


@dataclass(frozen=True)
class Vehicle:
    vid: int
    t_enter_s: float
    """Time the vehicle enters the radar beam."""
    lane: str
    direction: Direction
    speed_kmh: float
    """True speed at entry (km/h)."""
    plate_text: str
    plate_latin: str
    country: str = "MA"
    vehicle_class: str = "car"
    accel_mps2: float = 0.0
    color_bgr: tuple[int, int, int] = (200, 200, 200)
    length_m: float = 4.5

    def _travelled_m(self, t: float) -> float:
        dt = t - self.t_enter_s
        v0 = self.speed_kmh / 3.6
        return v0 * dt + 0.5 * self.accel_mps2 * dt * dt

    def speed_kmh_at(self, t: float) -> float:
        return max(0.0, self.speed_kmh + self.accel_mps2 * (t - self.t_enter_s) * 3.6)

    def distance_m(self, t: float, geom: Geometry) -> float:
        """Distance of the vehicle's front from the cabinet along the road at scenario time ``t``."""
        s = self._travelled_m(t)
        if self.direction is Direction.INBOUND:
            return geom.beam_far_m - s
        return geom.beam_near_m + s

    def time_at_distance(self, d: float, geom: Geometry) -> float:
        """Scenario time when the front is at distance ``d`` (solves the motion equation)."""
        s = (geom.beam_far_m - d) if self.direction is Direction.INBOUND else (d - geom.beam_near_m)
        v0 = self.speed_kmh / 3.6
        a = self.accel_mps2
        if abs(a) < 1e-9:
            return self.t_enter_s + s / v0
        disc = v0 * v0 + 2 * a * s
        return self.t_enter_s + (-v0 + math.sqrt(max(disc, 0.0))) / a

    def t_exit_s(self, geom: Geometry) -> float:
        far_end = geom.beam_near_m if self.direction is Direction.INBOUND else geom.beam_far_m
        return self.time_at_distance(far_end, geom)

    def t_capture_s(self, geom: Geometry) -> float:
        return self.time_at_distance(geom.capture_m, geom)

    def in_beam(self, t: float, geom: Geometry) -> bool:
        return self.t_enter_s <= t <= self.t_exit_s(geom)

    def radar_speed_kmh(self, t: float, geom: Geometry) -> float:
        """Speed the radar measures: the component along the beam (cosine effect)."""
        return self.speed_kmh_at(t) * math.cos(math.radians(geom.mount_angle_deg))


@dataclass
class Scenario:
    vehicles: list[Vehicle]
    duration_s: float
    seed: int = 0
    geometry: Geometry = field(default_factory=Geometry)
    lanes: dict[str, float] = field(default_factory=lambda: {"1": 60.0, "2": 60.0})
    """Lane id -> speed limit (km/h) the scenario was generated against."""
    lane_directions: dict[str, str] = field(default_factory=lambda: {"1": "inbound", "2": "outbound"})

    def vehicles_in_beam(self, t: float) -> list[Vehicle]:
        return [v for v in self.vehicles if v.in_beam(t, self.geometry)]

    # -- persistence (so a scenario can be replayed exactly by the demo, tests and technicians)
    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        d = json.loads(text)
        vehicles = [
            Vehicle(**{**v, "direction": Direction(v["direction"]), "color_bgr": tuple(v["color_bgr"])})
            for v in d["vehicles"]
        ]
        return cls(
            vehicles=vehicles,
            duration_s=d["duration_s"],
            seed=d["seed"],
            geometry=Geometry(**d["geometry"]),
            lanes=d["lanes"],
            lane_directions=d["lane_directions"],
        )

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def random_plate_ma(rng: random.Random) -> tuple[str, str]:
    """A Moroccan plate ``digits-letter-region`` as printed and in Latin transliteration.

    Kept for callers of the skeleton; :func:`generate` uses the ANPR plate generator instead.
    """
    digits = str(rng.randint(1, 99999))
    letter = rng.choice(list(MA_LETTERS))
    region = str(rng.randint(1, 89))
    return f"{digits}-{letter}-{region}", f"{digits}-{MA_LETTERS[letter]}-{region}"


def generate(
    seed: int = 0,
    *,
    vehicles: int | None = None,
    duration_s: float = 120.0,
    lanes: dict[str, float] | None = None,
    lane_directions: dict[str, str] | None = None,
    speeder_share: float = 0.3,
    tolerance_margin_kmh: float = 8.0,
    geometry: Geometry | None = None,
    min_gap_s: float = 0.8,
    rate_per_s: float | None = None,
) -> Scenario:
    """Mixed traffic with clear ground truth.

    Speeders are at least ``tolerance_margin_kmh`` above the limit plus tolerance, others at least 2 km/h
    under the limit, so the expected violation count does not depend on rounding at a band edge. Only
    one vehicle is in the beam at a time (``min_gap_s`` of clear beam between them) unless ``rate_per_s``
    asks for denser traffic than that allows; then overlaps are real and the tracker must cope.
    """
    from device.anpr.synth import random_plate  # the ANPR generator: plates the OCR grammar accepts

    rng = random.Random(seed)
    lanes = dict(lanes or {"1": 60.0, "2": 60.0})
    lane_directions = dict(
        lane_directions or {lid: ("inbound" if i % 2 == 0 else "outbound") for i, lid in enumerate(lanes)}
    )
    geom = geometry or Geometry()
    out: list[Vehicle] = []
    t = 1.0
    i = 0
    while True:
        if vehicles is not None and i >= vehicles:
            break
        lane = rng.choice(sorted(lanes))
        limit = lanes[lane]
        direction = Direction(lane_directions[lane])
        if rng.random() < speeder_share:
            tol = 3.0 if limit <= 100 else limit * 0.03
            speed = limit + tol + tolerance_margin_kmh + rng.uniform(0, 45)
        else:
            speed = rng.uniform(max(15.0, limit - 30), limit - 2)
        plate, latin = random_plate("MA", rng)
        cls = rng.choices(["car", "truck", "bus", "motorcycle"], weights=[80, 10, 5, 5])[0]
        v = Vehicle(
            vid=i,
            t_enter_s=round(t, 3),
            lane=lane,
            direction=direction,
            speed_kmh=round(speed, 2),
            plate_text=plate,
            plate_latin=latin,
            vehicle_class=cls,
            color_bgr=(rng.randint(30, 230), rng.randint(30, 230), rng.randint(30, 230)),
        )
        end = v.t_exit_s(geom)
        if vehicles is None and end > duration_s:
            break
        out.append(v)
        i += 1
        if rate_per_s:
            t += rng.expovariate(rate_per_s)
        else:
            t = end + min_gap_s + rng.uniform(0.0, 2.0)
    dur = max(duration_s if vehicles is None else 0.0, (out[-1].t_exit_s(geom) + 1.0) if out else 1.0)
    return Scenario(
        vehicles=out, duration_s=dur, seed=seed, geometry=geom, lanes=lanes, lane_directions=lane_directions
    )
