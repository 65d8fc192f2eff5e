"""The daemon <-> console control protocol over a real unix socket."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
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


def _held(path: Path) -> tuple[socket.socket, callable]:
    """A connection the server is really serving (it answered one request), then left open."""
    s, read = _raw_session(path)
    s.sendall(b'{"cmd": "x"}\n')
    assert read() == {"ok": True, "result": 1}
    return s, read


def test_connections_over_the_cap_are_refused_with_a_reason(tmp_path: Path) -> None:
    """Each served connection holds a thread; beyond ``max_connections`` one more is answered "busy" and
    closed at once (not left to the client's timeout), and a slot freed is usable again."""
    srv = ControlServer(tmp_path / "c.sock", {"x": lambda a: 1}, max_connections=2)
    with srv:
        held = [_held(srv.path) for _ in range(2)]
        extra, read = _raw_session(srv.path)
        with extra:
            r = read()
            assert r["ok"] is False and "busy" in r["error"] and "2 control connections" in r["error"]
            assert extra.recv(10) == b""  # and closed
        with pytest.raises(ControlError, match="daemon busy"):
            ControlClient(srv.path).call("x")
        assert srv.refused == 2
        held.pop()[0].close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot comes back once its thread has seen the close
            try:
                assert ControlClient(srv.path).call("x") == 1
                break
            except ControlError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        for s, _ in held:
            s.close()


_NPROC_CHILD = """
import os, resource, sys
from device.control import ControlServer  # imported as root: the interpreter may live under /root
path, uid, nproc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
os.setgroups([])
os.setgid(uid)
os.setuid(uid)  # the limit holds for an ordinary user, as TasksMax holds for the daemon's unit
srv = ControlServer(path, {"x": lambda a: 1}, max_connections=64, idle_timeout_s=30)
srv.start()
print("ready", flush=True)
sys.stdin.read()
srv.stop()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the server as an unprivileged uid")
def test_accept_loop_survives_when_no_thread_can_be_started() -> None:
    """A real "can't start new thread": a server process limited to 4 tasks (main, accept, 2 served).
    The third connection is refused with the reason; once the others close, the server serves again.
    Before, Thread.start's RuntimeError ended the accept thread and the socket went silent for good."""
    import subprocess
    import sys
    import tempfile

    uid = 61_234  # an id no process on the machine runs as: the limit counts this child's tasks alone
    tmp = Path(tempfile.mkdtemp(prefix="rc-nproc-"))
    tmp.chmod(0o755)
    sock_dir = tmp / "run"
    sock_dir.mkdir()
    os.chown(sock_dir, uid, uid)
    path = sock_dir / "control.sock"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", _NPROC_CHILD, str(path), str(uid), "4"],
        cwd=root,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    held = []
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        refused = None
        for _ in range(6):
            s, read = _raw_session(path)
            s.settimeout(3)
            s.sendall(b'{"cmd": "x"}\n')
            try:
                r = read()
            except TimeoutError:  # accepted but never served: the accept thread is gone
                s.close()
                break
            if not r["ok"]:
                refused = r["error"]
                s.close()
                break
            held.append(s)
        assert len(held) == 2 and refused and "can't start new thread" in refused, (len(held), refused)
        for s in held:
            s.close()
        held.clear()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert ControlClient(path, timeout=2).call("x") == 1
                break
            except ControlError:
                assert time.monotonic() < deadline, "the server no longer answers"
                time.sleep(0.1)
    finally:
        for s in held:
            s.close()
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
