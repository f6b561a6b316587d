"""Issue 14 in the protocol simulation: durable steps and offloaded payloads under the
faults they must survive, with every invariant checked (I1-I6, T, and S1-S2 for steps).

- a crash after a step's effect but before its record: the step runs again, is recorded
  once, and the steps recorded before it are not run again;
- a step record racing a lease takeover (the invocation hangs in the record's call and
  times out; a lost reply of an applied record): no record by a dead claim, none twice;
- S3 unavailable while a result is written (a 15-minute outage): the task ends DONE once
  S3 is back, never lost;
- an orphaned object (a result uploaded by an attempt that crashed before its outcome)
  is deleted with its task, on TTL's REMOVE record through routeFailed's filter.
"""

from __future__ import annotations

from typing import Any

from tests.simulation import actions
from tests.simulation.faults import FaultKind
from tests.simulation.scenario import Sim, simulated


def _effects(sim: Sim, task_id: str) -> dict[str, list[int]]:
    """The attempts that made each labelled effect of a task."""
    found: dict[str, list[int]] = {}
    for event in sim.world.ledger.events:
        if event.kind == "effect" and event.task == task_id:
            found.setdefault(event.label, []).append(event.attempt)
    return found


def _objects(sim: Sim, prefix: str = "") -> list[str]:
    s3 = sim.world.raw.get("s3")
    bucket = sim.world.physical["PayloadBucket"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _steps(item: dict[str, Any]) -> dict[str, int]:
    return {name: record["attempt"] for name, record in (item.get("steps") or {}).items()}


def test_a_crash_after_a_steps_effect_before_its_record_reruns_only_that_step() -> None:
    with simulated() as sim:
        # Given a three-step task whose process dies after s2's effect, before its record
        task = sim.create("SIM_STEPS", variant=1, fault=(FaultKind.CRASH_BEFORE, 2, 0.0))
        sim.world.faults.armed[-1].site = "record_step"
        sim.deliver_all()
        sim.settle()
        # Then it ends DONE; s1 ran once, s2 twice (the documented limit), s3 once
        item = sim.item(task.id)
        assert item.get("status") == "DONE"
        effects = _effects(sim, task.id)
        assert len(effects["step:s1"]) == 1 and len(effects["step:s3"]) == 1
        assert len(effects["step:s2"]) == 2
        assert _steps(item)["s1"] == 1 and _steps(item)["s2"] == _steps(item)["s3"] > 1
        assert [v.describe() for v in sim.violations()] == []


def test_a_step_record_whose_call_hangs_past_the_lease_is_never_written_by_the_dead_claim() -> None:
    with simulated() as sim:
        # Given an attempt that hangs in s2's record until its Lambda times out, while
        # its lease runs out and the sweeper and a retry take the task over
        task = sim.create("SIM_STEPS", variant=1, fault=(FaultKind.TIMEOUT, 2, 0.0))
        sim.world.faults.armed[-1].site = "record_step"
        sim.deliver_all()
        sim.stall("lease")
        sim.settle()
        item = sim.item(task.id)
        assert item.get("status") == "DONE"
        # S1 holds: every record is the live claim's, none replaced; S2: none re-run
        assert [v.describe() for v in sim.violations()] == []
        assert len(_effects(sim, task.id)["step:s1"]) == 1


def test_a_step_record_whose_reply_was_lost_is_recognised_not_rerun() -> None:
    with simulated() as sim:
        task = sim.create("SIM_STEPS", variant=1, fault=(FaultKind.LOST_REPLY, 1, 0.0))
        sim.world.faults.armed[-1].site = "record_step"
        sim.deliver_all()
        sim.settle()
        item = sim.item(task.id)
        assert item.get("status") == "DONE" and item.get("attempts") == 1
        assert _steps(item) == {"s1": 1, "s2": 1, "s3": 1}
        assert [v.describe() for v in sim.violations()] == []


def test_steps_resume_through_the_retry_workflow_with_offloaded_results() -> None:
    with simulated() as sim:
        task = sim.create("SIM_STEPS", variant=2)  # s2 fails once; 20 KB step results
        sim.deliver_all()
        sim.settle()
        item = sim.item(task.id)
        assert item.get("status") == "DONE" and item.get("payloads") is True
        effects = _effects(sim, task.id)
        assert effects["step:s1"] == [1] and len(effects["step:s2"]) == 2
        assert _steps(item)["s1"] == 1
        assert [v.describe() for v in sim.violations()] == []


def test_s3_unavailable_while_writing_a_result_ends_done_once_it_is_back() -> None:
    with simulated() as sim:
        # Given a 150 KB input and a 255 KB result (both offloaded), and S3 answering
        # SlowDown to that task's writes for 15 minutes from the result's upload on
        task = sim.create("SIM_LARGE", variant=3, fault=(FaultKind.TRANSIENT, 1, 900.0))
        sim.world.faults.armed[-1].site = "PutObject"
        sim.deliver_all()
        sim.settle()
        item = sim.item(task.id)
        assert any(f.site.endswith(":PutObject") for f in sim.world.faults.firings)
        assert item.get("status") == "DONE", item.get("error")
        assert int(item.get("attempts", 0)) > 1
        assert [v.describe() for v in sim.violations()] == []


def test_an_orphaned_result_object_is_deleted_with_its_task() -> None:
    from runner.payloads import task_prefix

    with simulated() as sim:
        # Given an attempt that uploads its result, then dies before its outcome write
        task = sim.create("SIM_LARGE", variant=3, fault=(FaultKind.CRASH_AFTER, 1, 0.0))
        sim.world.faults.armed[-1].site = "PutObject"
        sim.deliver_all()
        sim.settle()
        item = sim.item(task.id)
        assert item.get("status") == "DONE" and int(item.get("attempts", 0)) > 1
        prefix = task_prefix(task.id, item.get("created_at"))
        results = [k for k in _objects(sim, prefix) if "/result-" in k]
        assert len(results) == 2  # the orphan and the recorded one
        # When TTL deletes the task, its REMOVE record reaches routeFailed's filter
        assert actions.expire_by_ttl(sim.world, sim.schedules) == [task.id]
        sim.deliver_all()
        # Then every object of the task is gone, the orphan with them
        assert _objects(sim, prefix) == []
        assert [v.describe() for v in sim.violations()] == []
