"""Sealing faults in the real daemon: an outbox that refuses writes, an outbox found damaged at start."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import cbor2

from device.uplink.packet import verify, violation_payload
from device.uplink.sample import sample_context, sample_violation


def _event(data: bytes) -> dict:
    return cbor2.loads(cbor2.loads(data).value[2])


def test_locked_outbox_keeps_violations_in_memory_then_seals_each_once(harness, wait):
    """A real SQLITE_BUSY (another process holds the write lock), not OutboxFull: before the fix the
    violation was logged as 'could not record' and lost; it must wait in memory and be sealed once."""
    from device.sim.scenario import generate

    h = harness(generate(9, vehicles=3, speeder_share=1.0))
    d = h.start()
    with d.outbox._lock:
        d.outbox._db.execute("PRAGMA busy_timeout=100")  # fail fast instead of the 30 s default
    path = h.tmp / "state" / "outbox.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. a technician's sqlite3 shell, left in a transaction
    try:
        wait(lambda: d.counters["violations"] >= 2, 90, "two violations decided while the outbox is locked")
        wait(lambda: len(d._unsealed) >= 2, 10, "violations kept in memory")
        time.sleep(1.5)  # several supervisor turns retry and fail: the supervisor must survive them
        assert h.supervisor.is_alive()
        st = d.status()
        assert st["state"] == "fault" and st["unsealed_in_memory"] >= 2 and d.counters["sealed"] == 0
    finally:
        other.execute("ROLLBACK")
        other.close()
    wait(lambda: not d._unsealed, 10, "held violations sealed")
    ob = d.outbox
    rows = [ob.get(s) for s in range(1, ob.stats()["last_seq"] + 1)]
    payloads = [verify(r.data, h.key.public_key) for r in rows]
    for prev, p in zip(rows, payloads[1:], strict=False):
        assert p["prev_hash"] == prev.sha256
    violations = [p["packet_id"] for p in payloads if p["kind"] == "violation"]
    assert len(violations) == len(set(violations)) == d.counters["sealed"] >= 2
    assert set(d.timings.decided_ns) <= set(violations)  # every decided violation is recorded


def _damage_newest(path: Path, newest: bytes) -> None:
    """Garbage in the next-page pointer of the overflow page before the newest packet's last page."""
    raw = bytearray(path.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    last = raw.find(newest[-64:]) // page + 1
    links = [n for n in range(len(raw) // page) if raw[n * page : n * page + 4] == last.to_bytes(4, "big")]
    assert last > 1 and len(links) == 1
    raw[links[0] * page : links[0] * page + 4] = b"\x7f\xff\xff\xff"
    path.write_bytes(bytes(raw))


def test_outbox_found_damaged_is_salvaged_sealed_as_event_and_reported(harness):
    from device.uplink.outbox import Outbox

    h = harness()
    path = h.tmp / "state" / "outbox.sqlite"
    ob = Outbox(path, h.key)
    ctx = sample_context("TEST-UNIT", h.key.key_id)
    before = [ob.seal(violation_payload(sample_violation(i, image_bytes=20_000), ctx)) for i in range(4)]
    ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ob.close()
    _damage_newest(path, before[-1].data)

    d = h.start()
    st = d.status()
    assert st["state"] == "fault" and st["components"]["outbox"]["state"] == "fault"
    assert [d.outbox.get(s.seq) for s in before[:3]] == before[:3]  # published as they were signed
    ev = d.outbox.get(5)  # the chain head survived: seq continues after the lost packet 4
    body = _event(ev.data)
    assert body["event"] == "outbox_corrupt" and verify(ev.data, h.key)["prev_hash"] == before[-1].sha256
    assert body["body"]["salvaged"] == 3 and body["body"]["unreadable"] == 1
    assert Path(body["body"]["moved_to"]).exists()


def test_outbox_that_cannot_be_opened_stops_start_up_with_the_reason(harness):
    """Not corrupt, just unusable (here a directory where the database belongs): start-up fails with a
    StartupError naming it (the CLI prints it and exits non-zero), and nothing there is moved or replaced."""
    import pytest

    from device.daemon import StartupError

    h = harness()
    path = h.tmp / "state" / "outbox.sqlite"
    path.mkdir(parents=True)
    (path / "keep").write_text("x")
    with pytest.raises(StartupError, match="cannot open the outbox"):
        h.start()
    assert (path / "keep").read_text() == "x"
    assert not list(path.parent.glob("outbox.sqlite.corrupt*"))


def test_evidence_path_failing_outright_still_seals_the_measurement(harness, wait):
    """Whatever breaks in building the evidence (injected: build() itself raising), the offence is
    sealed with its measurement and says why; before, it was logged and lost."""
    from device.sim.scenario import generate

    h = harness(generate(9, vehicles=3, speeder_share=1.0))
    d = h.start()

    def broken(cand):
        raise RuntimeError("injected evidence fault")

    d.evidence.build = broken
    wait(lambda: d.counters["sealed"] >= 1, 90, "a violation sealed")
    seq = next(iter(d.timings.seq_of.values()))
    payload = verify(d.outbox.get(seq).data, h.key.public_key)
    assert payload["kind"] == "violation" and payload["images"] == []
    assert "injected evidence fault" in payload["extra"]["evidence_problem"]
    assert payload["measurement"]["readings"] and payload["decision"]["violation"]


def test_one_record_that_keeps_failing_does_not_hold_up_the_others():
    """A record whose own sealing fails (not the outbox) goes to the back; a full outbox stops the turn."""
    from device import config as cfgmod
    from device.daemon import Daemon, _Record
    from device.uplink.outbox import OutboxFull

    d = Daemon(cfgmod.Config())
    sealed: list[str] = []

    def poisoned() -> None:
        raise ValueError("this record cannot be built")

    def rec(seal, ident: str) -> _Record:
        return _Record(seal, "violation", ident)

    d._unsealed.extend(
        [rec(poisoned, "p"), rec(lambda: sealed.append("a"), "a"), rec(lambda: sealed.append("b"), "b")]
    )
    d._retry_unsealed()
    assert sealed == ["a", "b"] and [r.ident for r in d._unsealed] == ["p"]  # kept, never dropped

    def full() -> None:
        raise OutboxFull("disk full")

    d._unsealed.clear()
    d._unsealed.extend([rec(full, "f"), rec(lambda: sealed.append("c"), "c")])
    d._retry_unsealed()
    assert sealed == ["a", "b"] and len(d._unsealed) == 2  # nothing else tried while the disk is full
    assert d.counters["violations_dropped"] == 0


def test_a_bouncing_door_switch_does_not_flood_the_chain():
    """50 changes in 4 s (a loose switch slower than the debounce) used to be 50 signed events: now the
    first is sealed at once, the rest as one event per interval with the latest state and a count."""
    from device import config as cfgmod
    from device.daemon import Daemon

    d = Daemon(cfgmod.Config())
    sealed: list[dict] = []
    d._seal_event = lambda kind, body, **kw: sealed.append({"kind": kind, **body})
    for i in range(50):
        d._tamper(i % 2 == 0)  # open, closed, open, ...
    assert sealed == [{"kind": "tamper", "cabinet_open": True, "changes": 1}]
    d._flush_tamper()  # within the interval: nothing yet
    assert len(sealed) == 1
    d._flush_tamper(time.monotonic() + d.TAMPER_EVENT_MIN_S + 0.1)
    assert sealed[1] == {"kind": "tamper", "cabinet_open": False, "changes": 49}
    d._flush_tamper(time.monotonic() + 3 * d.TAMPER_EVENT_MIN_S)
    assert len(sealed) == 2  # nothing pending: nothing sealed


def test_a_long_evidence_backlog_stops_pinning_frames_but_keeps_the_violation():
    """Each violation waiting for evidence pins ~12 MB of frames at 1080p. Beyond PIN_BACKLOG waiting, a
    new one pins none (an unbounded backlog would end in the OOM killer, losing every queued violation):
    it is still queued and sealed, and its evidence_problem says why it may have no images."""
    from device import config as cfgmod
    from device.capture.ring import FrameRing
    from device.daemon import PIN_BACKLOG, Daemon
    from device.model import ClockStamp, Decision, Direction, Pass
    from device.violations import Candidate, EarlySnapshots, EvidenceBuilder, TriggerWindow

    cfg = cfgmod.Config()
    cfg.anpr.enabled = False
    d = Daemon(cfg)
    d.ring = FrameRing(cfg.camera.ring_seconds, cfg.camera.fps)  # the parts start() would build
    d.evidence = b = EvidenceBuilder(cfg, d.ring, None, on_late_plate=lambda *a: None)
    d.snapshots = EarlySnapshots(d.ring, cfg, cfg.tracker.gap_ms * 1_000_000)
    end = time.monotonic_ns()
    p = Pass("p", end - 10**9, end, Direction.INBOUND, (), 90.0, end - 2 * 10**8, 90.0, 0.5, lane="1")
    for _ in range(PIN_BACKLOG - 1):
        d._candidates.put(None)
    pinned, backlog = d._pin(p)
    assert isinstance(pinned, TriggerWindow) and backlog is None
    d._candidates.put(None)
    assert d._pin(p) == (None, PIN_BACKLOG)
    assert d.counters["frames_not_pinned"] == 1
    out = Pass("q", end - 10**9, end, Direction.OUTBOUND, (), 90.0, end - 2 * 10**8, 90.0, 0.5, lane="1")
    assert d._pin(out) == (None, PIN_BACKLOG)  # nor its snapshot (none here): released, not queued
    assert d.counters["frames_not_pinned"] == 2

    dec = Decision(True, "MA", "1", "car", 60.0, 90.0, 1.0, 0.0, 90.0, 3.0, 87.0, 27.0)
    try:
        v = b.build(
            Candidate(p, dec, end, ClockStamp(1_700_000_000_000_000_000, end, True, "ntp"), None, PIN_BACKLOG)
        )
    finally:
        b.close()
    assert v.decision.violation and not v.images
    assert f"{PIN_BACKLOG} violations were waiting for evidence" in v.extra["evidence_problem"]
