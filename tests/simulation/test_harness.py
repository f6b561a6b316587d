"""The simulation's own parts behave as AWS documents (so that what the harness finds is
the runner's, not the harness's): Step Functions' names and ASL semantics, Lambda's
timeouts and frozen threads, the stream mapping's retries, the fault plan."""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runner.local.stream_records import sequence_number
from tests.simulation import actions, asl
from tests.simulation.executions import Execution
from tests.simulation.faults import TABLE_WIDE, FaultKind, FaultPlan
from tests.simulation.fibers import EPOCH, Running, Scheduler, SimClock, SimTimeout
from tests.simulation.scenario import simulated
from tests.simulation.stepfunctions import NAME_RESERVED_SECONDS, StepFunctionsService
from tests.simulation.streams import MappingQueue
from tests.simulation.topology import load_topology
from tests.simulation.virtual import SimThread, virtualized

ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:m"


class Answers:
    """Task resources that answer from a script: a result, or a StatesError to raise."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[Any] = []

    def start(
        self, resource: str, params: Any, state: str, execution: Execution, done: Any
    ) -> None:
        self.calls.append(params)
        answer = self.answers.pop(0)
        if isinstance(answer, asl.StatesError):
            done(None, answer)
        else:
            done(answer, None)


def _service(definition: dict[str, Any], answers: Answers) -> StepFunctionsService:
    service = StepFunctionsService(SimClock(), random.Random(1), answers)
    service.create_state_machine(ARN, "m", json.dumps(definition), {})
    return service


def _run(service: StepFunctionsService, execution: Execution) -> list[float]:
    """Step the execution to its end; returns the waits between steps (Retry delays)."""
    waits = []
    while execution.status == "RUNNING":
        if execution.next_at > service.clock.t:
            waits.append(execution.next_at - service.clock.t)
            service.clock.advance_to(execution.next_at)
        service.step(execution)
    return waits


TASK = {
    "StartAt": "Work",
    "States": {
        "Work": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"Payload": {"id.$": "$.id"}},
            "ResultPath": "$.out",
            "Retry": [
                {
                    "ErrorEquals": ["Flaky"],
                    "IntervalSeconds": 2,
                    "BackoffRate": 2,
                    "MaxAttempts": 3,
                    "MaxDelaySeconds": 5,
                }
            ],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Decide"}],
            "Next": "Decide",
        },
        "Decide": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.error", "IsPresent": True, "Next": "Broken"}],
            "Default": "Done",
        },
        "Broken": {"Type": "Fail", "Error": "Broken", "Cause": "caught"},
        "Done": {"Type": "Succeed"},
    },
}


def test_start_execution_is_idempotent_only_for_a_running_execution_and_the_same_input() -> None:
    service = _service(TASK, Answers({"ok": 1}))
    arn = service.start_execution(stateMachineArn=ARN, name="t-1", input='{"id": "t"}')
    # Same name and input while RUNNING: the same execution
    again = service.start_execution(stateMachineArn=ARN, name="t-1", input='{"id": "t"}')
    assert again["executionArn"] == arn["executionArn"]
    # A different input: refused
    with pytest.raises(ClientError, match="ExecutionAlreadyExists"):
        service.start_execution(stateMachineArn=ARN, name="t-1", input='{"id": "other"}')
    _run(service, service.executions[arn["executionArn"]])
    # Closed: refused whatever the input, for 90 days
    with pytest.raises(ClientError, match="ExecutionAlreadyExists"):
        service.start_execution(stateMachineArn=ARN, name="t-1", input='{"id": "t"}')
    service.clock.advance_to(service.clock.t + NAME_RESERVED_SECONDS + 1)
    later = service.start_execution(stateMachineArn=ARN, name="t-1", input='{"id": "t"}')
    assert later["executionArn"] == arn["executionArn"]  # a new execution under the name
    with pytest.raises(ClientError, match="InvalidName"):
        service.start_execution(stateMachineArn=ARN, name="order:42", input="{}")


def test_stop_execution_aborts_and_describe_reports_it() -> None:
    service = _service(TASK, Answers())
    arn = service.start_execution(stateMachineArn=ARN, name="x", input='{"id": "t"}')[
        "executionArn"
    ]
    service.stop_execution(executionArn=arn)
    assert service.describe_execution(executionArn=arn)["status"] == "ABORTED"
    with pytest.raises(ClientError, match="ExecutionDoesNotExist"):
        service.describe_execution(executionArn=arn + "-nope")


def test_retry_backs_off_as_written_then_catch_puts_the_error_at_its_result_path() -> None:
    flaky = asl.StatesError("Flaky", "again")
    service = _service(TASK, Answers(flaky, flaky, flaky, flaky))
    arn = service.start_execution(stateMachineArn=ARN, name="x", input='{"id": "t"}')[
        "executionArn"
    ]
    execution = service.executions[arn]
    waits = _run(service, execution)
    # 2 s * 2^n, capped at MaxDelaySeconds, MaxAttempts retries; then the Catch.
    assert waits == [2.0, 4.0, 5.0]
    assert execution.status == "FAILED" and execution.error == "Broken"
    assert execution.data["error"] == {"Error": "Flaky", "Cause": "again"}
    assert execution.data["id"] == "t"  # ResultPath kept the input


def test_a_result_goes_to_its_result_path_and_the_choice_takes_the_default() -> None:
    answers = Answers({"Payload": 7})
    service = _service(TASK, answers)
    arn = service.start_execution(stateMachineArn=ARN, name="x", input='{"id": "t"}')[
        "executionArn"
    ]
    _run(service, service.executions[arn])
    assert answers.calls == [{"Payload": {"id": "t"}}]
    assert service.executions[arn].status == "SUCCEEDED"
    assert service.executions[arn].output == {"id": "t", "out": {"Payload": 7}}


def test_intrinsics_paths_and_uncatchable_errors() -> None:
    context = {"State": {"EnteredTime": "2026-12-01T00:00:00.000Z"}}
    data = {"episode": 3, "a": {"b": [1, 2]}}
    template = {":n": {"N.$": "States.Format('{}', $.episode)"}, "t.$": "$$.State.EnteredTime"}
    assert asl.apply_template(template, data, context) == {
        ":n": {"N": "3"},
        "t": "2026-12-01T00:00:00.000Z",
    }
    assert asl.get_path("$.a.b[1]", data, context) == 2
    assert asl.set_path(data, None, {"x": 1}) == data
    with pytest.raises(asl.StatesError, match=r"States\.Runtime"):
        asl.get_path("$.missing", data, context)
    assert not asl.error_matches(["States.ALL"], "States.Runtime")
    assert asl.error_matches(["States.TaskFailed"], "Lambda.Unknown")
    assert not asl.error_matches(["States.TaskFailed"], "States.Timeout")


def _scheduler() -> Scheduler:
    return Scheduler(SimClock())


def test_a_thread_past_its_join_timeout_acts_only_in_the_next_invocation_of_its_env() -> None:
    sched = _scheduler()
    acted: list[float] = []
    with virtualized(sched, random.Random(1)):

        def late() -> None:
            sched.sleep(50)
            acted.append(sched.clock.t)

        def handler() -> None:
            thread = SimThread(target=late)
            thread.start()
            thread.join(10)  # abandoned, as the executor abandons a sync handler

        first = sched.start("env", handler, deadline=None, on_done=lambda r: None)
        sched.run_until(EPOCH + 500)
        assert first.root.done and acted == []  # frozen with its environment
        second = sched.start("env", lambda: sched.sleep(1), deadline=None, on_done=lambda r: None)
        sched.run_until(EPOCH + 600, stop=lambda: second.root.done)
        assert acted == [EPOCH + 500]  # thawed: it acts as soon as its env runs again
        sched.shutdown(["env"])


def test_a_timeout_kills_the_invocation_and_its_threads_never_act_again() -> None:
    sched = _scheduler()
    acted: list[float] = []
    with virtualized(sched, random.Random(1)):

        def thread() -> None:
            sched.sleep(30)
            acted.append(1)

        def handler() -> None:
            SimThread(target=thread).start()
            sched.sleep(100)
            acted.append(2)

        run = sched.start("env", handler, deadline=EPOCH + 20, on_done=lambda r: None)
        sched.run_until(EPOCH + 1000)
        assert isinstance(run.error, SimTimeout) and sched.clock.t == EPOCH + 1000
        second = sched.start(
            "env2", lambda: sched.sleep(500), deadline=None, on_done=lambda r: None
        )
        sched.run_until(EPOCH + 2000, stop=lambda: second.root.done)
        assert acted == []


def test_invocations_run_concurrently_on_virtual_time() -> None:
    sched = _scheduler()
    ends: dict[str, float] = {}
    with virtualized(sched, random.Random(1)):

        def done(running: Running) -> None:
            ends[str(running.env)] = sched.clock.t - EPOCH

        for env, seconds in (("a", 30.0), ("b", 10.0)):
            sched.start(env, functools.partial(sched.sleep, seconds), deadline=None, on_done=done)
        sched.run_until(EPOCH + 100)
    assert ends == {"b": 10.0, "a": 30.0}


def _records(keys: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "eventName": "INSERT",
            "dynamodb": {
                "SequenceNumber": str(100 + i),
                "Keys": {"id": {"S": key}},
                "NewImage": {"status": {"S": "PENDING"}},
                "ApproximateCreationDateTime": int(EPOCH),
            },
        }
        for i, key in enumerate(keys)
    ]


def test_a_mapping_retries_from_the_lowest_reported_failure_and_gives_up_after_its_limit() -> None:
    topology = load_topology()
    mapping = next(m for m in topology.mappings if m.batch_size == 100)
    queue = MappingQueue(mapping, topology.mapped_function(mapping))
    for record in _records(["a", "b", "c"]):
        queue.offer(record)
    batch = queue.next_batch(EPOCH, skip=0, take=10)
    assert batch is not None and [sequence_number(r) for r in batch.records] == [
        "100",
        "101",
        "102",
    ]
    failed = {"batchItemFailures": [{"itemIdentifier": "101"}]}
    queue.settle(batch, EPOCH, function_error=False, response=failed)
    assert [sequence_number(r) for r in queue.delivered] == ["100"]
    assert mapping.maximum_retry_attempts is not None
    for _ in range(mapping.maximum_retry_attempts):
        retry = queue.next_batch(EPOCH, skip=0, take=10)
        assert retry is not None and [sequence_number(r) for r in retry.records] == ["101", "102"]
        queue.settle(retry, EPOCH, function_error=False, response=failed)
    assert not queue.busy()
    assert [(d.condition, d.first_sequence, d.size) for d in queue.discarded] == [
        ("RetryAttemptsExhausted", "101", 2)
    ]


def test_reordering_keeps_each_items_records_in_order() -> None:
    topology = load_topology()
    mapping = next(m for m in topology.mappings if m.batch_size == 100)
    queue = MappingQueue(mapping, topology.mapped_function(mapping))
    for record in _records(["a", "b", "a", "c"]):
        queue.offer(record)
    batch = queue.next_batch(EPOCH, skip=1, take=10)  # a's records wait behind b and c
    assert batch is not None and [sequence_number(r) for r in batch.records] == ["101", "103"]


def test_parallel_batches_of_a_shard_never_hold_one_items_records_at_once() -> None:
    topology = load_topology()
    mapping = next(m for m in topology.mappings if m.batch_size == 100)
    assert mapping.parallelization_factor == 10
    queue = MappingQueue(mapping, topology.mapped_function(mapping))
    for record in _records(["a", "b"]):
        queue.offer(record)
    first = queue.next_batch(EPOCH, skip=0, take=1)
    second = queue.next_batch(EPOCH, skip=0, take=1)  # a second lane, while the first runs
    assert first is not None and second is not None
    assert [sequence_number(r) for r in first.records + second.records] == ["100", "101"]
    for record in _records(["a", "c"])[:1]:  # a's next record waits for a's batch
        queue.offer({**record, "dynamodb": {**record["dynamodb"], "SequenceNumber": "200"}})
    assert queue.next_batch(EPOCH, skip=0, take=10) is None
    queue.settle(first, EPOCH, function_error=False, response={"batchItemFailures": []})
    third = queue.next_batch(EPOCH, skip=0, take=10)
    assert third is not None and [sequence_number(r) for r in third.records] == ["200"]
    lone = dataclasses.replace(mapping, parallelization_factor=1)  # AWS's default
    single = MappingQueue(lone, topology.mapped_function(lone))
    for record in _records(["x", "y"]):
        single.offer(record)
    assert single.next_batch(EPOCH, skip=0, take=1) is not None
    assert not single.deliverable()  # one lane: the shard waits for its batch


def test_a_transient_fault_lasts_the_callers_whole_retry_budget_and_no_longer() -> None:
    plan = FaultPlan()
    plan.arm("t1", FaultKind.TRANSIENT, 2)
    decided = [plan.decide("S:Op", "t1", EPOCH, budget=3) for _ in range(6)]
    assert decided == [
        None,
        FaultKind.TRANSIENT,
        FaultKind.TRANSIENT,
        FaultKind.TRANSIENT,
        None,
        None,
    ]
    assert plan.decide("S:Op", "t2", EPOCH, budget=3) is None  # other tasks: untouched


def test_a_fault_is_named_after_the_runners_method_that_made_the_call() -> None:
    with simulated() as sim:
        task = sim.create("SIM_SYNC", fault=(FaultKind.LOST_REPLY, 2, 0.0))
        sim.deliver_all()
        assert sim.item(task.id)["status"] == "DONE"  # the lost reply was recognised
        sites = [(f.site, f.kind) for f in sim.world.faults.firings]
    assert sites == [("TaskStore.record_outcome:UpdateItem", FaultKind.LOST_REPLY)]


def test_a_direct_invoke_runs_the_function_in_its_own_environment_and_waits_for_it() -> None:
    from tests.simulation.world import CLI

    with simulated() as sim:
        run_task = sim.world.topology.functions["RunTaskLambdaFunction"]

        def call(app: Any) -> Any:
            answer = app.clients.client("lambda").invoke(
                FunctionName=run_task.arn, Payload=json.dumps({"task_id": "nope", "episode": 1})
            )
            return json.loads(answer["Payload"].read())

        invocation = sim.world.lambdas.invoke(CLI, None, choice=0, call=call)
        assert invocation.result["note"].startswith("superseded")
        assert [i.function.logical_id for i in sim.world.lambdas.finished] == [
            "RunTaskLambdaFunction",
            "Cli",
        ]


def test_a_batch_the_mapping_gave_up_on_goes_to_its_queue_and_the_sweep_replays_it() -> None:
    with simulated() as sim:
        task = sim.create("SIM_SYNC", shape="raw")  # no status_shard: no orphan scan finds it
        sim.stall("hour")  # the record outlives the mapping's MaximumRecordAgeInSeconds
        sim.deliver_all()
        # The mappings' on-failure queue (the timer queue and its dead-letter queue are others)
        queues = [
            q
            for q in sim.world.sqs.queues.values()
            if "stream-failures" in q.name and "dlq" not in q.name
        ]
        assert [len(q.messages) for q in queues] == [1]
        body = json.loads(queues[0].messages[0].body)
        assert body["requestContext"]["condition"] == "RecordAgeExceeded"
        assert body["DDBStreamBatchInfo"]["batchSize"] == 1
        sim.settle()
        assert sim.item(task.id)["status"] == "DONE"
        assert queues[0].deleted == 1 and not queues[0].messages
        assert [v.describe() for v in sim.violations()] == []


def test_an_async_handlers_abandoned_thread_ends_its_environment_and_nothing_else() -> None:
    with simulated() as sim:
        task = sim.create("SIM_SLOW_ASYNC", variant=2)  # 150 s of to_thread work, 30 s timeout
        other = sim.create("SIM_SYNC")
        sim.deliver_all()
        sim.settle()
        outcomes = {i.id: i.outcome for i in sim.world.lambdas.finished}
        assert outcomes["ProcessStream#2/1"] == "exit"  # runner.runtime ended the runtime
        starts = [e for e in sim.world.ledger.events if e.task == task.id and e.kind == "start"]
        assert {e.env for e in starts} == {e.env for e in starts if e.env != "?"}  # on fibers
        assert sim.item(other.id)["status"] == "DONE"
        assert [v.describe() for v in sim.violations()] == []


def test_a_failed_scheduled_run_is_retried_a_minute_later_and_may_come_twice() -> None:
    with simulated() as sim:
        sim.world.faults.arm(TABLE_WIDE, FaultKind.CRASH_BEFORE, 1)  # the first sweep's call
        sim.run_for(300 + 61 + 5)
        finished = sim.world.lambdas.finished
        sweeps = [i for i in finished if i.function.logical_id.startswith("Sweep")]
        assert [i.outcome for i in sweeps[:2]] == ["crash", "ok"]
        assert sweeps[0].event["id"] == sweeps[1].event["id"]  # Lambda's retry: the same event
        assert sweeps[1].started - (sweeps[0].ended or 0) >= 60
        again = sim.schedules.again(0, None)
        assert again is not None and again.event["id"] == sweeps[0].event["id"]


def test_a_month_passes_for_ttl_only_once_the_sweeper_has_replayed_what_waits_for_it() -> None:
    """The long pass's finding (7 tasks stuck PENDING in 3 of 240 examples): TTL's month
    jump dropped an on-failure message (14 days' retention) the sweeper would have
    replayed within 5 minutes. A harness artifact: the jump now waits for the queue."""
    with simulated() as sim:
        sim.create("SIM_SYNC")
        sim.deliver_all()
        raw = sim.create("SIM_SYNC", shape="raw")
        sim.stall("hour")
        sim.deliver_all()  # given up: its message waits in the on-failure queue
        assert sim.world.sqs.waiting() == 1
        assert actions.expire_by_ttl(sim.world, sim.schedules) == []  # not quiet yet
        sim.settle()
        assert sim.item(raw.id)["status"] == "DONE"
        assert [v.describe() for v in sim.violations()] == []
