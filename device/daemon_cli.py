"""Sub-commands for the unit itself: ``run`` (the daemon), ``selftest`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _sim_inputs(cfg):
    """Synthetic camera in a separate process: the scenario file carries the shared monotonic epoch."""
    from device import config as cfgmod
    from device.daemon import SimInputs
    from device.sim.scenario import Scenario

    if cfg.camera.backend != "synthetic" or not cfg.camera.source:
        return None  # no scenario file: the synthetic camera plays its own default traffic
    try:
        text = Path(cfg.camera.source).read_text(encoding="utf-8")
    except OSError as exc:
        raise cfgmod.ConfigError(f"camera.source: cannot read scenario {cfg.camera.source}: {exc}") from None
    epoch = json.loads(text).get("epoch_mono_ns")
    if epoch is None:
        raise SystemExit(f"{cfg.camera.source}: synthetic camera scenario has no epoch_mono_ns")
    return SimInputs(scenario=Scenario.from_json(text), epoch_mono_ns=int(epoch))


def cmd_run(args: argparse.Namespace) -> int:
    from device import config as cfgmod
    from device.daemon import Daemon, StartupError, configure_logging

    cfg = cfgmod.load(args.config)
    configure_logging(args.log_level)
    daemon = Daemon(cfg, config_path=Path(args.config), sim=_sim_inputs(cfg))
    daemon.install_signal_handlers()
    try:
        daemon.start()
    except StartupError as exc:
        print(f"radarcam: cannot start: {exc}", file=sys.stderr)
        daemon.stop(timeout_s=2.0)
        return 1
    daemon.run()
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from device import config as cfgmod
    from device import selftest

    cfg = cfgmod.load(args.config) if args.config else cfgmod.Config()
    checks = selftest.run_standalone(cfg)
    if args.json:
        print(json.dumps(selftest.as_dicts(checks), indent=1))
    else:
        selftest.print_table(checks)
    return 0 if all(c.ok for c in checks) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from device.demo import DemoOptions, print_summary, run_demo

    opts = DemoOptions(
        vehicles=args.vehicles,
        seed=args.seed,
        duration_s=args.duration,
        broker=args.broker,
        out_dir=Path(args.out),
        export_packets=Path(args.export_packets) if args.export_packets else None,
        width=args.width,
        height=args.height,
        fps=args.fps,
        quiet=args.json,
        rate_per_s=args.rate,
        beam_far_m=args.beam_far,
        anpr=not args.no_anpr,
        frame_layout=args.frame_layout,
    )
    summary = run_demo(opts)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print_summary(summary)
    return 0 if summary.get("ok") else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the enforcement daemon (systemd Type=notify)")
    p.add_argument("--config", required=True)
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_run)

    s = sub.add_parser("selftest", help="roadside check list: PASS/FAIL with the fix for each failure")
    s.add_argument("--config")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_selftest)

    d = sub.add_parser("demo", help="the whole pipeline on simulated hardware, with a summary")
    d.add_argument("--vehicles", type=int, default=None, help="number of vehicles (default: 2 minutes)")
    d.add_argument("--duration", type=float, default=120.0, help="scenario length in seconds")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--broker", default=None, help="host:port of an existing broker (default: embedded)")
    d.add_argument("--out", default="demo-output", help="where state, evidence and packets go")
    d.add_argument("--export-packets", default=None, metavar="DIR")
    d.add_argument("--width", type=int, default=1280)
    d.add_argument("--height", type=int, default=720)
    d.add_argument("--fps", type=float, default=15.0)
    d.add_argument("--rate", type=float, default=None, help="vehicles per second (dense traffic; overlaps)")
    d.add_argument(
        "--beam-far", type=float, default=None, help="far edge of the radar beam in m (default 45)"
    )
    d.add_argument("--no-anpr", action="store_true", help="skip plate reading (radar/uplink only)")
    d.add_argument(
        "--frame-layout", choices=("yuv420", "bgr"), default="yuv420", help="how the ring holds frames"
    )
    d.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    d.set_defaults(func=cmd_demo)
