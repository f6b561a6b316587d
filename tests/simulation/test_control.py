"""Issue 13's control paths in the simulation: a cancel racing a claim, a cancel racing a
retry execution's start, a heartbeat write throttled; with I1-I5 and C1 (nothing starts
after CANCELLED) checked on every run."""

from __future__ import annotations

from tests.simulation import actions
from tests.simulation.faults import FaultKind
from tests.simulation.scenario import Sim, simulated

CHECKED = ("I1", "I2", "I3", "I4", "I5", "C1")


def broken(sim: Sim) -> list[str]:
    return [v.describe() for v in sim.violations() if v.invariant in CHECKED]


def starts(sim: Sim, task_id: str) -> int:
    return sum(1 for e in sim.world.ledger.events if e.task == task_id and e.kind == "start")


def test_a_cancel_that_wins_the_race_with_the_claim_leaves_nothing_to_run() -> None:
    with simulated() as sim:
        task = sim.create("SIM_ASYNC", variant=1)
        actions.cancel_task(sim.world, task.id, 0)  # before the mapping delivers the insert
        sim.deliver_all()
        sim.settle()
        assert sim.item(task.id).get("status") == "CANCELLED"
        assert starts(sim, task.id) == 0
        assert broken(sim) == []


def test_a_claim_that_wins_the_race_with_the_cancel_is_stopped_at_its_next_await() -> None:
    with simulated() as sim:
        task = sim.create("SIM_LONG", variant=0)  # 200 s: handed to the workflow
        sim.deliver_all()
        sim.run_for(45)  # claimed by the execution's attempt; a heartbeat has beaten
        assert sim.item(task.id).get("status") == "PROCESSING"
        actions.cancel_task(sim.world, task.id, 0)
        sim.settle()
        # A sync handler that never looks at ctx.cancel_requested finishes first: DONE
        assert sim.item(task.id).get("status") == "DONE"
        assert sim.item(task.id).get("cancel_requested") is True
        assert broken(sim) == []


def test_a_cancel_racing_a_retry_executions_start() -> None:
    with simulated() as sim:
        task = sim.create("SIM_FLAKY", variant=2)  # fails six times
        sim.deliver_all()  # the stream's attempt fails; routeFailed starts the execution
        actions.cancel_task(sim.world, task.id, 0)  # before the execution's first step
        sim.settle()
        item = sim.item(task.id)
        assert item.get("status") == "CANCELLED"
        assert starts(sim, task.id) == 1  # the stream's attempt only
        assert broken(sim) == []


def test_a_throttled_heartbeat_never_lets_two_runs_overlap() -> None:
    with simulated() as sim:
        task = sim.create("SIM_LONG", variant=1)  # 400 s: beats every 30 s
        # Every heartbeat write throttled for 15 minutes, past the AWS retry budget: the
        # lease (120 s) could lapse, so the runtime is ended before it does; a later
        # attempt runs once the lease is over
        sim.world.faults.arm(task.id, FaultKind.TRANSIENT, 1, 900.0, site="heartbeat")
        sim.deliver_all()
        sim.settle()
        item = sim.item(task.id)
        # Each attempt's runtime was ended before its lease could lapse (os._exit from
        # the heartbeat's thread ends every thread of the process), and the next waited
        # for the lease: no two ran at once, whatever the outcome
        assert item.get("status") in ("DONE", "FAILED") and int(item["attempts"]) >= 2
        assert broken(sim) == []
