"""The signing key is refused when anyone but its owner could read it: packets signed with a key others
may have copied prove less, so the daemon stops with the fix instead of signing."""

from __future__ import annotations

import os

import pytest

from device.cli import main
from device.uplink.keys import KeyFileError, generate_key, load_signing_key


def test_a_key_only_its_owner_reads_loads(tmp_path):
    path = tmp_path / "keys" / "signing-key.pem"
    made = generate_key(path)
    assert load_signing_key(path).key_id == made.key_id
    os.chmod(path, 0o400)  # systemd's credential copy is read-only for the unit's user
    assert load_signing_key(path).key_id == made.key_id


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_group_or_others_may_read_is_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / "signing-key.pem"
    generate_key(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as ei:
        load_signing_key(path)
    assert f"mode {mode:04o}" in str(ei.value) and f"chmod 600 {path}" in str(ei.value)


def test_a_directory_or_missing_file_is_a_clear_error(tmp_path):
    (tmp_path / "dir.pem").mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_signing_key(tmp_path / "dir.pem")
    with pytest.raises(KeyFileError, match="cannot read signing key"):
        load_signing_key(tmp_path / "missing.pem")


def test_the_cli_refuses_a_readable_key_and_says_how_to_fix_it(tmp_path, capsys):
    path = tmp_path / "signing-key.pem"
    generate_key(path)
    os.chmod(path, 0o644)
    assert main(["keys", "show", "--path", str(path)]) == 1
    assert f"chmod 600 {path}" in capsys.readouterr().err
    os.chmod(path, 0o600)
    assert main(["keys", "show", "--path", str(path)]) == 0
