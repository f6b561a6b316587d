"""The README's status table and `runner.model.TRANSITIONS` say the same."""

from __future__ import annotations

import re
from pathlib import Path

from runner.model import TRANSITIONS, TaskStatus

README = Path(__file__).resolve().parents[2] / "README.md"


def _table() -> dict[str, set[str]]:
    rows: dict[str, set[str]] = {}
    for line in README.read_text().splitlines():
        found = re.match(r"^\| `([A-Z]+)` \| [^|]+ \| ([^|]+) \|$", line)
        if found and found.group(1) in TaskStatus.__members__:
            rows[found.group(1)] = set(re.findall(r"`([A-Z]+)`", found.group(2)))
    return rows


def test_the_readme_status_table_lists_every_status_and_its_transitions() -> None:
    documented = _table()
    assert set(documented) == {s.value for s in TaskStatus}
    for status, targets in TRANSITIONS.items():
        assert documented[status.value] == {t.value for t in targets}, status


def test_cancelled_is_final_and_reached_from_every_status_that_has_not_finished() -> None:
    assert TRANSITIONS[TaskStatus.CANCELLED] == frozenset()
    unfinished = set(TaskStatus) - {TaskStatus.DONE, TaskStatus.CANCELLED}
    assert {s for s, targets in TRANSITIONS.items() if TaskStatus.CANCELLED in targets} == (
        unfinished
    )
