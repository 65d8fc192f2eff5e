"""99-radarcam.rules: syntax (udevadm verify where systemd >= 254 has it, else a strict parse) and
behaviour, by evaluating the rules against the udev properties real devices present."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "systemd" / "99-radarcam.rules"

MATCH_OPS = ("==", "!=")
ASSIGN_OPS = ("=", "+=", "-=", ":=")
MATCH_KEYS = {"ACTION", "SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "KERNELS", "DRIVER", "DRIVERS", "ENV", "ATTR"}
MATCH_KEYS |= {"ATTRS", "TAG", "TAGS", "PROGRAM", "RESULT", "TEST"}
ASSIGN_KEYS = {"SYMLINK", "GROUP", "OWNER", "MODE", "ENV", "TAG", "RUN", "GOTO", "LABEL", "OPTIONS", "NAME"}
ASSIGN_KEYS |= {"IMPORT", "ATTR"}
TOKEN = re.compile(r'\s*([A-Z_]+)(?:\{([^}]+)\})?\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')


def parse_rules(text: str) -> list[list[tuple[str, str | None, str, str]]]:
    rules = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pos, tokens = 0, []
        while pos < len(line):
            m = TOKEN.match(line, pos)
            if m is None:
                raise SyntaxError(f"line {n}: cannot parse at column {pos}: {line[pos:]!r}")
            key, attr, op, value = m.groups()
            if op in MATCH_OPS and key not in MATCH_KEYS:
                raise SyntaxError(f"line {n}: {key} cannot be matched")
            if op in ASSIGN_OPS and key not in ASSIGN_KEYS:
                raise SyntaxError(f"line {n}: {key} cannot be assigned")
            if key in ("ENV", "ATTR", "ATTRS") and not attr:
                raise SyntaxError(f"line {n}: {key} needs {{name}}")
            tokens.append((key, attr, op, value))
            pos = m.end()
        rules.append(tokens)
    labels = {v for r in rules for k, _, _, v in r if k == "LABEL"}
    for r in rules:
        for k, _, _, v in r:
            if k == "GOTO" and v not in labels:
                raise SyntaxError(f"GOTO {v!r} has no LABEL")
    return rules


def evaluate(rules, device: dict[str, str], files: frozenset[str] = frozenset()) -> dict[str, object]:
    """Applies the rules to one device (ENV{} = udev properties, plus ACTION/SUBSYSTEM/KERNEL);
    ``TEST`` matches the paths in ``files`` (those that exist on the simulated host)."""
    env = dict(device)
    result: dict[str, object] = {"SYMLINK": [], "TAG": []}
    i = 0
    while i < len(rules):
        rule = rules[i]
        i += 1
        matched = True
        for key, attr, op, value in rule:
            if op not in MATCH_OPS:
                continue
            actual = env.get(attr) if key == "ENV" else device.get(key)
            hit = actual is not None and any(fnmatch.fnmatchcase(actual, p) for p in value.split("|"))
            if key == "TEST":
                hit = value in files
            if hit != (op == "=="):
                matched = False
                break
        if not matched:
            continue
        for key, attr, op, value in rule:
            if op in MATCH_OPS or key == "LABEL":
                continue
            if key == "GOTO":
                i = next(j for j, r in enumerate(rules) if ("LABEL", None, "=", value) in r)
                break
            if key == "ENV":
                env[attr] = value
                result["ENV." + attr] = value
            elif key in ("SYMLINK", "TAG"):
                result[key].append(value)  # type: ignore[union-attr]
            else:
                result[key] = value
    return result


OPS243_ST = {
    "ACTION": "add",
    "SUBSYSTEM": "tty",
    "KERNEL": "ttyACM0",
    "ID_VENDOR_ID": "0483",
    "ID_MODEL_ID": "5740",
    "ID_USB_DRIVER": "cdc_acm",
}
OPS243_INFINEON = {
    "ACTION": "add",
    "SUBSYSTEM": "tty",
    "KERNEL": "ttyACM1",
    "ID_VENDOR": "Infineon",
    "ID_MODEL": "IFX_CDC",
    "ID_VENDOR_ID": "058b",
    "ID_USB_DRIVER": "cdc_acm",
}


@pytest.fixture(scope="module")
def rules():
    return parse_rules(RULES.read_text())


@pytest.mark.parametrize("device", [OPS243_ST, OPS243_INFINEON], ids=["st-cdc", "infineon-cdc"])
def test_radar_gets_dev_radar_for_dialout(rules, device):
    r = evaluate(rules, device)
    assert r["SYMLINK"] == ["radar"]
    assert r["GROUP"] == "dialout" and r["MODE"] == "0660"
    assert r["ENV.ID_MM_DEVICE_IGNORE"] == "1"  # ModemManager must not send AT commands to the radar


@pytest.mark.parametrize(
    "device",
    [
        {**OPS243_ST, "ACTION": "remove"},
        {**OPS243_ST, "SUBSYSTEM": "usb", "KERNEL": "1-1.2"},
        {"ACTION": "add", "SUBSYSTEM": "tty", "KERNEL": "ttyUSB0", "ID_VENDOR_ID": "0403"},  # FTDI adapter
        {**OPS243_ST, "ID_VENDOR_ID": "2341"},  # an Arduino on ttyACM
        {"ACTION": "add", "SUBSYSTEM": "tty", "KERNEL": "ttyAMA0"},  # the Pi's UART: configured by path
    ],
    ids=["remove", "usb-parent", "ftdi", "arduino", "uart"],
)
def test_other_devices_are_left_alone(rules, device):
    r = evaluate(rules, device)
    assert r["SYMLINK"] == [] and "GROUP" not in r


def test_a_sites_own_pin_replaces_the_generic_matches(rules):
    """With /etc/udev/rules.d/98-radarcam-local.rules in place (the radar pinned by serial number), a
    GNSS receiver that is also an STM32 CDC device no longer gets /dev/radar from the generic rule.
    Before, the docs said to delete the generic lines from the installed file, which install.sh
    rewrote on its next run."""
    gnss = {**OPS243_ST, "KERNEL": "ttyACM2", "ID_SERIAL_SHORT": "GNSS0001"}
    local = frozenset({"/etc/udev/rules.d/98-radarcam-local.rules"})
    assert evaluate(rules, gnss)["SYMLINK"] == ["radar"]  # the conflict the pin is for
    assert evaluate(rules, gnss, local)["SYMLINK"] == []
    assert evaluate(rules, OPS243_INFINEON, local)["SYMLINK"] == []  # the pin file names the radar itself


def test_parser_rejects_broken_rules():
    with pytest.raises(SyntaxError):
        parse_rules('KERNEL=="ttyACM*", SYMLINK+="radar\n')  # unterminated quote
    with pytest.raises(SyntaxError):
        parse_rules('SYMLINK=="radar"\n')  # SYMLINK is not a match key
    with pytest.raises(SyntaxError):
        parse_rules('GOTO="nowhere"\n')


@pytest.mark.skipif(shutil.which("udevadm") is None, reason="udevadm not installed")
def test_udevadm_verify_when_available(tmp_path):
    helptext = subprocess.run(["udevadm", "--help"], capture_output=True, text=True).stdout
    if not re.search(r"^\s+verify\b", helptext, re.M):
        pytest.skip("udevadm verify needs systemd >= 254; the strict parse above covers syntax")
    res = subprocess.run(["udevadm", "verify", str(RULES)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
