"""cancel-task against moto's DynamoDB: waiting tasks end CANCELLED at once, a running one
is asked to stop (heartbeat), and a cancel-requested claim never becomes a retry."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from runner.app import App
from runner.client import TaskRunnerClient
from runner.context import TaskContext
from runner.errors import (
    PermanentTaskError,
    RetryableTaskError,
    TaskCancelled,
    TaskConflict,
    TaskNotFound,
)
from runner.executor import Outcome
from runner.heartbeat import LeasePolicy
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskDefinition
from tests.helpers import stream_record

S = TaskStatus
# Beats every 50 ms: a handler learns of a cancel within a tenth of a second.
FAST = LeasePolicy(heartbeat_seconds=0.05, live_lease_seconds=None)


class _Empty(BaseModel):
    pass


GATE = threading.Event()


def _polite(data: _Empty, ctx: TaskContext) -> dict[str, str]:
    """Works until asked to stop, then stops."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ctx.cancel_requested:
            raise TaskCancelled("stopped on request")
        time.sleep(0.01)
    return {"ran": "to the end"}


def _stubborn(data: _Empty, ctx: TaskContext) -> dict[str, str]:
    """Ignores a cancel: waits for the test's gate, then finishes."""
    GATE.wait(20)
    return {"ran": "to the end"}


def _fails_after_gate(data: _Empty, ctx: TaskContext) -> None:
    GATE.wait(20)
    raise RetryableTaskError("a transient failure")


def _broken(data: _Empty, ctx: TaskContext) -> None:
    raise PermanentTaskError("no retry can fix this")


async def _sleeper(data: _Empty, ctx: TaskContext) -> dict[str, str]:
    await asyncio.sleep(20)
    return {"ran": "to the end"}


def _register(app: App) -> None:
    for kind, handler in (
        ("POLITE_TASK", _polite),
        ("STUBBORN_TASK", _stubborn),
        ("FAILS_AFTER_GATE", _fails_after_gate),
        ("ASYNC_SLEEPER", _sleeper),
        ("BROKEN_TASK", _broken),
    ):
        app.registry.register(
            TaskDefinition(type=kind, input_model=_Empty, handler=handler, timeout_seconds=30)
        )
    app.runner.leases = FAST


@pytest.fixture
def client(app: App) -> TaskRunnerClient:
    GATE.clear()
    _register(app)
    return TaskRunnerClient(app)


def _run_in_background(app: App, task_id: str) -> tuple[threading.Thread, list[Outcome]]:
    outcomes: list[Outcome] = []
    thread = threading.Thread(
        target=lambda: outcomes.append(app.runner.run_pending(task_id, source=ClaimSource.CLI))
    )
    thread.start()
    return thread, outcomes


def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_pending_task_is_cancelled_at_once_and_never_runs(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("NOOP_TASK", {})

    result = client.cancel_task(task.id)

    assert result == {
        "task_id": task.id,
        "status": "CANCELLED",
        "was": "PENDING",
        "cancel_requested": False,
    }
    stored = client.get_task(task.id)
    assert stored.status is S.CANCELLED and stored.expires_at and stored.finished_at
    assert app.store.get_values(task.id)["status_shard"].startswith("CANCELLED#")  # type: ignore[index]
    # The stream's record of the insert, and a claim by id, do nothing with it
    app.stream.process(
        [stream_record({"id": task.id, "type": "NOOP_TASK", "status": "PENDING", "data": {}})]
    )
    assert app.runner.run_pending(task.id, source=ClaimSource.CLI).status is None
    assert client.get_task(task.id).status is S.CANCELLED and client.get_task(task.id).attempts == 0
    # Cancelling again is safe; the sweeper leaves it alone
    assert client.cancel_task(task.id)["note"] == "already cancelled"
    assert app.sweeper.sweep().orphans_run == 0


def test_a_running_handler_sees_the_cancel_and_the_task_ends_cancelled(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("POLITE_TASK", {})
    thread, outcomes = _run_in_background(app, task.id)
    _until(lambda: client.get_task(task.id).status is S.PROCESSING)

    result = client.cancel_task(task.id)
    thread.join(10)

    assert result["status"] == "PROCESSING" and result["cancel_requested"] is True
    assert outcomes[0].status is S.CANCELLED
    stored = client.get_task(task.id)
    assert stored.status is S.CANCELLED and stored.cancel_requested
    assert stored.error is not None and stored.error.type == "TaskCancelled"
    assert stored.lease_expires_at is None and stored.expires_at
    assert [a.outcome for a in stored.attempt_log] == [S.CANCELLED]


def test_an_async_handler_is_cancelled_at_its_next_await(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("ASYNC_SLEEPER", {})
    started = time.monotonic()
    thread, outcomes = _run_in_background(app, task.id)
    _until(lambda: client.get_task(task.id).status is S.PROCESSING)

    client.cancel_task(task.id)
    thread.join(10)

    assert outcomes[0].status is S.CANCELLED
    assert time.monotonic() - started < 5  # not the 20 s it would sleep
    assert client.get_task(task.id).error.type == "TaskCancelled"  # type: ignore[union-attr]


def test_a_handler_that_finishes_first_records_done_and_a_later_cancel_says_so(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("STUBBORN_TASK", {})
    thread, outcomes = _run_in_background(app, task.id)
    _until(lambda: client.get_task(task.id).status is S.PROCESSING)

    client.cancel_task(task.id)
    GATE.set()
    thread.join(10)

    assert outcomes[0].status is S.DONE
    assert client.get_task(task.id).result == {"ran": "to the end"}
    with pytest.raises(TaskConflict, match="is DONE: it finished first; nothing to cancel"):
        client.cancel_task(task.id)


def test_a_retryable_failure_after_a_cancel_request_ends_cancelled_not_retried(
    app: App, client: TaskRunnerClient
) -> None:
    # A handler shorter than a heartbeat: the cancel is found by its final write's
    # condition, which then writes CANCELLED instead of a retryable FAILED
    app.runner.leases = LeasePolicy(heartbeat_seconds=30, live_lease_seconds=None)
    task = client.create_task("FAILS_AFTER_GATE", {})
    thread, outcomes = _run_in_background(app, task.id)
    _until(lambda: client.get_task(task.id).status is S.PROCESSING)

    client.cancel_task(task.id)
    GATE.set()
    thread.join(10)

    assert outcomes[0].status is S.CANCELLED
    stored = client.get_task(task.id)
    assert stored.status is S.CANCELLED and stored.episode == 0  # no retry episode opened
    assert stored.error is not None and stored.error.type == "RetryableTaskError"


def test_finished_tasks_are_refused_in_one_line(app: App, client: TaskRunnerClient) -> None:
    failed = client.create_task("BROKEN_TASK", {})
    app.runner.run_pending(failed.id, source=ClaimSource.CLI)
    assert client.get_task(failed.id).status is S.FAILED

    with pytest.raises(TaskConflict, match=r"FAILED for good \(PermanentTaskError\); nothing"):
        client.cancel_task(failed.id)
    with pytest.raises(TaskNotFound, match="task absent not found"):
        client.cancel_task("absent")


def test_a_cancel_requested_claim_whose_lease_expired_ends_cancelled_never_retryable(
    app: App, client: TaskRunnerClient
) -> None:
    # Given a claim whose worker died after its cancel was requested
    task = client.create_task("NOOP_TASK", {})
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=-5)
    assert client.cancel_task(task.id)["cancel_requested"] is True

    # When the sweeper finds the expired lease
    assert app.sweeper.expire_leases() == 1

    # Then the task is CANCELLED (never FAILED for a retry), and the dead claim's own
    # final write, should it come after all, loses on its condition
    stored = client.get_task(task.id)
    assert stored.status is S.CANCELLED and stored.claim_token is None
    late = app.runner.record(claimed, ClaimSource.STREAM, result={"late": True})
    assert late.status is None and late.note == "claim lost"
    assert client.get_task(task.id).status is S.CANCELLED


def test_a_workflow_attempt_ends_a_dead_cancel_requested_claim_cancelled(
    app: App, client: TaskRunnerClient
) -> None:
    # Given a workflow claim that died (lease expired) after its cancel was requested
    from runner.attempts import AttemptInput

    task = client.create_task("NOOP_TASK", {})
    claimed = app.store.claim_for_retry(task.id, episode=0, lease_seconds=-5)
    client.cancel_task(task.id)

    # When the execution's next attempt comes, it takes nothing over: the task ends
    # CANCELLED and the attempt says so (the state machine's Cancelled state)
    with pytest.raises(TaskCancelled):
        app.attempts.run(AttemptInput(task.id, 0, "NOOP_TASK", claimed.created_at))

    stored = client.get_task(task.id)
    assert stored.status is S.CANCELLED and stored.attempts == 1
    # and a later attempt of that execution, or its exhaust, leave it so
    with pytest.raises(TaskCancelled):
        app.attempts.run(AttemptInput(task.id, 0, "NOOP_TASK", claimed.created_at))
    assert app.attempts.exhaust(AttemptInput(task.id, 0), None)["outcome"] == "superseded"
    assert client.get_task(task.id).status is S.CANCELLED
