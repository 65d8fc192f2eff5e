"""The vocabulary every stage speaks: readings, passes, decisions, frames, plate reads, violations.

These are plain frozen dataclasses so they are cheap to create on the radar thread and safe to hand
between threads. Times are integers in nanoseconds: ``*_mono_ns`` on ``time.monotonic_ns()`` (the
clock that lines up radar and camera), ``*_utc_ns`` on the wall clock (evidence). Speeds are floats in
km/h converted from the module's units without rounding; the raw value and unit are kept alongside so
every number in a packet can be traced back to the bytes the radar sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

if TYPE_CHECKING:  # numpy only for type hints: the radar path never needs it
    import numpy as np

    from device.uplink.packet import PacketContext


class Direction(StrEnum):
    """Direction of travel relative to the radar (OPS24x convention: positive speed = inbound)."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class Reading:
    """One speed report for one object from the radar module."""

    t_mono_ns: int
    """Host monotonic time at which the line (or frame) carrying this reading was received."""
    speed_kmh: float
    """Absolute speed in km/h, converted from ``speed_raw``/``unit`` without rounding."""
    direction: Direction | None
    magnitude: float | None = None
    sensor_time: float | None = None
    """The module's own timestamp in seconds (OT/OM/JSON ``time``), when reported."""
    speed_raw: float | None = None
    """The signed number exactly as the module sent it, in ``unit``."""
    unit: str = "mps"
    """Unit of ``speed_raw``: ``mps``, ``kmh``, ``mph``, ``fps``, ``cmps``."""
    obj_index: int = 0
    """Position of this object in a multi-object report (0 = strongest / first)."""
    alias_max_kmh: float | None = None
    """Set by a driver when the reading lies near the top of its sampling rate's unambiguous range:
    that maximum (km/h). A faster vehicle of the other direction folds into exactly that zone, so the
    tracker marks the pass ``near_alias_limit``. None: not near it (or the driver cannot alias)."""


@dataclass(frozen=True, slots=True)
class Pass:
    """One vehicle crossing the beam, built by the tracker from consecutive readings."""

    pass_id: str
    start_mono_ns: int
    end_mono_ns: int
    direction: Direction | None
    readings: tuple[Reading, ...]
    peak_kmh: float
    peak_mono_ns: int
    """Time of the peak reading: the trigger time used to pick camera frames."""
    median_kmh: float
    spread_kmh: float
    lane: str | None = None
    valid: bool = True
    invalid_reasons: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.readings)


@dataclass(frozen=True, slots=True)
class Decision:
    """The enforcement outcome for one pass, with every number that led to it."""

    violation: bool
    jurisdiction: str
    lane: str | None
    vehicle_class: str
    limit_kmh: float | None
    """None only when no lane carries the pass's direction (never a violation then)."""
    measured_kmh: float
    """Raw peak as measured by the radar (km/h, unrounded)."""
    cosine_factor: float
    """``1 / cos(correction_angle_deg)``: never more than the true angle to the vehicle can need."""
    mount_angle_deg: float
    corrected_kmh: float
    """``measured_kmh * calibration_factor * cosine_factor``: calibration, then the mount angle."""
    tolerance_kmh: float
    enforced_kmh: float
    """``corrected_kmh`` minus the metrological tolerance: the speed the fine is based on."""
    excess_kmh: float | None
    rule_id: str | None = None
    degree: str | None = None
    fine_min: float | None = None
    fine_max: float | None = None
    currency: str | None = None
    points: int = 0
    settleable: bool = True
    reason: str = ""
    verified_schedule: bool = True
    """False for jurisdiction tables not yet checked against the law (stubs)."""
    calibration_factor: float = 1.0
    """Scale factor from the radar's calibration report (1.0 = none), applied before the cosine."""
    schedule_source: str = ""
    """The jurisdiction table's legal source (e.g. the law and its articles)."""
    schedule_sha256: str | None = None
    """sha256 of the jurisdiction table file applied: which version of the fine schedule decided."""
    calibration_valid: bool | None = None
    """Whether the measurement's (local) date lies within the radar's verification certificate (``date`` to
    ``valid_until``): False is never a violation; None when there is no such date or no trusted clock."""
    correction_angle_deg: float = 0.0
    """Angle the cosine correction used: ``max(0, mount_angle_deg - beam_half_angle_deg)``, the smallest
    angle at which a vehicle inside the beam can be seen (the peak comes from there), so the correction
    never overstates; 0 (no correction) when the beam width is unknown."""
    beam_half_angle_deg: float | None = None
    """The radar's azimuth half beam width used for that angle (None: unknown, no correction)."""
    tolerance_rule: dict[str, Any] | None = None
    """The rule ``tolerance_kmh`` came from: ``fixed_kmh``, ``threshold_kmh``, ``percent`` and ``source``
    (``jurisdiction``: the schedule's own; ``site``: the enforcement config's override), so a registry can
    recompute it without the config."""
    vehicle_class_source: str = "default"
    """``default``: ``vehicle_class`` is the site's default class (the unit does not classify vehicles);
    ``given``: a classifier said so."""
    limit_at_utc_ns: int | None = None
    """The instant the limit (its time windows) and the calibration's validity were judged at: the peak
    reading's time, the measurement the fine rests on."""


FrameLayout: TypeAlias = Literal["bgr", "yuv420"]
"""How a :class:`Frame` holds its pixels (``device.capture.pixels``)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame, never copied by the ring.

    ``image`` holds the pixels as ``layout`` says: ``bgr`` is ``(H, W, 3)`` uint8 in OpenCV order,
    ``yuv420`` is planar I420 ``(H*3/2, W)`` uint8 (half the memory; see ``device.capture.pixels``).
    Consumers ask for what they need - :meth:`bgr` for pictures, :meth:`gray` for the plate reader -
    instead of reading ``image`` directly, so either layout works everywhere.
    """

    t_mono_ns: int
    frame_no: int
    image: np.ndarray
    exposure_us: int | None = None
    analogue_gain: float | None = None
    source: str = ""
    layout: FrameLayout = "bgr"

    def __post_init__(self) -> None:
        if self.layout not in ("bgr", "yuv420"):
            raise ValueError(f"unknown frame layout {self.layout!r} (bgr or yuv420)")

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the picture."""
        from device.capture.pixels import frame_size

        return frame_size(self.image, self.layout)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(height, width, 3)``: the shape of :meth:`bgr`'s array, without converting."""
        w, h = self.size
        return h, w, 3

    def bgr(self, out: np.ndarray | None = None) -> np.ndarray:
        """The picture as BGR: ``image`` itself for a BGR frame, a converted copy for YUV 4:2:0; with
        ``out`` (an ``(H, W, 3)`` uint8 array, e.g. the top of an evidence image) written there instead,
        so building a JPEG needs no second full-size copy."""
        if self.layout == "bgr":
            if out is None:
                return self.image
            out[...] = self.image
            return out
        from device.capture.pixels import yuv420_to_bgr

        return yuv420_to_bgr(self.image, out)

    def gray(self) -> np.ndarray:
        """Full-range grey, as ``cv2.COLOR_BGR2GRAY`` gives (what the plate models were trained on)."""
        if self.layout == "yuv420":
            from device.capture.pixels import yuv420_gray

            return yuv420_gray(self.image)
        import cv2

        return cv2.cvtColor(self.image, cv2.COLOR_BGR2GRAY)


@dataclass(frozen=True, slots=True)
class ClockStamp:
    """Wall-clock time of an event plus how far it can be trusted."""

    utc_ns: int
    mono_ns: int
    synchronized: bool
    source: str
    """``ntp``, ``gps``, ``pps``, ``rtc``, ``none`` or ``unknown``."""
    offset_ns: int | None = None
    max_error_ns: int | None = None


@dataclass(frozen=True, slots=True)
class EvidenceImage:
    """A JPEG that goes into the packet, with the capture times of the frame it came from."""

    role: str
    """``overview`` (full frame with data bar), ``plate`` (close-up crop), ``context``."""
    jpeg: bytes
    t_mono_ns: int
    t_utc_ns: int
    frame_no: int
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()


@dataclass(frozen=True, slots=True)
class PlateRead:
    """The plate as read on the device (after voting across frames)."""

    text: str | None
    """As printed, groups joined by ``-``, ASCII digits, letters in the plate's script."""
    text_latin: str | None
    country: str | None
    confidence: float
    char_confidences: tuple[float, ...] = ()
    box: tuple[int, int, int, int] | None = None
    """(x, y, w, h) of the plate in the frame ``frame_no``."""
    frame_no: int | None = None
    frames_voted: int = 1
    ocr_model: str | None = None
    ocr_model_sha256: str | None = None
    detector_model: str | None = None
    detector_model_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Violation:
    """Everything known about one breach, ready to be sealed into a packet."""

    violation_id: str
    pass_: Pass
    decision: Decision
    clock: ClockStamp
    images: tuple[EvidenceImage, ...] = ()
    plate: PlateRead | None = None
    plate_pending: bool = False
    plate_not_read: str | None = None
    """Why no plate read was made when none was (``anpr_backlog_full``, ``read_failed``): not "pending",
    no amendment will follow."""
    extra: dict[str, Any] = field(default_factory=dict)
    context: PacketContext | None = None
    """The settings it was decided under (site, radar, config hash): what its packet states, even when a
    reload came between the decision and the seal. None: the sealer's own (tests, tools)."""
