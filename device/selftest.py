"""`radarcam selftest`: the roadside check list, each failure with the fix a technician can apply.

Runs standalone (daemon stopped: opens the radar port and camera itself) or inside the daemon through
the console's control socket (``live=daemon``: reads the running stages' health instead of opening
devices the daemon holds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.config import UPLINK_FILES_DIR, Config
from device.credentials import CredentialError, read_uplink_password

if TYPE_CHECKING:
    from device.clock import SyncState


@dataclass(frozen=True)
class Check:
    check: str
    ok: bool
    detail: str
    fix: str = ""


def _run(name: str, fn: Callable[[], tuple[bool, str, str]]) -> Check:
    try:
        ok, detail, fix = fn()
    except Exception as exc:  # a crashing check is a failed check, with the reason
        return Check(name, False, f"{type(exc).__name__}: {exc}", "see the journal: journalctl -u radarcam")
    return Check(name, ok, detail, "" if ok else fix)


def check_key(cfg: Config) -> tuple[bool, str, str]:
    from device.daemon import default_key_path
    from device.uplink.keys import KeyFileError, load_signing_key

    path = default_key_path(cfg)
    fix = f"radarcam keys init --path {path}  (then chown radarcam: and chmod 600)"
    if not path.exists():
        return False, f"{path} missing", fix
    try:  # the daemon's own check: a key others may read is refused there too
        key = load_signing_key(path)
    except KeyFileError as exc:
        return False, str(exc), f"chmod 600 {path}" if "chmod" in str(exc) else fix
    return True, f"key id {key.key_id}", fix


def check_radar_standalone(cfg: Config, seconds: float = 3.0) -> tuple[bool, str, str]:
    from device.daemon import max_limit_kmh
    from device.sensors.radar import make_driver
    from device.sensors.serial_reader import RadarReader

    got: list[Any] = []
    reader = RadarReader(cfg.radar, make_driver(cfg.radar), got.append, max_limit_kmh=max_limit_kmh(cfg))
    reader.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not got:
            time.sleep(0.05)
        h = reader.health()
    finally:
        reader.stop()
    fix = (
        f"check the cable and that {cfg.radar.port} exists (ls -l /dev/radar /dev/ttyACM*), the udev rule, "
        "and that the radar is powered; wave a hand in front of it during the test"
    )
    if h.get("state") == "down":
        return False, f"port {cfg.radar.port}: {h.get('last_error')}", fix
    if not got:
        return False, f"port open but no reading in {seconds:.0f} s (bytes in: {h.get('bytes_in')})", fix
    return True, f"{len(got)} readings, last {got[-1].speed_kmh:.1f} km/h", fix


def check_camera_standalone(cfg: Config, seconds: float = 2.0) -> tuple[bool, str, str]:
    from device.capture.camera import open_camera

    cam = open_camera(cfg.camera)
    cam.start()
    frames = 0
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            if cam.read(timeout=1.0) is not None:
                frames += 1
        fps = frames / (time.monotonic() - t0)
    finally:
        cam.stop()
    fix = "check the camera ribbon/USB cable, `rpicam-hello --list-cameras`, and camera.backend/source"
    ok = fps >= 0.8 * cfg.camera.fps
    return ok, f"{fps:.1f} fps of {cfg.camera.fps:g} configured", fix


def check_clock(cfg: Config, reader: Callable[[], SyncState] | None = None) -> tuple[bool, str, str]:
    from device.clock import ClockMonitor

    mon = ClockMonitor(cfg.clock, reader=reader)
    state = mon.refresh()
    s = mon.stamp()
    detail = f"source {s.source}, synchronised={s.synchronized}"
    if s.max_error_ns is not None:
        detail += f", max error {s.max_error_ns / 1e6:.1f} ms"
    hint = "check NTP (chronyc sources) or the GPS/PPS receiver; packets say so meanwhile"
    if state.method == "adjtimex" and state.over_max_error:
        hint = (
            "no chrony: the kernel's error bound (set by systemd-timesyncd) grows 0.5 ms a second between "
            "polls, so the clock reads unsynchronised most of the time; install chrony (apt install chrony, "
            "or systemd/install.sh without --without-chrony)"
        )
    return s.synchronized, detail, hint


def check_disk(cfg: Config, min_free_mb: float = 500.0) -> tuple[bool, str, str]:
    from device.health import disk_free

    d = disk_free(cfg.device.state_dir if cfg.device.state_dir.exists() else Path("/"))
    free_mb = d["free_bytes"] / 1e6
    return (
        free_mb >= min_free_mb,
        f"{free_mb:.0f} MB free",
        "replace the SD card / free space; acked packets age out",
    )


def check_broker(cfg: Config, timeout: float = 5.0) -> tuple[bool, str, str]:
    import paho.mqtt.client as mqtt

    u = cfg.uplink
    if not u.enabled:
        return True, "uplink disabled", ""
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(client, userdata, flags, reason_code, properties=None):
        result["rc"] = str(reason_code)
        result["ok"] = not reason_code.is_failure
        done.set()

    proto = mqtt.MQTTv5 if u.protocol == "mqttv5" else mqtt.MQTTv311
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{cfg.device.id}-selftest", protocol=proto)
    if u.tls.enabled:
        c.tls_set(
            ca_certs=str(u.tls.ca_file) if u.tls.ca_file else None,
            certfile=str(u.tls.cert_file) if u.tls.cert_file else None,
            keyfile=str(u.tls.key_file) if u.tls.key_file else None,
        )
    fix = f"check network route to {u.host}:{u.port}, TLS files and credentials (radarcam config show)"
    if u.username:
        # The console can choose both the file and the host: the same checks as the daemon's, made on
        # the descriptor opened (device/credentials.py), before anything is sent.
        try:
            pw = read_uplink_password(cfg)
        except CredentialError as exc:
            return (
                False,
                str(exc),
                f"put the MQTT password alone in a file under {UPLINK_FILES_DIR}/ (root:radarcam, 0640) "
                "and set uplink.password_file to it",
            )
        c.username_pw_set(u.username, pw)
    c.on_connect = on_connect
    try:
        c.connect(u.host, u.port, keepalive=10)
    except OSError as exc:
        return False, f"{u.host}:{u.port}: {exc}", fix
    c.loop_start()
    try:
        done.wait(timeout)
    finally:
        c.disconnect()
        c.loop_stop()
    if not done.is_set():
        return False, f"{u.host}:{u.port}: no CONNACK within {timeout:.0f} s", fix
    tls = "TLS" if u.tls.enabled else "plain (no TLS!)"
    return bool(result.get("ok")), f"{u.host}:{u.port} {tls}: {result.get('rc')}", fix


def check_models(cfg: Config, reader: Any | None = None) -> tuple[bool, str, str]:
    """The deployed chain (runtime, model files, decoding) reads the committed reference plate as the
    committed model did when it was made (models/reference_plates.json); accuracy is in the model card."""
    import json

    import cv2

    if not cfg.anpr.enabled:
        return True, "ANPR disabled", ""
    from device.anpr.reader import PlateReader

    reader = reader or PlateReader(cfg.anpr)
    models = reader.models()
    fix = "reinstall the models (models/*.tflite + cards) or check anpr.*_model paths in the config"
    ref_file = Path(models["ocr"]["path"]).parent / "reference_plates.json"
    refs = json.loads(ref_file.read_text(encoding="utf-8")) if ref_file.exists() else {}
    country = cfg.site.jurisdiction
    ref = refs.get(country)
    if ref is None:
        return False, f"no reference plate for {country} in {ref_file}", fix
    img = cv2.imread(str(ref_file.parent / ref["image"]), cv2.IMREAD_COLOR)
    if img is None:
        return False, f"reference image {ref['image']} missing or unreadable", fix
    read = reader.read_crop(img, country=country)
    names = ", ".join(f"{k}:{v.get('sha256', '')[:12]}" for k, v in models.items() if isinstance(v, dict))
    return read.text == ref["text"], f"reference plate {ref['text']!r} read as {read.text!r} ({names})", fix


def check_data_bar(cfg: Config) -> tuple[bool, str, str]:
    """The evidence images' data bar renders (fonts found, the site's local name shaped): without it
    violations are sealed without images."""
    from device.capture.databar import DataBar, latin_font_path, render_databar

    fix = "apt-get install fontconfig fonts-dejavu-core fonts-noto-core (fonts-kacst for Arabic names)"
    bar = DataBar(
        0, True, "selftest", 100.0, 60.0, "inbound", cfg.site.id, cfg.site.name, cfg.site.name_local
    )
    try:
        img = render_databar(bar, cfg.camera.width)
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}", fix
    return True, f"{img.shape[1]}x{img.shape[0]} px, font {latin_font_path()}", fix


def check_gpio(cfg: Config) -> tuple[bool, str, str]:
    if not cfg.gpio.enabled:
        return True, "GPIO disabled", ""
    from device.sensors.gpio import UnitGpio

    g = UnitGpio(cfg.gpio)
    try:
        g.flash()
        tamper = g.tamper_open
    finally:
        g.close()
    return (
        True,
        f"flash pulsed, cabinet {'OPEN' if tamper else 'closed'}",
        "check wiring and gpio pin numbers",
    )


def run_standalone(cfg: Config) -> list[Check]:
    return [
        _run("signing key", lambda: check_key(cfg)),
        _run("radar", lambda: check_radar_standalone(cfg)),
        _run("camera", lambda: check_camera_standalone(cfg)),
        _run("gpio", lambda: check_gpio(cfg)),
        _run("clock", lambda: check_clock(cfg)),
        _run("disk", lambda: check_disk(cfg)),
        _run("broker", lambda: check_broker(cfg)),
        _run("anpr models", lambda: check_models(cfg)),
        _run("data bar", lambda: check_data_bar(cfg)),
    ]


def run_live(daemon: Any) -> list[Check]:
    """Inside the running daemon: reads stage health instead of opening busy devices."""
    cfg = daemon.cfg

    def radar() -> tuple[bool, str, str]:
        h = daemon.radar.health()
        ok = h.get("state") == "ok"
        return (
            ok,
            f"{h.get('state')}: {h.get('readings')} readings, port {h.get('port')}",
            "check radar cable/port",
        )

    def camera() -> tuple[bool, str, str]:
        h = daemon.camera.health()
        fps = h.get("fps_measured") or 0.0
        ok = fps >= 0.8 * cfg.camera.fps
        return (
            ok,
            f"{fps:.1f} fps of {cfg.camera.fps:g}, dropped {h.get('dropped')}",
            "check camera cable/source",
        )

    def uplink() -> tuple[bool, str, str]:
        if daemon.uplink is None:
            return True, "uplink disabled", ""
        h = daemon.uplink.health()
        return (
            bool(h.get("connected")),
            f"connected={h.get('connected')}",
            "check broker address, TLS, network",
        )

    return [
        _run("signing key", lambda: (True, f"key id {daemon.key.key_id}", "")),
        _run("radar", radar),
        _run("camera", camera),
        _run("gpio", lambda: check_gpio(cfg) if daemon.gpio is None else (True, "GPIO running", "")),
        _run("clock", lambda: check_clock(cfg)),
        _run("disk", lambda: check_disk(cfg)),
        _run("broker", uplink),
        _run("anpr models", lambda: check_models(cfg, daemon.plate_reader)),
        _run("data bar", lambda: check_data_bar(cfg)),
    ]


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]


def print_table(checks: list[Check]) -> None:
    w = max(len(c.check) for c in checks)
    for c in checks:
        print(f"{'PASS' if c.ok else 'FAIL'}  {c.check:<{w}}  {c.detail}")
        if not c.ok and c.fix:
            print(f"{'':6}{'':<{w}}  fix: {c.fix}")
