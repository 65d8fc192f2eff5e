import os
import stat

import pytest

from device import cli
from device import config as cfgmod


def write(tmp_path, text):
    p = tmp_path / "radarcam.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_validate_and_roundtrip(tmp_path):
    cfg = cfgmod.Config()
    p = tmp_path / "c.toml"
    cfgmod.save(cfg, p)
    again = cfgmod.load(p)
    assert again == cfg
    assert cfgmod.config_hash(again) == cfgmod.config_hash(cfg)


def test_hash_ignores_layout_but_not_values(tmp_path):
    a = cfgmod.load(write(tmp_path, '[site]\nid = "S1"\n[radar]\nport = "/dev/ttyACM0"\n'))
    b_path = tmp_path / "b.toml"
    b_path.write_text('# comment\n[radar]\nport="/dev/ttyACM0"\n\n[site]\nid="S1"\n')
    b = cfgmod.load(b_path)
    assert cfgmod.config_hash(a) == cfgmod.config_hash(b)
    c = cfgmod.load(write(tmp_path, '[site]\nid = "S2"\n[radar]\nport = "/dev/ttyACM0"\n'))
    assert cfgmod.config_hash(c) != cfgmod.config_hash(a)


def test_unknown_key_names_path(tmp_path):
    p = write(tmp_path, "[radar]\nbaud = 9600\n")
    with pytest.raises(cfgmod.ConfigError) as ei:
        cfgmod.load(p)
    assert "radar.baud" in str(ei.value)
    assert "unknown key" in str(ei.value)


def test_bad_value_names_path_value_and_allowed(tmp_path):
    p = write(tmp_path, '[site]\njurisdiction = "FR"\n')
    with pytest.raises(cfgmod.ConfigError) as ei:
        cfgmod.load(p)
    msg = str(ei.value)
    assert "site.jurisdiction" in msg and "'FR'" in msg and "'MA'" in msg


def test_nested_list_path(tmp_path):
    p = write(tmp_path, '[[site.lanes]]\nid = "1"\nlimit_kmh = -5\n')
    with pytest.raises(cfgmod.ConfigError) as ei:
        cfgmod.load(p)
    assert "site.lanes.0.limit_kmh" in str(ei.value)


def test_corrupt_toml_and_binary(tmp_path):
    p = write(tmp_path, "[radar\nport = 1\n")
    with pytest.raises(cfgmod.ConfigError, match="not valid TOML"):
        cfgmod.load(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(cfgmod.ConfigError, match="not UTF-8"):
        cfgmod.load(p)
    with pytest.raises(cfgmod.ConfigError, match="cannot read"):
        cfgmod.load(tmp_path / "missing.toml")


def test_cli_reports_error_without_traceback(tmp_path, capsys):
    p = write(tmp_path, "[radar]\nbaudrate = 'fast'\n")
    rc = cli.main(["config", "check", str(p)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "radar.baudrate" in err and "Traceback" not in err


def test_cli_check_ok_prints_hash(tmp_path, capsys):
    p = write(tmp_path, '[device]\nid = "unit-7"\n')
    assert cli.main(["config", "check", str(p)]) == 0
    assert cfgmod.config_hash(cfgmod.load(p)) in capsys.readouterr().out


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "c.toml"
    cfgmod.atomic_write(p, b"old", mode=0o600)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        cfgmod.atomic_write(p, b"new")
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["c.toml"]  # temp file cleaned up


def test_duplicate_lane_ids_rejected():
    with pytest.raises(cfgmod.ConfigError, match="unique"):
        cfgmod.parse({"site": {"lanes": [{"id": "1", "limit_kmh": 50}, {"id": "1", "limit_kmh": 60}]}})


def test_mistyped_time_zone_fails_the_check(tmp_path):
    """Found by ``config check``, not by the daemon at its first pass or on SIGHUP."""
    with pytest.raises(cfgmod.ConfigError, match="unknown IANA time zone 'Africa/Casablance'"):
        cfgmod.load(write(tmp_path, '[site]\ntimezone = "Africa/Casablance"\n'))
    assert cfgmod.load(write(tmp_path, '[site]\ntimezone = "Asia/Riyadh"\n')).site.timezone == "Asia/Riyadh"


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ('start = "22:00"\nend = "06:00"', "must be before end"),
        ('start = "08:00"\nend = "08:00"', "must be before end"),
        ("days = []", "at least one day"),
        ('end = "24:30"', "after 24:00"),
    ],
)
def test_time_windows_that_never_match_are_refused(tmp_path, window, message):
    text = f'[[site.lanes]]\nid = "1"\nlimit_kmh = 60\n[[site.lanes.windows]]\n{window}\nlimit_kmh = 30\n'
    with pytest.raises(cfgmod.ConfigError, match=message) as ei:
        cfgmod.load(write(tmp_path, text))
    assert "site.lanes.0.windows.0" in str(ei.value)


def test_window_ending_at_midnight_is_fine(tmp_path):
    text = (
        '[[site.lanes]]\nid = "1"\nlimit_kmh = 60\n[[site.lanes.windows]]\nstart = "22:00"\nlimit_kmh = 40\n'
    )
    assert cfgmod.load(write(tmp_path, text)).site.lanes[0].windows[0].end == "24:00"


def test_explicit_sample_rate_must_reach_the_limit(tmp_path):
    """SX sees at most ~112 km/h: with a 100 km/h lane, a 150 km/h car would alias to a low speed."""
    lane = '[[site.lanes]]\nid = "1"\nlimit_kmh = 100\n'
    with pytest.raises(cfgmod.ConfigError, match="SX measures up to 112 km/h"):
        cfgmod.load(write(tmp_path, f'[radar]\nsample_rate = "SX"\n{lane}'))
    with pytest.raises(cfgmod.ConfigError, match="S2 measures up to 224 km/h"):  # needs 2 x 100 + 40
        cfgmod.load(write(tmp_path, f'[radar]\nsample_rate = "S2"\n{lane}'))
    assert cfgmod.load(write(tmp_path, f'[radar]\nsample_rate = "SL"\n{lane}')).radar.sample_rate == "SL"
    slow = '[[site.lanes]]\nid = "1"\nlimit_kmh = 40\n'  # SX's 112 km/h: a 120 km/h car would fold
    with pytest.raises(cfgmod.ConfigError, match="needs 120 km/h"):
        cfgmod.load(write(tmp_path, f'[radar]\nsample_rate = "SX"\n{slow}'))
    truck = '[[site.lanes]]\nid = "1"\nlimit_kmh = 40\nclass_limits_kmh = {car = 100}\n'
    with pytest.raises(cfgmod.ConfigError, match="highest limit \\(100 km/h\\)"):
        cfgmod.load(write(tmp_path, f'[radar]\nsample_rate = "SX"\n{truck}'))


def test_class_limits_that_nothing_can_apply_are_refused(tmp_path):
    """The unit does not classify vehicles: a truck limit was accepted (and offered by the console) and
    never applied, every truck judged as a car."""
    lane = '[[site.lanes]]\nid = "1"\nlimit_kmh = 100\nclass_limits_kmh = {truck = 80}\n'
    with pytest.raises(cfgmod.ConfigError, match="class_limits_kmh for truck would never apply"):
        cfgmod.load(write(tmp_path, lane))
    trucks_only = f'[enforcement]\ndefault_vehicle_class = "truck"\n{lane}'  # a lane for trucks alone
    assert cfgmod.load(write(tmp_path, trucks_only)).site.lanes[0].class_limits_kmh == {"truck": 80.0}


@pytest.mark.parametrize(
    ("tolerance", "jurisdiction", "error"),
    [
        ("fixed_kmh = 0\npercent = 0", "MA", "less than the MA schedule's own tolerance at 0 km/h"),
        ("percent = 2", "MA", "less than the MA schedule's own tolerance at 100"),
        ("fixed_kmh = 2\npercent = 5", "MA", "fixed_kmh must be at least 5"),
        ("fixed_kmh = 0\npercent = 0", "EG", None),  # a stub schedule: its tolerance is not the law's
        ("fixed_kmh = 5\npercent = 4", "MA", None),  # more lenient everywhere
    ],
)
def test_a_tolerance_override_is_never_below_the_law_nor_retains_a_faster_car_lower(
    tmp_path, tolerance, jurisdiction, error
):
    text = f'[site]\njurisdiction = "{jurisdiction}"\n[enforcement.tolerance]\n{tolerance}\n'
    if error is None:
        assert cfgmod.load(write(tmp_path, text)).enforcement.tolerance is not None
    else:
        with pytest.raises(cfgmod.ConfigError, match=error):
            cfgmod.load(write(tmp_path, text))


@pytest.mark.parametrize(
    "text",
    ["[tracker]\nmax_spread_kmh = nan\n", "[tracker]\nmax_accel_mps2 = inf\n", "[radar]\nbaudrate = -5\n"],
)
def test_non_finite_and_impossible_numbers_are_refused(tmp_path, text):
    with pytest.raises(cfgmod.ConfigError):
        cfgmod.load(write(tmp_path, text))


@pytest.mark.parametrize("field", ["password_file", "tls.ca_file", "tls.cert_file", "tls.key_file"])
def test_uplink_files_never_point_at_the_signing_key(tmp_path, field):
    """The uplink sends its password (and client certificate) to a remote host, and the console may set
    these paths: naming the signing key, or anything beside it, is refused."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "signing-key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / "link.pem").symlink_to(keys / "signing-key.pem")
    section, _, key = ("uplink." + field).rpartition(".")
    key = f"enabled = true\n{key}" if section == "uplink.tls" else key  # TLS files mean TLS on
    for target in (keys / "signing-key.pem", keys / "other.pem", tmp_path / "link.pem"):
        text = f'[device]\nkey_path = "{keys / "signing-key.pem"}"\n[{section}]\n{key} = "{target}"\n'
        with pytest.raises(cfgmod.ConfigError, match="must never read the signing key"):
            cfgmod.load(write(tmp_path, text))
    for reserved in ("/etc/radarcam/keys/signing-key.pem", f"{tmp_path}/state/keys/signing-key.pem"):
        text = f'[device]\nstate_dir = "{tmp_path}/state"\n[{section}]\n{key} = "{reserved}"\n'
        with pytest.raises(cfgmod.ConfigError, match="signing-key directory"):
            cfgmod.load(write(tmp_path, text))
    ok = (
        f'[device]\nkey_path = "{keys / "signing-key.pem"}"\n[{section}]\n{key} = "{tmp_path / "mqtt.pem"}"\n'
    )
    assert cfgmod.load(write(tmp_path, ok))


def test_tls_files_without_tls_enabled_are_refused(tmp_path):
    """Before, ``[uplink.tls]`` with a CA file but ``enabled`` left false connected in plain text,
    password included, and nothing said so."""
    text = '[uplink.tls]\nca_file = "/etc/radarcam/mqtt/ca.pem"\n'
    with pytest.raises(cfgmod.ConfigError, match="enabled = false: the uplink would connect in plain text"):
        cfgmod.load(write(tmp_path, text))
    assert cfgmod.load(write(tmp_path, text.replace("]\n", "]\nenabled = true\n", 1))).uplink.tls.enabled


@pytest.mark.parametrize(
    ("cal", "message"),
    [
        ('valid_until = "whenever"', "not a date"),
        ('valid_until = "2026-1-5"', "not a date"),
        ('date = "2026-02-01"\nvalid_until = "2026-01-01"', "before the calibration date"),
    ],
)
def test_calibration_dates_are_real_dates(tmp_path, cal, message):
    with pytest.raises(cfgmod.ConfigError, match=message):
        cfgmod.load(write(tmp_path, f"[radar.calibration]\n{cal}\n"))
    ok = '[radar.calibration]\ndate = "2025-01-15"\nvalid_until = "2026-01-15"\n'
    assert cfgmod.load(write(tmp_path, ok)).radar.calibration.valid_until == "2026-01-15"


def test_two_lanes_of_one_direction_are_refused():
    """The tracker tells lanes apart by direction only: every inbound pass would get the first inbound
    lane's limit, whichever lane the vehicle used."""
    lanes = [
        {"id": "1", "direction": "inbound", "limit_kmh": 60},
        {"id": "2", "direction": "outbound", "limit_kmh": 60},
        {"id": "3", "direction": "inbound", "limit_kmh": 80},
    ]
    with pytest.raises(cfgmod.ConfigError, match=r"lanes \['1', '3'\] are all inbound"):
        cfgmod.parse({"site": {"lanes": lanes}})
    assert len(cfgmod.parse({"site": {"lanes": lanes[:2]}}).site.lanes) == 2


def test_radar_objects_at_least_two():
    """One object per report would mask a second vehicle in the beam (the field says so)."""
    with pytest.raises(cfgmod.ConfigError, match=r"radar\.objects"):
        cfgmod.parse({"radar": {"objects": 1}})
    assert cfgmod.parse({"radar": {"objects": 2}}).radar.objects == 2


@pytest.mark.parametrize("bad", ["2025-W01-1", "20250101", "2025-02-30", "2025-1-05", "+002025-01"])
def test_calibration_dates_refuse_week_dates_and_other_iso_forms(tmp_path, bad):
    """``date.fromisoformat`` takes ISO week dates (10 characters like a real date) and basic format."""
    with pytest.raises(cfgmod.ConfigError, match="not a date"):
        cfgmod.load(write(tmp_path, f'[radar.calibration]\nvalid_until = "{bad}"\n'))


def test_calibration_dates_are_ordered_as_dates():
    cal = cfgmod.RadarCalibration(date="2025-12-31", valid_until="2026-01-01")
    assert cal.valid_until == "2026-01-01"
    with pytest.raises(ValueError, match="before the calibration date"):
        cfgmod.RadarCalibration(date="2026-01-02", valid_until="2026-01-01")


def test_beam_half_angle_default_per_model_and_override():
    """The cosine correction needs the beam width: known OmniPreSense models have a default, another
    model must state it, and it is bounded."""
    assert cfgmod.RadarConfig().beam_half_angle() == 10.0  # OPS243-A
    assert cfgmod.RadarConfig(model="OPS243-A (emulated)").beam_half_angle() == 10.0
    assert cfgmod.RadarConfig(model="OPS241-A").beam_half_angle() == 21.0
    assert cfgmod.RadarConfig(model="OPS243-A", beam_half_angle_deg=12.5).beam_half_angle() == 12.5
    with pytest.raises(cfgmod.ConfigError, match="beam width unknown"):
        cfgmod.parse({"radar": {"model": "K-LD2"}})
    assert (
        cfgmod.parse({"radar": {"model": "K-LD2", "beam_half_angle_deg": 40}}).radar.beam_half_angle() == 40
    )
    for bad in (0, 61):
        with pytest.raises(cfgmod.ConfigError, match="beam_half_angle_deg"):
            cfgmod.parse({"radar": {"beam_half_angle_deg": bad}})


@pytest.mark.parametrize(
    "gpio, message",
    [
        ("tamper_pin = 17\nflash_pin = 17", r"gpio\.tamper_pin and gpio\.flash_pin both use BCM pin 17"),
        ("led_ok_pin = 5\nled_fault_pin = 5", r"gpio\.led_fault_pin and gpio\.led_ok_pin both use BCM pin 5"),
        ("relay_pin = 24\ntamper_pin = 24", r"gpio\.tamper_pin and gpio\.relay_pin both use BCM pin 24"),
        ("tamper_pin = 28", r"gpio\.tamper_pin = 28: BCM pin numbers are 0-27"),
        ("flash_pin = -1", r"gpio\.flash_pin = -1: BCM pin numbers are 0-27"),
    ],
)
def test_gpio_pins_out_of_range_or_shared_are_refused_at_load(tmp_path, gpio, message):
    """Caught by `radarcam check`, not at start-up where GPIO would fail and tamper detection be off."""
    with pytest.raises(cfgmod.ConfigError, match=message):
        cfgmod.load(write(tmp_path, f"[gpio]\nenabled = true\n{gpio}\n"))


def test_gpio_distinct_pins_at_both_ends_of_the_range_load(tmp_path):
    text = "[gpio]\nflash_pin = 0\nled_ok_pin = 22\nled_fault_pin = 23\nrelay_pin = 24\ntamper_pin = 27\n"
    cfg = cfgmod.load(write(tmp_path, text))
    assert (cfg.gpio.flash_pin, cfg.gpio.tamper_pin) == (0, 27)
