"""Accounts, sessions, CSRF, setup code and login throttling for the technician console.

Why this shape: the unit ships with NO password. On first start a one-time setup code is written to the
journal and to a 0600 file; whoever can read it (someone at the cabinet's serial console or with root)
creates the first technician account. Passwords are argon2id. Sessions are random 256-bit tokens held in
memory (a console restart logs everyone out, which is fine on a maintenance port) and are revoked on
logout and on password change. Each session carries its own CSRF token.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from device.config import atomic_write

ROLES = ("technician", "viewer")
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
MIN_PASSWORD_LEN = 10
MAX_PASSWORD_LEN = 256
SETUP_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a serial console


class AuthError(Exception):
    """A refusal shown to the user; ``key`` is an i18n message key, ``params`` fill it in."""

    def __init__(self, key: str, **params: object):
        super().__init__(key)
        self.key = key
        self.params = params


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    hash: str
    created: float
    changed: float


def check_username(name: str) -> str:
    if not USERNAME_RE.match(name or ""):
        raise AuthError("err_username")
    return name


def check_password(pw: str) -> str:
    if not (MIN_PASSWORD_LEN <= len(pw or "") <= MAX_PASSWORD_LEN):
        raise AuthError("err_password_len", min=MIN_PASSWORD_LEN, max=MAX_PASSWORD_LEN)
    return pw


class AccountStore:
    """JSON file, 0600, rewritten atomically on every change."""

    def __init__(self, path: Path, hasher: PasswordHasher | None = None, *, concurrent_hashes: int = 2):
        self.path = Path(path)
        self.hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self._lock = threading.Lock()
        # Each hash takes argon2's memory (64 MiB by default) for about half a second: unbounded, a burst
        # of parallel logins outgrows the console's MemoryMax, and a restart forgets every lockout.
        self._hashing = threading.BoundedSemaphore(concurrent_hashes)
        self._dummy = self.hasher.hash(secrets.token_hex(16))

    @contextlib.contextmanager
    def _hash_slot(self):
        """At most ``concurrent_hashes`` argon2 computations at once; beyond that, refused at once
        (``err_busy``) rather than queued, so a flood costs its sender a retry, not the unit memory."""
        if not self._hashing.acquire(blocking=False):
            raise AuthError("err_busy")
        try:
            yield
        finally:
            self._hashing.release()

    def _read(self) -> dict[str, Account]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        return {n: Account(name=n, **a) for n, a in data.get("users", {}).items()}

    def _write(self, accounts: dict[str, Account]) -> None:
        data = {
            "users": {
                a.name: {"role": a.role, "hash": a.hash, "created": a.created, "changed": a.changed}
                for a in accounts.values()
            }
        }
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o600)

    def list(self) -> list[Account]:
        with self._lock:
            return sorted(self._read().values(), key=lambda a: a.name)

    def empty(self) -> bool:
        return not self.list()

    def get(self, name: str) -> Account | None:
        with self._lock:
            return self._read().get(name)

    def create(self, name: str, password: str, role: str) -> Account:
        check_username(name)
        check_password(password)
        if role not in ROLES:
            raise AuthError("err_role")
        with self._hash_slot():
            h = self.hasher.hash(password)
        with self._lock:
            accounts = self._read()
            if name in accounts:
                raise AuthError("err_user_exists")
            now = time.time()
            accounts[name] = Account(name=name, role=role, hash=h, created=now, changed=now)
            self._write(accounts)
            return accounts[name]

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        with self._hash_slot():
            h = self.hasher.hash(password)
        with self._lock:
            accounts = self._read()
            a = accounts[name]
            accounts[name] = Account(name=name, role=a.role, hash=h, created=a.created, changed=time.time())
            self._write(accounts)

    def delete(self, name: str) -> None:
        with self._lock:
            accounts = self._read()
            accounts.pop(name, None)
            self._write(accounts)

    def verify(self, name: str, password: str) -> Account | None:
        """Same cost whether or not the user exists, so timing does not reveal account names."""
        acct = self.get(name)
        with self._hash_slot():
            try:
                self.hasher.verify(acct.hash if acct else self._dummy, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return None
        return acct


@dataclass
class Session:
    token: str
    user: str
    role: str
    csrf: str
    expires: float
    created: float = field(default_factory=time.monotonic)
    flash: list[tuple[str, str]] = field(default_factory=list)
    """(kind, text) messages shown once on the next page (post/redirect/get)."""


class SessionStore:
    def __init__(self, lifetime_s: float, clock=time.monotonic):
        self.lifetime_s = lifetime_s
        self.clock = clock
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, role: str) -> Session:
        s = Session(
            token=secrets.token_urlsafe(32),
            user=user,
            role=role,
            csrf=secrets.token_urlsafe(32),
            expires=self.clock() + self.lifetime_s,
        )
        with self._lock:
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._by_token.get(token)
            if s is None:
                return None
            if s.expires <= self.clock():
                del self._by_token[token]
                return None
            return s

    def revoke(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)

    def revoke_user(self, user: str) -> int:
        with self._lock:
            gone = [t for t, s in self._by_token.items() if s.user == user]
            for t in gone:
                del self._by_token[t]
            return len(gone)


def csrf_ok(expected: str | None, got: str | None) -> bool:
    """Constant-time, on bytes: ``compare_digest`` raises on non-ASCII ``str`` (anyone could send one)."""
    return (
        bool(expected)
        and bool(got)
        and hmac.compare_digest(
            str(expected).encode("utf-8", "surrogateescape"), str(got).encode("utf-8", "surrogateescape")
        )
    )


@dataclass
class _Track:
    """One account name's sign-in state (monotonic times, except ``trusted``: wall-clock)."""

    fails: dict[str, list[float]] = field(default_factory=dict)
    """Recent failures per client address."""
    locked: dict[str, float] = field(default_factory=dict)
    """Client address -> locked until."""
    recent: list[float] = field(default_factory=list)
    """Failures from every address, for the per-account limit."""
    trusted: dict[str, float] = field(default_factory=dict)
    """Addresses that signed in to this account -> when (wall-clock), newest last."""

    def empty(self) -> bool:
        return not (self.fails or self.locked or self.recent or self.trusted)


class LoginThrottle:
    """Sign-in limits: a lockout per (account, client address), a limit per account over all addresses
    that slows guessing without locking the technician out, and a rate per address over all names.

    Why per (account, address): a lockout per account let anyone keep a known account locked (five
    wrong passwords every 15 minutes, from anywhere). Failures now lock only the address they come
    from. Guessing from many addresses is bounded by the per-account limit: past ``ACCOUNT_FACTOR x
    max_failures`` failures within the lockout window, the account refuses addresses that never signed
    in to it (``err_account_busy``) until the window moves on; addresses that did (the last
    ``TRUSTED_PER_ACCOUNT``, for ``TRUST_DAYS``) are not refused, so the technician's own laptop gets
    in while the unit is attacked.

    Only names of existing accounts (``is_account``; every name when it is None) are tracked in full
    and stored. Other names get the same rules in one in-memory table of at most ``MAX_UNKNOWN`` (the
    oldest forgotten first), so the answers do not tell which names exist, and spraying made-up names
    neither grows memory nor rewrites the file. Everything older than the window is pruned.

    With ``store``, the accounts' state survives a restart of the console: otherwise restarting it,
    or anything that makes systemd restart it, would hand a password guesser a fresh set of tries. The
    file holds wall-clock times (monotonic time restarts at boot) and is read back clamped to
    ``lockout_s``, so a clock step can never lock an address for longer. An unreadable file is reported
    and replaced; the per-address rate is per process and not stored.
    """

    ACCOUNT_FACTOR = 3
    TRUSTED_PER_ACCOUNT = 8
    TRUST_DAYS = 90.0
    MAX_UNKNOWN = 512
    MAX_ADDRESSES = 4096

    def __init__(
        self,
        max_failures: int,
        lockout_s: float,
        per_ip_per_minute: int,
        clock=time.monotonic,
        *,
        store: Path | None = None,
        wall=time.time,
        is_account: Callable[[str], bool] | None = None,
    ):
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.account_limit = self.ACCOUNT_FACTOR * max_failures
        self.per_ip = per_ip_per_minute
        self.clock = clock
        self.wall = wall
        self.is_account = is_account
        self.store = Path(store) if store is not None else None
        self.store_problem: str | None = None
        self._known: dict[str, _Track] = {}
        self._unknown: OrderedDict[str, _Track] = OrderedDict()
        self._ip: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()
        if self.store is not None:
            self._load()

    # ------------------------------------------------------------------ state
    def _known_name(self, user: str) -> bool:
        return self.is_account is None or self.is_account(user)

    def _track(self, user: str, known: bool, *, create: bool) -> _Track | None:
        if known:
            t = self._known.get(user) or self._unknown.pop(user, None)  # an account made since
            if t is None and create:
                t = _Track()
            if t is not None:
                self._known[user] = t
            return t
        t = self._unknown.get(user)
        if t is None and create:
            t = self._unknown[user] = _Track()
            while len(self._unknown) > self.MAX_UNKNOWN:
                self._unknown.popitem(last=False)
        if t is not None:
            self._unknown.move_to_end(user)
        return t

    def _prune(self, t: _Track, now: float) -> None:
        cut = now - self.lockout_s
        t.fails = {ip: kept for ip, ts in t.fails.items() if (kept := [x for x in ts if x > cut])}
        t.locked = {ip: until for ip, until in t.locked.items() if until > now}
        t.recent = sorted(x for x in t.recent if x > cut)
        old = self.wall() - self.TRUST_DAYS * 86400
        t.trusted = {ip: w for ip, w in t.trusted.items() if w > old}

    def _load(self) -> None:
        assert self.store is not None
        try:
            raw = json.loads(self.store.read_text("utf-8"))
            now, wall = self.clock(), self.wall()

            def ago(w: float) -> float:  # a stored time as "this long ago", clamped to the window
                return min(max(wall - float(w), 0.0), self.lockout_s)

            def left(w: float) -> float:  # a stored "until" as time left, never beyond the window
                return min(float(w) - wall, self.lockout_s)

            if "version" not in raw:  # before per-address lockouts: {"locked": {user: until}, "fails": ...}
                for user, until in dict(raw["locked"]).items():
                    if left(until) > 0:  # the account stays closed to new addresses that long
                        t = self._known.setdefault(str(user), _Track())
                        t.recent = [now - self.lockout_s + left(until)] * self.account_limit
                for user, times in dict(raw["fails"]).items():
                    t = self._known.setdefault(str(user), _Track())
                    t.recent += [now - ago(x) for x in times if ago(x) < self.lockout_s]
            else:
                for user, st in dict(raw["accounts"]).items():
                    t = _Track(
                        fails={str(ip): [now - ago(x) for x in ts] for ip, ts in dict(st["fails"]).items()},
                        locked={str(ip): now + left(u) for ip, u in dict(st["locked"]).items()},
                        recent=[now - ago(x) for x in st["recent"]],
                        trusted={str(ip): float(w) for ip, w in dict(st["trusted"]).items()},
                    )
                    self._prune(t, now)
                    if not t.empty():
                        self._known[str(user)] = t
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.store_problem = f"login throttle state {self.store} unreadable ({exc}); started empty"
            self._known.clear()

    def _save(self) -> None:
        """Under ``_lock``: existing accounts' state as wall-clock times, pruned."""
        if self.store is None:
            return
        now, wall = self.clock(), self.wall()
        accounts = {}
        for user, t in list(self._known.items()):
            self._prune(t, now)
            if t.empty() or not self._known_name(user):
                del self._known[user]  # nothing to keep, or the account was deleted
                continue
            accounts[user] = {
                "fails": {ip: [wall - (now - x) for x in ts] for ip, ts in t.fails.items()},
                "locked": {ip: wall + (u - now) for ip, u in t.locked.items()},
                "recent": [wall - (now - x) for x in t.recent],
                "trusted": t.trusted,
            }
        state = {"version": 2, "accounts": accounts}
        try:
            atomic_write(self.store, json.dumps(state, sort_keys=True).encode(), mode=0o600)
        except OSError as exc:  # a full or read-only disk must not break sign-in: the limits still hold
            self.store_problem = f"login throttle state {self.store} not saved ({exc})"

    # ------------------------------------------------------------------ the rules
    def rate(self, ip: str) -> None:
        """The per-address limit alone (counted now, before any hashing)."""
        now = self.clock()
        with self._lock:
            self._rate(ip, now)

    def _rate(self, ip: str, now: float) -> None:
        q = self._ip.get(ip)
        if q is None:
            q = self._ip[ip] = deque()
            while len(self._ip) > self.MAX_ADDRESSES:  # the oldest first: each has its own budget anyway
                self._ip.popitem(last=False)
        self._ip.move_to_end(ip)
        while q and q[0] < now - 60:
            q.popleft()
        if len(q) >= self.per_ip:
            raise AuthError("err_rate_limited")
        q.append(now)

    def check(self, user: str, ip: str) -> None:
        """Raises before any password is hashed, so a refused attempt costs the attacker nothing to probe."""
        known = self._known_name(user)
        now = self.clock()
        with self._lock:
            self._rate(ip, now)
            t = self._track(user, known, create=False)
            if t is None:
                return
            self._prune(t, now)
            until = t.locked.get(ip, 0.0)
            if until > now:
                raise AuthError("err_locked", minutes=max(1, round((until - now) / 60)))
            if len(t.recent) >= self.account_limit and ip not in t.trusted:
                wait = t.recent[-self.account_limit] + self.lockout_s - now
                raise AuthError("err_account_busy", minutes=max(1, round(wait / 60)))

    def failure(self, user: str, ip: str) -> bool:
        """Records a failed password from ``ip``; True if that address is now locked for the account."""
        known = self._known_name(user)
        now = self.clock()
        with self._lock:
            t = self._track(user, known, create=True)
            assert t is not None
            self._prune(t, now)
            fails = [*t.fails.get(ip, []), now]
            t.fails[ip] = fails
            t.recent.append(now)
            locked = len(fails) >= self.max_failures
            if locked:
                t.locked[ip] = now + self.lockout_s
                del t.fails[ip]
            if known:
                self._save()
            return locked

    def success(self, user: str, ip: str) -> None:
        """A correct password from ``ip``: its failures are forgotten and it counts as the account's own
        address (not refused by the per-account limit) from now on."""
        known = self._known_name(user)
        with self._lock:
            t = self._track(user, known, create=True)
            assert t is not None
            t.fails.pop(ip, None)
            t.trusted.pop(ip, None)
            t.trusted[ip] = self.wall()
            while len(t.trusted) > self.TRUSTED_PER_ACCOUNT:
                del t.trusted[next(iter(t.trusted))]
            if known:
                self._save()


def _normalise_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code or "").upper()


SETUP_CODE_LEN = 16
_SETUP_CODE = re.compile(rf"^[{SETUP_ALPHABET}]{{{SETUP_CODE_LEN}}}$")


class SetupCode:
    """One-time code that authorises creating the first technician account.

    Only a well-formed code (16 characters of ``SETUP_ALPHABET``, 80 bits) counts: an empty file (a
    ``touch``, a full disk, a bad edit) or a short one would otherwise let anyone create the first
    account with an empty (or guessable) code. Such a file is treated as missing: replaced by a new code.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> str | None:
        """The stored code, normalised; None when missing, unreadable or not a well-formed code."""
        try:
            real = _normalise_code(self.path.read_text("ascii"))
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return real if _SETUP_CODE.match(real) else None

    def ensure(self, announce: Callable[[str], None] | None = None) -> str:
        """Returns the current code, creating it (0600) if missing or not a well-formed code; a new
        code is passed to ``announce`` (the journal: nobody could use it otherwise)."""
        real = self._read()
        if real is not None:
            return "-".join(real[i : i + 4] for i in range(0, SETUP_CODE_LEN, 4))
        raw = "".join(secrets.choice(SETUP_ALPHABET) for _ in range(SETUP_CODE_LEN))
        code = "-".join(raw[i : i + 4] for i in range(0, SETUP_CODE_LEN, 4))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, (code + "\n").encode(), mode=0o600)
        if announce is not None:
            announce(code)
        return code

    def active(self) -> bool:
        return self.path.exists()

    def verify(self, code: str) -> bool:
        """Never true for a missing or malformed stored code, nor for an empty answer."""
        real = self._read()
        given = _normalise_code(code)
        if real is None or not given:
            return False
        return hmac.compare_digest(real.encode(), given.encode())

    def consume(self) -> None:
        self.path.unlink(missing_ok=True)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
