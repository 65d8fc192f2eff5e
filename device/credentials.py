"""Reading the MQTT password file without turning it into a way to send secrets to someone else's server.

Why a module of its own: the console may choose ``uplink.password_file`` *and* ``uplink.host``, and both
``radarcam selftest`` and the daemon send that file's text to the host as the MQTT password. Config
validation keeps the path out of the key folders, but it resolves symlinks once, when the config is
loaded; the file is opened later, possibly in a folder the console can write. So every check is made
again here on the descriptor actually opened: no symlink as the last component (``O_NOFOLLOW``), a
regular file of password size, not the signing key or any file in a reserved folder (by device and
inode, which no symlink or hard link changes), and no PEM or private-key text at all.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from device.config import Config

MAX_PASSWORD_BYTES = 4096
"""No MQTT password is longer; a bigger file is something else (a key, a certificate chain, a log)."""
_SCAN_LIMIT = 2000
"""Files looked at per reserved folder when comparing inodes (the key folders hold a handful)."""


class CredentialError(ValueError):
    """The password file is refused or unreadable; the message names the setting and says why."""


def is_key_material(text: str) -> bool:
    """True for text that must never be sent as a password.

    The daemon's rule (``"PRIVATE KEY-----" in pw``, device/uplink/mqtt.py) plus any PEM armour: no MQTT
    password starts a line with ``-----BEGIN``, and a certificate there means the path is wrong."""
    return "PRIVATE KEY-----" in text or "-----BEGIN " in text


def refuse_key_material(text: str, *, setting: str, path: os.PathLike[str] | str) -> str:
    """Returns ``text`` unless it is key material (then :class:`CredentialError`, naming the setting)."""
    if is_key_material(text):
        raise CredentialError(
            f"{setting} {path} holds a private key or PEM data: it is never sent as the MQTT password"
        )
    return text


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _inodes_under(folder: Path) -> set[tuple[int, int]]:
    """(dev, ino) of the regular files in ``folder`` and its subfolders, as far as this user may list
    them (the daemon and root can list the key folders; nobody else could open their files anyway)."""
    out: set[tuple[int, int]] = set()
    for base, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                st = os.lstat(os.path.join(base, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.add((st.st_dev, st.st_ino))
            if len(out) >= _SCAN_LIMIT:
                return out
    return out


def _opened_path(fd: int) -> Path | None:
    """Where the descriptor really points (the kernel's answer, after every symlink in the path)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return Path(target) if target.startswith("/") else None


def read_password_file(
    path: os.PathLike[str] | str,
    *,
    reserved_dirs: Iterable[os.PathLike[str] | str],
    key_files: Iterable[os.PathLike[str] | str] = (),
    setting: str = "uplink.password_file",
    max_bytes: int = MAX_PASSWORD_BYTES,
) -> str:
    """The password (stripped), or :class:`CredentialError` saying which rule refused the file."""
    p = Path(path)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW: the last component is a symlink
            raise CredentialError(
                f"{setting} {p} is a symbolic link: refused (name the password file itself)"
            ) from None
        raise CredentialError(f"{setting} {p}: cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialError(f"{setting} {p} is not a regular file: refused")
        if st.st_size > max_bytes:
            raise CredentialError(
                f"{setting} {p} is {st.st_size} bytes, more than a password ({max_bytes} at most): refused"
            )
        me = (st.st_dev, st.st_ino)
        for key in key_files:
            if _inode(Path(key)) == me:
                raise CredentialError(f"{setting} {p} is the signing key {key}: refused")
        real = _opened_path(fd)
        for folder in reserved_dirs:
            d = Path(os.path.realpath(folder))
            if (real is not None and (real == d or d in real.parents)) or me in _inodes_under(d):
                raise CredentialError(
                    f"{setting} {p} is a file in the reserved folder {d} (signing key, credentials): refused"
                )
        data = os.read(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise CredentialError(f"{setting} {p} is larger than a password ({max_bytes} bytes at most): refused")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialError(f"{setting} {p} is not UTF-8 text: refused") from None
    return refuse_key_material(text, setting=setting, path=p)


def read_uplink_password(cfg: Config) -> str | None:
    """``uplink.password_file``'s password, with the config's reserved folders and key files; None when
    no file is set. What selftest uses; the daemon's uplink should use it too."""
    from device.config import reserved_key_dirs, signing_key_candidates

    path = cfg.uplink.password_file
    if path is None:
        return None
    return read_password_file(
        path, reserved_dirs=reserved_key_dirs(cfg.device), key_files=signing_key_candidates(cfg.device)
    )
