"""The systemd units: `systemd-analyze verify` and `security`, and the signing-key boundary.

`systemd-analyze verify` insists that ExecStart's binary exists. The units name the installed path
(/opt/radarcam/venv/bin/radarcam), so the test verifies a copy whose ExecStart points at a real
executable in a temp dir; nothing else is changed. Run the same by hand on a unit after install with
`systemd-analyze verify /etc/systemd/system/radarcam.service`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNITS = ("radarcam.service", "radarcam-console.service")
INSTALLED_BIN = "/opt/radarcam/venv/bin/radarcam"


# --------------------------------------------------------------------------- unit file reader
# configparser cannot represent repeated keys (DeviceAllow=, SystemCallFilter=), which the checks need.
def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line:
            raise ValueError(f"{path}: cannot parse line {raw!r}")
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def words(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [w for v in values(unit, section, key) for w in v.split()]


ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def templated(tmp_path: Path, name: str, text: str | None = None) -> Path:
    stub = tmp_path / "bin" / "radarcam"
    if not stub.exists():
        stub.parent.mkdir(parents=True)
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    text = (SYSTEMD_DIR / name).read_text() if text is None else text
    assert INSTALLED_BIN in text or text.startswith("[Unit]\nDescription=broken")
    out = tmp_path / name
    out.write_text(text.replace(INSTALLED_BIN, str(stub)))
    return out


def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", *map(str, paths)], capture_output=True, text=True, timeout=60
    )


@needs_analyze
def test_units_verify_without_any_warning(tmp_path):
    paths = [templated(tmp_path, n) for n in UNITS]
    res = verify(*paths)
    # verify exits 0 on unknown keys and other warnings; any output at all is treated as a failure.
    assert res.returncode == 0 and res.stdout.strip() == "" and res.stderr.strip() == "", res.stderr


@needs_analyze
def test_verify_check_catches_a_broken_unit(tmp_path):
    """The check above can fail: a typo in a key is reported."""
    text = (SYSTEMD_DIR / "radarcam.service").read_text().replace("WatchdogSec=", "WatchdogSecs=")
    res = verify(templated(tmp_path, "radarcam.service", text))
    assert "WatchdogSecs" in res.stderr


@needs_analyze
@pytest.mark.parametrize(("name", "limit"), [("radarcam.service", 3.0), ("radarcam-console.service", 2.5)])
def test_security_exposure_is_low(tmp_path, name, limit):
    res = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(templated(tmp_path, name))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert m, res.stdout[-500:] + res.stderr
    assert float(m.group(1)) <= limit, res.stdout


def test_daemon_unit_contract():
    u = parse_unit(SYSTEMD_DIR / "radarcam.service")
    svc = dict(u["Service"])  # last value wins, as in systemd for single-value keys
    assert svc["Type"] == "notify"
    assert svc["ExecStart"].split()[:4] == [INSTALLED_BIN, "run", "--config", "/etc/radarcam/radarcam.toml"]
    assert svc["WatchdogSec"] == "30" and svc["Restart"] == "on-failure"
    assert svc["User"] == "radarcam" and svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict" and svc["PrivateTmp"] == "yes" and svc["ProtectHome"] == "yes"
    assert svc["CapabilityBoundingSet"] == ""
    assert svc["StateDirectory"] == "radarcam" and svc["StateDirectoryMode"] == "0700"
    assert svc["ExecReload"].endswith("-HUP $MAINPID")
    assert int(svc["TimeoutStopSec"]) >= 10  # SIGTERM drains within 10 s
    assert set(words(u, "Service", "SupplementaryGroups")) >= {"dialout", "video", "gpio"}
    assert values(u, "Service", "LoadCredential") == ["signing-key:/etc/radarcam/keys/signing-key.pem"]
    allowed = {v.split()[0] for v in values(u, "Service", "DeviceAllow")}
    assert {
        "/dev/radar",
        "char-ttyACM",
        "char-ttyAMA",
        "char-ttyS",
        "char-video4linux",
        "char-media",
    } <= allowed
    assert {"char-gpiochip", "char-dma_heap"} <= allowed
    assert svc["DevicePolicy"] == "closed"
    # the kernel's sync state must stay readable (device/clock.py): glibc's adjtimex() is the
    # clock_adjtime syscall (clock_adjtime64 on 32-bit)
    filters = values(u, "Service", "SystemCallFilter")
    assert {"adjtimex", "clock_adjtime", "clock_adjtime64", "@system-service"} <= set(filters[0].split())
    assert not any("@privileged" in f or "@clock" in f for f in filters[1:])
    assert svc.get("ProtectClock", "no") == "no"
    assert set(svc["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_console_cannot_reach_the_signing_key():
    daemon = parse_unit(SYSTEMD_DIR / "radarcam.service")
    console = parse_unit(SYSTEMD_DIR / "radarcam-console.service")
    dsvc, csvc = dict(daemon["Service"]), dict(console["Service"])
    assert csvc["User"] not in (dsvc["User"], "root")
    assert csvc["ExecStart"].split()[1] == "console"
    hidden = [p.lstrip("-") for p in words(console, "Service", "InaccessiblePaths")]
    key_sources = [v.split(":", 1)[1] for v in values(daemon, "Service", "LoadCredential")]
    daemon_state = "/var/lib/" + dsvc["StateDirectory"]
    candidates = [*key_sources, daemon_state + "/keys/signing-key.pem", "/run/credentials/radarcam.service/x"]
    for path in candidates:
        assert any(path == h or path.startswith(h.rstrip("/") + "/") for h in hidden), path
    # ...and nothing re-opens them: no writable path, bind mount or credential of its own under them.
    reopened = words(console, "Service", "ReadWritePaths") + words(console, "Service", "BindPaths")
    reopened += words(console, "Service", "BindReadOnlyPaths") + values(console, "Service", "LoadCredential")
    for path in reopened:
        assert not any(path.lstrip("-").startswith(h) for h in hidden), path
    assert csvc["CapabilityBoundingSet"] == "" and csvc["NoNewPrivileges"] == "yes"
    assert "radarcam" not in words(console, "Service", "SupplementaryGroups")


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_the_syscall_the_clock_fallback_really_makes_is_allowed(tmp_path):
    """The filter once allowed only ``adjtimex`` while glibc issues ``clock_adjtime``: under the unit's
    seccomp filter the kernel fallback failed with EPERM. Trace what the reader really calls."""
    import sys

    log = tmp_path / "trace"
    subprocess.run(
        ["strace", "-f", "-o", str(log), "-e", "trace=adjtimex,clock_adjtime", sys.executable, "-c",
         "from device.clock import read_adjtimex; read_adjtimex()"],
        check=True, capture_output=True, cwd=SYSTEMD_DIR.parent, timeout=60,
    )  # fmt: skip
    called = set(re.findall(r"\b(adjtimex|clock_adjtime(?:64)?)\(", log.read_text()))
    assert called, "the reader made no adjtime-family call"
    u = parse_unit(SYSTEMD_DIR / "radarcam.service")
    assert called <= set(values(u, "Service", "SystemCallFilter")[0].split())
