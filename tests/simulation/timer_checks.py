"""Issue 13's invariants of delayed and recurring tasks, for `invariants.Checker`:

- D1  No task runs before its `run_at`: no handler start of a SCHEDULED incarnation
      before the time it was scheduled for.
- D2  A SCHEDULED task is promoted in time: by its timer, or, with the timer lost
      (a schedule lost, a message dropped), by the sweeper within its grace and two
      sweep periods of `run_at` (counted from when the faults stopped, if later:
      before that, a rule may hold the sweeper back for as long as it likes).
- R1  Each recurring fire creates exactly one task: the fire's id is written new once
      (by fireTimers), however often the fire is delivered; and a fire that
      was delivered created its task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.delays import OVERDUE_GRACE_SECONDS
from tests.simulation.actions import run_at_seconds

if TYPE_CHECKING:
    from tests.simulation.ledger import Event, Write
    from tests.simulation.world import World

# The clock's datetimes are microseconds, run_at milliseconds: a promotion at run_at.
_SLACK = 0.001
# A sweep may run up to this late after its due time in the quiet period (Lambda's
# asynchronous retry of a failed one), on top of two periods.
_SWEEP_SLACK = 180.0


def _nonce(item: dict[str, Any]) -> str:
    data = item.get("data")
    return str(data.get("nonce", "")) if isinstance(data, dict) else ""


@dataclass
class TimerChecks:
    world: World
    add: Callable[..., Any]
    period: float = 300.0
    # (task, nonce) -> run_at (seconds) of a SCHEDULED incarnation.
    _run_at: dict[tuple[str, str], float] = field(default_factory=dict)
    # (task, nonce) -> when it was promoted (or cancelled, or deleted).
    _left: dict[tuple[str, str], float] = field(default_factory=dict)
    _created: dict[str, int] = field(default_factory=dict)

    def event(self, event: Event) -> None:
        run_at = self._run_at.get((event.task, event.nonce))
        if event.kind == "start" and run_at is not None and event.at < run_at - _SLACK:
            self.add(
                "D1",
                event.task,
                f"attempt {event.attempt} started {run_at - event.at:.0f} s before its run_at",
                attempt=event.attempt,
                env=event.env,
            )

    def write(self, write: Write) -> None:
        old, new = write.old or {}, write.new or {}
        if new.get("status") == "SCHEDULED" and old.get("status") != "SCHEDULED":
            self._run_at[(write.task, _nonce(new))] = run_at_seconds(new)
        if old.get("status") == "SCHEDULED" and new.get("status") != "SCHEDULED":
            self._left.setdefault((write.task, _nonce(old)), write.at)
        if (
            write.task in self.world.fires
            and write.old is None
            and write.new is not None
            and write.actor.startswith("FireTimers")
        ):
            count = self._created[write.task] = self._created.get(write.task, 0) + 1
            if count > 1:
                self.add(
                    "R1",
                    write.task,
                    f"a recurring fire created its task again (creation {count})",
                    site=write.site,
                    actor=write.actor,
                    deleted_by_ttl=write.task in self.world.ttl_deleted,
                )

    def final(self) -> None:
        world = self.world
        stopped = world.fault_stop_at if world.fault_stop_at is not None else world.clock.t
        for key, run_at in self._run_at.items():
            left = self._left.get(key)
            if left is None:
                continue  # still SCHEDULED: I3 says so
            bound = max(run_at, stopped) + OVERDUE_GRACE_SECONDS + 2 * self.period + _SWEEP_SLACK
            if left > bound and not self._stalled(run_at, left):
                self.add(
                    "D2",
                    key[0],
                    f"promoted {left - run_at:.0f} s after its run_at",
                    run_at=run_at,
                    promoted=left,
                )
        for task_id in world.fires:
            if self._created.get(task_id, 0) == 0 and world.snapshot(task_id) is None:
                self.add("R1", task_id, "a recurring fire delivered created no task")

    def _stalled(self, start: float, end: float) -> bool:
        return any(a < end and b > start for a, b in self.world.stalls)
