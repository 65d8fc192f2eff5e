"""``radarcam radar decode|monitor|emulate``: the radar tools a technician needs at the cabinet."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _decode(args: argparse.Namespace) -> int:
    from device.sensors.ops24x import Ops24xDriver

    try:
        data = Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    except OSError as exc:
        print(f"radarcam radar decode: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    drv = Ops24xDriver(units=args.units, max_line_bytes=args.max_line_bytes)
    readings = drv.feed(data, 0)
    if not data.endswith(b"\n"):
        readings += drv.feed(b"\n", 0)  # a capture cut mid-line: decode the last line too
    out = sys.stdout
    for r in readings:
        out.write(
            json.dumps(
                {
                    "speed_kmh": r.speed_kmh,
                    "direction": r.direction.value if r.direction else None,
                    "magnitude": r.magnitude,
                    "sensor_time": r.sensor_time,
                }
            )
            + "\n"
        )
    st = drv.stats
    reasons = ", ".join(f"{k[8:]}={v}" for k, v in sorted(st.items()) if k.startswith("skipped_"))
    print(
        f"{st['lines']} lines: {st['readings']} readings, {st['replies']} replies, {st['blank']} blank, "
        f"{st['skipped']} skipped" + (f" ({reasons})" if reasons else ""),
        file=sys.stderr,
    )
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from device import config as cfgmod
    from device.enforcement import Enforcer
    from device.sensors.radar import make_driver
    from device.sensors.serial_reader import RadarReader
    from device.sensors.tracker import PassTracker

    cfg = cfgmod.load(args.config) if args.config else cfgmod.Config()
    radar = cfg.radar.model_copy(update={"port": args.port}) if args.port else cfg.radar
    max_limit = max(ln.limit_kmh for ln in cfg.site.lanes)
    q: queue.Queue = queue.Queue(maxsize=100_000)
    reader = RadarReader(radar, make_driver(radar), q.put_nowait, max_limit_kmh=max_limit)
    tracker = PassTracker(cfg.tracker, cfg.site.lanes)
    enforcer = Enforcer.for_config(cfg)
    from device.clock import ClockMonitor

    # As the daemon decides: time windows only on a synchronised clock, at the peak reading's time.
    trusted = ClockMonitor(cfg.clock).refresh().synchronized
    reader.start()
    print(f"monitoring {radar.port} (Ctrl-C to stop)", flush=True)
    end = time.monotonic() + args.seconds if args.seconds else None
    last_state = None

    def show(passes: list) -> None:
        for p in passes:
            at = datetime.now(UTC) - timedelta(microseconds=(time.monotonic_ns() - p.peak_mono_ns) / 1000)
            d = enforcer.decide(p, when=at, time_trusted=trusted)
            print(
                json.dumps(
                    {
                        "pass": p.pass_id,
                        "lane": p.lane,
                        "direction": p.direction.value if p.direction else None,
                        "count": p.count,
                        "peak_kmh": p.peak_kmh,
                        "median_kmh": p.median_kmh,
                        "valid": p.valid,
                        "invalid_reasons": list(p.invalid_reasons),
                        "violation": d.violation,
                        "enforced_kmh": d.enforced_kmh,
                        "limit_kmh": d.limit_kmh,
                        "rule": d.rule_id,
                        "reason": d.reason,
                    }
                ),
                flush=True,
            )

    try:
        while end is None or time.monotonic() < end:
            try:
                r = q.get(timeout=0.1)
            except queue.Empty:
                r = None
            if r is not None:
                if not args.quiet:
                    print(
                        f"{r.t_mono_ns / 1e9:.3f} {r.speed_kmh:7.2f} km/h "
                        f"{r.direction.value if r.direction else '-':8} raw={r.speed_raw}{r.unit}",
                        flush=True,
                    )
                show(tracker.push(r))
            if q.empty():  # readings still queued (slow printing) must not look like a silence
                show(tracker.flush(time.monotonic_ns()))
            h = reader.health()
            state = (h["state"], h["reason"])
            if state != last_state:
                print(f"# radar {h['state']}: {h['reason'] or h['last_error'] or ''}", flush=True)
                last_state = state
    except KeyboardInterrupt:
        pass
    finally:
        reader.stop()
        show(tracker.close())
        print("# " + json.dumps(reader.health()), file=sys.stderr)
    return 0


def _emulate(args: argparse.Namespace) -> int:
    from device.sim.radar_emulator import RadarEmulator
    from device.sim.scenario import Scenario, generate

    sc = Scenario.load(args.scenario) if args.scenario else generate(args.seed, vehicles=args.vehicles)
    emu = RadarEmulator(
        sc,
        link_dir=Path(args.link_dir) if args.link_dir else None,
        garbage_rate=args.garbage_rate,
    )
    emu.start()
    print(emu.port, flush=True)
    print(f"# {len(sc.vehicles)} vehicles over {sc.duration_s:.1f} s", file=sys.stderr, flush=True)
    try:
        while not emu.done.wait(0.2):
            pass
        print("# scenario ended", file=sys.stderr, flush=True)
        while args.forever:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("radar", help="radar tools: decode captures, watch a live port, emulate a module")
    rs = p.add_subparsers(dest="radar_cmd", required=True)

    d = rs.add_parser("decode", help="decode a raw OPS24x capture to one JSON reading per line")
    d.add_argument("file", help="capture file ('-' = stdin)")
    d.add_argument(
        "--units",
        choices=["mps", "kmh", "mph"],
        default="mps",
        help="units of unit-less numbers until a units reply in the capture says otherwise (default: "
        "mps, the module's power-on default)",
    )
    d.add_argument("--max-line-bytes", type=int, default=1024)
    d.set_defaults(func=_decode)

    m = rs.add_parser("monitor", help="live readings, passes and decisions from a serial port")
    m.add_argument("--port", help="serial port (overrides radar.port of the config)")
    m.add_argument("--config", help="config TOML (default: built-in defaults)")
    m.add_argument("--seconds", type=float, default=None, help="stop after this long")
    m.add_argument("--quiet", action="store_true", help="passes only, no individual readings")
    m.set_defaults(func=_monitor)

    e = rs.add_parser("emulate", help="run the OPS24x emulator on a pseudo-terminal and print its path")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--vehicles", type=int, default=10)
    e.add_argument("--scenario", help="scenario JSON (instead of --seed/--vehicles)")
    e.add_argument("--link-dir", help="directory for the stable port symlink")
    e.add_argument("--garbage-rate", type=float, default=0.0, help="probability of a garbage line per sample")
    e.add_argument("--forever", action="store_true", help="keep the port open after the scenario ends")
    e.set_defaults(func=_emulate)
