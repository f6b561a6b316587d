"""Cancelling tasks the retry workflow owns, with moto's real Step Functions executor:
CANCELLED is written first, then the execution is stopped (ABORTED); an execution that
starts or runs on regardless loses every claim and ends in its Cancelled state."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from runner.client import TaskRunnerClient
from runner.context import TaskContext
from runner.errors import RetryableTaskError, TaskCancelled
from runner.failures import describe_error
from runner.heartbeat import LeasePolicy
from runner.local.sfn_fidelity import immediate_stop
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskDefinition
from tests.integration.test_workflow import Workflow, _build

S = TaskStatus


@pytest.fixture
def flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    yield from _build(monkeypatch, instant=True)


@pytest.fixture
def realtime_flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    with immediate_stop():  # as the local stack's endpoint serves it
        yield from _build(monkeypatch, instant=False)


class _Empty(BaseModel):
    pass


def _fails_then_waits_for_a_cancel(data: _Empty, ctx: TaskContext) -> None:
    if ctx.attempt == 1:
        raise RetryableTaskError("the first attempt fails")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ctx.cancel_requested:
        time.sleep(0.01)
    raise TaskCancelled("stopped on request")


def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _describe(flow: Workflow, task_id: str) -> dict[str, Any]:
    (arn,) = flow.app.store.get(task_id).executions
    info: dict[str, Any] = flow.app.clients.stepfunctions.describe_execution(executionArn=arn)
    return info


def _cancelled_error(execution: dict[str, Any]) -> str:
    """The error the Cancelled state ended on, from the execution's output."""
    output = json.loads(execution["output"])
    return str(output["error"]["Error"])


def held_in_its_execution(flow: Workflow, task_id: str) -> None:
    """A retryable failure whose execution runs, waiting out a live lease (TaskLeaseHeld:
    5 s between tries), as after an attempt whose handler could not be stopped."""
    app = flow.app
    flow.insert(task_id, "FLAKY_TASK", {"fail_times": 3})
    claimed = app.store.claim_pending(task_id, source=ClaimSource.STREAM, lease_seconds=60)
    app.runner.record(
        claimed,
        ClaimSource.STREAM,
        error=describe_error(RetryableTaskError("timed out")),
        lease_until=app.store.now_epoch() + 120,
    )
    flow.pump()
    _until(lambda: len(app.store.get(task_id).executions) == 1)
    _until(lambda: _describe(flow, task_id)["status"] == "RUNNING")


def test_a_cancel_that_wins_the_race_with_a_retry_executions_start_ends_it(
    flow: Workflow,
) -> None:
    # Given a retryable failure whose retry execution has not started yet
    flow.insert("raced", "FLAKY_TASK", {"fail_times": 3})
    flow.pump()  # the stream's attempt fails; routeFailed has not seen it
    assert flow.app.store.get("raced").status is S.FAILED

    # When it is cancelled before routeFailed starts its execution
    cancelled = flow.app.store.get("raced")
    result = TaskRunnerClient(flow.app).cancel_task("raced")
    assert result["status"] == "CANCELLED" and "execution_stopped" not in result
    runs = flow.wait()

    # Then the execution starts, loses its claim, and ends in its Cancelled state: not
    # a failed execution (no ExecutionsFailed alarm for a user's cancel), its output
    # naming TaskCancelled
    assert [r["status"] for r in runs] == ["SUCCEEDED"]
    assert _cancelled_error(_describe(flow, "raced")) == "TaskCancelled"
    task = flow.app.store.get("raced")
    assert task.status is S.CANCELLED and task.attempts == cancelled.attempts == 1


def test_a_task_waiting_in_its_execution_is_cancelled_then_the_execution_stopped(
    realtime_flow: Workflow,
) -> None:
    flow = realtime_flow
    app = flow.app
    # Given a retryable failure whose execution waits out a live lease (TaskLeaseHeld:
    # 5 s between tries), as after an attempt whose handler could not be stopped
    held_in_its_execution(flow, "held")

    result = TaskRunnerClient(app).cancel_task("held")

    # Then CANCELLED was written, and the execution stopped: ABORTED in the console
    assert result["status"] == "CANCELLED" and result["was"] == "FAILED"
    assert result["execution_stopped"] == app.store.get("held").executions[0]
    assert _describe(flow, "held")["status"] == "ABORTED"
    cancelled = app.store.get("held")
    assert cancelled.status is S.CANCELLED and cancelled.lease_expires_at is None  # I4


def test_a_workflow_attempt_that_stops_on_a_cancel_ends_its_execution_cancelled(
    realtime_flow: Workflow,
) -> None:
    flow = realtime_flow
    app = flow.app
    app.registry.register(
        TaskDefinition(
            type="STOPS_ON_CANCEL",
            input_model=_Empty,
            handler=_fails_then_waits_for_a_cancel,
            timeout_seconds=30,
        )
    )
    app.runner.leases = LeasePolicy(heartbeat_seconds=0.05, live_lease_seconds=None)
    flow.insert("stops", "STOPS_ON_CANCEL", {})
    flow.pump()  # fails on the stream
    flow.pump()  # routed: the execution's attempt runs and waits for a cancel
    _until(lambda: app.store.get("stops").claimed_by is ClaimSource.WORKFLOW)

    result = TaskRunnerClient(app).cancel_task("stops")
    assert result["status"] == "PROCESSING" and result["cancel_requested"] is True
    _until(lambda: _describe(flow, "stops")["status"] != "RUNNING")

    assert _describe(flow, "stops")["status"] == "SUCCEEDED"
    assert _cancelled_error(_describe(flow, "stops")) == "TaskCancelled"
    task = app.store.get("stops")
    assert task.status is S.CANCELLED and task.attempts == 2
