"""Defects the code is known to have, and how to recognise their violations.

This is the one place that knows about particular bugs; the harness itself does not.
`make test`'s quick pass reports a violation listed here as "known defect N" and fails
only on the others. It is empty: every defect of issue 11 (1-13) and the one this
harness found (101: runner/model.py's TRANSITIONS lacked PENDING → FAILED) is fixed, and
each keeps its scripted run in test_known_defects.py as a regression test.

A defect found later that is not fixed at once gets an entry here, and a scripted run
in test_known_defects.py marked `xfail(strict=True)`: when its fix lands the test
passes, strict xfail fails the suite, and the marker and the entry go. An entry that
matches nothing in a long run (`make faults` prints the counts) is a sign its defect is
fixed. A matcher reads the violation (`invariant`, `task`, `message`, `details`: the
site and actor of a write, the invocation of an I6 or T) and the world (its ledger of
writes and handler events, items, executions, finished invocations), e.g.

    def _d102(v: Violation, world: World) -> bool:
        return v.invariant == "I4" and str(v.details.get("site", "")).startswith(
            "TaskStore.cancel:"
        )

    KNOWN = (Defect(102, "cancel overwrites a live claim", _d102),)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.simulation.invariants import Violation
    from tests.simulation.world import World


@dataclass(frozen=True)
class Defect:
    number: int
    title: str
    matches: Callable[[Violation, World], bool]


KNOWN: tuple[Defect, ...] = ()


def classify(violation: Violation, world: World) -> int | None:
    """The known defect a violation shows, or None (then it is news)."""
    for defect in KNOWN:
        if defect.matches(violation, world):
            return defect.number
    return None


def title(number: int) -> str:
    return next((d.title for d in KNOWN if d.number == number), "?")
