"""The template's scheduled rules on the virtual clock: EventBridge invokes the target
function asynchronously, and Lambda's asynchronous invocation is what AWS documents:

- a function error, a timeout or a crash is retried twice, one minute and then two
  minutes later, with the same event (the template sets no MaximumRetryAttempts);
- an event may be delivered more than once even when the function succeeded ("your
  function might receive the same event more than once": Lambda Developer Guide,
  asynchronous invocation): the `again` rule sends one already run a second time.

Missed runs collapse to `MAX_DUE_RUNS` (a jump of days is not thousands of sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runner.local.scheduler import rate_seconds

if TYPE_CHECKING:
    from tests.simulation.lambdas import Invocation
    from tests.simulation.world import World

MAX_DUE_RUNS = 16
# Lambda's retries of a failed asynchronous invocation (the defaults), in seconds.
ASYNC_RETRY_DELAYS = (60.0, 120.0)
# Runs kept for a second delivery.
KEPT_FOR_AGAIN = 8


@dataclass(order=True)
class Due:
    at: float
    key: str
    scheduled: float = field(compare=False)
    attempt: int = field(default=0, compare=False)  # 0: the first try; 1, 2: Lambda's retries


class Schedules:
    """Scheduled rules (EventBridge) and the asynchronous invocations they make."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.periods = {s.logical_id: rate_seconds(s.expression) for s in world.topology.schedules}
        start = world.clock.t
        self.next_at = {k: (start // p + 1) * p for k, p in self.periods.items()}
        self.due: list[Due] = []  # ready to run now
        self.later: list[Due] = []  # Lambda's retries, waiting for their time
        self.fired: list[Due] = []  # run already (a second delivery may come)

    def catch_up(self) -> None:
        now = self.world.clock.t
        for key, period in self.periods.items():
            while self.next_at[key] <= now:
                at = self.next_at[key]
                self.due.append(Due(at, key, at))
                self.next_at[key] += period
        ready = [d for d in self.later if d.at <= now]
        self.later = [d for d in self.later if d.at > now]
        self.due = sorted(self.due + ready)[-MAX_DUE_RUNS:]

    def next_time(self) -> float | None:
        times = [*self.next_at.values(), *(d.at for d in self.later)]
        return min(times) if times else None

    def run_next(self, choice: int | None) -> Invocation | None:
        self.catch_up()
        if not self.due:
            return None
        return self._invoke(self.due.pop(0), choice)

    def again(self, index: int, choice: int | None) -> Invocation | None:
        """Deliver an event that already ran once more (at-least-once)."""
        if not self.fired:
            return None
        done = self.fired[index % len(self.fired)]
        return self._invoke(Due(self.world.clock.t, done.key, done.scheduled, done.attempt), choice)

    def _invoke(self, due: Due, choice: int | None) -> Invocation:
        schedule = next(s for s in self.world.topology.schedules if s.logical_id == due.key)
        function = self.world.topology.functions[schedule.function_logical_id]
        event = _event(due)
        self.fired = [*self.fired, due][-KEPT_FOR_AGAIN:]

        def finished(invocation: Invocation) -> None:
            if invocation.outcome != "ok" and due.attempt < len(ASYNC_RETRY_DELAYS):
                delay = ASYNC_RETRY_DELAYS[due.attempt]
                retry = Due(self.world.clock.t + delay, due.key, due.scheduled, due.attempt + 1)
                self.later.append(retry)

        return self.world.lambdas.start(function, event, choice=choice, on_done=finished)


def _event(due: Due) -> dict[str, Any]:
    """What a scheduled rule sends (the same id on every delivery of one run)."""
    return {
        "version": "0",
        "id": f"sched-{due.key}-{int(due.scheduled)}",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": datetime.fromtimestamp(due.scheduled, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"rule/{due.key}"],
        "detail": {},
    }
