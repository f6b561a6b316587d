"""Scripted runs of delayed and recurring tasks through the simulated deployment: the
timer queue's consumer (`fireTimers`, as deployed) invoked as its SQS mapping would,
racing the sweeper and itself, with I1-I6 checked on every write and effect."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from runner.client import TaskRunnerClient
from runner.delays import OVERDUE_GRACE_SECONDS, DelayMessage
from runner.items import iso
from tests.simulation.faults import FaultKind
from tests.simulation.scenario import Sim, simulated
from tests.simulation.world import CLI, PRODUCER, TaskInfo

pytestmark = pytest.mark.slow


def _function(sim: Sim, logical_id: str) -> Any:
    return sim.world.topology.functions[logical_id]


def _sqs_event(*bodies: str) -> dict[str, Any]:
    """What the timer queue's mapping hands fireTimers."""
    return {
        "Records": [
            {"messageId": f"m{n}", "body": body, "eventSource": "aws:sqs"}
            for n, body in enumerate(bodies)
        ]
    }


def _sweep_event(sim: Sim) -> dict[str, Any]:
    return {"version": "0", "id": "sweep", "detail-type": "Scheduled Event", "detail": {}}


def _finish(sim: Sim, task_id: str) -> dict[str, Any]:
    sim.settle()
    assert sim.violations() == []
    item = sim.item(task_id)
    starts = [e for e in sim.world.ledger.events if e.kind == "start" and e.task == task_id]
    assert item.get("status") == "DONE", item
    assert len(starts) == 1, starts
    return item


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_schedule_firing_twice_at_once_and_again_later_creates_and_runs_one_task(
    seed: int,
) -> None:
    with simulated(seed=seed) as sim:
        world = sim.world
        nonce = f"n{world.ledger.next_seq()}"
        body = json.dumps(
            {
                "kind": "recurring",
                "schedule": "sim-hourly",
                "task_type": "SIM_SYNC",
                "data": {"nonce": nonce},
                "scheduled_time": "2026-12-01T03:00:00Z",
            }
        )
        task_id = "schedule:sim-hourly:2026-12-01T03:00:00Z"
        world.tasks[task_id] = TaskInfo(task_id, nonce, "SIM_SYNC", "client", world.clock.t)
        fire = _function(sim, "FireTimersLambdaFunction")
        # Two deliveries of one fire, in two environments at once; the first one's
        # PutItem reply is lost after the write applied
        world.faults.arm(task_id, FaultKind.LOST_REPLY, 1, site="PutItem")
        world.lambdas.start(fire, _sqs_event(body), choice=0)
        world.lambdas.start(fire, _sqs_event(body), choice=1)
        sim.run_for(5)
        # ... and a third, after the task ran
        world.lambdas.invoke(fire, _sqs_event(body), choice=0, call=None)
        item = _finish(sim, task_id)

        assert item["created_at"] == "2026-12-01T03:00:00.000Z"
        scanned = world.raw.dynamodb.scan(TableName=world.table)["Items"]
        assert [i["id"]["S"] for i in scanned] == [task_id]


def _create_delayed(sim: Sim, task_id: str, delay: float) -> None:
    world = sim.world
    nonce = f"n{world.ledger.next_seq()}"
    created = world.lambdas.invoke(
        PRODUCER,
        None,
        choice=0,
        call=lambda app: TaskRunnerClient(app).create_task(
            "SIM_SYNC", {"nonce": nonce}, task_id=task_id, delay=delay
        ),
    )
    assert created.outcome == "ok", created.error
    world.items[task_id] = world.snapshot(task_id)
    world.tasks[task_id] = TaskInfo(task_id, nonce, "SIM_SYNC", "client", world.clock.t)
    assert sim.item(task_id)["status"] == "SCHEDULED"


def _promotions(sim: Sim, task_id: str) -> list[Any]:
    return [
        w
        for w in sim.world.ledger.writes
        if w.task == task_id and w.field("status")[1] == "PENDING"
    ]


@pytest.mark.parametrize(("seed", "first"), [(1, "timer"), (2, "sweep"), (3, "timer")])
def test_a_delayed_tasks_timer_and_the_sweeper_at_once_run_it_once(seed: int, first: str) -> None:
    with simulated(seed=seed) as sim:
        world = sim.world
        _create_delayed(sim, "late-1", 60)
        # Its timer comes late, when the sweeper also finds the task overdue
        world.clock.advance_to(world.clock.t + 60 + OVERDUE_GRACE_SECONDS + 1)
        timer = _sqs_event(DelayMessage("late-1", sim.item("late-1")["run_at"]).body())
        fire = _function(sim, "FireTimersLambdaFunction")
        sweep = _function(sim, "SweepLambdaFunction")
        starts = [(fire, timer), (sweep, _sweep_event(sim))]
        for function, event in starts if first == "timer" else starts[::-1]:
            world.lambdas.start(function, event, choice=0)

        item = _finish(sim, "late-1")

        assert len(_promotions(sim, "late-1")) == 1
        assert item["attempts"] == 1


def test_the_sweepers_promotion_read_before_the_timer_fired_changes_nothing_after() -> None:
    """The race at its narrowest: the sweeper has read the task from the index; the
    timer promotes it and it runs to DONE; then the sweeper's promotion is written."""
    with simulated(seed=5) as sim:
        world = sim.world
        _create_delayed(sim, "late-2", 60)
        world.clock.advance_to(world.clock.t + 60 + OVERDUE_GRACE_SECONDS + 1)
        cutoff = datetime.fromtimestamp(world.clock.t - OVERDUE_GRACE_SECONDS, UTC)
        read = world.lambdas.invoke(
            CLI, None, choice=0, call=lambda app: list(app.store.iter_overdue(iso(cutoff)))
        )
        assert read.result == [("late-2", sim.item("late-2")["run_at"])]
        timer = _sqs_event(DelayMessage("late-2", sim.item("late-2")["run_at"]).body())
        world.lambdas.invoke(_function(sim, "FireTimersLambdaFunction"), timer, choice=0, call=None)
        sim.run_for(30)
        assert sim.item("late-2")["status"] == "DONE"

        stale = world.lambdas.invoke(
            CLI,
            None,
            choice=0,
            call=lambda app: [
                app.store.promote(task_id, run_at) for task_id, run_at in read.result
            ],
        )

        assert stale.result == [None]
        _finish(sim, "late-2")
        assert len(_promotions(sim, "late-2")) == 1


# Seeds whose jitter lands the insert after run_at (the others land it before)
@pytest.mark.parametrize("seed", [1, 2, 5])
def test_a_timer_that_comes_while_its_items_insert_is_throttled_is_kept_then_runs_it(
    seed: int,
) -> None:
    """The timer is set first; the producer's PutItem is throttled and retried past
    `run_at`. The timer that comes meanwhile finds no item: kept (reported failed, so
    SQS delivers it again), not dropped, and its next delivery promotes the task at once
    rather than the sweeper a minute and a sweep later."""
    with simulated(seed=seed) as sim:
        world = sim.world
        task_id, nonce = "slow-insert-1", f"n{world.ledger.next_seq()}"
        world.tasks[task_id] = TaskInfo(task_id, nonce, "SIM_SYNC", "client", world.clock.t)
        run_at = iso(datetime.fromtimestamp(world.clock.t + 1.0, UTC))
        # Throttled for six tries of the producer's eight: its insert lands seconds late
        world.budget = 6
        world.faults.arm(task_id, FaultKind.TRANSIENT, 1, site="PutItem")
        producer = world.lambdas.start(
            PRODUCER,
            None,
            choice=0,
            call=lambda app: TaskRunnerClient(app).create_task(
                "SIM_SYNC", {"nonce": nonce}, task_id=task_id, delay=1.0
            ),
        )
        # Its message (DelaySeconds 1) comes at once after the SendMessage
        fire = _function(sim, "FireTimersLambdaFunction")
        timer = _sqs_event(DelayMessage(task_id, run_at).body())
        early = world.lambdas.start(fire, timer, choice=0)
        world.scheduler.run_until(world.clock.t + 30, stop=lambda: early.done)

        assert not producer.done, producer.ended  # still retrying its insert at run_at
        assert early.result == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
        world.scheduler.run_until(world.clock.t + 60, stop=lambda: producer.done)
        assert producer.outcome == "ok", producer.error
        world.items[task_id] = world.snapshot(task_id)
        again = world.lambdas.invoke(fire, timer, choice=0, call=None)
        assert again.result == {"batchItemFailures": []}
        item = _finish(sim, task_id)
        assert len(_promotions(sim, task_id)) == 1
        assert item["run_at"] == run_at
