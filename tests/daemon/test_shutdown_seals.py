"""Nothing decided is lost uncounted: at shutdown what waits in memory gets a last seal, and whatever
still cannot be sealed (or was dropped from a full queue or backlog) is counted and named at ERROR."""

from __future__ import annotations

import logging
import threading

from device.sim.scenario import generate
from device.uplink.outbox import Outbox
from device.uplink.packet import verify


def _chain(h) -> list[dict]:
    """Every packet in the unit's outbox, reopened from disk as the next start would, chain checked."""
    ob = Outbox(h.tmp / "state" / "outbox.sqlite", h.key, quota_bytes=10**9, retention_s=10**6)
    try:
        rows = [ob.get(s) for s in range(1, ob.stats()["last_seq"] + 1)]
    finally:
        ob.close()
    payloads = [verify(r.data, h.key.public_key) for r in rows]
    for prev, p in zip(rows, payloads[1:], strict=False):
        assert p["prev_hash"] == prev.sha256
    return payloads


def _lost_named(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "LOST" in r.msg)


def test_stop_seals_what_waits_in_memory_before_it_closes_the_outbox(
    harness, unsupervised, lock_outbox, wait
):
    """The outbox was locked, then freed just before SIGTERM, before the supervisor's next retry: the
    held violations used to die with the process; stop() must seal them, ahead of the shutdown event."""
    h = harness(generate(9, vehicles=3, speeder_share=1.0))
    d = unsupervised(h)
    lock = lock_outbox(d, h.tmp / "state" / "outbox.sqlite")
    wait(lambda: len(d._unsealed) >= 2, 90, "two violations held in memory while the outbox is locked")
    held = {r.ident for r in d._unsealed if r.kind == "violation"}
    assert d.counters["sealed"] == 0
    lock.release()
    d.stop()
    payloads = _chain(h)
    violations = [p["packet_id"] for p in payloads if p["kind"] == "violation"]
    assert held <= set(violations) and len(held) >= 2
    assert len(violations) == len(set(violations)) == d.counters["violations"]
    assert d.counters["violations_dropped"] == d.counters["events_dropped"] == 0
    assert payloads[-1]["event"] == "shutdown"  # behind the held records, not before them


def test_what_stop_cannot_seal_is_counted_and_named(harness, unsupervised, lock_outbox, wait, caplog):
    """The outbox stays locked through shutdown: the held violations are lost, but each is counted in
    violations_dropped and named at ERROR, as is the shutdown event that queued behind them."""
    caplog.set_level(logging.ERROR, logger="radarcam.daemon")
    h = harness(generate(9, vehicles=3, speeder_share=1.0))
    d = unsupervised(h)
    lock_outbox(d, h.tmp / "state" / "outbox.sqlite")
    wait(lambda: len(d._unsealed) >= 2, 90, "two violations held in memory while the outbox is locked")
    d.stop()
    named = _lost_named(caplog)
    assert d.counters["violations_dropped"] == d.counters["violations"] >= 2 and d.counters["sealed"] == 0
    assert d.counters["events_dropped"] >= 1 and "event shutdown" in named
    ids = [r.getMessage().split()[2] for r in caplog.records if r.getMessage().startswith("LOST: violation ")]
    assert len(ids) == len(set(ids)) == d.counters["violations_dropped"]
    assert not d._unsealed


def test_a_hung_evidence_stage_loses_nothing_uncounted(harness, unsupervised, wait, caplog, monkeypatch):
    """The evidence thread hangs inside one build (a wedged camera wait) with a one-place queue: the next
    violation waits in the queue, the one after finds it full. Before, the full queue only logged, stop()
    closed the outbox under the queued violation and the one in flight, and none of the three was
    counted. Now: the drop is counted (status fault), the queued one is sealed at stop with its
    measurement alone, and the one in flight, finished after the outbox closed, is counted and named."""
    import device.daemon

    monkeypatch.setattr(device.daemon, "CANDIDATE_QUEUE", 1)
    caplog.set_level(logging.ERROR, logger="radarcam.daemon")
    h = harness(generate(9, vehicles=4, speeder_share=1.0))
    d = unsupervised(h)
    release, in_build, built = threading.Event(), threading.Event(), []
    real_build = d.evidence.build

    def hung_build(cand):
        in_build.set()
        release.wait()
        v = real_build(cand)
        built.append(v.violation_id)
        return v

    d.evidence.build = hung_build
    try:
        wait(lambda: d.counters["violations_dropped"] >= 1, 120, "a violation dropped from the full queue")
        assert in_build.is_set() and d._candidates.qsize() == 1
        st = d.status()
        assert st["state"] == "fault" and st["counters"]["violations_dropped"] == 1
        assert "evidence queue full" in "\n".join(r.getMessage() for r in caplog.records)
        d.stop(timeout_s=3.0)
        bare = [p for p in _chain(h) if p["kind"] == "violation"]
        assert bare and all("shutdown" in p["extra"]["evidence_problem"] for p in bare)
        assert all(p["measurement"]["readings"] and p["decision"]["violation"] for p in bare)
    finally:
        release.set()
    wait(lambda: built, 10, "the hung build to finish")
    wait(lambda: f"LOST: violation {built[0]} not sealed" in _lost_named(caplog), 10, "the late one named")
    assert d.counters["violations"] == len(bare) + d.counters["violations_dropped"]


def test_a_full_backlog_drops_the_oldest_counted_and_named(monkeypatch, caplog):
    """The in-memory backlog is bounded; a deque(maxlen) used to drop its oldest record with one line
    that named none. Now each drop is counted by kind and the record is named."""
    import device.daemon
    from device import config as cfgmod
    from device.daemon import Daemon, _Record
    from device.uplink.outbox import OutboxFull

    monkeypatch.setattr(device.daemon, "UNSEALED_MAX", 2)
    caplog.set_level(logging.ERROR, logger="radarcam.daemon")
    d = Daemon(cfgmod.Config())
    full = OutboxFull("database or disk is full")
    for rec in (_Record(lambda: None, "violation", "v-1"), _Record(lambda: None, "tamper", "e-1")):
        d._keep_unsealed(rec, full)
    d._keep_unsealed(_Record(lambda: None, "violation", "v-2"), full)
    assert [r.ident for r in d._unsealed] == ["e-1", "v-2"]
    assert d.counters["violations_dropped"] == 1 and d.counters["events_dropped"] == 0
    d._keep_unsealed(_Record(lambda: None, "violation", "v-3"), full)
    assert d.counters["events_dropped"] == 1
    named = _lost_named(caplog)
    assert "violation v-1" in named and "event tamper e-1" in named and "v-2" not in named


def test_stop_runs_once(harness):
    """The supervisor's finally and a direct call (tests, the CLI) may both stop the daemon: the second
    call must not seal a second shutdown event into a closed outbox (it would be counted as lost)."""
    h = harness()
    d = h.start()
    d.request_stop()
    h.supervisor.join(15)
    d.stop()
    assert d.counters["events_dropped"] == 0
    assert [p["event"] for p in _chain(h) if p["kind"] == "event"].count("shutdown") == 1
    h.daemon = None
