"""CANCELLED in `runner.model.TRANSITIONS` (the README's table is checked against them in
tests/unit/test_model_and_registry.py)."""

from __future__ import annotations

from runner.model import TRANSITIONS, TaskStatus


def test_cancelled_is_final_and_reached_from_every_status_that_has_not_finished() -> None:
    assert TRANSITIONS[TaskStatus.CANCELLED] == frozenset()
    unfinished = set(TaskStatus) - {TaskStatus.DONE, TaskStatus.CANCELLED}
    assert {s for s, targets in TRANSITIONS.items() if TaskStatus.CANCELLED in targets} == (
        unfinished
    )
