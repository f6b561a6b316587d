"""Scripted runs of the simulation: the same world, rules and checks as the state
machine, driven step by step by a test (a failing sequence written down by hand)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.simulation import actions, known_defects
from tests.simulation.campaign import aws_sandbox
from tests.simulation.faults import FaultKind
from tests.simulation.invariants import Checker, Violation
from tests.simulation.schedules import Schedules
from tests.simulation.topology import load_topology
from tests.simulation.virtual import virtualized
from tests.simulation.world import RawClients, TaskInfo, World

_TABLES = [0]


@dataclass
class Sim:
    world: World
    schedules: Schedules
    checker: Checker

    def create(
        self,
        task_type: str,
        variant: int = 0,
        shape: str = "client",
        *,
        fault: tuple[FaultKind, int, float] | None = None,
        task_id: str | None = None,
        delay: float | None = None,
        slow: float = 0.0,
    ) -> TaskInfo:
        info = actions.create_task(
            self.world, task_type, variant, shape, task_id=task_id, delay=delay, slow=slow
        )
        assert info is not None, "the producer could not create the task"
        if fault is not None:
            self.world.faults.arm(info.id, *fault)
        return info

    def deliver_all(self) -> None:
        """Every mapping delivers what it has, as soon as it can (no time passes)."""
        for _ in range(200):
            self.world.pump()
            if not any(q.deliverable() for q in self.world.queues):
                return
            actions.deliver(self.world, 0, 0, 10_000, 0)

    def run_for(self, seconds: float) -> None:
        """Everything runs on its own for a while (faults stay armed)."""
        end = self.world.clock.t + seconds
        while self.world.clock.t < end:
            self.deliver_all()
            if actions.step_execution(self.world, 0, None):
                continue
            if actions.fire_schedule(self.world, 0, "on-time"):
                continue
            if actions.deliver_timers(self.world, 10, 0) is not None:
                continue
            self.schedules.catch_up()
            if self.schedules.due:
                self.schedules.run_next(None)
                continue
            actions.run_until(self.world, self.schedules, end)

    def lose_stream_records(self) -> None:
        """The mappings never deliver what they hold now (as after their retries)."""
        for queue in self.world.queues:
            queue.pending.clear()

    def stall(self, how: str) -> None:
        actions.stall(self.world, self.schedules, how)

    def settle(self) -> None:
        actions.quiesce(self.world, self.schedules)

    def item(self, task_id: str) -> dict[str, Any]:
        return self.world.snapshot(task_id) or {}

    def violations(self, *, final: bool = True) -> list[Violation]:
        self.world.pump()
        self.checker.step()
        if final:
            self.checker.final()
        return [
            Violation(
                v.invariant, v.task, v.message, v.details, known_defects.classify(v, self.world)
            )
            for v in self.checker.violations
        ]


@contextlib.contextmanager
def simulated(seed: int = 1, raw: RawClients | None = None) -> Iterator[Sim]:
    """A fresh simulated deployment (moto in-process, unless `raw` clients are given)."""
    with contextlib.ExitStack() as stack:
        if raw is None:
            raw = stack.enter_context(aws_sandbox())
        _TABLES[0] += 1
        world = World(load_topology(), raw, seed=seed, number=_TABLES[0])
        sim = Sim(world, Schedules(world), Checker(world))
        with virtualized(world.scheduler, random.Random(seed)):
            try:
                yield sim
            finally:
                world.close()
