"""How far the wall clock can be trusted, and when it jumped.

Evidence carries UTC, and UTC is only evidence if the clock was synchronised: every packet therefore
says whether it was, by which source, and with what error bound. Reading that state costs a subprocess
(chronyc) or a syscall (adjtimex), so :class:`ClockMonitor` refreshes it in the background and
:meth:`ClockMonitor.stamp` only combines the cached state with ``time.time_ns()`` /
``time.monotonic_ns()``: no subprocess ever runs on the radar or camera path.

Sign convention for ``offset_ns`` (both sources agree): the correction still to be applied to the
system clock, i.e. *true time − system time*; positive means the system clock is behind.

Jump detection: ``utc − mono`` is constant while the clock only slews (NTP slews at most 500 ppm); a
change above ``jump_threshold_ms`` between two refreshes means someone stepped the clock (chrony
``makestep``, a manual ``date -s``, an RTC read after boot). That is an audited event.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from device.config import ClockConfig
from device.model import ClockStamp

log = logging.getLogger(__name__)

SUBPROCESS_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class SyncState:
    """One reading of the synchronisation state (what the packet's clock fields are built from)."""

    synchronized: bool
    source: str
    """``ntp``, ``gps``, ``pps``, ``rtc``, ``none`` or ``unknown`` (as in :class:`ClockStamp`)."""
    method: str
    """How it was read: ``chrony``, ``timedatectl``, ``adjtimex``, ``assume`` or ``error``."""
    offset_ns: int | None = None
    max_error_ns: int | None = None
    detail: str = ""
    """Human-readable extra: reference name, stratum, leap status, or the error that occurred."""
    ref_time_ns: int | None = None
    """UTC of the source's last measurement (chrony's "Ref time"), when the source says: after a step of
    the clock, only a measurement made since says anything about the new time."""
    over_max_error: bool = False
    """The source called itself synchronised but its error bound exceeds ``clock.max_error_ms``."""


class ClockSourceError(RuntimeError):
    """A clock source could not be read (tool missing, daemon not running, unparseable output)."""


# --------------------------------------------------------------------------- chrony


LOCAL_REFID = 0x7F7F0101
JUMP_HOLD_S = 1024.0
"""After a step of the clock, a source that gives no measurement time is not trusted for this long
(chrony's longest default poll): its cached "synchronised" predates the step."""

_REFCLOCK_SOURCES = {
    "GPS": "gps", "NMEA": "gps", "GNSS": "gps", "SHM": "gps", "SOC": "gps",  # SHM / SOC: gpsd's feeds
    "PPS": "pps", "PHC": "pps", "RTC": "rtc",
}  # fmt: skip
"""chrony reference-clock names (``refclock ... refid NAME``, default the driver name plus a digit) by
their letters; an NTP server is never looked up here, whatever its address spells in ASCII."""
_LEAP_SYNCED = frozenset({"Normal", "Insert second", "Delete second"})
"""chrony's leap states of a synchronised clock; "Not synchronised" and anything else (an "Invalid"
state, a string of a newer chrony) is not one."""


def parse_chronyc_tracking(text: str) -> SyncState:
    """Parses ``chronyc -c tracking`` (one CSV line, 14 fields).

    Fields: ref id (hex), ref name, stratum, ref time, system time (correction, s), last offset, RMS
    offset, frequency, residual freq, skew, root delay, root dispersion, update interval, leap status.
    Max error follows chrony's documented bound: |system time| + root delay / 2 + root dispersion.
    """
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    fields = line.strip().split(",")
    if len(fields) < 14:
        raise ClockSourceError(f"chronyc tracking: expected 14 CSV fields, got {len(fields)}: {line[:120]!r}")
    try:
        ref_id = int(fields[0], 16)
        name = fields[1]
        stratum = int(fields[2])
        correction_s = float(fields[4])
        root_delay_s = float(fields[10])
        root_dispersion_s = float(fields[11])
    except ValueError as exc:
        raise ClockSourceError(f"chronyc tracking: unparseable field ({exc}): {line[:120]!r}") from None
    leap = fields[13].strip()
    try:
        ref_time_ns: int | None = int(Decimal(fields[3]) * 1_000_000_000) or None  # exact: 19 digits
    except (ValueError, ArithmeticError):
        ref_time_ns = None
    max_error_s = abs(correction_s) + root_delay_s / 2 + root_dispersion_s
    # 127.127.1.1 is chrony's "local stratum N": the machine serving its own free-running clock.
    local = ref_id == LOCAL_REFID
    synced = leap in _LEAP_SYNCED and ref_id != 0 and not local and 0 < stratum < 16
    if not synced:
        source = "none"
    elif stratum == 1 and not any(c in name for c in ".:"):
        # A reference clock: chrony names it by its ref id ("PPS0", "GPS", "SHM0"); a server is named by
        # its address or host name, so a server at 78.77.69.65 (ASCII "NMEA") is not taken for a GPS.
        label = name.strip().upper()
        if label == fields[0].strip().upper():  # printed as the ref id's hex: its ASCII is the name
            label = ref_id.to_bytes(4, "big").rstrip(b"\0").decode("ascii", "replace").upper()
        source = _REFCLOCK_SOURCES.get(label.rstrip("0123456789"), "unknown")
    else:
        source = "ntp"
    return SyncState(
        synchronized=synced,
        source=source,
        method="chrony",
        offset_ns=round(correction_s * 1e9),
        max_error_ns=round(max_error_s * 1e9),
        detail=f"ref={name} stratum={stratum} leap={leap}"
        + ("; local clock, no outside source" if local else ""),
        ref_time_ns=ref_time_ns,
    )


def _run_tool(name: str, args: list[str]) -> str:
    """stdout of a clock tool, or ClockSourceError naming what went wrong (never blocks for long)."""
    exe = shutil.which(name)
    if exe is None:
        raise ClockSourceError(f"{name} not installed")
    what = " ".join([name, *args[-1:]])
    try:
        proc = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClockSourceError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        raise ClockSourceError(f"{what} exit {proc.returncode}: {proc.stderr.strip()[:200]}")
    return proc.stdout


def read_chrony(chronyc: str = "chronyc") -> SyncState:
    return parse_chronyc_tracking(_run_tool(chronyc, ["-c", "-n", "tracking"]))


# --------------------------------------------------------------------------- timedatectl


def parse_timedatectl(text: str) -> SyncState:
    """Parses ``timedatectl show -p NTPSynchronized`` (``NTPSynchronized=yes|no``). No error bound."""
    for line in text.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "NTPSynchronized":
            if value not in ("yes", "no"):
                raise ClockSourceError(f"timedatectl: unexpected NTPSynchronized value {value!r}")
            synced = value == "yes"
            return SyncState(synced, "ntp" if synced else "none", "timedatectl", detail=line.strip())
    raise ClockSourceError(f"timedatectl: no NTPSynchronized in output {text[:120]!r}")


def read_timedatectl() -> SyncState:
    return parse_timedatectl(_run_tool("timedatectl", ["show", "-p", "NTPSynchronized"]))


# --------------------------------------------------------------------------- adjtimex


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """``struct timex`` from <sys/timex.h> (the legacy ``adjtimex`` symbol's layout on every arch).

    ``long`` fields map to ``c_long`` so the same definition is right on arm64, armhf and x86_64.
    """

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int * 11),
    )


STA_PPSSIGNAL = 0x0100
STA_PPSTIME = 0x0004
STA_UNSYNC = 0x0040
STA_NANO = 0x2000
TIME_ERROR = 5


@dataclass(frozen=True, slots=True)
class Adjtimex:
    """The raw kernel answer, kept so the numbers in a packet can be traced to the syscall."""

    state: int
    status: int
    offset_ns: int
    maxerror_us: int
    esterror_us: int


_libc: ctypes.CDLL | None = None


def adjtimex_raw() -> Adjtimex:
    """adjtimex(2) with ``modes = 0``: read-only, allowed for any user and any seccomp @system-service."""
    global _libc  # a CDLL handle is a process-wide cache, not state
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    tx = _Timex()
    tx.modes = 0
    ret = _libc.adjtimex(ctypes.byref(tx))
    if ret == -1:
        err = ctypes.get_errno()
        raise ClockSourceError(f"adjtimex failed: errno {err}")
    offset_ns = tx.offset if tx.status & STA_NANO else tx.offset * 1000
    return Adjtimex(ret, tx.status, offset_ns, tx.maxerror, tx.esterror)


def state_from_adjtimex(raw: Adjtimex) -> SyncState:
    """The kernel's view: synchronised unless STA_UNSYNC is set or the clock state is TIME_ERROR."""
    synced = not (raw.status & STA_UNSYNC) and raw.state != TIME_ERROR
    if not synced:
        source = "none"
    elif raw.status & STA_PPSTIME and raw.status & STA_PPSSIGNAL:
        source = "pps"
    else:
        source = "ntp"
    return SyncState(
        synchronized=synced,
        source=source,
        method="adjtimex",
        offset_ns=raw.offset_ns,
        max_error_ns=raw.maxerror_us * 1000,
        detail=f"state={raw.state} status=0x{raw.status:04x} esterror_us={raw.esterror_us}",
    )


def read_adjtimex() -> SyncState:
    return state_from_adjtimex(adjtimex_raw())


# --------------------------------------------------------------------------- source selection


def read_auto() -> SyncState:
    """chrony when it answers (most detail: reference, stratum), else the kernel via adjtimex.

    timedatectl is not in the chain: its NTPSynchronized is itself derived from adjtimex, with less
    information and a D-Bus round trip.
    """
    try:
        return read_chrony()
    except ClockSourceError as exc:
        state = read_adjtimex()
        return replace(state, detail=f"{state.detail} (chrony: {exc})")


def reader_for(source: str) -> Callable[[], SyncState]:
    if source == "auto":
        return read_auto
    if source == "chrony":
        return read_chrony
    if source == "timedatectl":
        return read_timedatectl
    if source == "adjtimex":
        return read_adjtimex
    if source == "assume-synced":
        return lambda: SyncState(True, "unknown", "assume", 0, 0, "assumed synchronised (test setting)")
    if source == "assume-unsynced":
        return lambda: SyncState(False, "none", "assume", detail="assumed unsynchronised (test setting)")
    raise ValueError(f"unknown clock source {source!r}")


# --------------------------------------------------------------------------- monitor


JumpCallback = Callable[[int, int], None]


class ClockMonitor:
    """Cached synchronisation state + cheap stamps + clock-jump events.

    ``reader``, ``wall_ns`` and ``mono_ns`` are injectable so tests can simulate a stepped clock.
    ``on_jump(old_offset_ns, new_offset_ns)`` receives the two ``utc − mono`` values in nanoseconds.
    """

    def __init__(
        self,
        cfg: ClockConfig,
        *,
        on_jump: JumpCallback | None = None,
        reader: Callable[[], SyncState] | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._cfg = cfg
        self._reader = reader or reader_for(cfg.source)
        self._wall = wall_ns
        self._mono = mono_ns
        self._on_jump = on_jump
        self._lock = threading.Lock()
        self._last_refresh_mono: int | None = None
        self._published: tuple[SyncState, int | None] = (
            SyncState(False, "unknown", "none", detail="not read yet"),
            None,
        )
        """(sync state, ``utc - mono`` when it was read): one immutable pair, written once per refresh, so
        :meth:`stamp` reads both without the lock. Read apart, a stamp between two writes could pair the
        old, synchronised state with the new base offset and miss the step it had just seen."""
        self._jumps = 0
        # (mono, source's ref time) at the refresh that saw the last step not yet vouched for
        self._stepped_at: tuple[int, int | None] | None = None
        self._last_ref_time: int | None = None  # the source's latest ref time, kept across failed reads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- hot path

    def _pair(self) -> tuple[int, int]:
        """UTC and monotonic read back to back; the monotonic value is the midpoint around the UTC read."""
        m1 = self._mono()
        u = self._wall()
        m2 = self._mono()
        return u, (m1 + m2) // 2

    def stamp(self) -> ClockStamp:
        """Now, with the cached sync state. A step of the clock since the last refresh (seen as a change
        of ``utc - mono``) makes this stamp unsynchronised at once: evidence must not claim a trusted
        time in the seconds before the background refresh reports the jump."""
        utc, mono = self._pair()
        st, base = self._published
        stepped = base is not None and abs(utc - mono - base) > self._cfg.jump_threshold_ms * 1_000_000
        return ClockStamp(
            utc_ns=utc,
            mono_ns=mono,
            synchronized=st.synchronized and not stepped,
            source=st.source,
            offset_ns=st.offset_ns,
            max_error_ns=st.max_error_ns,
        )

    def utc_for_mono(self, mono_ns: int) -> int:
        """UTC of an earlier monotonic instant (a radar reading, a frame) using the current offset."""
        utc, mono = self._pair()
        return mono_ns + (utc - mono)

    @property
    def state(self) -> SyncState:
        return self._published[0]

    @property
    def jumps(self) -> int:
        return self._jumps

    # -- refresh (background)

    def refresh(self) -> SyncState:
        """Reads the source (may run a subprocess), applies ``max_error_ms``, checks for a jump."""
        try:
            state = self._reader()
        except Exception as exc:  # any reader failure means "cannot vouch for the clock"
            state = SyncState(False, "unknown", "error", detail=str(exc)[:300])
        limit_ns = int(self._cfg.max_error_ms * 1e6)
        if state.synchronized and state.max_error_ns is not None and state.max_error_ns > limit_ns:
            state = replace(
                state,
                synchronized=False,
                over_max_error=True,
                detail=f"{state.detail}; max error {state.max_error_ns} ns above {limit_ns} ns",
            )
        utc, mono = self._pair()
        offset = utc - mono
        jump: tuple[int, int] | None = None
        with self._lock:
            threshold_ns = self._cfg.jump_threshold_ms * 1_000_000
            base = self._published[1]
            if base is not None and abs(offset - base) > threshold_ns:
                jump = (base, offset)
                self._jumps += 1
                ref = state.ref_time_ns if state.ref_time_ns is not None else self._last_ref_time
                self._stepped_at = (mono, ref)
            if state.ref_time_ns is not None:
                self._last_ref_time = state.ref_time_ns
            state = self._after_step(state, mono)
            self._published = (state, offset)
            self._last_refresh_mono = mono
        if jump is not None:
            log.warning("clock jump: utc-mono moved by %d ns", jump[1] - jump[0])
            if self._on_jump is not None:
                try:
                    self._on_jump(*jump)
                except Exception:
                    log.exception("clock jump callback failed")
        return state

    def _after_step(self, state: SyncState, mono: int) -> SyncState:
        """Since the last step (``date -s``, an RTC read), the source's "synchronised" may be the one it
        had before (chrony reports its last poll's state until the next one): untrusted until it has
        measured since the step, or for ``JUMP_HOLD_S`` when it cannot say when it measured.

        "Measured since" is a reference time different from the one read when the step was seen, not
        one later than the post-step wall time: chrony's reference time is wall time, which the step
        moved, so after a step backwards the stale one already lies "after" it."""
        if self._stepped_at is None or not state.synchronized:
            return state
        step_mono, ref_at_step = self._stepped_at
        if state.ref_time_ns is not None:
            if state.ref_time_ns != ref_at_step:
                self._stepped_at = None
                return state
        elif mono - step_mono > JUMP_HOLD_S * 1e9:
            self._stepped_at = None
            return state
        return replace(
            state,
            synchronized=False,
            detail=f"{state.detail}; clock stepped: not trusted until the source has measured since",
        )

    def maybe_refresh(self) -> bool:
        """Refreshes when ``refresh_s`` has passed since the last refresh; for a caller's own loop
        (the supervisor) instead of :meth:`start`'s thread. Returns True when it refreshed."""
        last = self._last_refresh_mono
        if last is not None and self._mono() - last < self._cfg.refresh_s * 1e9:
            return False
        self.refresh()
        return True

    def start(self) -> None:
        """Refreshes once now (so the first stamp is already meaningful), then every ``refresh_s``."""
        self.refresh()
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._cfg.refresh_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=SUBPROCESS_TIMEOUT_S + 1)
            self._thread = None

    def __enter__(self) -> ClockMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, object]:
        """For the retained ``status`` JSON."""
        st = self._published[0]
        return {
            "synchronized": st.synchronized,
            "source": st.source,
            "method": st.method,
            "offset_ns": st.offset_ns,
            "max_error_ns": st.max_error_ns,
            "detail": st.detail,
            "jumps": self._jumps,
        }
