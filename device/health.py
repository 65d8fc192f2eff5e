"""Liveness of the daemon's stages and the few host facts the status message reports.

:class:`Heartbeats` is what makes the systemd watchdog meaningful: the supervisor pings WATCHDOG=1 only
while every registered stage has beaten within its allowed silence, so a hung thread (a blocked serial
read, a deadlocked encoder) gets the whole unit restarted instead of silently dropping violations.
The host helpers read ``/proc`` and ``/sys`` directly: cheap, no subprocess, and None when a fact is not
available (a container has no thermal zones) rather than a made-up number.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict


@dataclass(frozen=True, slots=True)
class StageHealth:
    name: str
    max_silence_s: float
    last_beat_mono_ns: int | None
    """None until the stage has beaten once (registration time counts as the start of its silence)."""
    silence_s: float
    stale: bool
    beats: int
    """Calls to :meth:`Heartbeats.beat` (probed progress is not counted)."""
    error: str = ""


Probe = Callable[[], int | None]
"""Returns the monotonic ns of a stage's last progress (for stages that keep their own ``heartbeat_ns``)."""


class Heartbeats:
    """Stages register with a maximum silence; :meth:`stale` lists those that exceeded it.

    A stage either calls :meth:`beat` from its loop (push) or is registered with a ``probe`` that reads
    the timestamp the stage already keeps (pull: no dependency from the stage on this module). Both may
    be used; the later of the two counts. ``clock`` returns monotonic nanoseconds; tests inject a fake.
    """

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._max_ns: dict[str, int] = {}
        self._registered_ns: dict[str, int] = {}
        self._last_ns: dict[str, int | None] = {}
        self._beats: dict[str, int] = {}
        self._probes: dict[str, Probe] = {}
        self.reported_stale: list[str] = []
        """What :func:`watchdog_tick` last told systemd was stalled: a recovery sets the status back."""

    def register(self, stage: str, max_silence_s: float, probe: Probe | None = None) -> None:
        """(Re)registers a stage. Its silence starts counting now, so a stage that never starts is caught."""
        if max_silence_s <= 0:
            raise ValueError(f"max_silence_s for {stage!r} must be > 0, got {max_silence_s}")
        now = self._clock()
        with self._lock:
            self._max_ns[stage] = int(max_silence_s * 1e9)
            self._registered_ns[stage] = now
            self._last_ns[stage] = None
            self._beats[stage] = 0
            if probe is not None:
                self._probes[stage] = probe
            else:
                self._probes.pop(stage, None)

    def unregister(self, stage: str) -> None:
        """For stages that end on purpose (shutdown, disabled uplink): they must not trip the watchdog."""
        with self._lock:
            for d in (self._max_ns, self._registered_ns, self._last_ns, self._beats, self._probes):
                d.pop(stage, None)

    def beat(self, stage: str) -> None:
        """Called by a stage's loop each time it makes progress. Unknown stages are an error (a typo)."""
        now = self._clock()
        with self._lock:
            if stage not in self._max_ns:
                raise KeyError(f"heartbeat from unregistered stage {stage!r}")
            self._last_ns[stage] = now
            self._beats[stage] += 1

    @property
    def stages(self) -> list[str]:
        with self._lock:
            return sorted(self._max_ns)

    def snapshot(self) -> list[StageHealth]:
        with self._lock:
            entries = [
                (
                    n,
                    self._max_ns[n],
                    self._registered_ns[n],
                    self._last_ns[n],
                    self._beats[n],
                    self._probes.get(n),
                )
                for n in sorted(self._max_ns)
            ]
        now = self._clock()
        out: list[StageHealth] = []
        for name, max_ns, registered, last, beats, probe in entries:
            error = ""
            if probe is not None:
                try:
                    probed = probe()
                except Exception as exc:  # a broken stage object is a dead stage, not a crashed supervisor
                    probed, error = None, f"probe failed: {exc}"[:200]
                if probed is not None and probed > registered and (last is None or probed > last):
                    last = probed
            since = last if last is not None else registered
            silence_ns = now - since
            out.append(
                StageHealth(
                    name=name,
                    max_silence_s=max_ns / 1e9,
                    last_beat_mono_ns=last,
                    silence_s=silence_ns / 1e9,
                    stale=bool(error) or silence_ns > max_ns,
                    beats=beats,
                    error=error,
                )
            )
        return out

    def stale(self) -> list[str]:
        return [s.name for s in self.snapshot() if s.stale]

    def all_alive(self) -> bool:
        return not self.stale()


def watchdog_tick(heartbeats: Heartbeats, notifier: object) -> list[str]:
    """One supervisor tick: pings the watchdog only when nothing is stale; returns the stale stages.

    ``notifier`` is a :class:`device.sdnotify.Notifier` (typed loosely to keep this module import-free).
    """
    stale = heartbeats.stale()
    if not stale:
        notifier.watchdog()  # type: ignore[attr-defined]
        if heartbeats.reported_stale:  # `systemctl status` must not keep saying "stalled" once it is over
            notifier.status("running")  # type: ignore[attr-defined]
    elif stale != heartbeats.reported_stale:
        notifier.status("stalled: " + ", ".join(stale))  # type: ignore[attr-defined]
    heartbeats.reported_stale = stale
    return stale


# --------------------------------------------------------------------------- host facts


class DiskUsage(TypedDict):
    path: str
    total_bytes: int
    free_bytes: int
    """Available to an unprivileged user (what the daemon can actually write)."""
    free_fraction: float


def disk_free(path: str | os.PathLike[str]) -> DiskUsage:
    """Free space on the filesystem holding ``path`` (the nearest existing parent if it does not exist).

    A plain dict so it drops straight into the retained ``status`` JSON.
    """
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return DiskUsage(
        path=str(path), total_bytes=total, free_bytes=free, free_fraction=free / total if total else 0.0
    )


def cpu_temperature_c(zones: Iterable[str] | None = None) -> float | None:
    """Hottest thermal zone in °C, or None when the host exposes none (containers, some VMs).

    The Pi's SoC sensor is ``cpu-thermal``; taking the maximum over all zones keeps this right on boards
    that expose several. Unreadable or garbage zones are skipped, not guessed.
    """
    paths = sorted(glob.glob("/sys/class/thermal/thermal_zone*/temp")) if zones is None else list(zones)
    best: float | None = None
    for path in paths:
        try:
            raw = Path(path).read_text().strip()
            value = int(raw) / 1000.0  # millidegrees Celsius
        except (OSError, ValueError):
            continue
        if best is None or value > best:
            best = value
    return best


def uptime_s(proc_uptime: str | os.PathLike[str] = "/proc/uptime") -> float | None:
    try:
        return float(Path(proc_uptime).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def memory_available_bytes(proc_meminfo: str | os.PathLike[str] = "/proc/meminfo") -> int | None:
    try:
        for line in Path(proc_meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def host_status(state_dir: str | os.PathLike[str]) -> dict[str, object]:
    """The host part of the retained ``status`` JSON: plain numbers, None when unknown."""
    disk = disk_free(state_dir)
    return {
        "disk_free_bytes": disk["free_bytes"],
        "disk_total_bytes": disk["total_bytes"],
        "cpu_temp_c": cpu_temperature_c(),
        "uptime_s": uptime_s(),
        "load": load_average(),
        "mem_available_bytes": memory_available_bytes(),
        "cpu_count": os.cpu_count(),
    }
