"""Scripted runs of the faults the random machine injects into delayed and recurring
tasks (tests.simulation.timers): a one-time schedule lost, early or twice; a timer
message late or delivered twice; a recurring fire delivered twice; each with the
invariants that say what must hold (D1, D2, R1; I1-I5), and each invariant shown to
fail when what it guards is broken on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from runner.client import TaskRunnerClient
from runner.delays import OVERDUE_GRACE_SECONDS
from tests.simulation import actions
from tests.simulation.scenario import Sim, simulated
from tests.simulation.world import CLI

pytestmark = pytest.mark.slow

CHECKED = ("I1", "I2", "I3", "I4", "I5", "C1", "D1", "D2", "R1")


def broken(sim: Sim, *invariants: str) -> list[str]:
    wanted = invariants or CHECKED
    return [v.describe() for v in sim.violations() if v.invariant in wanted]


def starts(sim: Sim, task_id: str) -> int:
    return sum(1 for e in sim.world.ledger.events if e.task == task_id and e.kind == "start")


def promotions(sim: Sim, task_id: str) -> list[Any]:
    return [
        w
        for w in sim.world.ledger.writes
        if w.task == task_id and w.field("status") == ("SCHEDULED", "PENDING")
    ]


@pytest.fixture
def sim() -> Iterator[Sim]:
    with simulated(seed=3) as sim:
        yield sim


def test_a_short_delay_goes_through_sqs_and_runs_at_its_time(sim: Sim) -> None:
    task = sim.create("SIM_SYNC", delay=90.0)
    assert sim.item(task.id)["status"] == "SCHEDULED"
    assert not sim.world.eventbridge.schedules  # under 15 minutes: an SQS message only
    run_at = actions.run_at_seconds(sim.item(task.id))
    sim.settle()
    assert sim.item(task.id)["status"] == "DONE"
    (promoted,) = promotions(sim, task.id)
    assert promoted.actor.startswith("FireTimers") and run_at <= promoted.at < run_at + 1
    assert broken(sim) == []


@pytest.mark.parametrize("how", ["early", "twice"])
def test_a_schedule_firing_early_or_twice_runs_the_task_once_after_its_run_at(
    sim: Sim, how: str
) -> None:
    task = sim.create("SIM_SYNC", delay=1200.0)
    assert len(sim.world.eventbridge.schedules) == 1
    (schedule,) = sim.world.eventbridge.schedules.values()
    sim.world.clock.advance_to(schedule.at - 30 if how == "early" else schedule.at)
    assert actions.fire_schedule(sim.world, 0, how)
    if how == "twice":
        sim.world.clock.advance_to(schedule.at + 20)
        assert actions.fire_schedule(sim.world, 0, how)
    assert not sim.world.eventbridge.schedules  # deleted after its completion
    sim.settle()
    assert sim.item(task.id)["status"] == "DONE"
    assert starts(sim, task.id) == 1 and len(promotions(sim, task.id)) == 1
    assert broken(sim) == []


def test_a_lost_schedule_is_recovered_by_the_sweeper(sim: Sim) -> None:
    task = sim.create("SIM_SYNC", delay=1200.0)
    (schedule,) = sim.world.eventbridge.schedules.values()
    sim.world.clock.advance_to(schedule.at)
    assert actions.fire_schedule(sim.world, 0, "lost")
    sim.settle()
    assert sim.item(task.id)["status"] == "DONE"
    (promoted,) = promotions(sim, task.id)
    assert promoted.actor.startswith("Sweep")
    assert broken(sim) == []


def test_a_lost_schedule_with_no_sweeper_to_recover_it_breaks_i3(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """I3 and the quiet period see a SCHEDULED task that nothing will promote."""
    monkeypatch.setattr("runner.store.TaskStore.iter_overdue", lambda *_, **__: iter(()))
    task = sim.create("SIM_SYNC", delay=1200.0)
    (schedule,) = sim.world.eventbridge.schedules.values()
    sim.world.clock.advance_to(schedule.at)
    actions.fire_schedule(sim.world, 0, "lost")
    sim.settle()
    assert sim.item(task.id)["status"] == "SCHEDULED"
    assert broken(sim, "I3") == [
        f"I3 [{task.id}]: stuck SCHEDULED (episode 0, attempts 0, no running execution)"
    ]


def test_a_timer_late_and_delivered_twice_runs_the_task_once(sim: Sim) -> None:
    task = sim.create("SIM_SYNC", delay=5.0)
    # The mapping falls behind (a minute, inside the sweeper's grace), then delivers the
    # message, and a copy of it comes again, as the task runs
    sim.world.clock.advance_to(sim.world.clock.t + OVERDUE_GRACE_SECONDS - 10)
    assert actions.deliver_timers(sim.world, 10, 0) is not None
    sim.world.timers[0].again(0)
    assert actions.deliver_timers(sim.world, 10, 1) is not None
    sim.settle()
    assert sim.item(task.id)["status"] == "DONE"
    assert starts(sim, task.id) == 1 and len(promotions(sim, task.id)) == 1
    assert broken(sim) == []


def test_a_promotion_before_run_at_breaks_d1(sim: Sim) -> None:
    """D1 sees a run that starts before its time (here: promoted by hand, early)."""
    task = sim.create("SIM_SYNC", delay=600.0)
    run_at = str(sim.item(task.id)["run_at"])
    sim.world.lambdas.invoke(
        CLI, None, choice=0, call=lambda app: app.store.promote(task.id, run_at)
    )
    sim.settle()
    (found,) = broken(sim, "D1")
    assert found.startswith(f"D1 [{task.id}]: attempt 1 started")


def test_a_cancelled_scheduled_task_loses_its_schedule_and_never_runs(sim: Sim) -> None:
    task = sim.create("SIM_SYNC", delay=3600.0)
    assert sim.world.eventbridge.for_task(task.id) is not None
    actions.cancel_task(sim.world, task.id, 0)
    assert sim.world.eventbridge.for_task(task.id) is None
    sim.settle()
    assert sim.item(task.id)["status"] == "CANCELLED"
    assert starts(sim, task.id) == 0
    assert broken(sim) == []


def test_a_recurring_fire_delivered_twice_at_once_and_later_creates_one_task(sim: Sim) -> None:
    task_id = actions.fire_recurring(sim.world, 0)
    assert task_id is not None
    assert actions.fire_recurring(sim.world, 0) == task_id  # a double fire
    assert actions.deliver_timers(sim.world, 1, 0) is not None
    assert actions.deliver_timers(sim.world, 1, 1) is not None  # both at once
    sim.run_for(60)
    sim.world.timers[0].again(0)  # and a copy after it ran
    sim.settle()
    assert sim.item(task_id)["status"] == "DONE"
    assert starts(sim, task_id) == 1
    assert broken(sim) == []


def test_a_fire_that_creates_its_task_again_breaks_r1(sim: Sim) -> None:
    """R1 sees a second creation of one fire (here: its item deleted by hand between)."""
    task_id = actions.fire_recurring(sim.world, 0)
    assert task_id is not None
    sim.settle()
    sim.world.raw.dynamodb.delete_item(TableName=sim.world.table, Key={"id": {"S": task_id}})
    sim.world.log_outside_write(task_id, "hand:DeleteItem", "harness", sim.item(task_id), None)
    sim.world.timers[0].again(0)
    sim.settle()
    (found,) = broken(sim, "R1")
    assert found.startswith(f"R1 [{task_id}]: a recurring fire created its task again")


def test_a_delayed_create_whose_insert_is_slow_still_runs_once(sim: Sim) -> None:
    """The timer comes before the item exists: fireTimers keeps it (ChangeMessageVisibility
    1, 2, 4, 8, 15 s, within 60 s past run_at); the item, written SCHEDULED with its run_at
    passed, is promoted when the kept timer comes again, and runs once. (A delay under
    1 s is PENDING at once: no timer.)"""
    task = sim.create("SIM_SYNC", delay=1.5, slow=30.0)
    assert sim.world.snapshot(task.id) is None  # the insert waits
    sim.settle()
    assert sim.item(task.id)["status"] == "DONE"
    assert starts(sim, task.id) == 1
    (promoted,) = promotions(sim, task.id)
    assert promoted.actor.startswith("FireTimers"), promoted.actor  # not the sweeper
    assert broken(sim) == []


def test_a_timer_that_beats_its_item_still_promotes_it_at_its_time(sim: Sim) -> None:
    # (a delay under 1 s is made PENDING at once: no timer to beat)
    task = sim.create("SIM_SYNC", delay=2.0, slow=3.0)
    actions.deliver_timers(sim.world, 10, 0)
    sim.settle()
    (promoted,) = promotions(sim, task.id)
    assert promoted.at - actions.run_at_seconds(sim.item(task.id)) < 5, promoted.actor


def _create_again(sim: Sim, task_id: str, delay: float) -> Any:
    return sim.world.lambdas.invoke(
        CLI,
        None,
        choice=0,
        call=lambda app: TaskRunnerClient(app).create_task(
            "SIM_SYNC", {"nonce": "other"}, task_id=task_id, delay=delay
        ),
    )


def test_a_refused_create_under_a_scheduled_tasks_id_leaves_its_schedule(sim: Sim) -> None:
    task = sim.create("SIM_SYNC", delay=3600.0)
    refused = _create_again(sim, task.id, 60.0)
    assert refused.outcome == "error"  # TaskConflict
    assert sim.world.eventbridge.for_task(task.id) is not None
