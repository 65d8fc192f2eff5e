"""Pending audit records reach the daemon even when two requests hand them over at the same time
(real control socket, real ConsoleApp, two real threads)."""

from __future__ import annotations

import threading


def _rec(i: int) -> dict:
    return {"who": "tech", "role": "technician", "when": f"2026-01-01T00:00:0{i}Z", "field": f"f{i}",
            "old": None, "new": i, "remote": "192.0.2.1", "action": "login"}  # fmt: skip


def test_concurrent_flushes_never_drop_a_record_the_daemon_did_not_seal(env) -> None:
    """The old flush (peek, send, drop *a count*) had no lock: flushers A and B both send the oldest three
    records; a fourth is added; B is answered first, drops three and sends the fourth, which the daemon
    refuses (it stays pending, to go next time); then A is answered and drops "three" more: the fourth,
    never sealed, is gone. Every record must end up sealed or still pending."""
    sealed: list[dict] = []
    calls: list[int] = []
    lock = threading.Lock()
    entered = {1: threading.Event(), 2: threading.Event()}
    release = {1: threading.Event(), 2: threading.Event()}

    def audit(args: dict) -> dict:
        with lock:
            calls.append(len(calls) + 1)
            n = calls[-1]
        if n in entered:
            entered[n].set()
            release[n].wait(10)  # the daemon is slow to answer this one
        if n == 3:
            raise RuntimeError("outbox busy")  # an error reply: not sealed
        with lock:
            sealed.extend(args["records"])
        return {"event_seq": n}

    env.control.handlers["audit"] = audit
    pending = env.app.pending_audit
    pending.add([_rec(i) for i in range(3)])
    a = threading.Thread(target=env.app.flush_audit)
    a.start()
    assert entered[1].wait(10)
    b = threading.Thread(target=env.app.flush_audit)
    b.start()
    entered[2].wait(2)  # without the lock B is in at once, with the same three records
    pending.add([_rec(3)])  # a sign-in recorded while they are on their way
    release[2].set()
    b.join(2)  # without the lock B finishes now (its second call refused); with it, B still waits for A
    release[1].set()
    a.join(15)
    b.join(15)
    assert not a.is_alive() and not b.is_alive()
    left = [r["field"] for r in pending.peek(100)]
    assert sorted({r["field"] for r in sealed} | set(left)) == ["f0", "f1", "f2", "f3"], (sealed, left)
    env.app.flush_audit()  # and what is left goes at the next hand-over
    assert {r["field"] for r in sealed} == {"f0", "f1", "f2", "f3"} and pending.peek(100) == []
