"""The ``radarcam`` command. Each area registers its own sub-commands (``register(subparsers)``).

Heavy imports (OpenCV, LiteRT, paho) stay inside the command functions so ``radarcam --help`` and the
config tools start instantly on a Pi.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from device import __version__
from device import config as cfgmod

# Modules that contribute sub-commands, each exposing ``register(subparsers) -> None``.
COMMAND_MODULES = (
    "device.sensors.cli",
    "device.capture.cli",
    "device.anpr.cli",
    "device.uplink.cli",
    "device.daemon_cli",
    "device.console.cli",
)


def _config_check(args: argparse.Namespace) -> int:
    cfg = cfgmod.load(args.file)
    print(f"{args.file}: OK (config hash {cfgmod.config_hash(cfg)})")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    cfg = cfgmod.load(args.file) if args.file else cfgmod.Config()
    if args.json:
        print(json.dumps(cfgmod.to_dict(cfg), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(cfgmod.dumps(cfg))
    return 0


def _config_hash(args: argparse.Namespace) -> int:
    print(cfgmod.config_hash(cfgmod.load(args.file)))
    return 0


def _register_config(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check, show and hash configuration files")
    csub = p.add_subparsers(dest="config_cmd", required=True)
    c = csub.add_parser("check", help="validate a config file")
    c.add_argument("file")
    c.set_defaults(func=_config_check)
    s = csub.add_parser("show", help="print a config with every default filled in")
    s.add_argument("file", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_config_show)
    h = csub.add_parser("hash", help="print the config hash that goes into packets")
    h.add_argument("file")
    h.set_defaults(func=_config_hash)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radarcam",
        description="Roadside speed-enforcement unit: radar, camera, plate reading, signed evidence, uplink.",
    )
    parser.add_argument("--version", action="version", version=f"radarcam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _register_config(sub)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # area not built yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except cfgmod.ConfigError as exc:
        print(f"radarcam: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
