"""``radarcam radar decode`` on a capture written by the test, and ``monitor`` against the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from device.cli import main
from device.sim.radar_emulator import RadarEmulator
from device.sim.scenario import Scenario


def test_decode_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = (
        b'{"Product":"OPS243"}\r\n'
        b"12.5\r\n"  # m/s by default
        b"\x00\x00garbage\xff\r\n"
        b'{"Units":"km-per-hr"}\r\n'
        b"-40.25\r\n"
        b"5.5,812.5,61\r\n"
        b'{"time":6.1,"magnitude":[900,50],"speed":["70.5",-33]}\r\n'
        b"\r\n"
        b'{"speed":NaN}\r\n'
        b"42"  # capture cut before the line end: still decoded
    )
    f = tmp_path / "capture.bin"
    f.write_bytes(cap)
    assert main(["radar", "decode", str(f)]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [
        {"speed_kmh": 12.5 * 3.6, "direction": "inbound", "magnitude": None, "sensor_time": None},
        {"speed_kmh": 40.25, "direction": "outbound", "magnitude": None, "sensor_time": None},
        {"speed_kmh": 61.0, "direction": "inbound", "magnitude": 812.5, "sensor_time": 5.5},
        {"speed_kmh": 70.5, "direction": "inbound", "magnitude": 900.0, "sensor_time": 6.1},
        {"speed_kmh": 33.0, "direction": "outbound", "magnitude": 50.0, "sensor_time": 6.1},
        {"speed_kmh": 42.0, "direction": "inbound", "magnitude": None, "sensor_time": None},
    ]
    assert "2 skipped" in err and "garbage=1" in err and "non_finite=1" in err and "1 blank" in err

    assert main(["radar", "decode", "--units", "mph", str(f)]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["speed_kmh"] == 12.5 * 1.609344


def test_decode_emulator_capture_matches_scenario(tmp_path: Path, short_scenario: Scenario) -> None:
    emu = RadarEmulator(short_scenario, realtime=False)  # used as a line generator only, no pty
    cap = emu.answer("UK") + emu.answer("OJ") + emu.answer("OM")
    t = 0.0
    while t < short_scenario.duration_s:
        cap += emu.render(t) or b""
        t += 0.05
    f = tmp_path / "emu.bin"
    f.write_bytes(cap)
    res = subprocess.run(
        [sys.executable, "-m", "device.cli", "radar", "decode", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert rows and all(r["magnitude"] is not None for r in rows)
    top = max(r["speed_kmh"] for r in rows)
    assert abs(top - max(v.speed_kmh for v in short_scenario.vehicles)) < 1.0
    assert "0 skipped" in res.stderr


def test_decode_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["radar", "decode", str(tmp_path / "nope.bin")]) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and "nope.bin" in err


def test_monitor_shows_passes_and_decisions(
    short_scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    with RadarEmulator(short_scenario) as emu:
        rc = main(["radar", "monitor", "--port", emu.port, "--seconds", str(short_scenario.duration_s + 1.0)])
    assert rc == 0
    out, err = capsys.readouterr()
    passes = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert len(passes) == len(short_scenario.vehicles)
    truth = {round(v.speed_kmh) for v in short_scenario.vehicles}
    assert {round(p["peak_kmh"]) for p in passes} <= {t + d for t in truth for d in (-1, 0, 1)}
    # default site: lane 1 inbound 60 km/h, Morocco; 72 km/h inbound -> enforced 69 -> 3rd degree
    fast = next(p for p in passes if p["direction"] == "inbound" and p["peak_kmh"] > 70)
    assert fast["violation"] and fast["rule"] == "MA-52-05-C3" and fast["limit_kmh"] == 60.0
    assert any("km/h" in x for x in out.splitlines() if not x.startswith("{"))  # live readings shown
    assert '"state": "stopped"' in err


def test_monitor_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[radar]\nunits = "furlongs"\n')
    assert main(["radar", "monitor", "--config", str(bad), "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "radar.units" in err and "furlongs" in err


def test_emulate_prints_a_port_that_answers_like_the_module() -> None:
    import signal

    import serial

    from .conftest import wait_for

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device.cli",
            "radar",
            "emulate",
            "--vehicles",
            "1",
            "--seed",
            "2",
            "--forever",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background ignores SIGINT and its children inherit that; Ctrl-C
        # is what is tested here, so the child gets the default handler back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        port = proc.stdout.readline().strip()
        assert Path(port).is_symlink()
        with serial.Serial(port, 115200, timeout=0.05) as ser:
            ser.write(b"??\r\n")
            buf = bytearray()
            wait_for(lambda: buf.extend(ser.read(4096)) or b'{"Product":"OPS243"}' in buf, what="banner")
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
    assert rc == 0
    assert not Path(port).exists()  # the link is removed on exit
