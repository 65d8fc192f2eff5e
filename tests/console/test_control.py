"""The daemon <-> console control protocol over a real unix socket."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from device.control import MAX_REQUEST_BYTES, ControlClient, ControlError, ControlServer


def _raw_session(path: Path) -> tuple[socket.socket, callable]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(path))
    buf = bytearray()

    def read_line() -> dict:
        while b"\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, "server closed the connection"
            buf.extend(chunk)
        i = buf.index(b"\n")
        line = bytes(buf[:i])
        del buf[: i + 1]
        return json.loads(line)

    return s, read_line


@pytest.fixture
def server(tmp_path: Path):
    state = {"n": 0}
    lock = threading.Lock()

    def bump(args):
        with lock:
            state["n"] += int(args.get("by", 1))
            return {"n": state["n"]}

    def boom(args):
        raise RuntimeError("sensor exploded")

    path = tmp_path / "run" / "control.sock"
    srv = ControlServer(path, {"bump": bump, "boom": boom, "echo": lambda a: a})
    srv.start()
    yield srv
    srv.stop()


def test_roundtrip_keeps_state_and_unicode(server: ControlServer) -> None:
    c = ControlClient(server.path)
    assert c.call("bump") == {"n": 1}
    assert c.call("bump", by=41) == {"n": 42}
    assert c.call("echo", name="الرباط", v=[1, 2.5, None]) == {"name": "الرباط", "v": [1, 2.5, None]}


def test_socket_is_not_world_accessible(server: ControlServer) -> None:
    mode = stat.S_IMODE(os.stat(server.path).st_mode)
    assert mode == 0o660
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)


def test_errors_are_replies_and_server_survives(server: ControlServer) -> None:
    c = ControlClient(server.path)
    with pytest.raises(ControlError, match="unknown command 'nope'"):
        c.call("nope")
    with pytest.raises(ControlError, match="sensor exploded"):
        c.call("boom")
    s, read = _raw_session(server.path)
    with s:
        s.sendall(b"{not json\n")
        r = read()
        assert r["ok"] is False and "not JSON" in r["error"]
        s.sendall(b'["cmd"]\n')
        assert "expected" in read()["error"]
        s.sendall(b'{"cmd": "echo", "args": 5}\n')
        assert "args must be an object" in read()["error"]
        s.sendall(b"\xff\xfe\n")
        assert read()["ok"] is False
        # the same connection still works after all that
        s.sendall(b'{"cmd": "bump", "args": {}}\n')
        assert read() == {"ok": True, "result": {"n": 1}}
    assert c.call("bump") == {"n": 2}


def test_oversized_request_refused_then_connection_continues(server: ControlServer) -> None:
    s, read = _raw_session(server.path)
    with s:
        big = json.dumps({"cmd": "echo", "args": {"x": "a" * (MAX_REQUEST_BYTES + 10)}}).encode()
        s.sendall(big + b"\n")
        r = read()
        assert r["ok"] is False and "larger than" in r["error"]
        s.sendall(b'{"cmd": "bump"}\n')
        assert read() == {"ok": True, "result": {"n": 1}}
    with pytest.raises(ControlError, match="too large"):
        ControlClient(server.path).call("echo", x="a" * MAX_REQUEST_BYTES)


def test_many_concurrent_clients(server: ControlServer) -> None:
    c = ControlClient(server.path)
    errors = []

    def work():
        try:
            for _ in range(20):
                c.call("bump")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert c.call("bump", by=0) == {"n": 160}


def test_client_errors_when_daemon_absent(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="not running"):
        ControlClient(tmp_path / "control.sock").call("status")
    # a socket file left behind by a crashed daemon: nobody listening
    p = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(p))
    s.close()
    with pytest.raises(ControlError, match="not listening"):
        ControlClient(p).call("status")


def test_stop_removes_socket_and_restart_replaces_stale(tmp_path: Path) -> None:
    p = tmp_path / "control.sock"
    srv = ControlServer(p, {"x": lambda a: 1})
    srv.start()
    srv2 = None
    try:
        assert ControlClient(p).call("x") == 1
    finally:
        srv.stop()
    assert not p.exists()
    p.write_bytes(b"")  # stale leftover
    srv2 = ControlServer(p, {"x": lambda a: 2})
    with srv2:
        assert ControlClient(p).call("x") == 2


def test_client_timeout_on_silent_server(tmp_path: Path) -> None:
    p = tmp_path / "silent.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(p))
    s.listen(1)
    try:
        with pytest.raises(ControlError, match="did not answer"):
            ControlClient(p, timeout=0.3).call("status")
    finally:
        s.close()


def test_idle_client_is_dropped(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path / "c.sock", {"x": lambda a: 1}, idle_timeout_s=0.3)
    with srv:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(srv.path))
        with s:
            assert s.recv(10) == b""  # closed by the server, not by our 5 s timeout
        assert ControlClient(srv.path).call("x") == 1
