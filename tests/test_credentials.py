"""The MQTT password file cannot carry the signing key (or any key) to a host the console chose.

Real files, links and FIFOs; the selftest's broker check runs against a real TCP listener that records
every byte a client sends it, so "nothing was sent" is observed, not assumed.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from device import config as cfgmod
from device.credentials import CredentialError, is_key_material, read_password_file
from device.selftest import check_broker
from device.uplink.keys import generate_key


class Recorder:
    """A TCP server that accepts connections and keeps whatever arrives (it never answers MQTT)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.data = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            with conn:
                try:
                    while chunk := conn.recv(65536):
                        self.data.extend(chunk)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


@pytest.fixture
def unit(tmp_path: Path) -> dict[str, Path]:
    """A key folder with the signing key, and the MQTT folder beside it (as install.sh lays them out)."""
    keys = tmp_path / "etc" / "keys"
    mqtt = tmp_path / "etc" / "mqtt"
    mqtt.mkdir(parents=True)
    key = keys / "signing-key.pem"
    generate_key(key)
    return {"keys": keys, "mqtt": mqtt, "key": key, "state": tmp_path / "state"}


def _cfg(unit: dict[str, Path], password_file: Path, port: int) -> cfgmod.Config:
    return cfgmod.parse(
        {
            "device": {"key_path": str(unit["key"]), "state_dir": str(unit["state"])},
            "uplink": {
                "host": "127.0.0.1",
                "port": port,
                "username": "cam-1",
                "password_file": str(password_file),
            },
        }
    )


def _read(path: Path, unit: dict[str, Path]) -> str:
    return read_password_file(path, reserved_dirs=[unit["keys"]], key_files=[unit["key"]])


def test_a_plain_password_is_read_and_sent(unit, recorder) -> None:
    """The positive case: the recorder does see a password, so the refusals below are real refusals."""
    pw = unit["mqtt"] / "password"
    pw.write_text("s3cret-pass\n")
    assert _read(pw, unit) == "s3cret-pass"
    ok, detail, _ = check_broker(_cfg(unit, pw, recorder.port), timeout=1.0)
    assert not ok and "no CONNACK" in detail
    assert b"s3cret-pass" in recorder.data


def test_selftest_never_sends_a_key_swapped_in_after_the_config_was_loaded(unit, recorder) -> None:
    """The TOCTOU the review found: the config is validated with a harmless file, which is then replaced
    by a symlink to the key (the console can write where it points the setting). Nothing may leave."""
    pw = unit["mqtt"] / "password"
    pw.write_text("harmless\n")
    cfg = _cfg(unit, pw, recorder.port)  # validates now, resolving the path once
    pw.unlink()
    pw.symlink_to(unit["key"])
    ok, detail, fix = check_broker(cfg, timeout=1.0)
    assert not ok and "symbolic link" in detail and "uplink.password_file" in detail and fix
    assert recorder.connections == 0 and b"PRIVATE KEY" not in recorder.data


def test_selftest_refuses_a_private_key_copy_like_the_daemon(unit, recorder) -> None:
    """A copy of a key outside the key folder passes every path rule; its content does not."""
    copy = unit["mqtt"] / "password"
    copy.write_bytes(unit["key"].read_bytes())
    ok, detail, _ = check_broker(_cfg(unit, copy, recorder.port), timeout=1.0)
    assert not ok and "private key" in detail
    assert recorder.connections == 0
    assert is_key_material(unit["key"].read_text())
    assert is_key_material("-----BEGIN CERTIFICATE-----\nMII...\n")
    assert not is_key_material("correct horse battery staple")


def test_hard_links_and_folder_symlinks_into_the_key_folder_are_refused(unit) -> None:
    """Neither changes the opened file's inode: a hard link to the key, or a path through a symlinked
    folder that lands in the key folder, is refused on what was opened."""
    hard = unit["mqtt"] / "hard"
    os.link(unit["key"], hard)
    with pytest.raises(CredentialError, match="is the signing key"):
        _read(hard, unit)
    (unit["keys"] / "other").write_text("not a key, but in the key folder\n")
    (unit["mqtt"] / "sub").symlink_to(unit["keys"], target_is_directory=True)
    with pytest.raises(CredentialError, match="reserved folder"):
        _read(unit["mqtt"] / "sub" / "other", unit)


def test_only_a_small_regular_file_is_a_password(unit) -> None:
    fifo = unit["mqtt"] / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(CredentialError, match="not a regular file"):
        _read(fifo, unit)  # and it did not block waiting for a writer
    big = unit["mqtt"] / "big"
    big.write_text("x" * 5000)
    with pytest.raises(CredentialError, match="more than a password"):
        _read(big, unit)
    binary = unit["mqtt"] / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CredentialError, match="not UTF-8"):
        _read(binary, unit)
    with pytest.raises(CredentialError, match="cannot open"):
        _read(unit["mqtt"] / "missing", unit)


def test_the_systemd_credential_copy_is_reserved(tmp_path, monkeypatch) -> None:
    """The daemon prefers /run/credentials/radarcam.service/signing-key: no uplink file may name it,
    nor anything in $CREDENTIALS_DIRECTORY."""
    path = tmp_path / "radarcam.toml"
    path.write_text(
        '[uplink]\nusername = "x"\npassword_file = "/run/credentials/radarcam.service/signing-key"\n'
    )
    with pytest.raises(cfgmod.ConfigError, match=r"uplink\.password_file"):
        cfgmod.load(path)
    creds = tmp_path / "creds"
    creds.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path.write_text(f'[uplink]\nusername = "x"\npassword_file = "{creds}/mqtt"\n')
    with pytest.raises(cfgmod.ConfigError, match="must never read the signing key"):
        cfgmod.load(path)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert cfgmod.load(path).uplink.password_file == creds / "mqtt"


def test_console_default_folder_is_the_dedicated_mqtt_folder() -> None:
    """Not /etc/radarcam (console-writable) and not /etc/radarcam/tls (the TLS client key is there)."""
    from device.console.settings import FieldError, apply_form, uplink_fields

    fields = uplink_fields(cfgmod.ConsoleConfig().allowed_file_dirs)
    for bad in ("/etc/radarcam/tls/client.key", "/etc/radarcam/radarcam.toml", "/etc/radarcam/mqttx/pw"):
        with pytest.raises(FieldError) as ei:
            apply_form({}, {"uplink.password_file": bad}, fields)
        assert "uplink.password_file" in ei.value.errors and "/etc/radarcam/mqtt" in str(ei.value), bad
    new = apply_form({}, {"uplink.password_file": "/etc/radarcam/mqtt/password"}, fields)
    assert new["uplink"]["password_file"] == "/etc/radarcam/mqtt/password"
