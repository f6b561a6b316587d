"""The fault matrix: each call site and fault kind → runs, recovered, lost, overlapping
runs, double effects (and other violations), from a campaign's example reports.

A *run* of a cell is one task that fault hit at that site, in one example. The task is
*recovered* when it ended final with no violation; *lost* when it did not end final
(I3); *overlap* when two of its attempts overlapped (I1); *double* when an effect was
made twice by overlapping attempts or after DONE; *other* for I2, I4, I5, I6 and T. A
fault on a table-wide call (`*`) is judged by its whole example.
"""

from __future__ import annotations

import platform
import re
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.simulation import known_defects
from tests.simulation.campaign import RunResult
from tests.simulation.faults import TABLE_WIDE, FaultKind

NO_FAULT = "(no fault)"
COLUMNS = ("runs", "recovered", "lost", "overlap", "double", "other")


@dataclass
class Cell:
    runs: int = 0
    recovered: int = 0
    lost: int = 0
    overlap: int = 0
    double: int = 0
    other: int = 0

    def add(self, outcome: dict[str, bool]) -> None:
        self.runs += 1
        for name in ("lost", "overlap", "double", "other"):
            setattr(self, name, getattr(self, name) + int(outcome[name]))
        self.recovered += int(not any(outcome.values()))


@dataclass
class Matrix:
    cells: dict[tuple[str, str], Cell] = field(default_factory=lambda: defaultdict(Cell))
    violations: Counter[tuple[str, int | None, str]] = field(default_factory=Counter)
    examples_with: Counter[tuple[str, int | None, str]] = field(default_factory=Counter)
    tasks: int = 0
    invocations: int = 0
    sim_seconds: float = 0.0


def signature(message: str) -> str:
    """A violation's message without the ids that differ from run to run."""
    message = re.sub(r"[A-Za-z]+#\d+/\d+", lambda m: m.group(0).split("#")[0], message)
    message = re.sub(r"sfn:t\d+-\d+", "sfn", message)
    message = re.sub(r"\b\d+(\.\d+)?\b", "N", message)
    return message


def _outcomes(report: dict[str, Any]) -> tuple[dict[str, dict[str, bool]], dict[str, bool]]:
    per_task: dict[str, dict[str, bool]] = {
        t: {"lost": False, "overlap": False, "double": False, "other": False}
        for t in report["tasks"]
    }
    run = {"lost": False, "overlap": False, "double": False, "other": False}
    for violation in report["violations"]:
        column = {"I3": "lost", "I1": "overlap"}.get(violation.invariant, "other")
        run[column] = True
        if violation.task in per_task:
            per_task[violation.task][column] = True
    for task, _nonce in report["doubles"]:
        run["double"] = True
        if task in per_task:
            per_task[task]["double"] = True
    return per_task, run


def build(result: RunResult) -> Matrix:
    matrix = Matrix()
    for report in result.reports:
        per_task, run = _outcomes(report)
        matrix.tasks += len(per_task)
        matrix.invocations += report["invocations"]
        matrix.sim_seconds += report["sim_seconds"]
        hit: set[tuple[str, str, str]] = {(f.site, f.kind.value, f.task) for f in report["firings"]}
        for site, kind, task in sorted(hit):
            outcome = run if task == TABLE_WIDE else per_task.get(task)
            if outcome is not None:
                matrix.cells[(site, kind)].add(outcome)
        faulted = {task for _, _, task in hit}
        for task, outcome in per_task.items():
            if task not in faulted:
                matrix.cells[(NO_FAULT, "-")].add(outcome)
        seen: set[tuple[str, int | None, str]] = set()
        for violation in report["violations"]:
            key = (violation.invariant, violation.defect, signature(violation.message))
            matrix.violations[key] += 1
            seen.add(key)
        for key in seen:
            matrix.examples_with[key] += 1
    return matrix


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def summary(result: RunResult, matrix: Matrix) -> list[str]:
    """A few lines for pytest's summary: what ran, and what it found."""
    cells = [c for (site, _), c in matrix.cells.items() if site != NO_FAULT]
    found: Counter[int] = Counter()
    for (_, defect, _), count in matrix.violations.items():
        found[defect or 0] += count
    listed = [
        f"{'NEW' if defect == 0 else f'known defect {defect}'}: {count}"
        for defect, count in sorted(found.items())
    ]
    return [
        f"  {len(result.reports)} examples (seed {result.seed}, up to {result.steps} steps) in "
        f"{result.seconds:.0f} s; {sum(c.runs for c in cells)} faulted task runs at "
        f"{len({site for site, _ in matrix.cells if site != NO_FAULT})} call sites",
        "  violations: " + (", ".join(listed) or "none"),
        "  timers: " + _timer_line(result),
    ]


def _timer_line(result: RunResult) -> str:
    totals: Counter[str] = Counter()
    for report in result.reports:
        totals.update(report.get("timers", {}))
    fires = ", ".join(
        f"{k.removeprefix('schedule ')} {v}"
        for k, v in sorted(totals.items())
        if k.startswith("schedule ")
    )
    return (
        f"{totals['scheduled']} delayed tasks ({totals['promoted']} promoted, "
        f"{totals['by_sweeper']} by the sweeper), {totals['deliveries']} timer batches, "
        f"one-time schedules fired: {fires or 'none'}; {totals['recurring']} recurring fires"
    )


def render(result: RunResult, matrix: Matrix) -> str:
    lines = [
        f"Protocol simulation ({result.mode}): seed {result.seed}, {len(result.reports)} examples "
        f"of up to {result.steps} steps, {result.seconds:.0f} s",
        f"  replay: {result.replay}",
        f"  commit {_git('rev-parse', '--short', 'HEAD')}, "
        f"{datetime.now(UTC):%Y-%m-%d}, Python {platform.python_version()}, "
        f"{matrix.tasks} tasks, {matrix.invocations} Lambda invocations, "
        f"{matrix.sim_seconds / 3600:.0f} h of virtual time",
    ]
    lines.append(f"  timers: {_timer_line(result)}")
    if result.unsimulated:
        lines.append(f"  NOT SIMULATED: event sources {', '.join(result.unsimulated)}")
    lines += [
        "",
        "Fault matrix (runs: tasks a fault hit at that site; recovered: ended final with no "
        "violation)",
    ]
    width = max([len(site) for site, _ in matrix.cells] + [len(NO_FAULT), 9])
    header = f"  {'call site':<{width}}  {'fault':<12}" + "".join(f"{c:>10}" for c in COLUMNS)
    lines += [header, "  " + "-" * (len(header) - 2)]
    order = {k.value: i for i, k in enumerate(FaultKind)}
    keys = sorted(matrix.cells, key=lambda k: (k[0] == NO_FAULT, k[0], order.get(k[1], 99)))
    for site, kind in keys:
        cell = matrix.cells[(site, kind)]
        values = "".join(f"{getattr(cell, c):>10}" for c in COLUMNS)
        lines.append(f"  {site:<{width}}  {kind:<12}{values}")
    total = Cell()
    for (site, _), cell in matrix.cells.items():
        if site != NO_FAULT:
            for c in COLUMNS:
                setattr(total, c, getattr(total, c) + getattr(cell, c))
    lines.append(
        f"  {'all faults':<{width}}  {'':<12}"
        + "".join(f"{getattr(total, c):>10}" for c in COLUMNS)
    )
    lines += ["", "Violations (count, examples): known defects of issue 11, then anything new"]
    if not matrix.violations:
        lines.append("  none")
    for key in sorted(matrix.violations, key=lambda k: (k[1] is None, k[1] or 0, k[0], k[2])):
        invariant, defect, message = key
        tag = f"known defect {defect}" if defect else "NEW"
        lines.append(
            f"  {invariant:<3} {tag:<16} {matrix.violations[key]:>5} {matrix.examples_with[key]:>4}"
            f"  {message}"
        )
    found = {d for _, d, _ in matrix.violations if d}
    quiet = [d for d in known_defects.KNOWN if d.number not in found]
    if quiet:
        lines += ["", "Known defects not seen in this run (fixed, or not reached):"]
        lines += [f"  {d.number}: {d.title}" for d in quiet]
    if result.failure is not None:
        lines += ["", f"FAILED: {result.failure}", result.falsifying]
    return "\n".join(lines) + "\n"
