"""The console can never read the signing key: it never opens it, and as its own user it could not.

The process test runs the real ``radarcam console`` CLI under another uid (``nobody``) with a root-owned
0600 key file named in the config, exactly like the systemd units do with two users.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_DIR = ROOT / "device" / "console"
NOBODY = 65534


def test_console_code_never_references_the_key() -> None:
    forbidden = re.compile(
        r"key_path|signing[-_]key\b|uplink\.keys|from device\.uplink|Ed25519|load_pem_private_key"
    )
    offenders = []
    for p in [*CONSOLE_DIR.rglob("*.py"), ROOT / "device" / "control.py"]:
        for n, line in enumerate(p.read_text("utf-8").splitlines(), 1):
            # control.py documents the rule in prose; only code lines count there
            if forbidden.search(line) and not line.lstrip().startswith(("#", '"', "``")):
                offenders.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders
    assert forbidden.search("cfg.device.key_path")  # the pattern itself works


def _wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 30.0) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    out = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out += proc.stderr.read()
            break
        if sel.select(timeout=0.2):
            line = proc.stderr.readline()
            out += line
            if re.search(pattern, line):
                return out
    raise AssertionError(f"console did not print {pattern!r}; stderr so far:\n{out}")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root + setpriv to switch uid"
)
def test_console_process_cannot_open_key_file() -> None:
    import socket

    tmp = Path(tempfile.mkdtemp(prefix="rc-console-uid-"))
    proc = None
    try:
        tmp.chmod(0o755)
        key = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        keydir = tmp / "daemon-state" / "keys"
        keydir.mkdir(parents=True)
        key_file = keydir / "signing-key.pem"
        key_file.write_bytes(key)
        key_file.chmod(0o600)
        os.chown(key_file, 0, 0)
        console_state = tmp / "console-state"
        console_state.mkdir()
        os.chown(console_state, NOBODY, NOBODY)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cfg = tmp / "radarcam.toml"
        cfg.write_text(
            f'[device]\nkey_path = "{key_file}"\nstate_dir = "{tmp}/daemon-state"\nruntime_dir = "{tmp}/run"\n'
            f'[console]\nbind = "127.0.0.1"\nport = {port}\nstate_dir = "{console_state}"\n'
            "argon2_time_cost = 1\nargon2_memory_kib = 8192\n"
        )
        cfg.chmod(0o644)
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": str(tmp),
        }
        proc = subprocess.Popen(
            [*drop, sys.executable, "-m", "device.cli", "console", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        out = _wait_for(proc, r"listening on https://")
        assert re.search(r"setup code: [A-Z2-9]{4}-", out)  # first start: the code is in the journal
        # it really runs as the other user
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M).groups()
        assert set(uids) == {str(NOBODY)}
        # it serves, and has not a single descriptor on the key file
        import ssl
        import urllib.request

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        body = urllib.request.urlopen(f"https://127.0.0.1:{port}/setup", context=ctx, timeout=10).read()
        assert b"setup" in body
        fds = []
        for f in Path(f"/proc/{proc.pid}/fd").iterdir():
            try:  # a descriptor closed while listing (a request's socket) is gone, not the key
                fds.append(os.readlink(f))
            except FileNotFoundError:
                continue
        assert fds and str(key_file) not in fds
        # with the console's credentials, opening the key fails
        probe = subprocess.run(
            [*drop, sys.executable, "-c", f"open({str(key_file)!r}, 'rb').read()"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode != 0 and "PermissionError" in probe.stderr
        # while the file is fine for its owner (the daemon's user): the probe failed for the right reason
        assert key_file.read_bytes() == key
        # the console made its own TLS key in its own state dir, owned by its user
        tls_key = console_state / "tls" / "console-key.pem"
        assert tls_key.stat().st_uid == NOBODY and (tls_key.stat().st_mode & 0o777) == 0o600
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0  # SIGTERM is a clean stop


def test_console_cannot_point_the_uplink_at_the_signing_key(tmp_path: Path) -> None:
    """Reading the key is not the only way out: a console that could set ``uplink.password_file`` to the
    key would have the daemon send it to a host of the console's choosing at its next start. The
    console's one write path refuses that (and the file is left as it was); a file elsewhere in the
    allowed directory is accepted."""
    from device import config as cfgmod
    from device.console.audit import AuditLog
    from device.console.settings import ConfigEditor, FieldError, uplink_fields

    etc = tmp_path / "etc"
    keys = etc / "keys"
    keys.mkdir(parents=True)
    key = keys / "signing-key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    cfg_path = etc / "radarcam.toml"
    cfg_path.write_text(f'[device]\nkey_path = "{key}"\nstate_dir = "{tmp_path / "state"}"\n')
    editor = ConfigEditor(cfg_path, AuditLog(tmp_path / "audit.jsonl"))
    fields = uplink_fields([etc])
    before = cfg_path.read_bytes()
    form = {"uplink.host": "203.0.113.9", "uplink.username": "x", "uplink.password_file": str(key)}
    with pytest.raises(FieldError) as ei:
        editor.change(form, fields, who="t", role="admin", remote="test", base_version=editor.version(before))
    assert "must never read the signing key" in str(ei.value)
    assert cfg_path.read_bytes() == before
    (etc / "mqtt-password").write_text("secret\n")
    form["uplink.password_file"] = str(etc / "mqtt-password")
    editor.change(form, fields, who="t", role="admin", remote="test", base_version=editor.version(before))
    assert cfgmod.load(cfg_path).uplink.password_file == etc / "mqtt-password"
