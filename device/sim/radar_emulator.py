"""An OPS24x radar module on a real pseudo-terminal, driven by a traffic scenario.

The reader under test opens :attr:`RadarEmulator.port` with pyserial exactly as it would open
``/dev/ttyACM0``. The emulator answers the module's commands with the module's JSON replies, then
streams what the module would report for the vehicles in the beam at each sample (radial speed, i.e.
with the cosine effect, plus small seeded noise, aliased like the real sampler above the sampling rate's
maximum), in the units and output format the commands selected.
``unplug()`` closes the pty (the reader's next read fails, the link disappears) and ``replug()`` opens a
fresh one behind the same link path, which is what a USB re-enumeration looks like to the host.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import select
import tempfile
import threading
import time
import tty
from pathlib import Path

from device.model import Direction
from device.sensors.ops24x import OU_NAMES, SAMPLE_RATES, TO_KMH, UNIT_ALIASES, UNIT_REPLIES, max_speed_kmh
from device.sim.scenario import Scenario, Vehicle

_UNIT_CMDS = {"UM": "mps", "UK": "kmh", "US": "mph", "UF": "fps", "UC": "cmps"}
_FLAGS = {"J": "json", "T": "time", "M": "magnitude", "U": "unit", "S": "speed"}
_FLAG_NAMES = {
    "json": "JSONmode",
    "time": "Time",
    "magnitude": "Magnitude",
    "unit": "Units",
    "speed": "Speed",
}
BOOT_OFFSET_S = 5.0
"""The module's clock (OT time) reads this many seconds at scenario t=0 (it booted a bit earlier)."""


def alias_kmh(signed_kmh: float, vmax_kmh: float) -> float:
    """What a complex (I/Q) Doppler sampler reports for a signed radial speed: its FFT spans
    ``-vmax..+vmax``, so a faster target folds into the opposite sign (SX, vmax ~111.8 km/h: 120 km/h
    inbound reads as ~-103.6 km/h, i.e. outbound)."""
    return (signed_kmh + vmax_kmh) % (2.0 * vmax_kmh) - vmax_kmh


class RadarEmulator:
    def __init__(
        self,
        scenario: Scenario,
        *,
        epoch_mono_ns: int | None = None,
        realtime: bool = True,
        rate_hz: float = 20.0,
        link_dir: Path | None = None,
        noise_kmh: float = 0.15,
        garbage_rate: float = 0.0,
        product: str = "OPS243",
    ) -> None:
        self.scenario = scenario
        self.epoch_mono_ns = epoch_mono_ns
        self.realtime = realtime
        self.rate_hz = rate_hz
        self.noise_kmh = noise_kmh
        self.garbage_rate = garbage_rate
        self.product = product
        self._rng = random.Random(scenario.seed)
        self._own_dir = link_dir is None
        self._dir = Path(link_dir) if link_dir is not None else Path(tempfile.mkdtemp(prefix="radar-emu-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        self._link = self._dir / "radar0"
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._cmd_buf = b""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.done = threading.Event()
        # module state (power-on defaults of the OPS24x: m/s, plain numbers, one object, both directions)
        self.units = "mps"
        self.flags = {"json": False, "time": False, "magnitude": False, "unit": False, "speed": True}
        self.objects = 1
        self.min_speed = 0.0
        self.direction_filter = "both"
        self.sample_rate = "SX"
        self.blank: bytes | None = None
        self.commands: list[str] = []
        """Every command received, in order (for tests and technicians)."""
        self.lines_sent = 0
        self.garbage_sent = 0

    # ------------------------------------------------------------------ pty management

    @property
    def port(self) -> str:
        return str(self._link)

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass through like a USB CDC port
        os.set_blocking(master, False)
        tmp = self._dir / f".radar0.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self._link)
        self._master, self._slave = master, slave

    def unplug(self) -> None:
        """Closes the pty and removes the link: the reader sees an I/O error, then no such file."""
        self._close_pty(power_loss=True)

    def _close_pty(self, *, power_loss: bool) -> None:
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                self._link.unlink()
            for fd in (self._master, self._slave):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._master = self._slave = None
            self._cmd_buf = b""
            if not power_loss:
                return
            # a real module loses its settings when unpowered
            self.units, self.objects, self.blank, self.sample_rate = "mps", 1, None, "SX"
            self.flags = {"json": False, "time": False, "magnitude": False, "unit": False, "speed": True}

    def replug(self) -> None:
        with self._lock:
            if self._master is None:
                self._open_pty()

    def start(self) -> RadarEmulator:
        with self._lock:
            self._open_pty()
        if self.epoch_mono_ns is None:
            self.epoch_mono_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="radar-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._close_pty(power_loss=False)
        if self._own_dir:
            with contextlib.suppress(OSError):
                self._dir.rmdir()

    def __enter__(self) -> RadarEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ main loop

    def _run(self) -> None:
        assert self.epoch_mono_ns is not None
        period = 1.0 / self.rate_hz
        i = 0
        while not self._stop.is_set():
            t_s = i * period
            if self.realtime:
                wait = (self.epoch_mono_ns + int(t_s * 1e9) - time.monotonic_ns()) / 1e9
                self._serve_commands(max(wait, 0.0))
            else:
                self._serve_commands(0.0)
            if t_s > self.scenario.duration_s:
                self.done.set()
                self._serve_commands(0.05)
                continue
            if self.garbage_rate and self._rng.random() < self.garbage_rate:
                junk = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(1, 40)))
                self._write(junk.replace(b"\n", b"") + b"\r\n")
                self.garbage_sent += 1
            line = self.render(t_s)
            if line is not None:
                self._write(line)
                self.lines_sent += 1
            i += 1

    def _serve_commands(self, timeout: float) -> None:
        """Waits up to ``timeout`` for command bytes and answers every complete command."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                fd = self._master
            remaining = deadline - time.monotonic()
            if fd is None:
                if remaining > 0:
                    self._stop.wait(min(remaining, 0.02))
                    continue
                return
            try:
                r, _, _ = select.select([fd], [], [], max(remaining, 0.0))
            except (OSError, ValueError):
                r = []
            if r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                self._cmd_buf += data
                while True:
                    cut = min(
                        (i for i in (self._cmd_buf.find(b"\r"), self._cmd_buf.find(b"\n")) if i >= 0),
                        default=-1,
                    )
                    if cut < 0:
                        break
                    cmd, self._cmd_buf = self._cmd_buf[:cut], self._cmd_buf[cut + 1 :]
                    cmd = cmd.strip()
                    if cmd:
                        self._write(self.answer(cmd.decode("ascii", "replace")))
            if remaining <= 0 or self._stop.is_set():
                return

    def _write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            fd = self._master
            if fd is None:
                return
            view = memoryview(data)
            deadline = time.monotonic() + (5.0 if not self.realtime else 0.2)
            while view:
                try:
                    n = os.write(fd, view)
                    view = view[n:]
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return  # nobody reading: a real module's USB buffer overflows the same way
                    select.select([], [fd], [], 0.01)
                except OSError as exc:
                    if exc.errno in (errno.EIO, errno.EBADF):
                        return
                    raise

    # ------------------------------------------------------------------ protocol

    def answer(self, cmd: str) -> bytes:
        """The module's reply (JSON lines, CRLF) to one command; updates the module state."""
        self.commands.append(cmd)
        replies: list[dict] = []
        if cmd in _UNIT_CMDS:
            self.units = _UNIT_CMDS[cmd]
            replies.append({"Units": UNIT_REPLIES[self.units]})
        elif cmd in ("U?", "?U"):
            replies.append({"Units": UNIT_REPLIES[self.units]})
        elif len(cmd) == 2 and cmd[0] == "O" and cmd[1].upper() in _FLAGS:
            flag = _FLAGS[cmd[1].upper()]
            self.flags[flag] = cmd[1].isupper()
            key = "OutputEnabled" if cmd[1].isupper() else "OutputDisabled"
            replies.append({key: _FLAG_NAMES[flag]})
        elif len(cmd) == 2 and cmd[0] == "O" and cmd[1] in "123456789":
            self.objects = int(cmd[1])
            replies.append({"NumberOfReports": self.objects})
        elif cmd.startswith("R>"):
            try:
                self.min_speed = float(cmd[2:])
                replies.append({"RequiredMinSpeed": f"{self.min_speed:.3f}"})
            except ValueError:
                replies.append({"error": f"bad value {cmd[2:]!r}"})
        elif cmd in ("R+", "R-", "R|"):
            self.direction_filter = {"R+": "inbound", "R-": "outbound", "R|": "both"}[cmd]
            replies.append({"DirectionPref": cmd[1]})
        elif cmd in SAMPLE_RATES:
            self.sample_rate = cmd
            replies.append({"SamplingRate": SAMPLE_RATES[cmd]})
        elif cmd in ("BL", "BZ", "BS", "BV"):
            self.blank = {"BL": b"", "BZ": b"0", "BS": b" ", "BV": None}[cmd]
            replies.append({"BlankReporting": cmd})
        elif cmd == "??":
            rate = SAMPLE_RATES[self.sample_rate]
            replies += [
                {"Product": self.product},
                {"Version": "1.3.1"},
                {"SamplingRate": rate, "resolution": round(rate * 0.0607 / 10000, 4)},
                {"Units": UNIT_REPLIES[self.units]},
                {"RequiredMinSpeed": f"{self.min_speed:.3f}"},
            ]
        elif cmd in ("?P",):
            replies.append({"Product": self.product})
        else:
            replies.append({"error": f"unknown command {cmd!r}"})
        return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\r\n" for r in replies)

    def objects_at(self, t_s: float) -> list[tuple[Vehicle, float, float]]:
        """(vehicle, signed speed in current units, magnitude), strongest first, after the module's filters."""
        geom = self.scenario.geometry
        out = []
        vmax = max_speed_kmh(self.sample_rate)
        for v in self.scenario.vehicles_in_beam(t_s):
            kmh = v.radar_speed_kmh(t_s, geom) + self._rng.gauss(0.0, self.noise_kmh)
            if kmh <= 0:
                continue
            signed = alias_kmh(kmh if v.direction is Direction.INBOUND else -kmh, vmax)
            if signed == 0.0:
                continue
            val = abs(signed) / TO_KMH[self.units]
            if val < self.min_speed:
                continue
            inbound = signed > 0  # the module filters on what it measures, aliased or not
            if self.direction_filter != "both" and (self.direction_filter == "inbound") != inbound:
                continue
            dist = max(v.distance_m(t_s, geom), 1.0)
            mag = round(4000.0 / dist + self._rng.uniform(0, 5), 1)
            out.append((v, val if inbound else -val, mag))
        out.sort(key=lambda o: -o[2])
        return out[: self.objects]

    def render(self, t_s: float) -> bytes | None:
        """The report line for scenario time ``t_s`` (None when the module would stay silent)."""
        if not self.flags["speed"]:
            return None
        objs = self.objects_at(t_s)
        sensor_t = round(t_s + BOOT_OFFSET_S, 3)
        if not objs:
            return None if self.blank is None else self.blank + b"\r\n"
        speeds = [round(o[1], 2) for o in objs]
        mags = [o[2] for o in objs]
        if self.flags["json"]:
            d: dict = {}
            if self.flags["unit"]:
                d["unit"] = OU_NAMES[self.units]
            if self.flags["time"]:
                d["time"] = sensor_t
            if self.objects == 1:
                if self.flags["magnitude"]:
                    d["magnitude"] = mags[0]
                d["direction"] = "inbound" if speeds[0] > 0 else "outbound"
                d["speed"] = f"{speeds[0]:.2f}"
            else:
                if self.flags["magnitude"]:
                    d["magnitude"] = mags
                d["speed"] = speeds
            return json.dumps(d, separators=(",", ":")).encode() + b"\r\n"
        fields: list[str] = []
        if self.flags["unit"]:
            fields.append(f'"{OU_NAMES[self.units]}"')
        if self.flags["time"]:
            fields.append(f"{sensor_t:.3f}")
        if self.flags["magnitude"]:
            fields += [f"{m:.1f}" for m in mags]
        fields += [f"{s:.2f}" for s in speeds]
        return ",".join(fields).encode() + b"\r\n"


def parse_units_reply(line: bytes) -> str | None:
    """Helper for tools: the canonical unit named by a ``{"Units":...}`` reply line, else None."""
    try:
        d = json.loads(line)
    except ValueError:
        return None
    u = d.get("Units") if isinstance(d, dict) else None
    return UNIT_ALIASES.get(u.lower()) if isinstance(u, str) else None
