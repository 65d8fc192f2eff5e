"""The technician console's pages and JSON endpoints (routing, access control, CSRF, security headers).

Why one request function over plain values: every rule that keeps the unit safe (who may see what, which
requests change state and therefore need a CSRF token, which headers every answer carries) is applied in
:meth:`ConsoleApp.__call__` before any page code runs, so a new page cannot forget them.

The console never touches the signing key: key information comes from the daemon's ``keys`` command.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import mimetypes
import re
import secrets
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from argon2 import PasswordHasher

from device import __version__
from device import config as cfgmod
from device.control import ControlClient, ControlError, socket_path

from . import i18n, view
from .audit import AuditLog, AuditRecord, PendingAudit, utc_now
from .auth import (
    ROLES,
    AccountStore,
    AuthError,
    LoginThrottle,
    Session,
    SessionStore,
    SetupCode,
    check_password,
    csrf_ok,
)
from .httpd import Request, Response
from .settings import (
    DAYS,
    ConfigEditor,
    FieldError,
    StaleForm,
    site_fields,
    uplink_fields,
    windows_text,
)

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; object-src 'none'"
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)


class _RingHandler(logging.Handler):
    def __init__(self, ring: deque[str]):
        super().__init__(logging.INFO)
        self.ring = ring
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.ring.append(self.format(record))


@dataclass
class Ctx:
    req: Request
    t: i18n.Translator
    session: Session | None
    pre_token: str
    set_cookies: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Route:
    fn: Callable[[Ctx], Response]
    access: str
    """``anon`` (no login), ``viewer`` (any account) or ``technician``."""


def _num(value: Any, fmt: str, scale: float = 1.0) -> str:
    """Formats a number from the daemon; anything else (missing, None, text) shows as a dash."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "—"
    return fmt % (value * scale)


def cosine_reading(true_kmh: float, angle_deg: float) -> float:
    """What a radar at ``angle_deg`` to the direction of travel reads for a vehicle at ``true_kmh``."""
    return true_kmh * math.cos(math.radians(angle_deg))


class ConsoleApp:
    def __init__(self, config_path: Path, *, control: ControlClient | None = None):
        self.config_path = Path(config_path)
        cfg = cfgmod.load(self.config_path)
        self.device_id = cfg.device.id
        self.ccfg = cfg.console  # console settings apply at start (they decide how this process listens)
        state = self.ccfg.state_dir
        # 0700 like the unit's StateDirectoryMode: accounts, sessions' TLS key, setup code and audit log
        # are this user's alone (the daemon gets audit records over the control socket, never reads here;
        # `radarcam console fingerprint` runs as this user). Also narrows a folder an older version made 0750.
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        state.chmod(0o700)
        hasher = PasswordHasher(time_cost=self.ccfg.argon2_time_cost, memory_cost=self.ccfg.argon2_memory_kib)
        self.accounts = AccountStore(state / "accounts.json", hasher)
        self.sessions = SessionStore(self.ccfg.session_hours * 3600)
        self.throttle = LoginThrottle(
            self.ccfg.max_failed_logins,
            self.ccfg.lockout_minutes * 60,
            self.ccfg.login_attempts_per_minute,
            store=state / "login-throttle.json",
            is_account=lambda name: self.accounts.get(name) is not None,
        )
        if self.throttle.store_problem:
            log.warning("%s", self.throttle.store_problem)
        self.setup = SetupCode(state / "setup-code")
        self.audit = AuditLog(state / "audit.jsonl")
        self.pending_audit = PendingAudit(state / "audit-pending.jsonl")
        self.editor = ConfigEditor(self.config_path, self.audit)
        self.control = control or ControlClient(socket_path(cfg.device.runtime_dir))
        self.catalogs = i18n.load_catalogs()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            # The daemon's status may lack a key (a component not built yet): render a blank, not a 500.
            undefined=jinja2.ChainableUndefined,
        )
        self.env.filters["num"] = _num
        self.static = {
            p.name: (p.read_bytes(), mimetypes.guess_type(p.name)[0] or "application/octet-stream")
            for p in (_HERE / "static").iterdir()
            if p.is_file()
        }
        self.thumbs = view.Thumbnailer()
        self.log_ring: deque[str] = deque(maxlen=2000)
        logging.getLogger("device").addHandler(_RingHandler(self.log_ring))
        self.tls_fingerprint: str | None = None
        self.https = self.ccfg.https
        self.routes: dict[tuple[str, str], Route] = {}
        r = self._route
        r("GET", "/", "anon", self.index)
        r("GET", "/setup", "anon", self.setup_page)
        r("POST", "/setup", "anon", self.setup_post)
        r("GET", "/login", "anon", self.login_page)
        r("POST", "/login", "anon", self.login_post)
        r("GET", "/lang", "anon", self.lang)
        r("POST", "/logout", "viewer", self.logout)
        r("GET", "/dashboard", "viewer", self.dashboard)
        r("GET", "/aim", "viewer", self.aim)
        r("GET", "/site", "viewer", self.site_page)
        r("POST", "/site", "technician", self.site_post)
        r("GET", "/uplink", "viewer", self.uplink_page)
        r("POST", "/uplink", "technician", self.uplink_post)
        r("GET", "/keys", "viewer", self.keys)
        r("GET", "/logs", "viewer", self.logs)
        r("GET", "/logs/audit.jsonl", "viewer", self.audit_download)
        r("GET", "/logs/daemon.log", "viewer", self.daemon_log)
        r("GET", "/logs/console.log", "viewer", self.console_log)
        r("GET", "/selftest", "viewer", self.selftest_page)
        r("POST", "/selftest", "technician", self.selftest_post)
        r("GET", "/account", "viewer", self.account_page)
        r("POST", "/account/password", "viewer", self.password_post)
        r("POST", "/account/users", "technician", self.users_post)
        r("GET", "/api/status", "viewer", self.api_status)
        r("GET", "/api/recent", "viewer", self.api_recent)
        r("GET", "/api/preview.jpg", "viewer", self.api_preview)
        r("POST", "/api/test_trigger", "technician", self.api_test_trigger)
        r("POST", "/api/uplink_test", "technician", self.api_uplink_test)

    def _route(self, method: str, path: str, access: str, fn: Callable[[Ctx], Response]) -> None:
        self.routes[(method, path)] = Route(fn, access)

    # ------------------------------------------------------------------ names
    @property
    def session_cookie(self) -> str:
        return "__Host-rcsess" if self.https else "rcsess"

    @property
    def pre_cookie(self) -> str:
        return "__Host-rcpre" if self.https else "rcpre"

    def cookie(self, name: str, value: str, *, max_age: int | None = None) -> str:
        parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if self.https:
            parts.append("Secure")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        return "; ".join(parts)

    def first_start_code(self) -> str | None:
        """The setup code when no account exists yet (created if needed); None once set up."""
        if self.accounts.empty():
            return self.setup.ensure()
        self.setup.consume()  # a stale code must not allow a second "first" account
        return None

    # ------------------------------------------------------------------ dispatch
    def __call__(self, req: Request) -> Response:
        resp = self._dispatch(req)
        for h in SECURITY_HEADERS:
            resp.headers.append(h)
        if not req.path.startswith("/static/"):
            resp.headers.append(("Cache-Control", "no-store"))
        return resp

    def _dispatch(self, req: Request) -> Response:
        if req.path.startswith("/static/") and req.method in ("GET", "HEAD"):
            item = self.static.get(req.path[len("/static/") :])
            if item is None:
                return Response(404, b"not found", "text/plain; charset=utf-8")
            ctype = item[1] + (
                "; charset=utf-8" if item[1].startswith(("text/", "application/javascript")) else ""
            )
            return Response(200, item[0], ctype, [("Cache-Control", "public, max-age=3600")])
        t = i18n.Translator(
            i18n.pick(req.cookies.get("rclang"), req.headers.get("accept-language")), self.catalogs
        )
        session = self.sessions.get(req.cookies.get(self.session_cookie))
        pre = req.cookies.get(self.pre_cookie, "")
        ctx = Ctx(
            req=req, t=t, session=session, pre_token=pre if re.fullmatch(r"[A-Za-z0-9_-]{32,64}", pre) else ""
        )
        if not ctx.pre_token:
            ctx.pre_token = secrets.token_urlsafe(32)
            ctx.set_cookies.append(self.cookie(self.pre_cookie, ctx.pre_token))
        method = "GET" if req.method == "HEAD" else req.method
        route = self.routes.get((method, req.path))
        if route is None:
            if any(p == req.path for _, p in self.routes):
                return self._finish(ctx, self.error(ctx, 405, "err_method"))
            return self._finish(ctx, self.error(ctx, 404, "err_not_found"))
        api = req.path.startswith("/api/")
        if method == "POST":
            origin = req.headers.get("origin")
            if origin and origin != "null" and urlsplit(origin).netloc != req.headers.get("host", ""):
                return self._finish(ctx, self.error(ctx, 403, "err_origin", api=api))
            token = req.headers.get("x-csrf-token") or req.field("csrf")
            expected = session.csrf if (session and route.access != "anon") else ctx.pre_token
            if not csrf_ok(expected, token):
                log.warning("refused %s %s from %s: bad CSRF token", method, req.path, req.remote)
                return self._finish(ctx, self.error(ctx, 403, "err_csrf", api=api))
        if route.access != "anon":
            if self.accounts.empty():
                return self._finish(ctx, self.redirect("/setup"))
            if session is None:
                if api:
                    return self._finish(ctx, self.json({"error": t("err_login_required")}, 401))
                return self._finish(ctx, self.redirect("/login"))
            if route.access == "technician" and session.role != "technician":
                return self._finish(ctx, self.error(ctx, 403, "err_forbidden", api=api))
        try:
            return self._finish(ctx, route.fn(ctx))
        except cfgmod.ConfigError as exc:  # the file was broken by hand: say so instead of a bare 500
            log.error("config unreadable: %s", exc)
            resp = self.render(ctx, "error.html", 500, message=str(exc), status_code=500)
            return self._finish(ctx, resp)

    def _finish(self, ctx: Ctx, resp: Response) -> Response:
        for c in ctx.set_cookies:
            resp.headers.append(("Set-Cookie", c))
        return resp

    # ------------------------------------------------------------------ helpers
    def render(self, ctx: Ctx, template: str, status: int = 200, **kw: Any) -> Response:
        s = ctx.session
        flash = list(s.flash) if s else []
        if s:
            s.flash.clear()
        page = self.env.get_template(template).render(
            t=ctx.t,
            lang=ctx.t.lang,
            dir=ctx.t.dir,
            langs=i18n.LANGS,
            user=s.user if s else None,
            role=s.role if s else None,
            csrf=s.csrf if s else ctx.pre_token,
            device_id=self.device_id,
            version=__version__,
            path=ctx.req.path,
            flash=flash,
            **kw,
        )
        return Response(status, page.encode("utf-8"))

    def redirect(self, to: str) -> Response:
        return Response(303, b"", "text/plain; charset=utf-8", [("Location", to)])

    def json(self, obj: Any, status: int = 200) -> Response:
        return Response(
            status, json.dumps(obj, ensure_ascii=False).encode(), "application/json; charset=utf-8"
        )

    def error(self, ctx: Ctx, status: int, key: str, *, api: bool = False) -> Response:
        if api:
            return self.json({"error": ctx.t(key)}, status)
        return self.render(ctx, "error.html", status, message=ctx.t(key), status_code=status)

    def daemon(self, cmd: str, **args: Any) -> tuple[Any, str | None]:
        try:
            result = self.control.call(cmd, **args)
        except ControlError as exc:
            return None, str(exc)
        self.flush_audit()  # the daemon answers: a good moment to hand over what it has not sealed yet
        return result, None

    AUDIT_BATCH = 200

    def flush_audit(self) -> None:
        """Hands pending audit records to the daemon (``audit``: one sealed ``console_audit`` event per
        batch); they stay pending until it has answered. Requests call this concurrently: the hand-over
        is one at a time (:meth:`PendingAudit.hand_over`), so none drops what another has not sent."""
        try:
            self.pending_audit.hand_over(
                lambda batch: self.control.call("audit", records=batch), self.AUDIT_BATCH
            )
        except ControlError as exc:
            log.info("%d audit record(s) wait for the daemon: %s", len(self.pending_audit.peek(10**6)), exc)

    def record(
        self, ctx: Ctx, action: str, field_: str, old: Any = None, new: Any = None, who: str = ""
    ) -> None:
        s = ctx.session
        rec = AuditRecord(
            who=who or (s.user if s else "-"),
            role=s.role if s else "-",
            when=utc_now(),
            field=field_,
            old=old,
            new=new,
            remote=ctx.req.remote,
            action=action,
        )
        self.audit.append([rec])
        self.pending_audit.add([rec.to_dict()])  # sign-ins and accounts reach the registry too
        self.flush_audit()

    def login_session(self, ctx: Ctx, user: str, role: str) -> Response:
        s = self.sessions.create(user, role)
        ctx.set_cookies.append(self.cookie(self.session_cookie, s.token))
        return self.redirect("/dashboard")

    # ------------------------------------------------------------------ anonymous pages
    def index(self, ctx: Ctx) -> Response:
        if self.accounts.empty():
            return self.redirect("/setup")
        return self.redirect("/dashboard" if ctx.session else "/login")

    def lang(self, ctx: Ctx) -> Response:
        lang = ctx.req.arg("set")
        if lang in i18n.LANGS:
            ctx.set_cookies.append(self.cookie("rclang", lang, max_age=365 * 86400))
        back = ctx.req.arg("next", "/")
        if not re.fullmatch(r"/(?!/)[a-z/]*", back):  # local pages only ("//host" is another site)
            back = "/"
        return self.redirect(back)

    @staticmethod
    def announce_setup_code(code: str) -> None:
        """A code made while running (the file was removed, emptied or damaged): to the journal, like
        the one made at start (device/console/cli.py), and not to the downloadable log ring."""
        print(f"radarcam console: new one-time setup code: {code}", file=sys.stderr, flush=True)

    def setup_page(self, ctx: Ctx, error: str | None = None, status: int = 200) -> Response:
        if not self.accounts.empty():
            return self.redirect("/login")
        self.setup.ensure(self.announce_setup_code)  # an empty or damaged code file is never accepted
        return self.render(ctx, "setup.html", status, error=error, code_file=str(self.setup.path))

    def setup_post(self, ctx: Ctx) -> Response:
        if not self.accounts.empty():
            return self.redirect("/login")
        req = ctx.req
        try:
            # Per address only: a shared lockout would let anyone on the network keep a fresh unit
            # unclaimable with five wrong codes; 16 characters (80 bits) need no lockout.
            self.throttle.rate(req.remote)
            self.setup.ensure(self.announce_setup_code)
            if not self.setup.verify(req.field("code")):
                raise AuthError("err_setup_code")
            name = req.field("username").strip()
            if req.field("password") != req.field("password2"):
                raise AuthError("err_password_mismatch")
            self.accounts.create(name, req.field("password"), "technician")
        except AuthError as exc:
            return self.setup_page(ctx, ctx.t(exc.key, **exc.params), 422)
        self.setup.consume()
        self.record(ctx, "account_created", name, None, "technician", who=name)
        log.info("first technician account %r created from %s; setup code consumed", name, req.remote)
        return self.login_session(ctx, name, "technician")

    def login_page(self, ctx: Ctx, error: str | None = None, status: int = 200) -> Response:
        if self.accounts.empty():
            return self.redirect("/setup")
        return self.render(ctx, "login.html", status, error=error)

    def login_post(self, ctx: Ctx) -> Response:
        req = ctx.req
        name = req.field("username").strip()[:64]
        try:
            self.throttle.check(name, req.remote)
            acct = self.accounts.verify(name, req.field("password")[:256])
            if acct is None:
                locked = self.throttle.failure(name, req.remote)
                self.record(ctx, "login_failed", name, who=name)
                if locked:
                    log.warning("account %r locked for %s after repeated failures", name, req.remote)
                    self.record(ctx, "account_locked", name, who=name)
                    raise AuthError("err_locked", minutes=round(self.ccfg.lockout_minutes))
                raise AuthError("err_login")
        except AuthError as exc:
            return self.login_page(ctx, ctx.t(exc.key, **exc.params), 429 if exc.key != "err_login" else 401)
        self.throttle.success(name, req.remote)
        self.record(ctx, "login", name, who=name)
        return self.login_session(ctx, acct.name, acct.role)

    def logout(self, ctx: Ctx) -> Response:
        assert ctx.session is not None
        self.sessions.revoke(ctx.session.token)
        ctx.set_cookies.append(self.cookie(self.session_cookie, "", max_age=0))
        return self.redirect("/login")

    # ------------------------------------------------------------------ dashboard & live data
    def dashboard(self, ctx: Ctx) -> Response:
        status, err = self.daemon("status")
        rec, err2 = self.daemon("recent", limit=20)
        return self.render(
            ctx,
            "dashboard.html",
            st=view.status(status),
            recent=view.recent(rec, self.thumbs),
            daemon_error=err or err2,
        )

    def api_status(self, ctx: Ctx) -> Response:
        status, err = self.daemon("status")
        return self.json({"error": err}, 503) if err else self.json(view.status(status))

    def api_recent(self, ctx: Ctx) -> Response:
        try:
            limit = max(1, min(100, int(ctx.req.arg("limit", "20"))))
        except ValueError:
            limit = 20
        rec, err = self.daemon("recent", limit=limit)
        return self.json({"error": err}, 503) if err else self.json(view.recent(rec, self.thumbs))

    def api_preview(self, ctx: Ctx) -> Response:
        res, err = self.daemon("preview")
        if err:
            return self.json({"error": err}, 503)
        try:
            jpeg = base64.b64decode(res["jpeg_b64"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            return self.json({"error": "no camera frame yet"}, 503)
        if not jpeg.startswith(b"\xff\xd8"):
            return self.json({"error": "preview is not a JPEG"}, 502)
        return Response(
            200, jpeg, "image/jpeg", [("X-Frame-Time-Mono-Ns", str(int(res.get("t_mono_ns", 0))))]
        )

    def api_test_trigger(self, ctx: Ctx) -> Response:
        raw, err = self.daemon("test_trigger")
        res, err2 = view.trigger(raw, self.thumbs) if not err else (None, err)
        self.record(ctx, "test_trigger", "(camera)", None, (res or {}).get("t_utc") or f"failed: {err2}")
        if err2:
            return self.json({"error": err2}, 503)
        return self.json(res)

    def api_uplink_test(self, ctx: Ctx) -> Response:
        res, err = self.daemon("uplink_test")
        if err:
            return self.json({"ok": False, "detail": err}, 503)
        return self.json(view.uplink_test(res))

    # ------------------------------------------------------------------ aim
    def aim(self, ctx: Ctx) -> Response:
        _, _, cfg = self.editor.read()
        lanes = []
        for lane in cfg.site.lanes:
            x, y, w, h = lane.roi or (0.0, 0.0, 1.0, 1.0)
            lanes.append({"id": lane.id, "direction": lane.direction, "x": x, "y": y, "w": w, "h": h})
        return self.render(
            ctx,
            "aim.html",
            lanes=lanes,
            angle=cfg.site.mount_angle_deg,
            beam=cfg.radar.direction_filter,
            width=cfg.camera.preview_width,
            height=cfg.camera.preview_height,
        )

    # ------------------------------------------------------------------ configuration pages
    @staticmethod
    def _site_values(cfg: cfgmod.Config) -> dict[str, str]:
        s = cfg.site
        tol = cfg.enforcement.tolerance
        v = {
            "site.name": s.name,
            "site.name_local": s.name_local or "",
            "site.latitude": f"{s.latitude}",
            "site.longitude": f"{s.longitude}",
            "site.timezone": s.timezone,
            "site.jurisdiction": s.jurisdiction,
            "site.mount_angle_deg": f"{s.mount_angle_deg:g}",
            "enforcement.tolerance.override": "1" if tol else "0",
            "enforcement.tolerance.fixed_kmh": f"{(tol or cfgmod.ToleranceConfig()).fixed_kmh:g}",
            "enforcement.tolerance.threshold_kmh": f"{(tol or cfgmod.ToleranceConfig()).threshold_kmh:g}",
            "enforcement.tolerance.percent": f"{(tol or cfgmod.ToleranceConfig()).percent:g}",
        }
        for i, lane in enumerate(s.lanes):
            p = f"site.lanes.{i}."
            v[p + "id"] = lane.id
            v[p + "direction"] = lane.direction
            v[p + "limit_kmh"] = f"{lane.limit_kmh:g}"
            v[p + "roi"] = ",".join(f"{x:g}" for x in lane.roi) if lane.roi else ""
            v[p + "windows"] = windows_text([w.model_dump() for w in lane.windows])
        return v

    @staticmethod
    def _uplink_values(cfg: cfgmod.Config) -> dict[str, str]:
        u = cfg.uplink

        def s(x: Any) -> str:
            return "" if x is None else str(x)

        return {
            "uplink.enabled": "1" if u.enabled else "0",
            "uplink.host": u.host,
            "uplink.port": str(u.port),
            "uplink.protocol": u.protocol,
            "uplink.client_id": s(u.client_id),
            "uplink.username": s(u.username),
            "uplink.password_file": s(u.password_file),
            "uplink.topic_prefix": u.topic_prefix,
            "uplink.keepalive_s": str(u.keepalive_s),
            "uplink.tls.enabled": "1" if u.tls.enabled else "0",
            "uplink.tls.ca_file": s(u.tls.ca_file),
            "uplink.tls.cert_file": s(u.tls.cert_file),
            "uplink.tls.key_file": s(u.tls.key_file),
            "uplink.tls.insecure_skip_verify": "1" if u.tls.insecure_skip_verify else "0",
        }

    def site_page(self, ctx: Ctx, **kw: Any) -> Response:
        data, _, cfg = self.editor.read()
        values = self._site_values(cfg)
        values.update(kw.pop("submitted", {}))
        angle = cfg.site.mount_angle_deg
        return self.render(
            ctx,
            "site.html",
            kw.pop("status", 200),
            values=values,
            errors=kw.pop("errors", {}),
            n_lanes=len(cfg.site.lanes),
            base_version=self.editor.version(data),
            days=DAYS,
            angle=angle,
            cos_reads=cosine_reading(100.0, angle),
            timezone_ok=True,
            **kw,
        )

    def uplink_page(self, ctx: Ctx, **kw: Any) -> Response:
        data, _, cfg = self.editor.read()
        values = self._uplink_values(cfg)
        values.update(kw.pop("submitted", {}))
        return self.render(
            ctx,
            "uplink.html",
            kw.pop("status", 200),
            values=values,
            errors=kw.pop("errors", {}),
            base_version=self.editor.version(data),
            allowed_dirs=[str(d) for d in self.ccfg.allowed_file_dirs],
            **kw,
        )

    def _save(self, ctx: Ctx, fields: dict[str, Any], page: Callable[..., Response], back: str) -> Response:
        assert ctx.session is not None
        form = {k: v[-1] for k, v in ctx.req.form.items()}
        try:
            result = self.editor.change(
                form,
                fields,
                who=ctx.session.user,
                role=ctx.session.role,
                remote=ctx.req.remote,
                base_version=ctx.req.field("_base_version"),
            )
        except FieldError as exc:
            return page(ctx, submitted=form, errors=exc.errors, status=422)
        except StaleForm:
            ctx.session.flash.append(("error", ctx.t("err_stale")))
            return self.redirect(back)
        t = ctx.t
        if not result.records:
            ctx.session.flash.append(("info", t("msg_no_change")))
            return self.redirect(back)
        log.info(
            "%s changed %d setting(s): %s",
            ctx.session.user,
            len(result.records),
            [r.field for r in result.records],
        )
        res, err = self.daemon("reload", audit=[r.to_dict() for r in result.records])
        if err:  # saved but not sealed: the records go up with the next audit hand-over instead
            self.pending_audit.add([r.to_dict() for r in result.records])
            ctx.session.flash.append(
                ("error", t("msg_saved_reload_failed", n=len(result.records), error=err))
            )
        else:
            if res.get("restart_required"):
                ctx.session.flash.append(("info", t("msg_restart_required")))
            ctx.session.flash.append(
                (
                    "ok",
                    t(
                        "msg_saved",
                        n=len(result.records),
                        seq=res.get("event_seq"),
                        hash=str(res.get("config_hash"))[:12],
                    ),
                )
            )
        return self.redirect(back)

    def site_post(self, ctx: Ctx) -> Response:
        return self._save(ctx, site_fields(), self.site_page, "/site")

    def uplink_post(self, ctx: Ctx) -> Response:
        _, _, current = self.editor.read()  # its file paths may stay; a newer file fails as StaleForm
        fields = uplink_fields(list(self.ccfg.allowed_file_dirs), current)
        return self._save(ctx, fields, self.uplink_page, "/uplink")

    # ------------------------------------------------------------------ keys, logs, self-test
    def keys(self, ctx: Ctx) -> Response:
        res, err = self.daemon("keys")
        info = {}
        if res:
            info = {"key_id": str(res.get("key_id", "")), "fingerprint": str(res.get("fingerprint", ""))}
        return self.render(
            ctx, "keys.html", keyinfo=info, daemon_error=err, tls_fingerprint=self.tls_fingerprint
        )

    def logs(self, ctx: Ctx) -> Response:
        return self.render(ctx, "logs.html", records=list(reversed(self.audit.read(limit=300))))

    def _download(self, body: bytes, name: str, ctype: str) -> Response:
        return Response(200, body, ctype, [("Content-Disposition", f'attachment; filename="{name}"')])

    def audit_download(self, ctx: Ctx) -> Response:
        return self._download(self.audit.raw(), f"audit-{self.device_id}.jsonl", "application/x-ndjson")

    def daemon_log(self, ctx: Ctx) -> Response:
        res, err = self.daemon("logs", lines=5000)
        if err:
            return Response(503, f"daemon log unavailable: {err}\n".encode(), "text/plain; charset=utf-8")
        text = "\n".join(str(x) for x in (res or {}).get("lines", [])) + "\n"
        return self._download(
            text.encode("utf-8"), f"daemon-{self.device_id}.log", "text/plain; charset=utf-8"
        )

    def console_log(self, ctx: Ctx) -> Response:
        text = "\n".join(self.log_ring) + "\n"
        return self._download(
            text.encode("utf-8"), f"console-{self.device_id}.log", "text/plain; charset=utf-8"
        )

    def console_checks(self) -> list[dict[str, Any]]:
        return [
            {
                "check": "console https",
                "ok": self.https,
                "detail": f"certificate sha256 {self.tls_fingerprint}"
                if self.https
                else "plain HTTP (lab only)",
                "fix": "" if self.https else "set console.https = true",
            },
            {
                "check": "console accounts",
                "ok": not self.setup.active(),
                "detail": f"{len(self.accounts.list())} account(s)",
                "fix": "",
            },
        ]

    def selftest_page(self, ctx: Ctx) -> Response:
        return self.render(ctx, "selftest.html", results=None, daemon_error=None)

    def selftest_post(self, ctx: Ctx) -> Response:
        res, err = self.daemon("selftest")
        results = view.selftest(res) + self.console_checks()
        self.record(
            ctx,
            "selftest",
            "(selftest)",
            None,
            "pass" if all(r["ok"] for r in results) and not err else "fail",
        )
        return self.render(ctx, "selftest.html", results=results, daemon_error=err)

    # ------------------------------------------------------------------ accounts
    def account_page(self, ctx: Ctx, error: str | None = None, status: int = 200) -> Response:
        users = self.accounts.list() if ctx.session and ctx.session.role == "technician" else []
        return self.render(ctx, "account.html", status, error=error, users=users, roles=ROLES)

    def password_post(self, ctx: Ctx) -> Response:
        s = ctx.session
        assert s is not None
        req = ctx.req
        try:
            self.throttle.check(s.user, req.remote)
            if self.accounts.verify(s.user, req.field("current")) is None:
                self.throttle.failure(s.user, req.remote)
                raise AuthError("err_login")
            if req.field("new") != req.field("new2"):
                raise AuthError("err_password_mismatch")
            check_password(req.field("new"))
            self.accounts.set_password(s.user, req.field("new"))
        except AuthError as exc:
            return self.account_page(ctx, ctx.t(exc.key, **exc.params), 422)
        n = self.sessions.revoke_user(s.user)
        self.record(ctx, "password_changed", s.user, None, f"{n} session(s) revoked")
        ctx.set_cookies.append(self.cookie(self.session_cookie, "", max_age=0))
        return self.redirect("/login")

    def users_post(self, ctx: Ctx) -> Response:
        s = ctx.session
        assert s is not None
        req = ctx.req
        action = req.field("action")
        name = req.field("username").strip()
        try:
            if action == "create":
                role = req.field("role")
                self.accounts.create(name, req.field("password"), role)
                self.record(ctx, "account_created", name, None, role)
                s.flash.append(("ok", ctx.t("msg_user_created", name=name)))
            elif action == "delete":
                if name == s.user or self.accounts.get(name) is None:
                    raise AuthError("err_user_delete")
                self.accounts.delete(name)
                self.sessions.revoke_user(name)
                self.record(ctx, "account_deleted", name, name, None)
                s.flash.append(("ok", ctx.t("msg_user_deleted", name=name)))
            else:
                raise AuthError("err_bad_action")
        except AuthError as exc:
            return self.account_page(ctx, ctx.t(exc.key, **exc.params), 422)
        return self.redirect("/account")
