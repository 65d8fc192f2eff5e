"""The console in a real Chromium (Debian's, driven by Playwright; no browser download).

One walk through what a technician does at the cabinet: first setup with the one-time code, log out and
in, watch the dashboard update live, aim, change a limit and the mount angle, see the audit entry and the
daemon's reload/event, switch to Arabic (right to left) and French. Screenshots of every page go to
test-artifacts/screenshots/ so a person can look at them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery"
TIMEOUT_MS = 10_000


@pytest.fixture
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        try:
            yield page, problems
        finally:
            context.close()
            browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_technician_walkthrough(env, browser_page) -> None:
    page, problems = browser_page
    expect = sync_api.expect
    d = env.daemon

    # ---------------------------------------------------------------- first setup with the one-time code
    page.goto(env.base + "/")
    expect(page).to_have_url(re.compile(r"/setup$"))
    shot(page, "01-setup")
    code = env.app.setup.path.read_text().strip()  # what the journal / serial console showed
    page.fill("#code", code.lower().replace("-", " "))  # typed sloppily: case and separators do not matter
    page.fill("#username", "amina")
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    page.click("#setup-submit")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    assert not env.app.setup.path.exists()

    # ---------------------------------------------------------------- logout, login
    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#username", "amina")
    page.fill("#password", "wrong password!")
    page.click("#login-submit")
    expect(page.locator("#error")).to_contain_text("Wrong user name or password")
    shot(page, "02-login")
    page.fill("#username", "amina")
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    cookies = {c["name"]: c for c in page.context.cookies()}
    sess = cookies["__Host-rcsess"]
    assert sess["httpOnly"] and sess["secure"] and sess["sameSite"] == "Strict"

    # ---------------------------------------------------------------- dashboard updates without reload
    marker = page.evaluate("() => { window.__noReload = 42; return window.__noReload; }")
    assert marker == 42
    d.speed = 87.3
    expect(page.locator("#live-speed")).to_have_text("87.3")
    d.add_pass(91.0)
    expect(page.locator("#passes")).to_contain_text("91.0")
    d.add_violation(104.2, "12345-أ-6", "12345-A-6")
    expect(page.locator("#violations .plate")).to_have_text("12345-أ-6")
    expect(page.locator("#violations")).to_contain_text("104.2 / 60 km/h")
    page.wait_for_function(
        "() => { const i = document.querySelector('#violations img'); return i && i.naturalWidth === 160; }"
    )
    d.speed = 45.0
    expect(page.locator("#live-speed")).to_have_text("45.0")
    expect(page.locator("#components")).to_contain_text("degraded")
    assert page.evaluate("() => window.__noReload") == 42  # same document: it was never reloaded
    shot(page, "03-dashboard")

    # ---------------------------------------------------------------- aim: preview refreshes, test trigger
    page.goto(env.base + "/aim")
    page.wait_for_function("() => document.getElementById('preview').naturalWidth === 320")
    first = d.frame
    page.wait_for_function("() => document.getElementById('preview').src.includes('?t=')")
    page.wait_for_function("() => document.getElementById('preview-age').textContent.length > 0")
    assert d.frame > first
    assert page.locator("svg.overlay rect.roi").count() == 2
    page.click("#test-trigger")
    page.wait_for_function(
        "() => { const i = document.getElementById('trigger-image'); return i && i.naturalWidth === 160; }"
    )
    assert d.triggers == 1
    shot(page, "04-aim")

    # ---------------------------------------------------------------- site: change a limit and the angle
    page.goto(env.base + "/site")
    helper = page.locator("#cosine-helper")
    expect(helper).to_contain_text("93.97")  # at 20 deg a true 100 km/h reads 93.97
    page.fill("[name='site.mount_angle_deg']", "30")
    expect(helper).to_contain_text("86.60")
    page.fill("[name='site.lanes.0.limit_kmh']", "50")
    page.fill("[name='site.lanes.0.windows']", "mon,tue,wed,thu,fri 07:30-08:30 30")
    shot(page, "05-site")
    page.click("#save")
    expect(page.locator(".flash-ok")).to_contain_text("Saved 3 change(s)")
    expect(page.locator(".flash-ok")).to_contain_text("event #1")
    cfg = env.config()
    assert cfg.site.lanes[0].limit_kmh == 50.0 and cfg.site.mount_angle_deg == 30.0
    assert cfg.site.lanes[0].windows[0].limit_kmh == 30.0
    # the daemon re-read the file and sealed exactly one config_changed event for the batch
    assert len(d.reloads) == 1 and d.reloads[0]["config"].site.lanes[0].limit_kmh == 50.0
    assert len(d.events) == 1 and d.events[0]["kind"] == "config_changed"
    fields = {r["field"]: (r["old"], r["new"], r["who"]) for r in d.events[0]["audit"]}
    assert fields["site.lanes[id=1].limit_kmh"] == (60.0, 50.0, "amina")
    assert fields["site.mount_angle_deg"] == (20.0, 30.0, "amina")
    assert "site.lanes[id=1].windows" in fields

    # invalid input: refused, the field and the reason shown, nothing written
    before = env.config_path.read_bytes()
    page.fill("[name='site.lanes.1.limit_kmh']", "350")
    page.click("#save")
    err = page.locator("[data-field='site.lanes.1.limit_kmh']")
    expect(err).to_contain_text("between 0 and 300")
    expect(page.locator("[name='site.lanes.1.limit_kmh']")).to_have_value("350")  # input kept
    assert env.config_path.read_bytes() == before and len(d.reloads) == 1
    shot(page, "06-site-refused")

    # ---------------------------------------------------------------- audit trail and its download
    page.goto(env.base + "/logs")
    row = page.locator("#audit tbody tr", has_text="site.lanes[id=1].limit_kmh")
    expect(row).to_contain_text("amina")
    expect(row).to_contain_text("60.0")
    expect(row).to_contain_text("50.0")
    shot(page, "07-logs")
    with page.expect_download() as dl:
        page.click("#dl-audit")
    lines = [json.loads(x) for x in Path(dl.value.path()).read_text().splitlines()]
    assert any(r["field"] == "site.lanes[id=1].limit_kmh" and r["new"] == 50.0 for r in lines)

    # ---------------------------------------------------------------- uplink, keys, self-test, account
    page.goto(env.base + "/uplink")
    page.click("#uplink-test")
    expect(page.locator("#uplink-test-result")).to_contain_text("connected to localhost:1883")
    shot(page, "08-uplink")
    page.goto(env.base + "/keys")
    expect(page.locator("#key-id")).to_have_text("00112233445566778899aabbccddeeff")
    expect(page.locator("#tls-fingerprint")).to_have_text(env.app.tls_fingerprint)
    shot(page, "09-keys")
    page.goto(env.base + "/selftest")
    page.click("#run-selftest")
    expect(page.locator("#selftest tr.fail")).to_contain_text("check chrony sources")
    shot(page, "10-selftest")
    page.goto(env.base + "/account")
    shot(page, "11-account")

    # ---------------------------------------------------------------- Arabic is right to left, French too
    page.goto(env.base + "/dashboard")
    page.click("a[lang='ar']")
    expect(page.locator("html")).to_have_attribute("dir", "rtl")
    expect(page.locator("html")).to_have_attribute("lang", "ar")
    assert page.evaluate("() => getComputedStyle(document.body).direction") == "rtl"
    expect(page.locator("h1")).to_have_text("لوحة المتابعة")
    brand = page.locator(".brand").bounding_box()
    assert brand["x"] > 1280 / 2  # the header starts on the right
    d.speed = 66.6
    expect(page.locator("#live-speed")).to_have_text("66.6")
    shot(page, "12-dashboard-ar")
    page.goto(env.base + "/site")
    expect(page.locator("#cosine-helper")).to_contain_text("86.60")
    shot(page, "13-site-ar")
    page.click("a[lang='fr']")
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
    expect(page.locator("h1")).to_have_text("Site et contrôle")
    assert page.evaluate("() => getComputedStyle(document.body).direction") == "ltr"
    shot(page, "14-site-fr")

    # no CSP violation, no script error on any page
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    assert not [p for p in problems if "Error" in p and "404" not in p], problems
