"""A slow plate reader delays the packet, never the measurement: past the deadline the violation is sealed
with the plate pending, and the read follows as a signed amendment that names it."""

from __future__ import annotations

import time

from device.anpr.reader import PlateReader
from device.config import AnprConfig
from device.sim.scenario import generate
from device.uplink.packet import verify


class SlowReader:
    """The real reader, made slow (as a CPU-starved unit would be)."""

    def __init__(self, delay_s: float) -> None:
        self.real = PlateReader(AnprConfig(countries=["MA"]))
        self.delay_s = delay_s

    def read_frames(self, images, *, country=None, roi=None):
        time.sleep(self.delay_s)
        return self.real.read_frames(images, country=country, roi=roi)

    def models(self) -> dict:
        return self.real.models()


def test_deadline_passes_plate_pending_then_signed_amendment(harness, wait):
    h = harness(generate(6, vehicles=2, speeder_share=1.0), {"anpr": {"enabled": True, "deadline_s": 0.3}})
    d = h.start(plate_reader=SlowReader(1.5))
    wait(lambda: d.counters["sealed"] >= 1, 60, "a violation sealed")
    vid, seq = next(iter(d.timings.seq_of.items()))
    v = verify(d.outbox.get(seq).data, h.key.public_key)
    assert v["plate"] == {"status": "pending"}
    assert v["anpr_models"]["ocr"]["sha256"]

    def amendment():
        for s in range(seq + 1, d.outbox.stats()["last_seq"] + 1):
            p = verify(d.outbox.get(s).data, h.key.public_key)
            if p.get("event") == "plate_amendment" and p["body"]["amends"] == vid:
                return p
        return None

    am = wait(amendment, 30, "the plate amendment") or amendment()
    assert am["body"]["amends_seq"] == seq and am["seq"] > seq
    plate = am["body"]["plate"]
    assert plate is None or plate["ocr_model_sha256"] == v["anpr_models"]["ocr"]["sha256"]
    if plate is not None and plate.get("text"):  # the frame it was read in travels with it
        images = am["images"]
        assert [im["role"] for im in images] == ["overview", "plate"]
        assert all(im["frame_no"] == plate["frame_no"] for im in images)
        import hashlib

        assert all(hashlib.sha256(im["jpeg"]).hexdigest() == im["sha256"] for im in images)


def test_reader_decodes_the_jurisdiction_and_the_configured_countries():
    """A Saudi site that also expects Moroccan cars reads both (the jurisdiction first); before, every
    plate was forced to the jurisdiction's rules and a foreign plate came out mislabelled or not at all."""
    from device import config as cfgmod
    from device.daemon import Daemon

    cfg = cfgmod.Config()
    cfg.site.jurisdiction = "SA"
    cfg.anpr.countries = ["MA", "SA"]
    assert Daemon(cfg)._plate_reader().countries == ["SA", "MA"]
    cfg.anpr.countries = ["MA"]
    assert Daemon(cfg)._plate_reader().countries == ["SA", "MA"]


def test_amendment_of_a_violation_held_in_memory_is_sealed_after_it(harness, unsupervised, lock_outbox, wait):
    """The violation's seal failed ('database is locked') and the lock went away before the supervisor's
    retry; the late read's amendment used to be sealed at once, as seq N with ``amends_seq: null``, and
    its violation after it as N+1. It must wait behind the violation and name its seq."""
    h = harness(generate(6, vehicles=2, speeder_share=1.0), {"anpr": {"enabled": True, "deadline_s": 0.3}})
    d = unsupervised(h, plate_reader=SlowReader(3.0))  # the test takes the supervisor's turns
    lock = lock_outbox(d, h.tmp / "state" / "outbox.sqlite")
    wait(lambda: any(r.kind == "violation" for r in d._unsealed), 60, "a violation held in memory")
    held = next(r.ident for r in d._unsealed if r.kind == "violation")
    lock.release()  # the outbox works again; no retry has run yet

    def amended() -> bool:
        if any(r.kind == "plate_amendment" for r in d._unsealed):
            return True
        ob = d.outbox
        return any(
            verify(ob.get(s).data, h.key.public_key).get("event") == "plate_amendment"
            for s in range(1, ob.stats()["last_seq"] + 1)
        )

    wait(amended, 30, "the late read handed over as an amendment")

    def settled() -> bool:
        d._retry_unsealed()  # the supervisor's turn
        return not d._unsealed and d._amendments.empty()

    wait(settled, 30, "everything sealed")
    ob = d.outbox
    packets = [verify(ob.get(s).data, h.key.public_key) for s in range(1, ob.stats()["last_seq"] + 1)]
    seq_of = {p["packet_id"]: p["seq"] for p in packets if p["kind"] == "violation"}
    amendments = [p for p in packets if p.get("event") == "plate_amendment"]
    assert held in seq_of and any(a["body"]["amends"] == held for a in amendments)
    for a in amendments:
        assert a["body"]["amends_seq"] == seq_of[a["body"]["amends"]] < a["seq"]
