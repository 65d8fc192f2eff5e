"""Console security rules over real HTTPS requests (no browser needed for these)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from device import config as cfgmod
from device.console.settings import LANE_FIELDS, site_fields, uplink_fields

PASSWORD = "correct horse battery"
INJECTION = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
TRAVERSAL = "../../../../etc/passwd"


def _setup(env, name="tech"):
    return env.setup(name)


def test_no_default_account_setup_code_once(env) -> None:
    code_file = env.app.setup.path
    assert env.setup_code and code_file.read_text().strip() == env.setup_code
    assert stat.S_IMODE(code_file.stat().st_mode) == 0o600
    c = env.client()
    # every page leads to setup while there is no account
    for path in ("/", "/dashboard", "/site"):
        status, headers, _ = c.get(path)
        assert status == 303 and headers["Location"] == "/setup"
    _, _, html = c.get("/setup")
    status, _, body = c.post(
        "/setup",
        {
            "csrf": c.token(html),
            "code": "AAAA-BBBB-CCCC-DDDD",
            "username": "eve",
            "password": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert status == 422 and "Wrong setup code" in body
    assert env.app.accounts.empty()
    _setup(env)
    assert not code_file.exists()
    acct = env.app.accounts.get("tech")
    assert acct.role == "technician" and acct.hash.startswith("$argon2id$")
    assert stat.S_IMODE(env.app.accounts.path.stat().st_mode) == 0o600
    # the code cannot be reused for a second "first" account
    c2 = env.client()
    status, headers, _ = c2.get("/setup")
    assert status == 303 and headers["Location"] == "/login"
    status, headers, _ = c2.post(
        "/setup",
        {"csrf": "x", "code": env.setup_code, "username": "eve", "password": PASSWORD, "password2": PASSWORD},
    )
    assert status == 403 and env.app.accounts.get("eve") is None


def test_an_emptied_setup_code_file_lets_nobody_in(env) -> None:
    """Over HTTPS: with the code file emptied, an empty code is refused, the file gets a new real code
    (0600), and only that one creates the first account."""
    env.app.setup.path.write_text("")
    c = env.client()
    _, _, html = c.get("/setup")
    form = {"csrf": c.token(html), "username": "eve", "password": PASSWORD, "password2": PASSWORD}
    for code in ("", "   "):
        status, _, body = c.post("/setup", form | {"code": code})
        assert status == 422 and "Wrong setup code" in body
    assert env.app.accounts.empty()
    new = env.app.setup.path.read_text().strip()
    assert len(new) == 19 and stat.S_IMODE(env.app.setup.path.stat().st_mode) == 0o600
    env.setup_code = new
    _setup(env)
    assert env.app.accounts.get("tech") is not None and env.app.accounts.get("eve") is None


def test_wrong_setup_codes_do_not_lock_out_the_technician(env) -> None:
    """Anyone on the network may send wrong codes; that must not keep a fresh unit unclaimable (the code
    is 80 bits: the per-address rate limit is enough)."""
    c = env.client()
    for _ in range(env.app.ccfg.max_failed_logins + 2):
        _, _, html = c.get("/setup")
        form = {"csrf": c.token(html), "code": "AAAA-BBBB-CCCC-DDDD", "username": "eve"}
        status, _, body = c.post("/setup", form | {"password": PASSWORD, "password2": PASSWORD})
        assert status == 422 and "Wrong setup code" in body
    _setup(env)  # the right code still works
    assert env.app.accounts.get("tech") is not None and env.app.accounts.get("eve") is None


def test_password_hashing_is_bounded_under_a_burst(tmp_path) -> None:
    """Each argon2 hash holds its memory (64 MiB by default) for about half a second; a burst of parallel
    logins must be refused beyond the bound (err_busy), not hashed all at once past MemoryMax."""
    import threading

    from argon2 import PasswordHasher

    from device.console.auth import AccountStore, AuthError

    inside, release = threading.Event(), threading.Event()

    class Held(PasswordHasher):
        """The real hasher; a verify waits inside the slot until released (a slow hash, made exact)."""

        def verify(self, hash, password):  # argon2 names its parameter `hash`
            inside.set()
            release.wait(10)
            return super().verify(hash, password)

    store = AccountStore(tmp_path / "accounts.json", Held(time_cost=1, memory_cost=8192), concurrent_hashes=1)
    store.create("tech", PASSWORD, "technician")
    first: list = []
    t = threading.Thread(target=lambda: first.append(store.verify("tech", PASSWORD)))
    t.start()
    assert inside.wait(10)
    with pytest.raises(AuthError) as ei:
        store.verify("tech", PASSWORD)
    assert ei.value.key == "err_busy"
    with pytest.raises(AuthError):
        store.set_password("tech", "another long password")
    release.set()
    t.join(10)
    assert first and first[0] is not None and first[0].name == "tech"
    assert store.verify("tech", PASSWORD) is not None  # the slot is free again


def test_security_headers_on_every_page(env) -> None:
    c = _setup(env)
    for path in (
        "/dashboard",
        "/aim",
        "/site",
        "/uplink",
        "/keys",
        "/logs",
        "/selftest",
        "/account",
        "/nope",
        "/api/status",
    ):
        _status, h, _ = c.get(path)
        csp = h["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
        assert "frame-ancestors 'none'" in csp
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "no-referrer"
        assert h["Cache-Control"] == "no-store"
    _, _, html = c.get("/dashboard")
    assert "<script>" not in html and " on" + "load=" not in html  # no inline script anywhere

    # answers the HTTP layer makes itself (oversized body, broken request) carry them too
    for body, headers in ((b"x", {"Content-Length": str(10**9)}), (b"", {"Content-Length": "x"})):
        status, h, _ = env.client().request("POST", "/login", body, headers)
        assert status == 413, status
        assert "default-src 'none'" in h["Content-Security-Policy"] and h["X-Frame-Options"] == "DENY"
        assert h["X-Content-Type-Options"] == "nosniff" and h["Cache-Control"] == "no-store"


def test_session_cookie_flags_https(env) -> None:
    c = _setup(env)
    sess = [s for s in c.last_set_cookie if s.startswith("__Host-rcsess=")]
    assert len(sess) == 1
    flags = [f.strip().lower() for f in sess[0].split(";")[1:]]
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= set(flags)
    assert not any(f.startswith("domain") for f in flags)


def test_session_cookie_flags_plain_http_lab_mode(http_env) -> None:
    c = _setup(http_env)
    sess = [s for s in c.last_set_cookie if s.startswith("rcsess=")]
    flags = {f.strip().lower() for f in sess[0].split(";")[1:]}
    assert {"httponly", "samesite=strict"} <= flags and "secure" not in flags


def _site_form(c, **changes):
    return c.site_form(**changes)


def test_csrf_missing_or_wrong_refused(env) -> None:
    c = _setup(env)
    before = env.config_path.read_bytes()
    form = _site_form(c, **{"site.lanes.0.limit_kmh": "50"})
    for bad in (None, "", "wrong-token", form["csrf"][:-1], "é" + form["csrf"][1:]):  # non-ASCII: was a 500
        f = dict(form)
        if bad is None:
            del f["csrf"]
        else:
            f["csrf"] = bad
        status, _, body = c.post("/site", f)
        assert status == 403 and "security token" in body
    assert env.config_path.read_bytes() == before and env.daemon.reloads == []
    status, _, _ = c.request("POST", "/api/test_trigger")
    assert status == 403 and env.daemon.triggers == 0
    status, _, _ = c.request("POST", "/api/test_trigger", headers={"X-CSRF-Token": "nope"})
    assert status == 403 and env.daemon.triggers == 0
    anonymous = env.client()  # hmac.compare_digest raised TypeError on a non-ASCII str: a 500 per request
    anonymous.get("/login")  # a session cookie, as a browser would have
    status, _, _ = anonymous.post("/login", {"csrf": "é" * 8, "username": "x", "password": "y" * 12})
    assert status == 403
    # a cross-site form post carries a foreign Origin: refused even with a token
    status, _, _ = c.post("/site", form, headers={"Origin": "https://evil.example"})
    assert status == 403
    # logout without a token does not log out
    status, _, _ = c.post("/logout", {})
    assert status == 403
    assert c.get("/dashboard")[0] == 200
    # and the genuine request works
    status, _headers, _ = c.post("/site", form)
    assert status == 303
    assert env.config().site.lanes[0].limit_kmh == 50.0
    status, _, body = c.request("POST", "/api/test_trigger", headers={"X-CSRF-Token": form["csrf"]})
    assert status == 200 and json.loads(body)["thumbnail_jpeg_b64"] and env.daemon.triggers == 1


def test_brute_force_locks_account(env) -> None:
    _setup(env)
    c = env.client()
    _, _, html = c.get("/login")
    tok = c.token(html)
    for i in range(env.app.ccfg.max_failed_logins):
        status, _, body = c.post("/login", {"csrf": tok, "username": "tech", "password": f"guess-{i}-xxxxx"})
        assert status in (401, 429)
    assert "locked" in body
    # now even the right password is refused, without the session cookie
    status, _, body = c.post("/login", {"csrf": tok, "username": "tech", "password": PASSWORD})
    assert status == 429 and "locked" in body
    assert not any(k.endswith("rcsess") for k in c.cookies)
    actions = [r["action"] for r in env.app.audit.read()]
    assert actions.count("login_failed") == env.app.ccfg.max_failed_logins and "account_locked" in actions


def test_per_address_rate_limit(strict_env) -> None:
    """Spraying many account names from one address is slowed down even though no account locks."""
    _setup(strict_env)
    c = strict_env.client()
    _, _, html = c.get("/login")
    tok = c.token(html)
    codes = [
        c.post("/login", {"csrf": tok, "username": f"user{i}", "password": "whatever-123"})[0]
        for i in range(strict_env.app.ccfg.login_attempts_per_minute + 2)
    ]
    assert codes[:-3].count(401) == len(codes) - 3 and codes[-1] == 429


def test_viewer_cannot_change_anything(env) -> None:
    tech = _setup(env)
    env.create_account("val", "viewer")
    v = env.login("val")
    before = env.config_path.read_bytes()
    form = _site_form(v, **{"site.lanes.0.limit_kmh": "30"})
    status, _, body = v.post("/site", form)
    assert status == 403 and "role" in body
    _, _, html = v.get("/uplink")
    status, _, _ = v.post("/uplink", {"csrf": v.token(html), "uplink.host": "evil.example"})
    assert status == 403
    for api in ("/api/test_trigger", "/api/uplink_test"):
        status, _, _ = v.request("POST", api, headers={"X-CSRF-Token": form["csrf"]})
        assert status == 403
    status, _, _ = v.post("/selftest", {"csrf": form["csrf"]})
    assert status == 403
    status, _, _ = v.post(
        "/account/users",
        {
            "csrf": form["csrf"],
            "action": "create",
            "username": "x2",
            "password": PASSWORD,
            "role": "technician",
        },
    )
    assert status == 403 and env.app.accounts.get("x2") is None
    assert env.config_path.read_bytes() == before and env.daemon.reloads == [] and env.daemon.triggers == 0
    # but the viewer can look
    assert v.get("/dashboard")[0] == 200 and v.get("/api/status")[0] == 200
    _, _, site_html = v.get("/site")
    assert 'id="save"' not in site_html
    assert tech.get("/dashboard")[0] == 200


def test_logout_and_password_change_revoke_sessions(env) -> None:
    a = _setup(env)
    b = env.login("tech")
    c = env.login("tech")
    token = a.cookies["__Host-rcsess"]
    _, _, html = a.get("/dashboard")
    status, _, _ = a.post("/logout", {"csrf": a.token(html)})
    assert status == 303 and "__Host-rcsess" not in a.cookies
    # replaying the logged-out token does not work
    replay = env.client()
    replay.cookies = {"__Host-rcsess": token}
    status, headers, _ = replay.get("/dashboard")
    assert status == 303 and headers["Location"] == "/login"
    assert b.get("/dashboard")[0] == 200  # other sessions unaffected by a logout
    # a password change from b revokes b AND c
    _, _, html = b.get("/account")
    new = "a new long secret"
    status, headers, _ = b.post(
        "/account/password", {"csrf": b.token(html), "current": PASSWORD, "new": new, "new2": new}
    )
    assert status == 303 and headers["Location"] == "/login"
    assert b.get("/dashboard")[0] == 303 and c.get("/dashboard")[0] == 303
    env.login("tech", new)
    cli = env.client()
    _, _, html = cli.get("/login")
    assert cli.post("/login", {"csrf": cli.token(html), "username": "tech", "password": PASSWORD})[0] == 401


def test_invalid_values_refused_with_field_and_reason(env) -> None:
    c = _setup(env)
    before = env.config_path.read_bytes()
    cases = {
        "site.lanes.0.limit_kmh": "500",
        "site.mount_angle_deg": "60",
        "site.latitude": "abc",
        "site.timezone": "Mars/Olympus",
        "site.lanes.1.roi": "0.8,0,0.5,1",
        "site.lanes.0.windows": "funday 07:00-09:00 30",
        "enforcement.tolerance.percent": "nan",
    }
    for name, value in cases.items():
        status, _, body = c.post("/site", _site_form(c, **{name: value}))
        assert status == 422, name
        assert f'data-field="{name}"' in body, name
        assert f'value="{value}"' in body or value in body, name  # the input is kept, not lost
    # pydantic's own rule (lane ids unique) comes back on the field too
    status, _, body = c.post("/site", _site_form(c, **{"site.lanes.1.id": "1"}))
    assert status == 422 and "lane ids must be unique" in body
    # writing an arbitrary config path is not possible through the form
    status, _, body = c.post("/site", _site_form(c, **{"device.key_path": "/tmp/x"}))
    assert status == 422 and "unknown field" in body
    assert env.config_path.read_bytes() == before and env.daemon.reloads == []


def _text_fields() -> list[str]:
    site = [k for k in site_fields() if not k.startswith("enforcement.tolerance.override")]
    lanes = [f"site.lanes.0.{k}" for k in LANE_FIELDS if k != "delete"]
    up = [k for k in uplink_fields([]) if not k.endswith(("enabled", "insecure_skip_verify"))]
    return site + lanes + up


@pytest.mark.parametrize("payload", [INJECTION, TRAVERSAL])
def test_injection_and_traversal_in_every_text_field(env, payload) -> None:
    c = _setup(env)
    accepted = []
    for name in _text_fields():
        page = "/uplink" if name.startswith("uplink.") else "/site"
        _, _, html = c.get(page)
        form = {"csrf": c.token(html), "_base_version": c.token(html, "_base_version"), name: payload}
        status, _headers, body = c.post(page, form)
        if status == 303:
            accepted.append(name)
            _, _, body = c.get(page)
        else:
            assert status == 422, (name, status)
            assert f'data-field="{name}"' in body, name
        # never reflected raw: the browser cannot run it
        assert "<script>alert(1)" not in body and "<img src=x" not in body, name
    # the account forms' text fields (user names) refuse it too
    _, _, html = c.get("/account")
    status, _, body = c.post(
        "/account/users",
        {
            "csrf": c.token(html),
            "action": "create",
            "username": payload,
            "password": PASSWORD,
            "role": "viewer",
        },
    )
    assert status == 422 and "User names" in body and "<script>alert(1)" not in body
    anon = env.client()
    _, _, html = anon.get("/login")
    status, _, body = anon.post(
        "/login", {"csrf": anon.token(html), "username": payload, "password": payload}
    )
    assert status == 401 and "<script>alert(1)" not in body
    for view in ("/dashboard", "/aim", "/logs", "/site", "/uplink", "/account"):
        assert "<script>alert(1)" not in c.get(view)[2], view
    # only free-text names may take such a string, and then only escaped
    assert set(accepted) <= {"site.name", "site.name_local"}, accepted
    cfg = env.config()
    stored = {"site.name": cfg.site.name, "site.name_local": cfg.site.name_local}
    for name in accepted:
        assert stored[name] == payload, name
    if payload == INJECTION:
        assert "site.name" in accepted
        _, _, html = c.get("/site")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        logs = c.get("/logs")[2]
        assert "<script>alert(1)" not in logs
        assert any(r["new"] == INJECTION for r in env.app.audit.read())
    # every file path setting refused traversal
    assert not any(n.endswith(("_file",)) for n in accepted)


def test_tls_paths_must_stay_in_allowed_dirs(env) -> None:
    c = _setup(env)
    ok_path = str(env.etc / "ca.pem")
    for bad in ("relative/ca.pem", f"{env.etc}/../ca.pem", "/etc/shadow", f"{env.etc}/./x", "/x\x00y"):
        _, _, html = c.get("/uplink")
        status, _, body = c.post(
            "/uplink",
            {
                "csrf": c.token(html),
                "_base_version": c.token(html, "_base_version"),
                "uplink.tls.enabled": "1",
                "uplink.tls.ca_file": bad,
            },
        )
        assert status == 422 and 'data-field="uplink.tls.ca_file"' in body, bad
    _, _, html = c.get("/uplink")
    status, _, _ = c.post(
        "/uplink",
        {
            "csrf": c.token(html),
            "_base_version": c.token(html, "_base_version"),
            "uplink.tls.enabled": "1",
            "uplink.tls.ca_file": ok_path,
        },
    )
    assert status == 303 and str(env.config().uplink.tls.ca_file) == ok_path


def test_static_path_traversal(env) -> None:
    c = env.client()
    assert c.get("/static/console.css")[0] == 200
    for path in (
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fapp.py",
        "/static//etc/passwd",
        "/static/",
    ):
        status, _, body = c.get(path)
        assert status == 404, path
        assert "import" not in body
    status, _, _ = c.get("/lang?set=ar&next=//evil.example/")
    assert status == 303


def test_open_redirect_refused(env) -> None:
    c = env.client()
    for nxt in ("//evil.example", "https://evil.example", "/\\evil.example", "//attacker/", "//intranet"):
        status, headers, _ = c.get(f"/lang?set=fr&next={nxt}")
        assert status == 303 and headers["Location"] == "/"


def test_stale_form_refused_and_nothing_lost(env) -> None:
    c = _setup(env)
    form = _site_form(c, **{"site.lanes.0.limit_kmh": "55"})
    # someone else changes the file meanwhile
    cfg = env.config()
    cfg.site.name = "changed by hand"
    cfgmod.save(cfg, env.config_path)
    status, _headers, _ = c.post("/site", form)
    assert status == 303
    _, _, html = c.get("/site")
    assert "changed since this page was loaded" in html
    assert env.config().site.lanes[0].limit_kmh == 60.0 and env.config().site.name == "changed by hand"


def test_save_when_daemon_down_keeps_change_and_says_so(env) -> None:
    c = _setup(env)
    env.control.stop()
    status, _, _ = c.post("/site", _site_form(c, **{"site.lanes.0.limit_kmh": "45"}))
    assert status == 303
    _, _, html = c.get("/site")
    assert "did not apply them" in html and "daemon not" in html
    assert env.config().site.lanes[0].limit_kmh == 45.0
    recs = [r for r in env.app.audit.read() if r["action"] == "config"]
    assert [(r["field"], r["old"], r["new"]) for r in recs] == [("site.lanes[id=1].limit_kmh", 60.0, 45.0)]
    status, _, body = c.get("/api/status")
    assert status == 503 and "daemon not" in json.loads(body)["error"]


def test_config_file_mode_preserved_and_no_temp_left(env) -> None:
    os.chmod(env.config_path, 0o640)
    c = _setup(env)
    assert c.post("/site", _site_form(c, **{"site.mount_angle_deg": "12.5"}))[0] == 303
    assert stat.S_IMODE(env.config_path.stat().st_mode) == 0o640
    assert sorted(p.name for p in env.config_path.parent.glob(".radarcam.toml*")) == []
    assert env.config().site.mount_angle_deg == 12.5


def test_broken_config_file_is_reported_not_overwritten(env) -> None:
    c = _setup(env)
    env.config_path.write_text('[site]\nmount_angle_deg = "steep"\n')
    status, _, body = c.get("/site")
    assert status == 500 and "site.mount_angle_deg" in body
    assert c.get("/aim")[0] == 500
    assert env.config_path.read_text() == '[site]\nmount_angle_deg = "steep"\n'
    assert c.get("/dashboard")[0] == 200  # the rest of the console keeps working
    for broken in (
        b"[site\nbroken",
        b'[site]\nname = "\xff"\n',
    ):  # not TOML; not UTF-8: was "400 bad request"
        env.config_path.write_bytes(broken)
        for page in ("/site", "/uplink", "/aim"):
            status, _, body = c.get(page)
            assert status == 500 and "TOML" in body, (broken, page)
        assert env.config_path.read_bytes() == broken


def test_partial_or_hostile_daemon_data_is_rendered_safely(env) -> None:
    c = _setup(env)
    env.control.handlers["status"] = lambda a: {
        "radar": None,
        "cpu_temp_c": "hot",
        "components": [],
        "firmware": INJECTION,
    }
    env.control.handlers["recent"] = lambda a: {
        "passes": [{"t_utc": INJECTION, "peak_kmh": "fast", "median_kmh": None, "valid": True}],
        "violations": [{"thumbnail_jpeg_b64": '"><script>alert(1)</script>', "plate": {"text": INJECTION}}],
    }
    status, _, html = c.get("/dashboard")
    assert status == 200
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert 'data:image/jpeg;base64,"' not in html
    _, _, body = c.get("/api/recent")
    assert json.loads(body)["violations"][0]["thumbnail_jpeg_b64"] is None


def test_a_lockout_outlives_a_console_restart(env) -> None:
    """The console's sign-in lockouts are kept in its state dir (0600): a fresh ConsoleApp, as after
    ``systemctl restart radarcam-console``, still refuses the locked account before hashing anything."""
    from device.console.app import ConsoleApp
    from device.console.auth import AuthError

    env.create_account("tech", "technician")  # only existing accounts' state is stored
    for _ in range(env.app.ccfg.max_failed_logins):
        env.app.throttle.failure("tech", "192.0.2.7")
    store = env.app.ccfg.state_dir / "login-throttle.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    restarted = ConsoleApp(env.config_path)
    with pytest.raises(AuthError) as exc:
        restarted.throttle.check("tech", "192.0.2.7")
    assert exc.value.key == "err_locked"
    restarted.throttle.check("someone-else", "192.0.2.7")
    restarted.throttle.check("tech", "198.51.100.3")  # the lockout is that address's, not the account's


def test_console_state_is_for_the_console_user_only(env) -> None:
    """0700 like the unit's StateDirectoryMode (the daemon never reads it: audit records reach it over
    the control socket); a folder an older version left 0750 is narrowed at start."""
    from device.console.app import ConsoleApp

    state = env.app.ccfg.state_dir
    _setup(env)  # writes accounts.json and the audit log's first record
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "audit.jsonl").stat().st_mode) == 0o600
    state.chmod(0o750)
    ConsoleApp(env.config_path)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
