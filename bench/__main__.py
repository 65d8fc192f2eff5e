"""``make bench``: runs every benchmark module, prints one table, writes bench/results.json.

Each module in BENCHES exposes ``run() -> list[dict]``; a row is
``{"bench": str, "metric": str, "value": float, "unit": str, "target": str | None, "note": str | None}``.
Values are medians over repeats unless the metric name says otherwise (the machine is shared and noisy).
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

BENCHES = (
    "bench.radar_parse",
    "bench.capture",
    "bench.anpr",
    "bench.uplink",
    "bench.supervision",
    "bench.console",
    "bench.e2e",
)


def main(argv: list[str]) -> int:
    only = set(argv)
    rows: list[dict] = []
    failed: list[str] = []
    for name in BENCHES:
        if only and name.split(".")[-1] not in only:
            continue
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        t0 = time.perf_counter()
        try:
            rows.extend(mod.run())
        except Exception as exc:  # one broken bench must not hide the others' numbers
            failed.append(f"{name}: {exc!r}")
        print(f"# {name} took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    w = max([len(f"{r['bench']}.{r['metric']}") for r in rows] + [10])
    print(f"{'metric':<{w}}  {'value':>12}  {'unit':<10}  target")
    for r in rows:
        print(
            f"{r['bench'] + '.' + r['metric']:<{w}}  {r['value']:>12.4g}  {r['unit']:<10}  {r.get('target') or ''}"
        )
    out = Path(__file__).with_name("results.json")
    previous = json.loads(out.read_text()) if out.exists() else {}
    ran = {r["bench"] for r in rows}  # a bench that ran replaces all of its old rows
    merged = {(r["bench"], r["metric"]): r for r in previous.get("rows", []) if r["bench"] not in ran}
    merged.update({(r["bench"], r["metric"]): r for r in rows})
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "node": platform.node(),
                },
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "rows": sorted(merged.values(), key=lambda r: (r["bench"], r["metric"])),
                "failed": failed,
            },
            indent=1,
        )
        + "\n"
    )
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
