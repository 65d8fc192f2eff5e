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


def _events(d, key, kind: str) -> list[dict]:
    out = []
    for seq in range(1, d.outbox.stats()["last_seq"] + 1):
        row = d.outbox.get(seq)
        if row is not None and row.kind == "event":
            ev = verify(row.data, key.public_key)
            if ev["event"] == kind:
                out.append(ev)
    return out


def test_sign_ins_and_accounts_are_sealed_by_the_daemon(daemon_env) -> None:
    """Account and sign-in records are not config changes, yet the registry must see them: a new
    technician account is a new key to the unit's settings."""
    env = daemon_env
    unit = env.extra["unit"]
    d = unit.daemon
    c = env.setup()  # account_created (first technician) + the session
    _, _, html = c.get("/account")
    form = {"csrf": c.token(html), "action": "create", "username": "second", "role": "technician"}
    status, _, _ = c.post("/account/users", form | {"password": "another long password"})
    assert status in (200, 303)
    records = [r for ev in _events(d, unit.key, "console_audit") for r in ev["body"]["records"]]
    created = [(r["action"], r["field"], r["who"]) for r in records if r["action"] == "account_created"]
    assert ("account_created", "tech", "tech") in created and ("account_created", "second", "tech") in created
    assert not env.app.pending_audit.peek(10)  # all handed over


def test_change_saved_while_daemon_is_down_is_sealed_when_it_answers(daemon_env) -> None:
    """The file changed but no reload sealed it: the records wait in the console's pending file and are
    sealed (console_audit) once the daemon answers again, instead of living only in a local log."""
    from device.control import ControlClient

    env = daemon_env
    unit = env.extra["unit"]
    d = unit.daemon
    c = env.setup()
    real = env.app.control
    env.app.control = ControlClient(env.tmp / "no-daemon.sock")  # the daemon is unreachable
    status, _, _ = c.post("/site", c.site_form(**{"site.lanes.0.limit_kmh": "120"}))
    assert status == 303
    pending = env.app.pending_audit.peek(10)
    assert any(r["field"] == "site.lanes[id=1].limit_kmh" and float(r["new"]) == 120.0 for r in pending)
    env.app.control = real  # back
    c.get("/dashboard")  # any answer from the daemon hands the records over
    records = [r for ev in _events(d, unit.key, "console_audit") for r in ev["body"]["records"]]
    assert any(r["field"] == "site.lanes[id=1].limit_kmh" and float(r["new"]) == 120.0 for r in records)
    assert not env.app.pending_audit.peek(10)


def test_daemon_refuses_malformed_audit_batches(daemon_env) -> None:
    import pytest

    from device.control import ControlError

    ctl = daemon_env.app.control
    for bad in ([], "x", [1], [{"action": "x", "new": "y" * 5000}]):
        with pytest.raises(ControlError, match="audit"):
            ctl.call("audit", records=bad)
