"""The console in front of the real daemon: a limit changed in the browser form becomes a new running
config, an audit row, and a signed config_changed event in the daemon's outbox."""

from __future__ import annotations

from device.uplink.packet import verify


def test_limit_change_reaches_daemon_as_signed_event(daemon_env) -> None:
    env = daemon_env
    unit = env.extra["unit"]
    d = unit.daemon
    c = env.setup()
    old_hash = d.config_hash
    status, _, body = c.post("/site", c.site_form(**{"site.lanes.0.limit_kmh": "50"}))
    assert status in (200, 303), body[:500]

    # The running daemon applied it...
    assert d.enforcer.site.lanes[0].limit_kmh == 50.0
    assert d.config_hash != old_hash
    # ...and sealed one signed event carrying the console's audit record.
    last = d.outbox.stats()["last_seq"]
    ev = verify(d.outbox.get(last).data, unit.key.public_key)
    assert ev["event"] == "config_changed"
    assert ev["body"]["new_config_hash"] == d.config_hash
    rec = ev["body"]["audit"]
    assert any(
        r["field"] == "site.lanes[id=1].limit_kmh" and float(r["new"]) == 50.0 and r["who"] == "tech"
        for r in rec
    )

    # The dashboard shows the real daemon's state; the keys page shows only public key facts.
    status, _, html = c.get("/dashboard")
    assert status == 200 and d.cfg.device.id in html
    status, _, html = c.get("/keys")
    assert status == 200 and unit.key.key_id in html and "PRIVATE" not in html
