"""An embedded mosquitto for tests, the demo and HIL runs: real broker, loopback only, throwaway config.

``MosquittoBroker(port=None, tls=None).start()`` picks a free port, writes a config with a plain
listener on 127.0.0.1 (anonymous) and, with ``tls``, a second listener that requires a client
certificate signed by the test CA. ``stop()``/``kill()``/``restart()`` keep the same ports so fault
tests can take the broker away and bring it back. :func:`make_test_pki` builds that CA with
``cryptography`` (a CA, a server cert for 127.0.0.1, a good client and a client from a rogue CA).
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TestPki:
    __test__ = False  # not a pytest class
    dir: Path
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(path, 0o600)


def _cert(subject_cn: str, pub, issuer_cn: str, issuer_key, *, ca: bool, server: bool):
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
    return b.sign(issuer_key, hashes.SHA256())


def make_test_pki(directory: str | os.PathLike[str]) -> TestPki:
    """A throwaway CA + server + client certificates (EC P-256), and a client signed by a rogue CA."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    ca_key, rogue_ca_key = key(), key()
    ca = _cert("radarcam test CA", ca_key.public_key(), "radarcam test CA", ca_key, ca=True, server=False)
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    out: dict[str, Path] = {}
    for name, cn, issuer_cn, issuer_key, server in (
        ("server", "127.0.0.1", "radarcam test CA", ca_key, True),
        ("client", "radarcam-test-device", "radarcam test CA", ca_key, False),
        ("rogue", "radarcam-test-device", "rogue CA", rogue_ca_key, False),
    ):
        k = key()
        c = _cert(cn, k.public_key(), issuer_cn, issuer_key, ca=False, server=server)
        (d / f"{name}.pem").write_bytes(c.public_bytes(pem))
        _write_key(d / f"{name}.key", k)
        out[name] = d / f"{name}.pem"
    return TestPki(
        d, d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
        d / "rogue.pem", d / "rogue.key",
    )  # fmt: skip


class MosquittoBroker:
    """A real ``/usr/sbin/mosquitto`` on loopback; ports are fixed at construction for restarts."""

    def __init__(self, port: int | None = None, tls: TestPki | None = None, *, workdir: Path | None = None):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="radarcam-mosquitto-")
        self.workdir = Path(workdir or self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        self._write_conf()

    def _write_conf(self) -> None:
        lines = [
            "persistence false",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "allow_anonymous true",
            "max_inflight_messages 0",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",  # Nagle + delayed ACK adds ~40 ms to every small ack on loopback
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # root would otherwise drop to 'mosquitto'
            f"listener {self.port} 127.0.0.1",
        ]
        if self.tls:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
                "tls_version tlsv1.2",
            ]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        if self.running():
            return self
        if not Path(MOSQUITTO).is_file():
            raise RuntimeError(
                f"{MOSQUITTO} not found: install the broker (sudo apt-get install mosquitto), or run make as root"
            )
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.port, self.tls_port) if p]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}: {err.strip()} {log[-500:]}"
                )
            if all(_accepts(self.host, p) for p in ports):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {ports} within {timeout} s")

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing sessions or sending wills cleanly."""
        self.stop(sig=signal.SIGKILL)

    def restart(self) -> MosquittoBroker:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class MqttPeer:
    """A third MQTT client on the broker (another device, an observer, a test tool): records what it
    sees under ``topic_filter`` and publishes at QoS 1."""

    def __init__(self, broker, topic_filter: str, username: str | None = None, password: str | None = None):
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list = []
        self.pubacks: list = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username:
            self.c.username_pw_set(username, password)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.c.on_subscribe = lambda *a: self._ready.set()
        self.c.on_message = self._on_message
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.append(rc)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert self._ready.wait(5), "MQTT peer not subscribed"

    def _on_message(self, c, u, msg) -> None:
        with self._lock:
            self.messages.append(msg)

    def on(self, leaf: str) -> list:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith("/" + leaf)]

    def publish(self, topic: str, data: bytes):
        """QoS 1; returns the broker's PUBACK reason code."""
        n = len(self.pubacks)
        self.c.publish(topic, data, qos=1).wait_for_publish(5)
        wait_for(lambda: len(self.pubacks) > n, 5, "PUBACK")
        return self.pubacks[n]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_for(cond, timeout: float = 10.0, what: str = "condition", interval: float = 0.02) -> None:
    """Polls ``cond()`` instead of sleeping a fixed time; raises AssertionError naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
