"""Device signing keys (Ed25519): create once with 0600, load, describe.

The key id that goes into every packet header is the first 16 bytes of sha256 over the raw 32-byte
public key (hex), so a registry can pick the right key without trusting anything else in the packet.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(Exception):
    """A key file that cannot be created or used; the message is meant for a technician."""


def raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(pub: Ed25519PublicKey) -> str:
    return hashlib.sha256(raw_public(pub)).digest()[:16].hex()


def fingerprint_of(pub: Ed25519PublicKey) -> str:
    """Full sha256 of the raw public key, colon-grouped for reading aloud over a phone."""
    h = hashlib.sha256(raw_public(pub)).hexdigest()
    return ":".join(h[i : i + 4] for i in range(0, len(h), 4))


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    key_id: str
    fingerprint: str
    path: Path | None = None

    @classmethod
    def from_private(cls, priv: Ed25519PrivateKey, path: Path | None = None) -> SigningKey:
        pub = priv.public_key()
        return cls(priv, pub, key_id_of(pub), fingerprint_of(pub), path)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    @property
    def key_id_bytes(self) -> bytes:
        return bytes.fromhex(self.key_id)


def generate_key(path: str | os.PathLike[str], *, force: bool = False) -> SigningKey:
    """Creates a new key file with mode 0600 (never readable by others, even for an instant)."""
    p = Path(path)
    if p.exists() and not force:
        raise KeyFileError(f"{p}: key already exists; refusing to overwrite (use --force to replace it)")
    if not p.parent.exists():
        p.parent.mkdir(parents=True, mode=0o700)  # only the daemon's user may even list the key dir
    priv = Ed25519PrivateKey.generate()
    pem = priv.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = p.with_name(f".{p.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, p)
    # The rename is only durable once the directory entry is on disk (as config.atomic_write does):
    # without this a power cut can leave no key file although the key was already used to sign.
    dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return SigningKey.from_private(priv, p)


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """The device key, refused when anyone but its owner may read it.

    A key that others could have read may have been copied, so packets signed with it prove less;
    the daemon fails loudly at start-up (with the chmod to run) instead of signing with it. The mode
    is checked on the opened file, so a swap between check and read cannot slip through."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"{p}: cannot read signing key: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{p}: signing key is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"{p}: signing key mode {mode:04o} lets group or others read it; run chmod 600 {p}"
                " (and consider the key exposed: rotate it if others could log in)"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError as exc:
        raise KeyFileError(f"{p}: cannot read signing key: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        priv = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{p}: not a PEM private key: {exc}") from None
    if not isinstance(priv, Ed25519PrivateKey):
        raise KeyFileError(f"{p}: not an Ed25519 key ({type(priv).__name__})")
    return SigningKey.from_private(priv, p)


def load_public_key(pem_path: str | os.PathLike[str]) -> Ed25519PublicKey:
    p = Path(pem_path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{p}: cannot read public key: {exc.strerror or exc}") from None
    return parse_public_pem(data, source=str(p))


def parse_public_pem(data: bytes, *, source: str = "<pem>") -> Ed25519PublicKey:
    try:
        if b"PRIVATE KEY" in data:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{source}: not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{source}: not an Ed25519 public key ({type(key).__name__})")
    return key


def public_pem(key: SigningKey | Ed25519PublicKey) -> str:
    pub = key.public_key if isinstance(key, SigningKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
