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
