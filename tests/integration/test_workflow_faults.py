"""The retry workflow under the faults AWS has (defects 2, 3, 4, 6, 8, 10, 12; issue 16.4),
with moto's real Step Functions executor. Each retry wait of the state machine moves the
runner's clock on by as much, so leases expire as they would."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import types
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

import handler
from runner.client import TaskRunnerClient
from runner.errors import StoreError, WorkflowError
from runner.items import utcnow
from runner.local.statemachine import ASL_PATH
from runner.model import TaskStatus, status_shard
from tests.helpers import FakeLambdaContext
from tests.integration.test_workflow import Workflow, _build

ASL = json.loads(ASL_PATH.read_text())


@pytest.fixture
def flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    offset = [0.0]
    for built in _build(monkeypatch, instant=True):
        sleeps = built.sleeps

        def wait(seconds: float, sleeps: list[float] = sleeps) -> None:
            sleeps.append(seconds)
            offset[0] += seconds

        monkeypatch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=wait))
        built.app.store.clock = lambda: utcnow() + timedelta(seconds=offset[0])
        yield built


def _override(flow: Workflow, monkeypatch: pytest.MonkeyPatch, task_type: str, **kw: Any) -> None:
    definition = dataclasses.replace(flow.app.registry.get(task_type), **kw)
    monkeypatch.setitem(flow.app.registry._by_type, task_type, definition)


def _inputs(flow: Workflow) -> list[dict[str, Any]]:
    sfn = flow.app.clients.stepfunctions
    return [
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])
        for e in flow.executions()
    ]


def _fail_times(target: Any, name: str, times: int, error: Exception) -> list[int]:
    """Make `target.name` raise `error` on its first `times` calls."""
    real = getattr(target, name)
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return real(*args, **kwargs)

    setattr(target, name, flaky)
    return calls


# --- defect 2: infrastructure errors are retried, the Catch never overwrites a claim ---


def test_a_dynamodb_outage_in_an_attempt_is_retried_not_taken_for_exhausted_retries(
    flow: Workflow,
) -> None:
    # Given a task that fails once on the stream, and DynamoDB refusing the workflow's
    # first two claims (throttled past the runner's own retries)
    flow.insert("outage", "FLAKY_TASK", {"fail_times": 1})
    flow.pump()
    _fail_times(flow.app.store, "claim_for_retry", 2, StoreError("throttled"))

    # When the retry workflow runs it
    runs = flow.wait()

    # Then the outage was retried and the task succeeded
    task = flow.app.store.get("outage")
    assert task.status is TaskStatus.DONE and not task.retries_exhausted
    assert [r["status"] for r in runs] == ["SUCCEEDED"]


def test_an_attempt_whose_final_write_failed_is_not_overwritten_by_the_catch(
    flow: Workflow,
) -> None:
    # Given a task that fails once on the stream, and a workflow attempt whose handler
    # succeeds but whose final write DynamoDB refuses: the claim stays PROCESSING
    flow.insert("lost-write", "FLAKY_TASK", {"fail_times": 1})
    flow.pump()
    calls = _fail_times(flow.app.store, "record_outcome", 1, StoreError("throttled"))

    # When the workflow goes on
    [run] = flow.wait()

    # Then it waited for that claim's lease and ran the task again (a new claim), rather
    # than marking the task's retries exhausted over the live claim
    task = flow.app.store.get("lost-write")
    assert calls and run["status"] == "SUCCEEDED"
    assert task.status is TaskStatus.DONE and not task.retries_exhausted
    lease_held = [
        r for r in ASL["States"]["RunTask"]["Retry"] if r["ErrorEquals"] == ["TaskLeaseHeld"]
    ]
    assert task.attempts == 3 and lease_held[0]["IntervalSeconds"] in flow.sleeps


def test_the_exhaust_mode_waits_for_a_live_claim_then_leaves_none_behind(
    flow: Workflow,
) -> None:
    from runner.errors import TaskLeaseHeld
    from runner.model import ClaimSource

    flow.insert("held", "NOOP_TASK", {})
    claimed = flow.app.store.claim_pending("held", source=ClaimSource.CLI, lease_seconds=60)
    event = {"mode": "exhaust", "task_id": "held", "episode": 0, "error": "States.Timeout"}
    # A live claim is never overwritten: the state machine is told to wait
    with pytest.raises(TaskLeaseHeld):
        handler.run_task(event, FakeLambdaContext())
    assert flow.app.store.get("held").status is TaskStatus.PROCESSING
    # Once it is dead, the task is FAILED for good, with no claim token or lease
    flow.app.store.clock = lambda: utcnow() + timedelta(seconds=120)
    assert handler.run_task(event, FakeLambdaContext()) == {"outcome": "exhausted"}
    task = flow.app.store.get("held")
    assert task.status is TaskStatus.FAILED and task.retries_exhausted
    assert task.error is not None and task.error.type == "States.Timeout"
    assert not task.retryable and task.claim_token is None and task.lease_expires_at is None
    assert task.expires_at is not None and claimed.claim_token


def test_retries_exhausted_leave_no_claim_token_or_lease_and_set_the_expiry(
    flow: Workflow,
) -> None:
    flow.insert("doomed", "ALWAYS_FAILING_TASK", {})
    flow.pump()
    [run] = flow.wait()
    task = flow.app.store.get("doomed")
    assert run["status"] == "FAILED"
    assert task.status is TaskStatus.FAILED and task.retries_exhausted
    assert task.claim_token is None and task.lease_expires_at is None
    assert task.expires_at is not None


def test_an_attempt_of_the_previous_version_is_still_run(flow: Workflow) -> None:
    # Given a failed task, and the payload an execution started before a deploy sends
    flow.insert("old", "FLAKY_TASK", {"fail_times": 1})
    flow.pump()
    event = {"task_id": "old", "episode": 1, "failed_shard": "FAILED#03"}
    # When runTask gets it, it runs the attempt (leased for the longest type)
    outcome = handler.run_task(event, FakeLambdaContext())
    assert outcome["status"] == "DONE"


# --- defect 12: the lease follows the task's type --------------------------------------


def test_a_workflow_claim_is_leased_for_the_tasks_own_timeout(
    flow: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 10 s task type beside the 600 s EXPORT_DB
    _override(flow, monkeypatch, "FLAKY_TASK", timeout_seconds=10)
    leases: list[float] = []
    real = flow.app.store.claim_for_retry

    def claim(task_id: str, **kwargs: Any) -> Any:
        leases.append(kwargs["lease_seconds"])
        return real(task_id, **kwargs)

    monkeypatch.setattr(flow.app.store, "claim_for_retry", claim)
    flow.insert("short", "FLAKY_TASK", {"fail_times": 1})
    flow.pump()
    flow.wait()
    # Then the workflow's claim leased it for 10 s plus the grace, not for the longest type
    assert leases == [10 + 30]
    assert [i["task_type"] for i in _inputs(flow)] == ["FLAKY_TASK"]


# --- defect 4: a type longer than the stream can give runs in the workflow -------------


def test_export_db_is_handed_to_the_workflow_and_never_run_on_the_stream(
    flow: Workflow,
) -> None:
    # Given an EXPORT_DB task (600 s: more than processStream's 300 s can give)
    flow.insert("export", "EXPORT_DB", {"email": "ops@example.com"})

    # When the stream delivers it
    flow.pump()

    # Then the stream claimed nothing: an execution of its own runs it, in the export
    # function (whose role alone may Scan)
    assert flow.app.store.get("export").attempts == 0
    [given] = _inputs(flow)
    assert (given["task_id"], given["episode"], given["task_type"]) == ("export", 0, "EXPORT_DB")
    flow.wait()
    task = flow.app.store.get("export")
    assert task.claimed_by is not None and task.claimed_by.value == "workflow"
    assert [name for name, _, _ in flow.dispatcher.invocations][:1] == ["runExport"]


# --- defect 3: a task the routing gave up on is started by the sweeper -----------------


def test_a_failed_task_whose_routing_was_lost_is_started_by_the_sweeper(flow: Workflow) -> None:
    # Given a retryable failure whose routeFailed record ran out of retries
    flow.insert("unrouted", "FLAKY_TASK", {"fail_times": 1})
    handler.process_stream({"Records": flow.stream.inserts()}, FakeLambdaContext())
    assert flow.app.store.get("unrouted").status is TaskStatus.FAILED
    assert flow.executions() == []

    # When the sweeper runs a while later
    flow.app.store.clock = lambda: utcnow() + timedelta(minutes=10)
    report = handler.sweep({}, FakeLambdaContext())

    # Then it started the execution routeFailed would have, and the task recovered
    assert report["repaired"] == 1
    runs = flow.wait()
    assert [r["name"] for r in runs] == [flow.name("unrouted", 1)]
    assert flow.app.store.get("unrouted").status is TaskStatus.DONE


def test_a_retrying_task_whose_execution_ended_gets_a_new_episode(flow: Workflow) -> None:
    # Given a task the workflow owns (RETRYING) whose execution has ended without it
    # (stopped, or failed in its own final write)
    flow.insert("stranded", "FLAKY_TASK", {"fail_times": 1})
    flow.pump()
    flow.wait()
    flow.app.clients.dynamodb.update_item(
        TableName=flow.app.settings.table_name,
        Key={"id": {"S": "stranded"}},
        UpdateExpression="SET #s = :r, status_shard = :shard",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":r": {"S": "RETRYING"},
            ":shard": {"S": status_shard("stranded", TaskStatus.RETRYING)},
        },
    )

    # When the sweeper looks, long enough after
    flow.app.store.clock = lambda: utcnow() + timedelta(minutes=30)
    assert handler.sweep({}, FakeLambdaContext())["repaired"] == 1

    # Then the task runs again in a new episode (the old name is taken for 90 days)
    runs = flow.wait()
    task = flow.app.store.get("stranded")
    assert task.status is TaskStatus.DONE and task.episode == 2
    assert sorted(r["name"] for r in runs) == sorted(
        [flow.name("stranded", 1), flow.name("stranded", 2)]
    )


# --- defect 6: retry-task is safe to repeat -----------------------------------------------


def test_retry_task_left_retrying_without_an_execution_can_be_run_again(
    flow: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow.insert("redrive", "ALWAYS_FAILING_TASK", {})
    flow.pump()
    flow.wait()
    client = TaskRunnerClient(flow.app)
    sfn = flow.app.clients.stepfunctions

    # Given Step Functions unreachable when retry-task starts the execution (after its
    # status write: RETRYING, episode 2)
    def unreachable(request: Any, **kwargs: Any) -> None:
        raise EndpointConnectionError(endpoint_url=request.url)

    monkeypatch.setattr("runner.aws.AwsRetryPolicy.max_elapsed", 0.3)
    sfn.meta.events.register_first("before-send.sfn.StartExecution", unreachable)
    with pytest.raises(WorkflowError):
        client.retry_task("redrive")
    sfn.meta.events.unregister("before-send.sfn.StartExecution", unreachable)
    assert flow.app.store.get("redrive").status is TaskStatus.RETRYING

    # When it is run again, it starts that episode's execution; a third is refused
    second = client.retry_task("redrive")
    assert second["episode"] == 2
    with pytest.raises(Exception, match="already being retried"):
        client.retry_task("redrive")
    runs = flow.wait()
    assert sorted(r["name"] for r in runs) == sorted(
        [flow.name("redrive", 1), flow.name("redrive", 2)]
    )


# --- issue 16.4: an execution whose task ends FAILED does not say SUCCEEDED --------------


def test_retrying_a_permanently_failed_task_fails_its_execution_if_it_fails_again(
    flow: Workflow,
) -> None:
    flow.insert("invalid", "EXAMPLE_TASK", {"message": ""})
    flow.pump()
    assert flow.app.store.get("invalid").retryable is False
    TaskRunnerClient(flow.app).retry_task("invalid")
    [run] = flow.wait()
    assert flow.app.store.get("invalid").status is TaskStatus.FAILED
    assert run["status"] == "FAILED"


# --- defect 8: names are collision-free ---------------------------------------------------


def _previous_name(task_id: str, episode: int) -> str:
    """The execution name the previous version gave (see the issue)."""
    import re

    safe = re.sub(r"[^A-Za-z0-9_-]", "_", task_id)
    suffix = f"-{episode}"
    if safe != task_id or len(safe) + len(suffix) > 80:
        digest = hashlib.sha256(task_id.encode()).hexdigest()[:12]
        safe = f"{safe[: 80 - len(suffix) - 13]}_{digest}"
    return f"{safe}{suffix}"


def test_two_tasks_whose_safe_names_matched_both_get_their_retries(flow: Workflow) -> None:
    # Given `order:42` and the task whose id is the previous version's name for it
    twin = _previous_name("order:42", 1).removesuffix("-1")
    assert _previous_name(twin, 1) == _previous_name("order:42", 1)
    flow.insert("order:42", "FLAKY_TASK", {"fail_times": 1})
    flow.insert(twin, "FLAKY_TASK", {"fail_times": 1})

    # When both fail once
    flow.pump()
    flow.wait()

    # Then each had an execution of its own and recovered
    assert len(flow.executions()) == 2
    assert flow.app.store.get("order:42").status is TaskStatus.DONE
    assert flow.app.store.get(twin).status is TaskStatus.DONE


def test_a_task_id_reused_after_its_task_expired_gets_new_executions(flow: Workflow) -> None:
    # Given a task that was retried, then deleted (its TTL), and an id reused for a new one
    flow.insert("reused", "FLAKY_TASK", {"fail_times": 1})
    flow.pump()
    flow.wait()
    flow.app.clients.dynamodb.delete_item(
        TableName=flow.app.settings.table_name, Key={"id": {"S": "reused"}}
    )
    time.sleep(0.01)  # a later created_at
    flow.insert("reused", "FLAKY_TASK", {"fail_times": 1})

    # When the new task fails once too
    flow.pump()
    runs = flow.wait()

    # Then it has an execution of its own (Step Functions keeps the old name 90 days)
    assert len(runs) == 2
    assert flow.app.store.get("reused").status is TaskStatus.DONE
