"""Faults on the control paths: a cancel racing a claim, a cancel racing a retry
execution's start, a heartbeat write throttled (briefly, and until its lease could lapse).

Each race is forced at its worst interleaving: the cancel reads the task, the other side
writes, then the cancel's conditional write is made."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import BaseModel

from runner.app import App
from runner.client import TaskRunnerClient
from runner.context import TaskContext
from runner.control import TaskControl
from runner.errors import RetryableTaskError
from runner.heartbeat import Heartbeat, LeasePolicy
from runner.model import ClaimSource, Task, TaskStatus
from runner.registry import TaskDefinition

S = TaskStatus
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
HEARTBEAT = "SET #lease = :lease"


class _Empty(BaseModel):
    pass


GATE = threading.Event()


def _fails_at_gate(data: _Empty, ctx: TaskContext) -> None:
    GATE.wait(20)
    raise RetryableTaskError("transient")


@pytest.fixture
def client(app: App) -> TaskRunnerClient:
    GATE.clear()
    app.registry.register(
        TaskDefinition(type="GATED", input_model=_Empty, handler=_fails_at_gate, timeout_seconds=30)
    )
    app.runner.leases = LeasePolicy(heartbeat_seconds=30, live_lease_seconds=None)
    return TaskRunnerClient(app)


def _before_the_cancels_write(app: App, step: Any) -> None:
    """Run `step(task)` after the cancel's read and before its first conditional write."""
    original = app.store.cancel_waiting
    done = {"ran": False}

    def racing(task: Task) -> Task:
        if not done["ran"]:
            done["ran"] = True
            step(task)
        return original(task)

    app.store.cancel_waiting = racing  # type: ignore[method-assign]


def test_a_claim_that_wins_the_race_with_a_cancel_is_asked_to_stop(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("GATED", {})
    outcomes: list[Any] = []
    running = threading.Thread(
        target=lambda: outcomes.append(app.runner.run_pending(task.id, source=ClaimSource.STREAM))
    )

    def claim(_: Task) -> None:
        running.start()
        while app.store.get(task.id).status is not S.PROCESSING:
            pass

    _before_the_cancels_write(app, claim)

    result = client.cancel_task(task.id)
    GATE.set()
    running.join(10)

    # The cancel's write lost to the claim; it looked again and asked the claim to stop,
    # so the handler's retryable failure ends CANCELLED, with no retry episode
    assert result["status"] == "PROCESSING" and result["cancel_requested"] is True
    assert outcomes[0].status is S.CANCELLED
    stored = app.store.get(task.id)
    assert stored.status is S.CANCELLED and stored.episode == 0 and stored.attempts == 1


def test_a_cancel_that_wins_the_race_with_a_claim_leaves_nothing_to_run(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("GATED", {})
    GATE.set()
    result = client.cancel_task(task.id)

    # The stream's delivery, the sweeper and run-task all find nothing to claim
    assert result["status"] == "CANCELLED"
    assert app.runner.run_pending(task.id, source=ClaimSource.STREAM).note == "already claimed"
    assert app.store.get(task.id).attempts == 0


def test_a_retry_executions_start_that_wins_the_race_with_a_cancel(
    app: App, client: TaskRunnerClient
) -> None:
    from runner.attempts import AttemptInput

    # Given a task the workflow will retry (RETRYING, episode 1)
    task = client.create_task("GATED", {})
    app.store.redrive(app.store.get(task.id), statuses=(S.PENDING,))
    waiting = app.store.get(task.id)
    assert waiting.status is S.RETRYING
    raised: list[BaseException] = []

    def run_attempt() -> None:
        try:
            app.attempts.run(AttemptInput(task.id, waiting.episode, "GATED", waiting.created_at))
        except BaseException as exc:  # what the state machine is told
            raised.append(exc)

    attempt = threading.Thread(target=run_attempt)

    def start_the_attempt(_: Task) -> None:
        attempt.start()
        while app.store.get(task.id).status is not S.PROCESSING:
            pass

    _before_the_cancels_write(app, start_the_attempt)

    # When the cancel reads RETRYING, and the execution's attempt claims it first
    result = client.cancel_task(task.id)
    GATE.set()
    attempt.join(10)

    # Then the cancel is a request, and the attempt's retryable failure ends the task
    # CANCELLED (the attempt raised TaskCancelled: the execution ends, no retry)
    assert result["status"] == "PROCESSING" and result["was"] == "PROCESSING"
    assert [type(e).__name__ for e in raised] == ["TaskCancelled"]
    stored = app.store.get(task.id)
    assert stored.status is S.CANCELLED and stored.claimed_by is ClaimSource.WORKFLOW


def _throttle_heartbeats(app: App, times: int | None) -> dict[str, int]:
    """Answer the heartbeat's UpdateItem with throttling, `times` times (None: always)."""
    client = app.clients.dynamodb
    original = client.update_item
    counts = {"throttled": 0, "beats": 0}

    def update_item(**kwargs: Any) -> Any:
        if kwargs.get("UpdateExpression") == HEARTBEAT:
            counts["beats"] += 1
            if times is None or counts["throttled"] < times:
                counts["throttled"] += 1
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem"
                )
        return original(**kwargs)

    client.update_item = update_item  # type: ignore[method-assign]
    app.store._sleep = lambda seconds: None  # the retry policy's backoff, not waited here
    return counts


def test_a_briefly_throttled_heartbeat_is_retried_and_the_lease_extended(
    app: App, client: TaskRunnerClient
) -> None:
    counts = _throttle_heartbeats(app, times=3)
    task = client.create_task("GATED", {})
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=120)
    control = TaskControl()
    beat = Heartbeat(
        app.store,
        task.id,
        claimed.claim_token or "",
        control,
        lease=claimed.lease_expires_at or 0,
        cap=(claimed.lease_expires_at or 0) + 500,
        live_seconds=200,
    )

    assert beat.beat()  # throttled three times, then written (AWS retry policy)

    assert counts == {"throttled": 3, "beats": 4}
    assert beat.failures == 0 and not control.cancel_requested
    assert app.store.get(task.id).lease_expires_at == beat.lease > claimed.lease_expires_at  # type: ignore[operator]


def test_a_heartbeat_throttled_until_its_lease_could_lapse_ends_the_runtime_first(
    app: App, client: TaskRunnerClient
) -> None:
    clock = {"now": T0}
    app.store.clock = lambda: clock["now"]
    counts = _throttle_heartbeats(app, times=None)
    task = client.create_task("GATED", {})
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=120)
    lease = claimed.lease_expires_at or 0
    ended: list[str] = []
    control = TaskControl()
    beat = Heartbeat(
        app.store,
        task.id,
        claimed.claim_token or "",
        control,
        lease=lease,
        cap=lease + 480,
        live_seconds=120,
        interval=30,
        end_runtime=lambda reason: ended.append(reason) is None,
    )

    # Beats at 30 s and 60 s fail (each after its retries): 90 s and 60 s of lease left
    for offset in (30, 60):
        clock["now"] = T0 + timedelta(seconds=offset)
        assert beat.beat() and not ended
    # At 90 s the next beat might come after the lease: the runtime is ended now
    clock["now"] = T0 + timedelta(seconds=90)
    assert not beat.beat()

    assert ended and "could not be renewed" in ended[0] and control.lost
    assert counts["beats"] > 3  # each beat was retried before it was given up
    # The lease never lapsed while this runtime could act: the sweeper cannot take it yet
    assert app.sweeper.expire_leases() == 0
    assert app.store.get(task.id).status is S.PROCESSING
