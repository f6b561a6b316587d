"""`python -m bench [--quick] [--json PATH] [--only N,...]`: run, print a table, write JSON.

Exit status 0 unless a benchmark crashes: PASS/MISS against targets is reported, never
enforced, because shared machines are noisy (see bench/README.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from bench.common import ROOT, Figure, apply_base_env

DEFAULT_JSON = os.path.join(ROOT, "bench", "results", "latest.json")
# The quick run (CI, `make test`) must not overwrite the committed full results.
QUICK_JSON = os.path.join(ROOT, "bench", "results", "quick.json")
# A run of some sections only: never in place of the committed full run.
PARTIAL_JSON = os.path.join(ROOT, "bench", "results", "partial.json")
# Section number → module; run in this order (the local stack last, as it is the slowest).
SECTIONS = {
    "1": "bench.concurrency",
    "2": "bench.workflow",  # 2 and 5 share one moto Step Functions run
    "3": "bench.coldstart",
    "6": "bench.memory",
    "7": "bench.slow_neighbour",
    "8": "bench.runtime_exit",
    "9": "bench.dashboard",
    "10": "bench.metrics",
    "11": "bench.wait_latency",
    "12": "bench.delays",
    "13": "bench.steps",
    "14": "bench.payloads",
    "15": "bench.payload_memory",
    "4": "bench.local_stack",
}


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"


def print_table(figures: list[Figure]) -> None:
    header = ("figure", "value", "reference", "target", "")
    rows = [
        (
            f"{f.section}: {f.name}",
            _format(f.value) + (f" {f.unit}" if f.unit in ("x", "s", "%") else ""),
            f"{_format(f.reference)} ({f.reference_name})" if f.reference_name else "",
            f.target,
            f.verdict,
        )
        for f in figures
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    line = "  ".join("{:<%d}" % w for w in widths) + "  {}"  # noqa: UP031
    print(line.format(*header))
    print("  ".join("-" * w for w in widths) + "  ----")
    for f, row in zip(figures, rows, strict=True):
        print(line.format(*row))
        if f.note:
            print(" " * 4 + f.note)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the CI version (< ~90 s)")
    parser.add_argument(
        "--json",
        default=None,
        help="default bench/results/latest.json (quick: quick.json; --only: partial.json)",
    )
    parser.add_argument("--only", default="", help="section numbers, e.g. 1,3")
    args = parser.parse_args(argv)
    default = PARTIAL_JSON if args.only else QUICK_JSON if args.quick else DEFAULT_JSON
    args.json = args.json or default
    apply_base_env()
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    figures: list[Figure] = []
    crashed: list[str] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for number, module_name in SECTIONS.items():
        if wanted and number not in wanted and not (number == "2" and "5" in wanted):
            continue
        section_started = time.perf_counter()
        print(f"[bench] {module_name} ...", file=sys.stderr, flush=True)
        try:
            figures += importlib.import_module(module_name).run(args.quick)
        except Exception:
            crashed.append(module_name)
            traceback.print_exc()
        timings[module_name] = round(time.perf_counter() - section_started, 1)
    # By section number: "10. ..." after "9. ...".
    figures.sort(key=lambda f: (int(f.section.split(".")[0]), f.section))
    print()
    print_table(figures)
    total = time.perf_counter() - started
    missed = [f"{f.section}: {f.name}" for f in figures if f.passed is False]
    print(f"\n{'quick' if args.quick else 'full'} run in {total:.0f} s; ", end="")
    print(f"{len(missed)} target(s) missed" + (": " + "; ".join(missed) if missed else ""))
    if args.quick:
        print(
            "(a quick run is short and noisy on a shared machine: its targets are reported,"
            " never enforced; `make bench-full` measures them)"
        )
    report: dict[str, Any] = {
        "command": "python -m bench" + (" --quick" if args.quick else ""),
        "mode": "quick" if args.quick else "full",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "seconds": round(total, 1),
        "section_seconds": timings,
        "crashed": crashed,
        "figures": [f.as_dict() for f in figures],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2, default=str)
        f.write("\n")
    print(f"written to {os.path.relpath(args.json)}")
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
