"""Sign-in limits: failures lock the address they come from, not the account; guessing from many
addresses is capped per account without shutting out addresses that signed in before; made-up names
cost neither memory nor disk writes. Unit tests on a controlled clock, then over real HTTPS from
several loopback addresses."""

from __future__ import annotations

import json

import pytest

from device.console.auth import AuthError, LoginThrottle

PASSWORD = "correct horse battery"


def _refusal(th: LoginThrottle, user: str, ip: str) -> str | None:
    try:
        th.check(user, ip)
    except AuthError as exc:
        return exc.key
    return None


def _throttle(now: list[float], **kw) -> LoginThrottle:
    return LoginThrottle(3, 60, 1000, clock=lambda: now[0], wall=lambda: 1_800_000_000 + now[0], **kw)


def test_failures_lock_their_own_address_not_the_account() -> None:
    """The lockout DoS: anyone could keep a known account locked with a few wrong passwords."""
    now = [0.0]
    th = _throttle(now)
    assert [th.failure("tech", "203.0.113.66") for _ in range(3)] == [False, False, True]
    assert _refusal(th, "tech", "203.0.113.66") == "err_locked"
    assert _refusal(th, "tech", "192.0.2.10") is None  # the technician elsewhere is not locked out
    now[0] += 61
    assert _refusal(th, "tech", "203.0.113.66") is None


def test_many_addresses_are_capped_per_account_but_known_ones_still_get_in() -> None:
    """Each address has its own few tries, so the account as a whole allows ACCOUNT_FACTOR x
    max_failures per window; past that only addresses that signed in to it before are let through
    (slowed guessing, no lockout of the technician's own machine)."""
    now = [0.0]
    th = _throttle(now)
    th.success("tech", "192.0.2.10")  # the technician's laptop, earlier
    limit = th.account_limit
    assert limit == 9
    for i in range(limit):
        assert _refusal(th, "tech", f"198.51.100.{i // 3}") is None
        th.failure("tech", f"198.51.100.{i // 3}")
        now[0] += 1
    assert _refusal(th, "tech", "198.51.100.200") == "err_account_busy"
    assert _refusal(th, "tech", "192.0.2.10") is None
    assert _refusal(th, "other", "198.51.100.200") is None  # other accounts unaffected
    now[0] += 60 - limit + 1.5  # the first failures leave the window: new addresses may try again
    assert _refusal(th, "tech", "198.51.100.200") is None


def test_made_up_names_are_bounded_in_memory_and_never_written(tmp_path) -> None:
    """Attacker-chosen names used to be kept forever and rewrote the file (with fsync) at each failure."""
    now = [0.0]
    store = tmp_path / "login-throttle.json"
    th = _throttle(now, store=store, is_account=lambda name: name == "tech")
    for i in range(3 * th.MAX_UNKNOWN):
        th.failure(f"user{i}", f"10.0.{i // 250}.{i % 250}")
    assert not store.exists()
    assert len(th._unknown) == th.MAX_UNKNOWN and not th._known
    for i in range(th.MAX_ADDRESSES + 100):
        th.rate(f"10.1.{i // 250}.{i % 250}")
    assert len(th._ip) == th.MAX_ADDRESSES
    # the same answers as for a real account, so they do not tell which names exist
    for _ in range(3):
        th.failure("ghost", "192.0.2.99")
    assert _refusal(th, "ghost", "192.0.2.99") == "err_locked"
    th.failure("tech", "192.0.2.99")
    saved = json.loads(store.read_text())
    assert list(saved["accounts"]) == ["tech"]
    now[0] += 61  # the window passes: the next write keeps nothing stale
    th.failure("tech", "192.0.2.7")
    saved = json.loads(store.read_text())["accounts"]["tech"]
    assert list(saved["fails"]) == ["192.0.2.7"] and len(saved["recent"]) == 1


def test_a_lockout_stored_by_the_previous_version_still_holds(tmp_path) -> None:
    """An upgrade must not hand a guesser fresh tries: the old per-account lockout closes the account to
    new addresses for the rest of its time."""
    store = tmp_path / "login-throttle.json"
    wall = 1_800_000_000.0
    store.write_text(json.dumps({"locked": {"tech": wall + 30}, "fails": {"amina": [wall - 5]}}))
    now = [0.0]
    th = LoginThrottle(3, 60, 1000, clock=lambda: now[0], wall=lambda: wall + now[0], store=store)
    assert th.store_problem is None
    assert _refusal(th, "tech", "198.51.100.1") == "err_account_busy"
    assert th._known["amina"].recent == [-5.0]
    now[0] += 31
    assert _refusal(th, "tech", "198.51.100.1") is None


def test_locking_out_the_technician_from_another_machine_fails(env) -> None:
    """Over HTTPS from distinct loopback addresses: an attacker's failures lock only the attacker; many
    attacking addresses close the account to new addresses, never to the technician's."""
    env.setup()
    env.login("tech")  # 127.0.0.1 has signed in: the account's own address from now on
    attackers = [f"127.0.0.{n}" for n in range(2, 5)]
    for source in attackers:
        c = env.client(source)
        _, _, html = c.get("/login")
        for i in range(env.app.ccfg.max_failed_logins):
            status, _, body = c.post(
                "/login", {"csrf": c.token(html), "username": "tech", "password": f"guess-{i}-xxxxx"}
            )
        assert status == 429 and "locked" in body
        if source == attackers[0]:
            env.login("tech", source="127.0.0.1")  # one attacker did not lock the technician out
    new = env.client("127.0.0.9")
    _, _, html = new.get("/login")
    status, _, body = new.post("/login", {"csrf": new.token(html), "username": "tech", "password": PASSWORD})
    assert status == 429 and "from elsewhere" in body and not any(k.endswith("rcsess") for k in new.cookies)
    env.login("tech", source="127.0.0.1")  # the technician's machine still gets in


@pytest.mark.parametrize("known", [True, False])
def test_the_answer_does_not_reveal_whether_a_name_exists(env, known) -> None:
    env.setup()
    name = "tech" if known else "nobody-here"
    c = env.client("127.0.0.7")
    _, _, html = c.get("/login")
    codes = [
        c.post("/login", {"csrf": c.token(html), "username": name, "password": f"wrong-{i}-xxxxx"})[0]
        for i in range(env.app.ccfg.max_failed_logins + 1)
    ]
    assert codes == [401] * (env.app.ccfg.max_failed_logins - 1) + [429, 429]
