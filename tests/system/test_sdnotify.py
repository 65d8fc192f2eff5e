"""sd_notify against a real AF_UNIX datagram socket bound by the test (what systemd listens on)."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from device.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield str(path), sock
    sock.close()


def recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_watchdog_stopping_reach_the_socket(listener):
    path, sock = listener
    with Notifier({"NOTIFY_SOCKET": path}) as n:
        assert n.enabled
        assert n.ready(status="started")
        assert recv(sock) == {"READY": "1", "STATUS": "started"}
        assert n.watchdog()
        assert recv(sock) == {"WATCHDOG": "1"}
        assert n.status("radar ok\ncamera ok")  # one line: a newline would start a new field
        assert recv(sock) == {"STATUS": "radar ok camera ok"}
        assert n.stopping()
        assert recv(sock) == {"STOPPING": "1"}
        assert n.watchdog_trigger()
        assert recv(sock) == {"WATCHDOG": "trigger"}


def test_reloading_carries_monotonic_usec(listener):
    path, sock = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading(status="reloading config")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = recv(sock)
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    assert msg["STATUS"] == "reloading config"
    n.close()


def test_abstract_socket_name():
    name = f"radarcam-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert recv(sock) == {"READY": "1"}
        n.close()
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_noop():
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.status("x") is False
    assert n.reloading() is False
    assert n.watchdog_interval_s() is None


def test_vanished_socket_does_not_raise(tmp_path):
    path = tmp_path / "gone.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.close()
    path.unlink()
    n = Notifier({"NOTIFY_SOCKET": str(path)})
    assert n.enabled
    assert n.watchdog() is False  # systemd will notice the missing ping by itself


def test_bad_field_is_rejected_before_sending(listener):
    path, sock = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    with pytest.raises(ValueError):
        n.notify(STATUS="two\nlines")
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env, expected):
    n = Notifier(env)
    assert n.watchdog_interval_s() == expected
    assert n.ping_interval_s() == (None if expected is None else expected / 2)
