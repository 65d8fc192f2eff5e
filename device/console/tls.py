"""Self-signed TLS certificate for the maintenance port, made on first start and kept.

Why self-signed: the unit sits on a roadside with no DNS name and no CA. The technician checks the
certificate's sha256 fingerprint (logged on start, printed by ``radarcam console fingerprint`` and by the
self-test) against what the browser shows, once; after that the browser pins it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_NAME = "console-cert.pem"
KEY_NAME = "console-key.pem"


def tls_paths(state_dir: Path) -> tuple[Path, Path]:
    d = Path(state_dir) / "tls"
    return d / CERT_NAME, d / KEY_NAME


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 over the DER certificate, colon-separated upper-case hex (what browsers display)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    h = hashlib.sha256(der).hexdigest().upper()
    return ":".join(h[i : i + 2] for i in range(0, len(h), 2))


def _write_private(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def ensure_certificate(state_dir: Path, *, device_id: str, years: int = 10) -> tuple[Path, Path, bool]:
    """Returns (cert, key, created). Never overwrites an existing pair: the fingerprint must stay stable."""
    tls_cert, tls_key = tls_paths(state_dir)
    if tls_cert.exists() and tls_key.exists():
        return tls_cert, tls_key, False
    tls_cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in (tls_cert, tls_key):  # a half pair from an interrupted start is useless
        p.unlink(missing_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"radarcam console {device_id}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "maintenance port"),
        ]
    )
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    host = socket.gethostname()
    if host and host != "localhost":
        sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365 * years))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(tls_key, key_pem, 0o600)
    _write_private(tls_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return tls_cert, tls_key, True


def installed_fingerprint(state_dir: Path) -> str | None:
    """The console certificate's fingerprint, or None before the console's first start (for self-test)."""
    cert, _ = tls_paths(state_dir)
    try:
        return fingerprint(cert.read_bytes())
    except (FileNotFoundError, PermissionError):
        return None
