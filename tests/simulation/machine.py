"""The protocol as a hypothesis rule-based state machine: each rule is one thing AWS,
a producer, an operator or time does; the invariants run after every step; teardown
stops the faults, lets time run on and checks I3 and I5.

The machine reads its campaign (mode, known defects, the shared moto clients) from
`CAMPAIGN`, set by tests.simulation.campaign around each run.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from tests.simulation import actions
from tests.simulation.faults import TABLE_WIDE, FaultKind
from tests.simulation.fibers import EPOCH
from tests.simulation.invariants import Checker, Violation
from tests.simulation.schedules import Schedules
from tests.simulation.timers import timer_counts
from tests.simulation.topology import Topology
from tests.simulation.virtual import virtualized
from tests.simulation.world import RawClients, TaskInfo, World

ENV_CHOICES = st.integers(0, 3)
# Most tasks run now; a delayed one runs after a fraction of a second (DelaySeconds 0),
# seconds, minutes (an SQS message) or past 15 minutes (a one-time schedule).
DELAYS = st.sampled_from([None] * 8 + [0.5, 5.0, 90.0, 600.0, 960.0])
# A delayed create's insert made late (its timer, set first, may come before the item).
SLOW_INSERTS = st.sampled_from([0.0, 0.0, 0.0, 3.0, 30.0])
# Recurring fires (distinct scheduled times) per example: each is a task to settle.
MAX_FIRES = 2
SCHEDULER_FIRES = st.sampled_from(["on-time", "on-time", "early", "twice", "lost"])
STORMS = st.sampled_from([0.0, 0.0, 0.0, 900.0, 7200.0])
FAULTS = st.tuples(st.sampled_from(list(FaultKind)), st.integers(1, 4), STORMS)


class Unexpected(AssertionError):
    """A violation no listed defect explains: the run fails on it."""


@dataclass
class Campaign:
    """What one run of the machine shares with its examples, and what they report."""

    topology: Topology
    raw: RawClients
    strict: bool = False  # raise on violations no known defect explains
    only_defect: int | None = None  # hunt: raise on this defect's violations only
    classify: Any = None  # Violation, World -> defect number or None
    examples: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0
    # Set once a violation raised: later examples are hypothesis shrinking it, and are
    # not counted in the matrix.
    shrinking: bool = False

    def should_raise(self, violation: Violation) -> bool:
        if self.only_defect is not None:
            return violation.defect == self.only_defect
        return self.strict and violation.defect is None


CAMPAIGN: list[Campaign] = []


def _campaign() -> Campaign:
    return CAMPAIGN[-1]


class ProtocolMachine(RuleBasedStateMachine):
    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None
        self.failed = False

    # --- set-up --------------------------------------------------------------------------

    @initialize(seed=st.integers(0, 2**31 - 1))
    def begin(self, seed: int) -> None:
        campaign = _campaign()
        campaign.counter += 1
        self.started = time.perf_counter()
        self.world = World(campaign.topology, campaign.raw, seed=seed, number=campaign.counter)
        self.schedules = Schedules(self.world)
        self.checker = Checker(self.world)
        self._virtual = virtualized(self.world.scheduler, random.Random(seed))
        self._virtual.__enter__()

    @property
    def w(self) -> World:
        assert self.world is not None
        return self.world

    # --- producers -------------------------------------------------------------------------

    @rule(
        target=tasks,
        task_type=st.sampled_from(actions.TYPES),
        variant=st.integers(0, 3),
        shape=st.sampled_from(actions.SHAPES),
        fault=st.none() | FAULTS,
        delay=DELAYS,
        slow=SLOW_INSERTS,
    )
    def create(
        self,
        task_type: str,
        variant: int,
        shape: str,
        fault: tuple[FaultKind, int, float] | None,
        delay: float | None,
        slow: float,
    ) -> Any:
        """A producer inserts a task (which may meet a fault at its n-th AWS call); a
        delayed one (through the client) is SCHEDULED, its timer set first."""
        delayed = delay is not None and shape == "client"
        info = actions.create_task(
            self.w,
            task_type,
            variant,
            shape,
            delay=delay if delayed else None,
            slow=slow if delayed else 0.0,
        )
        if info is None:
            return multiple()
        if fault is not None:
            kind, nth, storm = fault
            self.w.faults.arm(info.id, kind, nth, storm)
        return info

    @precondition(lambda self: self.world is not None and bool(self.world.ttl_deleted))
    @rule(
        target=tasks,
        task_type=st.sampled_from(actions.TYPES),
        variant=st.integers(0, 3),
        pick=st.integers(0, 10),
    )
    def recreate(self, task_type: str, variant: int, pick: int) -> Any:
        """A producer reuses an id TTL has freed."""
        ids = sorted(self.w.ttl_deleted)
        info = actions.create_task(
            self.w, task_type, variant, "client", task_id=ids[pick % len(ids)]
        )
        return info if info is not None else multiple()

    # --- AWS ---------------------------------------------------------------------------------

    @precondition(
        lambda self: self.world is not None and any(q.deliverable() for q in self.world.queues)
    )
    @rule(
        mapping=st.integers(0, 3),
        skip=st.integers(0, 2),
        take=st.integers(1, 8),
        env=ENV_CHOICES,
    )
    def deliver(self, mapping: int, skip: int, take: int, env: int) -> None:
        actions.deliver(self.w, mapping, skip, take, env)

    @precondition(
        lambda self: self.world is not None and any(q.delivered for q in self.world.queues)
    )
    @rule(mapping=st.integers(0, 3), index=st.integers(0, 30))
    def redeliver(self, mapping: int, index: int) -> None:
        """At-least-once: a record already delivered comes again."""
        delivered = [q for q in self.w.queues if q.delivered]
        delivered[mapping % len(delivered)].duplicate(index)

    @precondition(lambda self: self.world is not None and bool(self.schedules.due))
    @rule(env=ENV_CHOICES)
    def scheduled_run(self, env: int) -> None:
        self.schedules.run_next(env)

    @precondition(lambda self: self.world is not None and bool(self.schedules.fired))
    @rule(index=st.integers(0, 7), env=ENV_CHOICES)
    def scheduled_again(self, index: int, env: int) -> None:
        """A scheduled run's event is delivered a second time (at-least-once)."""
        self.schedules.again(index, env)

    @precondition(
        lambda self: self.world is not None and any(m.deliverable() for m in self.world.timers)
    )
    @rule(take=st.integers(1, 10), env=ENV_CHOICES)
    def deliver_timers(self, take: int, env: int) -> None:
        """The timer queue's mapping hands fireTimers a batch of visible messages."""
        actions.deliver_timers(self.w, take, env)

    @precondition(
        lambda self: self.world is not None and any(m.delivered for m in self.world.timers)
    )
    @rule(index=st.integers(0, 7))
    def timer_again(self, index: int) -> None:
        """A timer message already delivered comes again (SQS: at least once)."""
        self.w.timers[0].again(index)

    @precondition(
        lambda self: self.world is not None and bool(self.world.eventbridge.due(early=True))
    )
    @rule(index=st.integers(0, 3), how=SCHEDULER_FIRES)
    def schedule_fire(self, index: int, how: str) -> None:
        """EventBridge Scheduler fires a one-time schedule: on time, early, twice, or
        never (lost); late is any time the rule comes after it was due."""
        actions.fire_schedule(self.w, index, how)

    @precondition(
        lambda self: (
            self.world is not None and bool(self.world.timers) and len(self.world.fires) < MAX_FIRES
        )
    )
    @rule(slot=st.integers(0, 3))
    def recurring_fire(self, slot: int) -> None:
        """A recurring schedule fires for one of its last scheduled times (again, if
        that time fired already: a double fire)."""
        actions.fire_recurring(self.w, slot)

    @precondition(lambda self: self.world is not None and bool(self.world.sfn.due()))
    @rule(index=st.integers(0, 3), env=ENV_CHOICES)
    def execution_step(self, index: int, env: int) -> None:
        actions.step_execution(self.w, index, env)

    # --- faults ------------------------------------------------------------------------------

    @rule(task=tasks, fault=FAULTS)
    def arm_fault(self, task: TaskInfo, fault: tuple[FaultKind, int, float]) -> None:
        """The task's n-th AWS call from now on meets a fault."""
        kind, nth, storm = fault
        self.w.faults.arm(task.id, kind, nth, storm)

    @rule(task=tasks, storm=st.sampled_from([0.0, 900.0]))
    def throttle_heartbeat(self, task: TaskInfo, storm: float) -> None:
        """The task's next heartbeat write is throttled past the retry budget (for 15
        minutes, with a storm)."""
        self.w.faults.arm(task.id, FaultKind.TRANSIENT, 1, storm, site="heartbeat")

    @rule(kind=st.sampled_from(list(FaultKind)), nth=st.integers(1, 4))
    def arm_table_fault(self, kind: FaultKind, nth: int) -> None:
        """A fault on a call made for no one task (the sweeper's Query and Scan)."""
        self.w.faults.arm(TABLE_WIDE, kind, nth)

    # --- people and time -----------------------------------------------------------------------

    @rule(task=tasks, env=ENV_CHOICES)
    def retry_task(self, task: TaskInfo, env: int) -> None:
        actions.retry_task(self.w, task.id, env)

    @rule(task=tasks, env=ENV_CHOICES)
    def cancel(self, task: TaskInfo, env: int) -> None:
        """An operator cancels a task: it may race a claim, a retry's start or a
        heartbeat, since the rule can run while any invocation is parked at a call."""
        actions.cancel_task(self.w, task.id, env)

    @rule(how=st.sampled_from(["tick", "short", "minute", "next", "next"]))
    def advance(self, how: str) -> None:
        """Time passes, until something is due (the rules then say what happens)."""
        actions.advance(self.w, self.schedules, how)

    @rule(how=st.sampled_from(["lease", "hour"]))
    def stall(self, how: str) -> None:
        """Pollers, schedules and Step Functions fall behind (a throttled or degraded
        region) while running invocations go on: past the next lease, or an hour."""
        actions.stall(self.w, self.schedules, how)

    @precondition(lambda self: self.world is not None and actions.quiet(self.world))
    @rule()
    def ttl_expiry(self) -> None:
        """A month passes with nothing in flight; TTL deletes what has expired."""
        actions.expire_by_ttl(self.w, self.schedules)

    # --- checks ----------------------------------------------------------------------------

    @invariant()
    def safety(self) -> None:
        """I1, I2, I4, I6 (and T) on everything that happened in the last step."""
        if self.world is None:
            return
        self.world.pump()
        self._judge(self.checker.step())

    def teardown(self) -> None:
        world = self.world
        if world is None:
            return
        self.steps_done = time.perf_counter()
        try:
            if not self.failed:
                actions.quiesce(world, self.schedules)
                self._judge(self.checker.step())
                self._judge(self.checker.final())
        finally:
            if not _campaign().shrinking:
                self._report(world)
            try:
                world.close()  # unwinds what is still running, on virtual time
            finally:
                self._virtual.__exit__(None, None, None)
                self.world = None

    def _judge(self, violations: list[Violation]) -> None:
        campaign = _campaign()
        judged = [
            _with_defect(v, campaign.classify(v, self.w) if campaign.classify else None)
            for v in violations
        ]
        if judged:  # the checker's tail is these violations: keep them classified
            self.checker.violations[-len(judged) :] = judged
        raising = [v for v in judged if campaign.should_raise(v)]
        if raising:
            self.failed = True
            if not campaign.shrinking:
                self._report(self.w)
                campaign.shrinking = True
            raise Unexpected("; ".join(v.describe() for v in raising))

    def _report(self, world: World) -> None:
        # A violation raised in a step reports before teardown has timed the steps.
        steps_done = getattr(self, "steps_done", time.perf_counter())
        _campaign().examples.append(
            {
                "seed": world.seed,
                "tasks": {t.id: t for t in world.tasks.values()},
                "violations": list(self.checker.violations),
                "firings": list(world.faults.firings),
                "armed": world.faults.armed_total,
                "overlaps": list(self.checker.overlaps),
                "doubles": list(self.checker.doubles),
                "invocations": len(world.lambdas.finished),
                "writes": len(world.ledger.writes),
                "sim_seconds": world.clock.t - EPOCH,
                "wall": (steps_done - self.started, time.perf_counter() - steps_done),
                "settled": world.fault_stop_at is not None,
                "timers": timer_counts(world),
            }
        )


def _with_defect(violation: Violation, defect: int | None) -> Violation:
    return Violation(
        violation.invariant, violation.task, violation.message, violation.details, defect
    )
