"""`cancel_requested` belongs to the claim it was requested for (review-13-14 finding 3).

A cancel asks one running claim to stop. Once that claim has ended (DONE, CANCELLED, or
FAILED for good, all final), the flag is history: `retry-task` (a redrive) removes it,
and so does every claim, so a later run is never cancelled by an old request (not by
its heartbeat, its outcome's condition, nor when its lease dies). What must not be lost
stays: a dead cancel-requested claim is never taken over, it ends CANCELLED (whoever
finds it: the workflow's next attempt, its exhaust, the sweeper), and a cancel that
races a takeover is handed to the new claim. Each interleaving is forced."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from pydantic import BaseModel

from runner.app import App
from runner.attempts import AttemptInput
from runner.aws import AwsClients
from runner.client import TaskRunnerClient
from runner.config import Settings
from runner.context import TaskContext
from runner.errors import (
    PermanentTaskError,
    RetryableTaskError,
    TaskCancelled,
    TaskRetryableError,
)
from runner.executor import Outcome
from runner.heartbeat import LeasePolicy
from runner.items import serialize
from runner.model import ClaimSource, Task, TaskStatus
from runner.registry import TaskDefinition
from tasks import build_registry
from tests.helpers import create_tasks_table
from tests.integration.test_workflow import Workflow, _build

S = TaskStatus
# Beats every 50 ms: a handler learns of a cancel (or beats past a stale one) at once.
FAST = LeasePolicy(heartbeat_seconds=0.05, live_lease_seconds=None)
KIND = "CANCEL_THEN_BREAK"


class _Then(BaseModel):
    then: str = "done"


def _cancel_then_break(data: _Then, ctx: TaskContext) -> dict[str, int]:
    """Attempt 1 stops on its cancel, but its clean-up fails for good (FAILED, not
    CANCELLED: the flag stays on a final task). Later attempts run past a few
    heartbeats, then finish (or fail retryably)."""
    if ctx.attempt == 1:
        deadline = time.monotonic() + 10
        while not ctx.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        raise PermanentTaskError("stopped on the cancel; its clean-up failed")
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        if ctx.cancel_requested:
            raise TaskCancelled("stopped on request")
        time.sleep(0.01)
    if data.then == "retryable":
        raise RetryableTaskError("a transient failure")
    return {"attempt": ctx.attempt}


def _register(app: App) -> None:
    app.registry.register(
        TaskDefinition(
            type=KIND,
            input_model=_Then,
            handler=_cancel_then_break,
            timeout_seconds=30,
            max_attempts=5,
        )
    )
    app.runner.leases = FAST


@pytest.fixture
def client(app: App) -> TaskRunnerClient:
    _register(app)
    return TaskRunnerClient(app)


def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _cancelled_then_broken(app: App, data: dict[str, Any]) -> Task:
    """A task whose first run was asked to stop and ended FAILED for good."""
    client = TaskRunnerClient(app)
    task = client.create_task(KIND, data)
    outcomes: list[Outcome] = []
    thread = threading.Thread(
        target=lambda: outcomes.append(app.runner.run_pending(task.id, source=ClaimSource.CLI))
    )
    thread.start()
    _until(lambda: app.store.get(task.id).status is S.PROCESSING)
    assert client.cancel_task(task.id)["cancel_requested"] is True
    thread.join(10)
    assert outcomes[0].status is S.FAILED
    failed = app.store.get(task.id)
    assert failed.is_final and failed.cancel_requested  # the request, as history
    return failed


def _attempt(app: App, task_id: str) -> Outcome:
    task = app.store.get(task_id)
    return app.attempts.run(AttemptInput(task.id, task.episode, task.type, task.created_at))


# --- retry-task after a cancel ---------------------------------------------------------


@pytest.fixture
def flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    for built in _build(monkeypatch, instant=True):
        _register(built.app)
        yield built


def test_retry_task_after_a_cancelled_run_failed_runs_the_new_episode_to_done(
    flow: Workflow,
) -> None:
    # Given a run that was cancelled, whose clean-up then failed for good
    failed = _cancelled_then_broken(flow.app, {})

    # When the user redrives it (retry-task) and its execution runs
    started = TaskRunnerClient(flow.app).retry_task(failed.id)
    runs = flow.wait()

    # Then the new episode runs to DONE (its claim, heartbeats and outcome are the new
    # claim's own: the old request is gone), and the execution succeeds
    assert started["episode"] == failed.episode + 1
    done = flow.app.store.get(failed.id)
    assert done.status is S.DONE and done.result == {"attempt": 2}
    assert not done.cancel_requested and done.attempts == 2
    assert [r["status"] for r in runs] == ["SUCCEEDED"]


def test_a_redrive_removes_the_flag_and_the_new_claim_runs_past_its_heartbeats(
    app: App, client: TaskRunnerClient
) -> None:
    failed = _cancelled_then_broken(app, {})

    # retry-task's write (the client's redrive, without the execution it then starts)
    redriven = app.store.redrive(failed, statuses=(S.FAILED,))

    assert redriven.status is S.RETRYING and not redriven.cancel_requested
    assert "cancel_requested" not in (app.store.get_values(failed.id) or {})
    outcome = _attempt(app, failed.id)
    assert outcome.status is S.DONE and app.store.get(failed.id).result == {"attempt": 2}


def _stale_flag(app: App, task_id: str) -> None:
    """`cancel_requested` left on a waiting task, as the previous version's redrive left
    it (a claim must not inherit it)."""
    app.clients.dynamodb.update_item(
        TableName=app.settings.table_name,
        Key=serialize({"id": task_id}),
        UpdateExpression="SET cancel_requested = :true",
        ExpressionAttributeValues=serialize({":true": True}),
    )


def test_a_claim_never_inherits_an_old_request(app: App, client: TaskRunnerClient) -> None:
    failed = _cancelled_then_broken(app, {"then": "retryable"})
    redriven = app.store.redrive(failed, statuses=(S.FAILED,))
    _stale_flag(app, failed.id)

    # The claim removes it: its heartbeats read no cancel, and its retryable failure is
    # retried (RETRYING), not turned into CANCELLED
    with pytest.raises(TaskRetryableError):
        _attempt(app, failed.id)
    retrying = app.store.get(failed.id)
    assert retrying.status is S.RETRYING and retrying.episode == redriven.episode
    assert not retrying.cancel_requested and retrying.error is not None
    assert retrying.error.type == "RetryableTaskError"


def test_a_dead_lease_of_a_redriven_claim_is_taken_over_not_cancelled(
    app: App, client: TaskRunnerClient
) -> None:
    failed = _cancelled_then_broken(app, {})
    redriven = app.store.redrive(failed, statuses=(S.FAILED,))
    _stale_flag(app, failed.id)
    # Given the redriven episode's first attempt claimed it, and its Lambda died
    dead = app.store.claim_for_retry(
        failed.id, episode=redriven.episode, lease_seconds=-5, created_at=failed.created_at
    )
    assert not dead.cancel_requested

    # When the execution's next attempt comes, it takes the dead claim over and runs
    outcome = _attempt(app, failed.id)

    assert outcome.status is S.DONE
    done = app.store.get(failed.id)
    assert done.attempts == 3 and [a.outcome for a in done.attempt_log] == [S.FAILED, S.DONE]


# --- what must not be lost -------------------------------------------------------------


def _dead_cancel_requested_workflow_claim(app: App, client: TaskRunnerClient) -> Task:
    task = client.create_task(KIND, {})
    app.store.claim_for_retry(task.id, episode=0, lease_seconds=-5)
    assert client.cancel_task(task.id)["cancel_requested"] is True
    return app.store.get(task.id)


def test_the_exhaust_of_a_dead_cancel_requested_claim_ends_it_cancelled(
    app: App, client: TaskRunnerClient
) -> None:
    # Given a workflow claim that died after its cancel was requested, and the state
    # machine's Catch (its Lambda kept failing) asking to mark the task exhausted
    dead = _dead_cancel_requested_workflow_claim(app, client)

    answer = app.attempts.exhaust(AttemptInput(dead.id, 0), "Lambda.Unknown")

    # Then it ends CANCELLED, not FAILED with its retries exhausted (which retry-task
    # would run again): the cancel was requested before it died
    assert answer == {"outcome": "superseded", "found": "CANCELLED"}
    stored = app.store.get(dead.id)
    assert stored.status is S.CANCELLED and not stored.retries_exhausted


def test_a_cancel_landing_between_the_exhausts_read_and_write_ends_it_cancelled(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task(KIND, {})
    app.store.claim_for_retry(task.id, episode=0, lease_seconds=-5)
    original = app.store.exhaust
    landed: list[dict[str, Any]] = []

    def cancel_first(seen: Task, error: Any) -> Task:
        if not landed:  # the exhaust read the dead claim; the cancel's write lands now
            landed.append(client.cancel_task(task.id))
        return original(seen, error)

    app.store.exhaust = cancel_first  # type: ignore[method-assign]
    answer = app.attempts.exhaust(AttemptInput(task.id, 0), "Lambda.Unknown")

    assert landed[0]["cancel_requested"] is True
    assert answer["outcome"] == "superseded"
    assert app.store.get(task.id).status is S.CANCELLED


def test_a_takeover_that_wins_the_race_with_a_cancel_gets_the_cancel(
    app: App, client: TaskRunnerClient
) -> None:
    # Given a dead workflow claim (no cancel yet)
    task = client.create_task(KIND, {"then": "done"})
    dead = app.store.claim_for_retry(task.id, episode=0, lease_seconds=-5)
    # (its second attempt runs long enough to hear of a cancel)
    raised: list[BaseException] = []

    def run_attempt() -> None:
        try:
            app.attempts.run(AttemptInput(task.id, 0, KIND, dead.created_at))
        except BaseException as exc:
            raised.append(exc)

    attempt = threading.Thread(target=run_attempt)
    original = app.store.request_cancel

    def takeover_first(seen: Task) -> Task:
        if not attempt.is_alive() and not raised:
            # The cancel read the dead claim; the next attempt takes it over first
            attempt.start()
            _until(lambda: app.store.get(task.id).claim_token != dead.claim_token)
        return original(seen)

    app.store.request_cancel = takeover_first  # type: ignore[method-assign]
    result = client.cancel_task(task.id)
    attempt.join(10)

    # The cancel's write for the dead claim lost; it looked again and asked the new claim,
    # whose handler stopped: the new claim's REMOVE took nothing the cancel needed
    assert result["cancel_requested"] is True
    assert [type(e).__name__ for e in raised] == ["TaskCancelled"]
    stored = app.store.get(task.id)
    assert stored.status is S.CANCELLED and stored.attempts == 2


def test_a_cancel_that_wins_the_race_with_a_takeover_ends_it_cancelled(
    app: App, client: TaskRunnerClient
) -> None:
    dead = _dead_cancel_requested_workflow_claim(app, client)

    # The next attempt and the sweeper both find a dead claim whose cancel was requested
    with pytest.raises(TaskCancelled):
        app.attempts.run(AttemptInput(dead.id, 0, KIND, dead.created_at))

    stored = app.store.get(dead.id)
    assert stored.status is S.CANCELLED and stored.attempts == 1  # never run again


def test_a_cancel_landing_as_the_sweeper_takes_a_dead_claim_over_ends_it_cancelled(
    app: App, client: TaskRunnerClient
) -> None:
    # Given a stream claim whose worker died (no cancel yet), found by the sweeper
    task = client.create_task(KIND, {})
    app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=-5)
    original = app.store.expire_lease
    landed: list[dict[str, Any]] = []

    def cancel_first(seen: Task, error: Any, **kwargs: Any) -> Task:
        if not landed:  # the sweeper read it; the cancel's write lands now
            landed.append(client.cancel_task(task.id))
        return original(seen, error, **kwargs)

    app.store.expire_lease = cancel_first  # type: ignore[method-assign]

    # Then its retry is refused on its condition and the task ends CANCELLED, not FAILED
    # for a retry
    assert app.sweeper.expire_leases() == 1
    assert landed[0]["cancel_requested"] is True
    stored = app.store.get(task.id)
    assert stored.status is S.CANCELLED and stored.episode == 0


# --- a cancel requested, then the result cannot be stored ------------------------------

BUCKET = "payloads-cancel"


@pytest.fixture
def papp(aws: None, settings: Settings) -> App:
    settings = dataclasses.replace(settings, payload_bucket=BUCKET)
    clients = AwsClients(settings)
    create_tasks_table(clients.dynamodb, settings.table_name)
    clients.s3.create_bucket(Bucket=BUCKET)
    app = App.build(settings, build_registry(["runner.local.demo_tasks"]), clients)
    app.store.payloads.retry_policy = dataclasses.replace(
        app.store.payloads.retry_policy, max_attempts=2
    )
    app.store.payloads._sleep = lambda seconds: None
    return app


def test_a_cancel_requested_claim_whose_result_s3_refuses_ends_cancelled(papp: App) -> None:
    app = papp
    client = TaskRunnerClient(app)
    task = client.create_task("BLOB_TASK", {})
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=60)
    assert client.cancel_task(task.id)["cancel_requested"] is True

    def refuse(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com")

    app.clients.s3.meta.events.register_first("before-send.s3.PutObject", refuse)
    # The handler finished first, but its 1 MB result cannot be stored: a retryable
    # failure, which after a cancel request is CANCELLED, never a retry
    outcome = app.runner.record(claimed, ClaimSource.STREAM, result={"output": "r" * 1024**2})

    assert outcome.status is S.CANCELLED
    stored = app.store.get(task.id)
    assert stored.status is S.CANCELLED and stored.episode == 0
    assert stored.error is not None and stored.error.type == "PayloadUnavailable"


# --- a cancel whose reply was lost while its claim ended -------------------------------


def test_a_cancel_whose_reply_was_lost_as_its_claim_failed_for_good(
    app: App, client: TaskRunnerClient
) -> None:
    from botocore.exceptions import ReadTimeoutError

    from runner.errors import TaskConflict
    from runner.failures import describe_error

    task = client.create_task(KIND, {})
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=60)
    dynamodb = app.clients.dynamodb
    original = dynamodb.update_item
    app.store._sleep = lambda seconds: None  # the retry policy's backoff

    def lose_the_reply(**kwargs: Any) -> Any:
        answer = original(**kwargs)
        if "cancel_requested" in kwargs.get("ExpressionAttributeNames", {}).values():
            dynamodb.update_item = original  # once
            # The cancel's write applied; before its retry, the claim fails for good
            failure = describe_error(PermanentTaskError("its clean-up failed"))
            assert app.runner.record(claimed, ClaimSource.STREAM, error=failure).status is S.FAILED
            raise ReadTimeoutError(endpoint_url="https://dynamodb")
        return answer

    dynamodb.update_item = lose_the_reply  # type: ignore[method-assign]
    # The retried write finds the claim gone; the cancel looks again: finished, refused
    with pytest.raises(TaskConflict, match="FAILED for good"):
        client.cancel_task(task.id)
    assert app.store.get(task.id).cancel_requested  # the request applied, as history

    # retry-task's redrive runs the new episode to the end, untouched by that request
    app.store.redrive(app.store.get(task.id), statuses=(S.FAILED,))
    assert _attempt(app, task.id).status is S.DONE
