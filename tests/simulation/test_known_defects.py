"""Issue 11's defects, each as the shortest scripted run of the simulation that broke an
invariant on the code before its fix (issue-11h's commit 989538a: every one of these
failed there). Each asserts the invariant; all pass now and stay as regression tests.

A defect found later and not fixed at once gets its scripted run here marked
`@known(N, title)` (a strict xfail) and an entry in known_defects.py: when its fix lands
the test passes, strict xfail turns that into a failure, and the marker and the entry go.
"""

from __future__ import annotations

import pytest

from tests.simulation import actions
from tests.simulation.faults import FaultKind
from tests.simulation.invariants import Violation
from tests.simulation.scenario import Sim, simulated


def known(number: int, title: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"known defect {number} of issue 11: {title}")


def broken(sim: Sim, *invariants: str) -> list[str]:
    """The violations of these invariants, as text (empty when they hold)."""
    found: list[Violation] = sim.violations()
    return [v.describe() for v in found if v.invariant in invariants]


def test_a_near_limit_task_that_fails_reaches_a_final_status_and_does_not_stop_sweeps() -> None:
    with simulated() as sim:
        # 409 KB, put by hand (the client refuses it): no outcome it could record fits.
        sim.create("SIM_LARGE", variant=2, shape="raw")
        sim.deliver_all()
        sim.settle()
        assert broken(sim, "I3", "I6") == []


def test_a_throttled_final_write_in_the_workflow_is_retried_not_caught() -> None:
    with simulated() as sim:
        task = sim.create("SIM_FLAKY", variant=0)  # fails once on the stream
        sim.deliver_all()
        # The workflow's attempt succeeds, but its DONE write is throttled past the budget.
        sim.world.faults.arm(task.id, FaultKind.TRANSIENT, 1, site="record_outcome")
        sim.settle()
        assert sim.item(task.id).get("status") == "DONE"
        assert broken(sim, "I4", "I5") == []


def test_a_start_execution_storm_does_not_strand_the_task() -> None:
    with simulated() as sim:
        task = sim.create("SIM_FLAKY", variant=0)
        sim.world.faults.arm(task.id, FaultKind.TRANSIENT, 1, 7200.0, site="StartExecution")
        sim.deliver_all()  # routeFailed: every delivery fails; the mapping gives up
        sim.settle()
        assert broken(sim, "I3") == []


def test_a_handler_past_its_timeout_makes_no_effect_after_its_retry_started() -> None:
    with simulated() as sim:
        sim.create("SIM_SLOW", variant=2)  # works 150 s, times out at 30 s
        sim.deliver_all()
        sim.run_for(200)  # the retry runs meanwhile
        sim.create("SIM_SYNC")  # the next batch reuses the stream function's environment
        sim.deliver_all()
        sim.settle()
        assert broken(sim, "I1") == []


def test_one_claim_never_runs_its_handler_twice_at_once() -> None:
    with simulated() as sim:
        sim.create("SIM_LOCAL_RETRY", variant=2)  # a 70 s try against a 60 s timeout
        sim.deliver_all()
        sim.settle()
        assert broken(sim, "I2") == []


def test_retry_task_whose_start_execution_fails_can_be_repeated_or_is_repaired() -> None:
    with simulated() as sim:
        task = sim.create("SIM_PERMANENT")
        sim.deliver_all()
        sim.world.faults.arm(task.id, FaultKind.TRANSIENT, 1, site="StartExecution")
        actions.retry_task(sim.world, task.id, 0)  # the status write lands, the start fails
        actions.retry_task(sim.world, task.id, 0)  # the operator tries again
        sim.settle()
        assert broken(sim, "I3") == []


def test_in_process_retries_end_before_the_sweeper_may_take_the_task_over() -> None:
    with simulated() as sim:
        sim.run_for(200)  # the lease (90 s) then ends just before the 300 s sweep
        sim.create("SIM_LOCAL_RETRY", variant=0)  # three tries of 50 s, the third succeeds
        sim.deliver_all()
        sim.settle()
        assert broken(sim, "I1") == []


def test_a_task_id_reused_after_ttl_gets_its_own_retry_execution() -> None:
    with simulated() as sim:
        first = sim.create("SIM_FLAKY", variant=0)
        sim.deliver_all()
        sim.settle()
        assert actions.expire_by_ttl(sim.world, sim.schedules) == [first.id]
        sim.create("SIM_FLAKY", variant=0, task_id=first.id)  # the producer reuses the id
        sim.deliver_all()
        sim.settle()
        assert broken(sim, "I3") == []


def test_a_result_dynamodb_cannot_store_fails_the_task_without_failing_the_batch() -> None:
    with simulated() as sim:
        sim.create("SIM_ODD_RESULT", variant=0)  # returns NaN
        sim.create("SIM_SYNC")
        sim.deliver_all()
        sim.settle()
        assert broken(sim, "I6") == []


def test_a_task_whose_retries_are_exhausted_expires() -> None:
    with simulated() as sim:
        task = sim.create("SIM_FLAKY", variant=2)  # fails more often than it may retry
        # The stream's Lambda dies before recording: the sweeper fails the expired lease.
        sim.world.faults.arm(task.id, FaultKind.CRASH_BEFORE, 1, site="record_outcome")
        sim.deliver_all()
        sim.settle()
        assert broken(sim, "I5") == []


def test_orphans_run_by_the_sweeper_never_overrun_its_lambda() -> None:
    with simulated() as sim:
        sim.world.env_overrides["TASK_RUNNER_ORPHAN_SCAN_SEGMENTS"] = "1"
        for _ in range(34):  # more than the sweeper runs at once, each for 200 s
            sim.create("SIM_LONG", variant=0, shape="raw")
        sim.lose_stream_records()
        sim.run_for(700)  # the 300 s sweep finds all 34
        assert broken(sim, "T") == []


def test_a_malformed_task_whose_record_was_lost_still_ends_failed() -> None:
    with simulated() as sim:
        sim.create("SIM_SYNC", shape="malformed")
        sim.stall("hour")
        sim.deliver_all()
        sim.settle()
        assert broken(sim, "I3") == []


def test_failing_a_malformed_task_is_a_transition_the_model_allows() -> None:
    with simulated() as sim:
        sim.create("SIM_SYNC", shape="malformed")
        sim.deliver_all()
        assert broken(sim, "I4") == []


def test_the_same_runs_without_the_fault_keep_every_invariant() -> None:
    """The scenarios above fail because of what they inject, not because of the harness."""
    with simulated() as sim:
        for task_type in ("SIM_FLAKY", "SIM_SYNC", "SIM_ASYNC", "SIM_PERMANENT"):
            sim.create(task_type)
        sim.create("SIM_LARGE", variant=0)
        sim.deliver_all()
        sim.settle()
        assert [v.describe() for v in sim.violations()] == []
