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
from collections import deque
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
    return bool(expected) and bool(got) and hmac.compare_digest(str(expected), str(got))


class LoginThrottle:
    """Per-account lockout after N failures, plus a per-address rate limit against spraying many names.

    With ``store``, the per-account state (recent failures, lockouts) survives a restart of the console:
    otherwise restarting it, or anything that makes systemd restart it, would hand a password guesser a
    fresh set of tries. The file holds wall-clock times (monotonic time restarts at boot) and is read
    back clamped to ``lockout_s``, so a clock step can never lock an account for longer. An unreadable
    file is reported and replaced; the per-address limit is per process and not stored.
    """

    def __init__(
        self,
        max_failures: int,
        lockout_s: float,
        per_ip_per_minute: int,
        clock=time.monotonic,
        *,
        store: Path | None = None,
        wall=time.time,
    ):
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.per_ip = per_ip_per_minute
        self.clock = clock
        self.wall = wall
        self.store = Path(store) if store is not None else None
        self.store_problem: str | None = None
        self._fails: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._ip: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        if self.store is not None:
            self._load()

    def _load(self) -> None:
        assert self.store is not None
        try:
            raw = json.loads(self.store.read_text("utf-8"))
            locked, fails = dict(raw["locked"]), dict(raw["fails"])
            now, wall = self.clock(), self.wall()
            for user, until in locked.items():
                left = min(float(until) - wall, self.lockout_s)
                if left > 0:
                    self._locked_until[str(user)] = now + left
            for user, times in fails.items():
                ages = [min(max(wall - float(t), 0.0), self.lockout_s) for t in times]
                kept = [now - age for age in ages if age < self.lockout_s]
                if kept:
                    self._fails[str(user)] = sorted(kept)
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self.store_problem = f"login throttle state {self.store} unreadable ({exc}); started empty"
            self._locked_until.clear()
            self._fails.clear()

    def _save(self) -> None:
        """Under ``_lock``: the per-account state as wall-clock times."""
        if self.store is None:
            return
        now, wall = self.clock(), self.wall()
        state = {
            "locked": {u: wall + (t - now) for u, t in self._locked_until.items() if t > now},
            "fails": {u: [wall - (now - t) for t in ts] for u, ts in self._fails.items() if ts},
        }
        try:
            atomic_write(self.store, json.dumps(state, sort_keys=True).encode(), mode=0o600)
        except OSError as exc:  # a full or read-only disk must not break sign-in: the lockout still holds
            self.store_problem = f"login throttle state {self.store} not saved ({exc})"

    def rate(self, ip: str) -> None:
        """The per-address limit alone (counted now, before any hashing)."""
        now = self.clock()
        with self._lock:
            self._rate(ip, now)

    def _rate(self, ip: str, now: float) -> None:
        q = self._ip.setdefault(ip, deque())
        while q and q[0] < now - 60:
            q.popleft()
        if len(q) >= self.per_ip:
            raise AuthError("err_rate_limited")
        q.append(now)

    def check(self, user: str, ip: str) -> None:
        """Raises before any password is hashed, so a locked account costs the attacker nothing to probe."""
        now = self.clock()
        with self._lock:
            self._rate(ip, now)
            until = self._locked_until.get(user, 0.0)
            if until > now:
                raise AuthError("err_locked", minutes=max(1, round((until - now) / 60)))

    def failure(self, user: str) -> bool:
        """Records a failure; True if the account is now locked."""
        now = self.clock()
        with self._lock:
            fails = [t for t in self._fails.get(user, []) if t > now - self.lockout_s] + [now]
            self._fails[user] = fails
            locked = len(fails) >= self.max_failures
            if locked:
                self._locked_until[user] = now + self.lockout_s
                self._fails[user] = []
            self._save()
            return locked

    def success(self, user: str) -> None:
        with self._lock:
            if self._fails.pop(user, None):
                self._save()


def _normalise_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code or "").upper()


class SetupCode:
    """One-time code that authorises creating the first technician account."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def ensure(self) -> str:
        """Returns the current code, creating it (0600) if missing."""
        try:
            return self.path.read_text("ascii").strip()
        except FileNotFoundError:
            pass
        raw = "".join(secrets.choice(SETUP_ALPHABET) for _ in range(16))
        code = "-".join(raw[i : i + 4] for i in range(0, 16, 4))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, (code + "\n").encode(), mode=0o600)
        return code

    def active(self) -> bool:
        return self.path.exists()

    def verify(self, code: str) -> bool:
        try:
            real = self.path.read_text("ascii").strip()
        except FileNotFoundError:
            return False
        return hmac.compare_digest(_normalise_code(real).encode(), _normalise_code(code).encode())

    def consume(self) -> None:
        self.path.unlink(missing_ok=True)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
