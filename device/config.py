"""Unit configuration: pydantic models validated at start-up, loaded from TOML, saved atomically.

Every section forbids unknown keys so a typo in the field is an error at start-up, not a silently
ignored setting at the roadside. :func:`load` turns validation errors into :class:`ConfigError` whose
message names the key path, the bad value and what is allowed; the CLI prints it and exits 2 without
a traceback. :func:`config_hash` is the sha256 of a canonical JSON form: it goes into every packet so
the registry knows exactly which settings produced a measurement.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SIGNING_KEY_DIRS: tuple[Path, ...] = (Path("/etc/radarcam/keys"), Path("/run/credentials"))
"""Where installs keep the signing key (systemd/radarcam.service loads it from there) and where systemd
puts its credential copy (``/run/credentials/radarcam.service/signing-key``, the daemon's preferred
one): no setting that names a file for the uplink may point into one (see
``Config._uplink_never_reads_the_key`` and :mod:`device.credentials`)."""
UPLINK_FILES_DIR = Path("/etc/radarcam/mqtt")
"""The folder install.sh makes for the MQTT password and TLS files (root:radarcam 0750): the console's
default ``console.allowed_file_dirs``. Not /etc/radarcam itself: the console can write there (it
replaces radarcam.toml), so it could plant a symlink; and not /etc/radarcam/tls, which holds the TLS
client key (a console that could name it as the password file would have it sent to its own host)."""


def reserved_key_dirs(device: DeviceConfig) -> list[Path]:
    """Folders no uplink file may lie in: the install's key folder, the state dir's, that of
    ``device.key_path``, and systemd's credential folders (``$CREDENTIALS_DIRECTORY`` too when set)."""
    dirs = [*SIGNING_KEY_DIRS, device.state_dir / "keys"]
    if device.key_path is not None:
        dirs.append(device.key_path.parent)
    cred = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred:
        dirs.append(Path(cred))
    return dirs


def signing_key_candidates(device: DeviceConfig) -> list[Path]:
    """Every path the daemon may load its signing key from (device/daemon.py ``default_key_path``)."""
    out = [
        device.state_dir / "keys" / "signing-key.pem",
        Path("/run/credentials/radarcam.service/signing-key"),
    ]
    if device.key_path is not None:
        out.append(device.key_path)
    cred = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred:
        out.append(Path(cred) / "signing-key")
    return out


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- device / site


class DeviceConfig(_Section):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = "radarcam-dev"
    state_dir: Path = Path("/var/lib/radarcam")
    """Outbox, evidence, audit log. The systemd unit's StateDirectory."""
    key_path: Path | None = None
    """Ed25519 signing key (PEM, 0600). Default: ``$CREDENTIALS_DIRECTORY/signing-key`` or state_dir/keys."""
    runtime_dir: Path = Path("/run/radarcam")
    """Control socket for the console; ring-buffer spill on tmpfs."""


class TimeWindow(_Section):
    """A limit that applies only on some days / hours (e.g. school zones)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    )
    start: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "00:00"
    end: Annotated[str, Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")] = "24:00"
    limit_kmh: Annotated[float, Field(gt=0, le=300)]

    @model_validator(mode="after")
    def _proper_span(self) -> TimeWindow:
        """A window that never matches would be a silently ignored limit: refused instead."""
        if not self.days:
            raise ValueError("a time window needs at least one day")
        if self.end > "24:00":
            raise ValueError(f"end {self.end} is after 24:00")
        if self.start >= self.end:
            raise ValueError(
                f"start {self.start} must be before end {self.end}; a window across midnight is two "
                f"windows ({self.start}-24:00 and 00:00-{self.end}, the second on the following days)"
            )
        return self


class LaneConfig(_Section):
    id: Annotated[str, Field(min_length=1, max_length=16)]
    direction: Literal["inbound", "outbound"] = "inbound"
    limit_kmh: Annotated[float, Field(gt=0, le=300)]
    class_limits_kmh: dict[
        Literal["car", "truck", "bus", "motorcycle"], Annotated[float, Field(gt=0, le=300)]
    ] = Field(default_factory=dict)
    windows: list[TimeWindow] = Field(default_factory=list)
    roi: tuple[float, float, float, float] | None = None
    """Lane region in the camera frame as fractions (x, y, w, h); None = whole frame."""


class SiteConfig(_Section):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = "SITE-0001"
    name: Annotated[str, Field(max_length=120)] = "Test site"
    name_local: Annotated[str, Field(max_length=120)] | None = None
    """Site name in the local script (e.g. Arabic), rendered shaped and right-to-left on the data bar."""
    latitude: Annotated[float, Field(ge=-90, le=90)] = 33.9716
    longitude: Annotated[float, Field(ge=-180, le=180)] = -6.8498
    timezone: str = "Africa/Casablanca"
    jurisdiction: Literal["MA", "SA", "EG", "MR"] = "MA"
    mount_angle_deg: Annotated[float, Field(ge=0, le=45)] = 0.0
    """Horizontal angle between the beam and the direction of travel (cosine correction)."""
    lanes: Annotated[list[LaneConfig], Field(min_length=1)] = Field(
        default_factory=lambda: [LaneConfig(id="1", direction="inbound", limit_kmh=60.0)]
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        """Checked here, not at the first pass: a typo must fail ``config check``, not the daemon."""
        try:
            ZoneInfo(v)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(
                f"unknown IANA time zone {v!r} (e.g. 'Africa/Casablanca', 'Asia/Riyadh')"
            ) from None
        return v

    @model_validator(mode="after")
    def _unique_lanes(self) -> SiteConfig:
        ids = [lane.id for lane in self.lanes]
        if len(ids) != len(set(ids)):
            raise ValueError(f"lane ids must be unique, got {ids}")
        dirs = [lane.direction for lane in self.lanes]
        for d in sorted({x for x in dirs if dirs.count(x) > 1}):
            # The tracker tells passes apart by direction only (one radar, no range or angle): every
            # pass of the direction would get the first such lane and its limit, whatever lane it used.
            same = [lane.id for lane in self.lanes if lane.direction == d]
            raise ValueError(
                f"lanes {same} are all {d}: the radar cannot tell which of them a vehicle used, so "
                f"configure one {d} lane (the limit that applies to all of them)"
            )
        return self


# --------------------------------------------------------------------------- radar / tracker

BEAM_HALF_ANGLE_DEG: dict[str, float] = {"OPS241-A": 21.0, "OPS242-A": 21.0, "OPS243-A": 10.0}
"""Azimuth half beam width (3 dB) per OmniPreSense Doppler module: OPS243-A about 20 degrees in all,
OPS241-A about 42. These are the datasheet figures as we know them; no datasheet could be read from
here to check them, and OPS242-A's is the OPS241-A's (wider). A strong reflector can be seen a little
outside the 3 dB beam, which a wider figure covers: wider is always the safe side (it can only
under-correct), so a site sets ``radar.beam_half_angle_deg`` from its module's datasheet or
certificate when that gives a wider beam (docs/radar.md)."""


class RadarCalibration(_Section):
    reference: str = "UNCALIBRATED"
    """Certificate / report number of the last metrological verification."""
    date: str | None = None
    valid_until: str | None = None
    authority: str | None = None
    scale_factor: Annotated[float, Field(gt=0.8, lt=1.2)] = 1.0
    """Multiplicative correction from the calibration report (1.0 = none)."""

    @field_validator("date", "valid_until")
    @classmethod
    def _iso_date(cls, v: str | None) -> str | None:
        """A real calendar date (YYYY-MM-DD): enforcement compares the measurement's date with it.
        ``fromisoformat`` alone also takes ISO week dates (2025-W01-1, 10 characters too) and 20250101."""
        if v is None:
            return v
        if not (len(v) == 10 and v[4] == "-" and v[7] == "-" and (v[:4] + v[5:7] + v[8:]).isdigit()):
            raise ValueError(f"{v!r} is not a date (YYYY-MM-DD)")
        try:
            dt.date.fromisoformat(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a date (YYYY-MM-DD)") from None
        return v

    @model_validator(mode="after")
    def _dates_in_order(self) -> RadarCalibration:
        if (
            self.date
            and self.valid_until
            and dt.date.fromisoformat(self.valid_until) < dt.date.fromisoformat(self.date)
        ):
            raise ValueError(f"valid_until {self.valid_until} is before the calibration date {self.date}")
        return self


class RadarConfig(_Section):
    driver: Literal["ops24x"] = "ops24x"
    port: str = "/dev/radar"
    baudrate: Annotated[int, Field(ge=1200, le=4_000_000)] = 115200
    model: str = "OPS243-A"
    serial_number: str | None = None
    units: Literal["mps", "kmh", "mph"] = "kmh"
    """Units the module is told to report in (the driver converts everything to km/h)."""
    min_speed_kmh: Annotated[float, Field(ge=0, le=100)] = 10.0
    direction_filter: Literal["both", "inbound", "outbound"] = "both"
    sample_rate: Literal["auto", "SX", "S1", "S2", "SL", "SC", "SV"] = "auto"
    """Module sampling rate command; ``auto`` picks one fast enough for the site's highest limit."""
    objects: Annotated[int, Field(ge=2, le=9)] = 2
    """Objects per report (O1..O9). At least 2 so a second vehicle in the beam (same or opposite
    direction) is reported rather than masked by the strongest one: the tracker needs it."""
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0
    max_line_bytes: Annotated[int, Field(ge=64, le=65536)] = 1024
    beam_half_angle_deg: Annotated[float, Field(gt=0, le=60)] | None = None
    """Azimuth half beam width (degrees) of the module; None = the datasheet value for ``model``
    (``BEAM_HALF_ANGLE_DEG``). The cosine correction uses ``mount_angle - this``: the smallest angle
    at which a vehicle in the beam is seen, so it never overstates. Too wide only under-corrects."""
    calibration: RadarCalibration = Field(default_factory=RadarCalibration)

    def beam_half_angle(self) -> float:
        """The configured half beam width, else the model's datasheet value."""
        if self.beam_half_angle_deg is not None:
            return self.beam_half_angle_deg
        m = re.search(r"OPS24[123]-?A", self.model.upper())
        key = m.group(0).replace("-", "")[:6] + "-A" if m else None
        if key not in BEAM_HALF_ANGLE_DEG:
            raise ValueError(
                f"radar.model {self.model!r}: beam width unknown; set radar.beam_half_angle_deg from the "
                f"module's datasheet (known models: {', '.join(sorted(BEAM_HALF_ANGLE_DEG))})"
            )
        return BEAM_HALF_ANGLE_DEG[key]

    @model_validator(mode="after")
    def _beam_known(self) -> RadarConfig:
        """Checked at load: an unknown beam width would otherwise only fail at the first pass."""
        self.beam_half_angle()
        return self

    @model_validator(mode="after")
    def _backoff_order(self) -> RadarConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_min_s ({self.reconnect_min_s})"
            )
        return self


class TrackerConfig(_Section):
    gap_ms: Annotated[int, Field(ge=50, le=5000)] = 400
    """A pass ends after this long without a reading in its direction."""
    min_readings: Annotated[int, Field(ge=1, le=100)] = 4
    max_accel_mps2: Annotated[float, Field(gt=0)] = 12.0
    """Above this between consecutive readings the pass is physically implausible."""
    max_spread_kmh: Annotated[float, Field(gt=0)] = 12.0
    two_target_kmh: Annotated[float, Field(gt=0)] = 8.0
    """Simultaneous objects differing by more than this mean two vehicles in the beam."""
    max_pass_s: Annotated[float, Field(gt=0)] = 10.0


class ToleranceConfig(_Section):
    fixed_kmh: Annotated[float, Field(ge=0, le=20)] = 3.0
    threshold_kmh: Annotated[float, Field(gt=0, le=300)] = 100.0
    percent: Annotated[float, Field(ge=0, le=20)] = 3.0


class EnforcementConfig(_Section):
    tolerance: ToleranceConfig | None = None
    """Overrides the jurisdiction's tolerance when set."""
    enforce_invalid_passes: bool = False
    """Never true in the field: implausible passes are recorded but not enforced."""
    default_vehicle_class: Literal["car", "truck", "bus", "motorcycle"] = "car"


# --------------------------------------------------------------------------- camera / anpr


class CameraConfig(_Section):
    backend: Literal["picamera2", "opencv", "synthetic"] = "picamera2"
    source: str = ""
    """OpenCV: V4L2 index or path, RTSP/HTTP URL or video file. Ignored by picamera2/synthetic."""
    width: Annotated[int, Field(ge=160, le=8192)] = 1920
    height: Annotated[int, Field(ge=120, le=8192)] = 1080
    fps: Annotated[float, Field(gt=0, le=240)] = 30.0
    exposure_us: Annotated[int, Field(ge=0, le=100000)] = 1000
    """Short exposure freezes motion (~1/1000 s at 90 km/h). 0 = auto."""
    analogue_gain: Annotated[float, Field(ge=0, le=64)] = 0.0
    preview_width: Annotated[int, Field(ge=64, le=1920)] = 640
    preview_height: Annotated[int, Field(ge=48, le=1080)] = 360
    ring_seconds: Annotated[float, Field(gt=0, le=30)] = 2.0
    frame_layout: Literal["yuv420", "bgr"] = "yuv420"
    """How the ring holds frames: ``yuv420`` (12 bits a pixel: half of ``bgr``'s memory; picamera2
    delivers it natively, the OpenCV and synthetic backends convert each frame, about 0.5 ms at 1080p
    on the development machine) or ``bgr`` (24 bits, no conversion: for a unit short of CPU rather than
    memory). Evidence and plate reads are the same either way (see ``device/capture/pixels.py``)."""
    capture_offset_m: Annotated[float, Field(ge=0, le=100)] = 8.0
    """Distance along the road from the beam's near edge to where the camera sees plates best (set when
    aiming). The trigger is when the vehicle is there: ``offset / speed`` before the end of an inbound
    pass, after the start of an outbound one."""
    rear_plate_offset_m: Annotated[float, Field(ge=0, le=30)] = 4.5
    """Outbound vehicles show their rear plate, about a car length behind the front the radar meets
    first: added to ``capture_offset_m`` for outbound passes."""
    pre_trigger_ms: Annotated[int, Field(ge=0, le=10000)] = 400
    post_trigger_ms: Annotated[int, Field(ge=0, le=10000)] = 400
    evidence_frames: Annotated[int, Field(ge=1, le=10)] = 2
    jpeg_quality: Annotated[int, Field(ge=30, le=100)] = 90
    reconnect_s: Annotated[float, Field(gt=0)] = 2.0

    @model_validator(mode="after")
    def _even_for_yuv420(self) -> CameraConfig:
        if self.frame_layout == "yuv420" and (self.width % 2 or self.height % 2):
            raise ValueError(
                f"frame_layout yuv420 needs an even width and height (got {self.width}x{self.height}): "
                "4:2:0 chroma covers 2x2 pixels; use an even size or frame_layout bgr"
            )
        return self


class AnprConfig(_Section):
    enabled: bool = True
    detector_model: Path | None = None
    """Default: the committed model in models/ (or the installed share dir)."""
    ocr_model: Path | None = None
    threads: Annotated[int, Field(ge=1, le=8)] = 2
    countries: list[Literal["MA", "SA", "EG", "MR"]] = Field(default_factory=lambda: ["MA"])
    """Plates the unit expects; the daemon always adds the site's jurisdiction (first) and infers each
    plate's country among them (a foreign car at a border is read as one, not forced to local rules)."""
    deadline_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    """A violation waits at most this long for its plate read; after that it is sealed ``plate: pending``."""
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.5


# --------------------------------------------------------------------------- uplink


class TlsConfig(_Section):
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _files_mean_tls(self) -> TlsConfig:
        """Files set with ``enabled`` left false connected in plain text, the password included."""
        given = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n) is not None]
        if given and not self.enabled:
            raise ValueError(
                f"tls: {', '.join(given)} set but enabled = false: the uplink would connect in plain text "
                "(set enabled = true, or remove them)"
            )
        return self


class UplinkConfig(_Section):
    enabled: bool = True
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    protocol: Literal["mqttv5", "mqttv311"] = "mqttv5"
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    topic_prefix: str = "radarcam/v1"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = 20
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0)] = 60.0
    packet_max_bytes: Annotated[int, Field(ge=65536, le=64 * 1024 * 1024)] = 1024 * 1024
    retention_days: Annotated[float, Field(ge=0)] = 30.0
    quota_mb: Annotated[float, Field(gt=0)] = 2048.0
    stats_interval_s: Annotated[int, Field(ge=10, le=86400)] = 300
    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """A packet published but not acknowledged by the registry within this is published again."""

    @field_validator("topic_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("topic prefix must be non-empty, without wildcards or leading/trailing '/'")
        return v


# --------------------------------------------------------------------------- gpio / console / daemon


BCM_PIN_MAX = 27
"""The Raspberry Pi header's GPIO lines are BCM 0-27."""


class GpioConfig(_Section):
    enabled: bool = False
    pin_factory: Literal["auto", "lgpio", "mock"] = "auto"
    flash_pin: int | None = None
    flash_pulse_ms: Annotated[float, Field(gt=0, le=100)] = 2.0
    led_ok_pin: int | None = None
    led_fault_pin: int | None = None
    relay_pin: int | None = None
    tamper_pin: int | None = None
    tamper_active_high: bool = False
    tamper_bounce_ms: Annotated[float, Field(ge=0, le=1000)] = 50.0
    """Switch debounce; 0 = none."""

    @model_validator(mode="after")
    def _pins_valid_and_distinct(self) -> GpioConfig:
        """Refused at load, not at start-up: a bad or shared pin makes GPIO start fail, which leaves
        tamper detection off while enforcement carries on."""
        seen: dict[int, str] = {}
        for name in ("flash_pin", "led_ok_pin", "led_fault_pin", "relay_pin", "tamper_pin"):
            pin = getattr(self, name)
            if pin is None:
                continue
            if not 0 <= pin <= BCM_PIN_MAX:
                raise ValueError(f"gpio.{name} = {pin}: BCM pin numbers are 0-{BCM_PIN_MAX}")
            if pin in seen:
                raise ValueError(f"gpio.{name} and gpio.{seen[pin]} both use BCM pin {pin}")
            seen[pin] = name
        return self


class ConsoleConfig(_Section):
    bind: str = "0.0.0.0"
    port: Annotated[int, Field(ge=1, le=65535)] = 8443
    https: bool = True
    """Plain HTTP only for a lab bench; never in the field."""
    state_dir: Path = Path("/var/lib/radarcam-console")
    session_hours: Annotated[float, Field(gt=0, le=24)] = 8.0
    max_failed_logins: Annotated[int, Field(ge=1, le=100)] = 5
    lockout_minutes: Annotated[float, Field(gt=0)] = 15.0
    login_attempts_per_minute: Annotated[int, Field(ge=1, le=1000)] = 20
    """Per client address, over all account names (against password spraying)."""
    allowed_file_dirs: list[Path] = Field(default_factory=lambda: [UPLINK_FILES_DIR])
    """The only directories the console may point TLS / password file settings into (a path already in
    the file may stay as it is). Never a folder the console can write, nor one holding secrets that are
    not the uplink's: see ``UPLINK_FILES_DIR``."""
    argon2_time_cost: Annotated[int, Field(ge=1, le=20)] = 3
    argon2_memory_kib: Annotated[int, Field(ge=8192, le=1048576)] = 65536
    """argon2id cost (default: RFC 9106 low-memory profile, ~0.5 s per login on a Pi 4)."""


class ClockConfig(_Section):
    source: Literal["auto", "chrony", "timedatectl", "adjtimex", "assume-synced", "assume-unsynced"] = "auto"
    jump_threshold_ms: Annotated[int, Field(ge=1)] = 500
    max_error_ms: Annotated[float, Field(gt=0)] = 100.0
    """Above this estimated error the clock is reported unsynchronised."""
    refresh_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    """How often the sync state is re-read (in the background; stamps only read the cached state)."""


class Config(_Section):
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    site: SiteConfig = Field(default_factory=SiteConfig)
    radar: RadarConfig = Field(default_factory=RadarConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    enforcement: EnforcementConfig = Field(default_factory=EnforcementConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    anpr: AnprConfig = Field(default_factory=AnprConfig)
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    gpio: GpioConfig = Field(default_factory=GpioConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)

    @model_validator(mode="after")
    def _sample_rate_reaches(self) -> Config:
        """An explicit sampling rate must reach what ``auto`` requires (``required_max_speed_kmh``):
        a vehicle above the rate's maximum folds into the other direction at a wrong speed, and one
        folded far enough is below the ``near_alias_limit`` flag, so only the margin protects."""
        if self.radar.driver != "ops24x" or self.radar.sample_rate == "auto":
            return self
        from device.sensors.ops24x import max_speed_kmh, required_max_speed_kmh

        top = max(
            [lane.limit_kmh for lane in self.site.lanes]
            + [v for lane in self.site.lanes for v in lane.class_limits_kmh.values()]
        )
        need, reach = required_max_speed_kmh(top), max_speed_kmh(self.radar.sample_rate)
        if reach < need:
            raise ValueError(
                f"radar.sample_rate {self.radar.sample_rate} measures up to {reach:.0f} km/h; the highest "
                f"limit ({top:g} km/h) needs {need:.0f} km/h: choose a faster rate or 'auto'"
            )
        return self

    @model_validator(mode="after")
    def _class_limits_can_apply(self) -> Config:
        """The unit does not classify vehicles: every one is judged as ``default_vehicle_class``, so a
        limit for any other class would be shown in the console and never applied."""
        default = self.enforcement.default_vehicle_class
        for lane in self.site.lanes:
            other = sorted(set(lane.class_limits_kmh) - {default})
            if other:
                raise ValueError(
                    f"lane {lane.id}: class_limits_kmh for {', '.join(other)} would never apply: the unit "
                    f"does not classify vehicles (each is judged as enforcement.default_vehicle_class = "
                    f"{default!r})"
                )
        return self

    @model_validator(mode="after")
    def _tolerance_override_is_lawful(self) -> Config:
        """An override may deduct more than a verified schedule's tolerance (a type approval may ask
        for it), never less; and a faster car must never be retained at a lower speed than a slower one
        (the step at the threshold: ``fixed_kmh >= threshold_kmh * percent / 100``)."""
        t = self.enforcement.tolerance
        if t is None:
            return self
        if t.fixed_kmh < t.threshold_kmh * t.percent / 100:
            raise ValueError(
                f"enforcement.tolerance: {t.fixed_kmh:g} km/h up to {t.threshold_kmh:g} km/h and "
                f"{t.percent:g} % above retains a car just above {t.threshold_kmh:g} km/h at a lower speed "
                f"than one at it; fixed_kmh must be at least {t.threshold_kmh * t.percent / 100:g}"
            )
        from device.jurisdictions import Tolerance, load_jurisdiction

        j = load_jurisdiction(self.site.jurisdiction)
        if not j.verified:
            return self
        own, override = j.tolerance, Tolerance(**t.model_dump())  # the rule the enforcer will apply
        edges = {own.threshold_kmh, t.threshold_kmh}
        speeds = sorted({x / 2 for x in range(0, 2001)} | edges | {e + 1e-6 for e in edges})
        for v in speeds:
            if override.deduction_kmh(v) < own.deduction_kmh(v) - 1e-9:
                raise ValueError(
                    f"enforcement.tolerance deducts less than the {j.code} schedule's own tolerance at "
                    f"{v:g} km/h ({own.fixed_kmh:g} km/h up to {own.threshold_kmh:g} km/h, {own.percent:g} % "
                    f"above: {j.source}); an override may only be more lenient"
                )
        return self

    @model_validator(mode="after")
    def _uplink_never_reads_the_key(self) -> Config:
        """The uplink's files go to (or authenticate with) a remote host: none may be the signing key or
        lie beside it, whoever wrote the setting (the console can set these paths)."""
        reserved = [Path(os.path.realpath(d)) for d in reserved_key_dirs(self.device)]
        u = self.uplink
        for name, path in (
            ("password_file", u.password_file),
            ("tls.ca_file", u.tls.ca_file),
            ("tls.cert_file", u.tls.cert_file),
            ("tls.key_file", u.tls.key_file),
        ):
            if path is None:
                continue
            real = Path(os.path.realpath(path))
            for d in reserved:
                if real == d or d in real.parents:
                    raise ValueError(
                        f"uplink.{name} {path} is in the signing-key directory {d}: the uplink must never "
                        "read the signing key (keep MQTT credentials elsewhere, e.g. /etc/radarcam/mqtt/)"
                    )
        return self


# --------------------------------------------------------------------------- load / save / hash


class ConfigError(Exception):
    """A configuration file that cannot be used; the message is meant for a technician."""


def _describe(err: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    value = err.get("input")
    etype = err.get("type", "")
    if etype == "extra_forbidden":
        return f"{path}: unknown key (value {value!r}); check the spelling against docs/operations.md"
    allowed = ""
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        allowed = f"; allowed: {ctx['expected']}"
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    return f"{path}: {err.get('msg', 'invalid')} (got {shown}){allowed}"


def parse(data: dict[str, Any], *, source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors(include_url=False)]
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines)) from None


def load(path: str | os.PathLike[str]) -> Config:
    """Reads and validates a TOML file. Raises :class:`ConfigError` with a readable message."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read configuration: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse(data, source=str(p))


def to_dict(cfg: Config) -> dict[str, Any]:
    """JSON/TOML-safe dict (paths as strings, no None values: TOML has no null)."""
    return _drop_none(cfg.model_dump(mode="json"))


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def canonical_json(cfg: Config) -> bytes:
    return json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def config_hash(cfg: Config) -> str:
    """sha256 (hex) of the canonical form: same settings, same hash, whatever the file's layout."""
    return hashlib.sha256(canonical_json(cfg)).hexdigest()


def dumps(cfg: Config) -> str:
    return tomli_w.dumps(to_dict(cfg))


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write-temp + fsync + rename + fsync(dir): after a power cut the file is old or new, never half."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Validates again (the model may have been edited) and writes atomically."""
    Config.model_validate(cfg.model_dump())
    atomic_write(path, dumps(cfg).encode("utf-8"))
