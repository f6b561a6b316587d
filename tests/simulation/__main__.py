"""`python -m tests.simulation [survey|check|hunt] [--seed N] [--examples N] [--steps N]
[--defect N] [--out FILE] [--blob VERSION:DATA]`

- survey (`make faults`): run, print the fault matrix, write it to --out
  (tests/simulation/results/latest.txt); exit 1 if anything new was found.
- check: as make test's quick pass; a new violation is shrunk and printed; exit 1.
- hunt --defect N: the minimal failing sequence of one known defect.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.simulation import campaign, matrix

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation")
    parser.add_argument("mode", nargs="?", default="survey", choices=["survey", "check", "hunt"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--steps", type=int, default=campaign.DEFAULT_STEPS)
    parser.add_argument("--defect", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--blob", default=None, help="a reproduce_failure blob: VERSION:DATA")
    parser.add_argument("--shrink-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.mode == "hunt" and args.defect is None:
        parser.error("hunt needs --defect N")
    result = campaign.run(
        seed=args.seed,
        examples=args.examples,
        steps=args.steps,
        mode=args.mode,
        defect=args.defect,
        blob=args.blob,
        shrink_seconds=args.shrink_seconds,
    )
    built = matrix.build(result)
    text = matrix.render(result, built)
    print(text)
    out = args.out or (RESULTS / "latest.txt" if args.mode == "survey" else None)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written to {out}")
    new = any(defect is None for _, defect, _ in built.violations)
    if args.mode == "hunt":
        return 0 if result.failure is not None else 1
    return 1 if (new or result.failure is not None) else 0


if __name__ == "__main__":
    sys.exit(main())
