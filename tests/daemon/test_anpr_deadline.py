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
