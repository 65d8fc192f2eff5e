"""Console building blocks without a server: translations, audit diff, form parsing, TLS, CLI."""

from __future__ import annotations

import json
import math
import re
import stat
from pathlib import Path

import pytest

from device import config as cfgmod
from device.cli import main as cli_main
from device.console import i18n
from device.console.app import cosine_reading
from device.console.audit import AuditLog, AuditRecord, diff
from device.console.auth import AuthError, LoginThrottle, SetupCode
from device.console.settings import FieldError, apply_form, site_fields, windows_text
from device.console.tls import ensure_certificate, fingerprint

TEMPLATES = Path(__file__).resolve().parents[2] / "device" / "console" / "templates"


def test_catalogs_have_the_same_keys_and_cover_templates() -> None:
    cats = i18n.load_catalogs()
    keys = set(cats["en"])
    for lang in i18n.LANGS:
        assert set(cats[lang]) == keys, lang
        assert all(v.strip() for v in cats[lang].values()), lang
        # placeholders survive translation
        for k, v in cats[lang].items():
            assert set(re.findall(r"{(\w+)}", v)) == set(re.findall(r"{(\w+)}", cats["en"][k])), (lang, k)
    used = set()
    for p in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(["']([a-zA-Z0-9_]+)["']\s*[,)]""", p.read_text()))
    used |= {f"lang_{x}" for x in i18n.LANGS}
    used |= {"role_technician", "role_viewer"}  # keys built from a prefix in the templates
    for py in ("app.py", "auth.py"):
        used |= set(re.findall(r"""["']((?:err|msg)_[a-z_]+)["']""", (TEMPLATES.parent / py).read_text()))
    assert used <= keys, used - keys
    assert {"err_csrf", "err_locked", "msg_saved"} <= used
    assert i18n.Translator("ar", cats).dir == "rtl" and i18n.Translator("fr", cats).dir == "ltr"
    assert i18n.pick(None, "ar-MA,ar;q=0.9,fr;q=0.8") == "ar"
    assert i18n.pick("fr", "ar") == "fr" and i18n.pick("xx", "de") == "en"


def test_cosine_helper_example() -> None:
    assert f"{cosine_reading(100.0, 20.0):.2f}" == "93.97"  # the number a technician is told to expect
    assert cosine_reading(100.0, 0.0) == 100.0
    assert math.isclose(cosine_reading(100.0, 60.0), 50.0)


def test_audit_diff_addresses_lanes_by_id() -> None:
    a = cfgmod.to_dict(cfgmod.Config())
    b = json.loads(json.dumps(a))
    b["site"]["lanes"][0]["limit_kmh"] = 50.0
    b["site"]["mount_angle_deg"] = 12.0
    b["site"]["lanes"].append({"id": "2", "direction": "outbound", "limit_kmh": 80.0})
    d = {f: (o, n) for f, o, n in diff(a, b)}
    assert d["site.lanes[id=1].limit_kmh"] == (60.0, 50.0)
    assert d["site.mount_angle_deg"] == (0.0, 12.0)
    assert d["site.lanes[id=2].limit_kmh"] == (None, 80.0)
    assert diff(a, a) == []


def test_audit_log_survives_torn_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    rec = AuditRecord("amina", "technician", "2026-11-22T01:00:00Z", "site.name", "a", "ب", "127.0.0.1")
    log.append([rec, rec])
    with open(log.path, "ab") as f:
        f.write(b'{"who": "half')  # power cut mid-write
    assert [r["new"] for r in log.read()] == ["ب", "ب"]
    log.append([rec])
    assert len(log.read()) == 2  # the torn line glued to the next one is skipped, the rest is kept
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600  # the console's alone, like its state dir


def test_apply_form_lanes_add_delete_and_windows() -> None:
    raw = {"site": {"lanes": [{"id": "1", "limit_kmh": 60.0}, {"id": "2", "limit_kmh": 80.0}]}}
    form = {
        "site.lanes.0.limit_kmh": "50",
        "site.lanes.0.windows": "mon,fri 07:00-09:00 30\n* 22:00-24:00 40",
        "site.lanes.1.delete": "1",
        "site.lanes.2.id": "3",
        "site.lanes.2.limit_kmh": "70",
        "site.lanes.2.direction": "outbound",
    }
    new = apply_form(raw, form, site_fields())
    cfg = cfgmod.parse(new)
    assert [lane.id for lane in cfg.site.lanes] == ["1", "3"]
    assert cfg.site.lanes[0].class_limits_kmh == {}  # no classifier: the console offers no class limits
    with pytest.raises(FieldError) as exc:
        apply_form(raw, {"site.lanes.0.class_limits_kmh.truck": "40"}, site_fields())
    assert "site.lanes.0.class_limits_kmh.truck" in exc.value.errors
    assert windows_text([w.model_dump() for w in cfg.site.lanes[0].windows]) == form["site.lanes.0.windows"]
    assert raw["site"]["lanes"][0]["limit_kmh"] == 60.0  # the input dict is not modified
    # the empty "add a lane" row is ignored
    assert apply_form(raw, {"site.lanes.2.id": "", "site.lanes.2.limit_kmh": ""}, site_fields()) == raw
    with pytest.raises(FieldError) as exc:
        apply_form(raw, {"site.lanes.7.limit_kmh": "50"}, site_fields())
    assert "site.lanes.7.id" in exc.value.errors


def test_tolerance_override_toggle() -> None:
    f = site_fields()
    on = apply_form({}, {"enforcement.tolerance.override": "1", "enforcement.tolerance.fixed_kmh": "5"}, f)
    assert cfgmod.parse(on).enforcement.tolerance.fixed_kmh == 5.0
    off = apply_form(on, {"enforcement.tolerance.override": "0", "enforcement.tolerance.fixed_kmh": "5"}, f)
    assert cfgmod.parse(off).enforcement.tolerance is None


def test_throttle_locks_and_expires() -> None:
    now = [1000.0]
    th = LoginThrottle(max_failures=3, lockout_s=60, per_ip_per_minute=100, clock=lambda: now[0])
    for _ in range(2):
        th.check("a", "ip")
        assert th.failure("a", "ip") is False
    th.check("a", "ip")
    assert th.failure("a", "ip") is True
    with pytest.raises(AuthError) as exc:
        th.check("a", "ip")
    assert exc.value.key == "err_locked"
    th.check("b", "ip")  # other accounts unaffected
    now[0] += 61
    th.check("a", "ip")


def test_setup_code_file(tmp_path: Path) -> None:
    sc = SetupCode(tmp_path / "setup-code")
    code = sc.ensure()
    assert re.fullmatch(r"([A-HJ-NP-Z2-9]{4}-){3}[A-HJ-NP-Z2-9]{4}", code)
    assert sc.ensure() == code  # stable across restarts until used
    assert stat.S_IMODE(sc.path.stat().st_mode) == 0o600
    assert sc.verify(code.lower().replace("-", " ")) and not sc.verify("") and not sc.verify(code[:-1])
    sc.consume()
    assert not sc.verify(code)


@pytest.mark.parametrize("stored", ["", "\n", "   \t\n", "----", "ABCD", "abcd-efgh-jkmn-pqr"])
def test_an_empty_or_malformed_setup_code_is_never_accepted_and_is_replaced(tmp_path: Path, stored) -> None:
    """An empty file made verify("") true: anyone could create the first account. Such a file counts
    as missing; ensure() replaces it with a real code (0600) and says so."""
    sc = SetupCode(tmp_path / "setup-code")
    sc.path.write_text(stored)
    for guess in ("", " ", "-", stored, stored.upper()):
        assert not sc.verify(guess), repr(guess)
    announced: list[str] = []
    code = sc.ensure(announced.append)
    assert re.fullmatch(r"([A-HJ-NP-Z2-9]{4}-){3}[A-HJ-NP-Z2-9]{4}", code) and announced == [code]
    assert stat.S_IMODE(sc.path.stat().st_mode) == 0o600 and sc.path.read_text().strip() == code
    assert sc.verify(code) and not sc.verify("")
    assert sc.ensure(announced.append) == code and announced == [code]  # a good code stays, unannounced


def test_tls_certificate_once_and_cli_fingerprint(tmp_path: Path, capsys) -> None:
    state = tmp_path / "console"
    cert, key, created = ensure_certificate(state, device_id="rc-1")
    assert created and stat.S_IMODE(key.stat().st_mode) == 0o600
    fp = fingerprint(cert.read_bytes())
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fp)
    _, _, again = ensure_certificate(state, device_id="rc-1")
    assert again is False and fingerprint(cert.read_bytes()) == fp
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[console]\nstate_dir = "{state}"\n')
    assert cli_main(["console", "fingerprint", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.strip() == fp
    assert cli_main(["console", "--config", str(cfg), "fingerprint"]) == 0
    cfg.write_text(f'[console]\nstate_dir = "{tmp_path / "none"}"\n')
    assert cli_main(["console", "fingerprint", "--config", str(cfg)]) == 1
    assert "no console certificate yet" in capsys.readouterr().err


def _big_jpeg_b64(w: int = 1920, h: int = 1080) -> str:
    import base64
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return base64.b64encode(buf.getvalue()).decode()


def test_view_accepts_the_daemons_native_shapes() -> None:
    """The daemon's own status / recent / test_trigger answers (device/daemon.py) map onto the pages."""
    import base64
    import io

    from PIL import Image

    from device.console import view

    raw = {
        "state": "degraded",
        "config_hash": "ab" * 32,
        "components": {
            "radar": {"state": "ok"},
            "uplink": {"connected": True, "broker": "reg.example:8883", "last_error": None},
            "outbox": {"pending": 2, "sent": 1, "acked": 9, "last_ack_time_ns": 1_763_776_800_123_456_789},
        },
        "clock": {
            "synchronized": False,
            "source": "chrony",
            "offset_ns": 2_500_000,
            "utc_ns": 1_763_776_800_000_000_000,
        },
        "disk": {"path": "/", "free_bytes": 10, "total_bytes": 20, "free_fraction": 0.5},
        "cpu_temp_c": None,
        "tamper": {"cabinet_open": True},
        "live_speed": {"kmh": 73.25, "direction": "outbound", "t_mono_ns": 5},
    }
    st = view.status(raw)
    assert st["radar"] == {"live_speed_kmh": 73.25, "direction": "outbound"}
    assert st["outbox"]["depth"] == 3 and st["outbox"]["last_ack_utc"] == "2025-11-22T02:00:00.123Z"
    assert st["uplink"] == {"connected": True, "broker": "reg.example:8883"}
    assert st["clock"]["synced"] is False and st["clock"]["offset_ms"] == 2.5
    assert st["clock"]["utc"] == "2025-11-22T02:00:00.000Z"
    assert st["tamper"]["open"] is True and st["cpu_temp_c"] is None
    assert st["components"]["uplink"]["state"] == "ok"
    assert st["components"]["outbox"] == {"state": "ok", "detail": "pending 2, sent 1, acked 9"}
    assert view.status({"tamper": None})["tamper"]["open"] is None  # no GPIO: unknown, not "closed"

    big = _big_jpeg_b64()
    thumbs = view.Thumbnailer()
    rec = view.recent(
        {
            "passes": [
                {
                    "lane": "1",
                    "direction": "inbound",
                    "peak_kmh": 88.0,
                    "readings": 9,
                    "valid": False,
                    "t_mono_ns": 1,
                }
            ],
            "violations": [
                {
                    "seq": 7,
                    "lane": "1",
                    "enforced_kmh": 84.6,
                    "limit_kmh": 60.0,
                    "utc_ns": 1_763_776_800_000_000_000,
                    "plate": {
                        "text": "12345-ب-6",
                        "text_latin": "12345-B-6",
                        "country": "MA",
                        "confidence": 0.9,
                    },
                    "images": [{"role": "plate", "jpeg_b64": big, "width": 1920, "height": 1080}],
                }
            ],
        },
        thumbs,
    )
    assert rec["passes"][0]["median_kmh"] is None and rec["passes"][0]["valid"] is False
    v = rec["violations"][0]
    assert (
        v["speed_kmh"] == 84.6
        and v["plate"]["text_latin"] == "12345-B-6"
        and v["t_utc"].startswith("2025-11-22")
    )
    thumb = base64.b64decode(v["thumbnail_jpeg_b64"])
    assert Image.open(io.BytesIO(thumb)).width == view.THUMB_WIDTH and len(thumb) < len(big) // 10
    assert thumbs(big) == v["thumbnail_jpeg_b64"]  # cached
    res, err = view.trigger(
        {"ok": True, "images": [{"jpeg_b64": big, "utc_ns": 1_763_776_800_000_000_000}]}, thumbs
    )
    assert err is None and Image.open(io.BytesIO(base64.b64decode(res["thumbnail_jpeg_b64"]))).width == 640
    assert view.trigger({"ok": False, "detail": "no camera frames in the ring"}, thumbs) == (
        None,
        "no camera frames in the ring",
    )
    assert view.uplink_test({"ok": False, "detail": {"connected": False}})["detail"] == '{"connected": false}'
    assert (
        view.recent({"violations": [{"thumbnail_jpeg_b64": "not base64!"}]}, thumbs)["violations"][0][
            "thumbnail_jpeg_b64"
        ]
        is None
    )


def test_throttle_state_survives_a_restart(tmp_path: Path) -> None:
    """Restarting the console (or making systemd restart it) must not hand a guesser fresh tries."""
    store = tmp_path / "login-throttle.json"
    mono, wall = [1000.0], [1_800_000_000.0]

    def throttle() -> LoginThrottle:
        return LoginThrottle(3, 60, 100, clock=lambda: mono[0], store=store, wall=lambda: wall[0])

    th = throttle()
    th.failure("a", "ip")
    th.failure("a", "ip")
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    mono[0] = 5.0  # a new process after a reboot: monotonic time starts again
    wall[0] += 10
    th = throttle()
    assert th.failure("a", "ip") is True  # the two earlier failures counted: locked at the third
    th = throttle()
    with pytest.raises(AuthError) as exc:
        th.check("a", "ip")
    assert exc.value.key == "err_locked"
    wall[0] += 61
    throttle().check("a", "ip")  # expired by wall-clock time


def test_throttle_state_is_clamped_and_a_bad_file_is_replaced(tmp_path: Path) -> None:
    store = tmp_path / "login-throttle.json"
    mono, wall = [0.0], [1_800_000_000.0]
    th = LoginThrottle(1, 60, 100, clock=lambda: mono[0], store=store, wall=lambda: wall[0])
    assert th.failure("a", "ip") is True
    wall[0] -= 86_400  # the wall clock steps back a day: the lockout must not become a day long
    th = LoginThrottle(1, 60, 100, clock=lambda: mono[0], store=store, wall=lambda: wall[0])
    with pytest.raises(AuthError) as exc:
        th.check("a", "ip")
    assert exc.value.params["minutes"] == 1
    mono[0] += 61
    th.check("a", "ip")
    th.success("a", "ip")
    store.write_text("{not json")
    th = LoginThrottle(3, 60, 100, clock=lambda: mono[0], store=store, wall=lambda: wall[0])
    assert th.store_problem and "unreadable" in th.store_problem
    th.check("a", "ip")
    th.failure("b", "ip")
    assert json.loads(store.read_text())["accounts"]["b"]["fails"]["ip"]  # rewritten, valid again
