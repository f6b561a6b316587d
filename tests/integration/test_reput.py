"""A task put over an existing id: PutItem replaces the item, and the stream calls that a
MODIFY. The replacing PENDING task is run, not left for the sweeper, and it is a task of
its own: its executions are named by its own `created_at` (runner.executions), the old
task's executions cannot claim, mark or remember it, and it never runs beside a claim of
the item it replaced (the review of the first re-put design, findings 1, 2, 3 and 13)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

import handler
from runner.app import App
from runner.attempts import AttemptInput
from runner.client import TaskRunnerClient
from runner.errors import TaskAlreadyClaimed, TaskConflict, TaskRetryableError
from runner.executions import ExecutionRef, execution_name
from runner.model import ClaimSource, Task, TaskErrorInfo, TaskStatus
from tests.helpers import (
    FakeLambdaContext,
    StreamReader,
    effect_key,
    effects_on,
    pending,
    put_raw,
)
from tests.integration.test_workflow import Workflow, _build


def reader_for(app: App) -> StreamReader:
    dynamodb = app.clients.dynamodb
    arn = dynamodb.describe_table(TableName=app.settings.table_name)["Table"]["LatestStreamArn"]
    return StreamReader(app.clients.client("dynamodbstreams"), arn)


def put(app: App, values: dict[str, Any]) -> None:
    put_raw(app.clients.dynamodb, app.settings.table_name, values)


def test_a_task_put_again_over_a_finished_one_runs(app: App) -> None:
    # Given a task that ran to DONE from its INSERT
    reader = reader_for(app)
    put(app, pending("again", "NOOP_TASK", {"note": "first"}))
    app.stream.process(reader.read())
    first = app.store.get("again")
    assert first.status is TaskStatus.DONE and first.result == {"note": "first"}
    reader.read()  # the claim's and the outcome's MODIFYs

    # When the same id is put again as PENDING (a MODIFY: DONE → PENDING)
    put(app, pending("again", "NOOP_TASK", {"note": "second"}))
    records = reader.read()
    assert [r["eventName"] for r in records] == ["MODIFY"]
    result = app.stream.process(records)

    # Then the new task is run, once, with its own data
    assert [o.status for o in result.outcomes] == [TaskStatus.DONE]
    second = app.store.get("again")
    assert second.status is TaskStatus.DONE and second.result == {"note": "second"}
    assert second.attempts == 1 and len(second.attempt_log) == 1
    # (each incarnation once, under keys of its own: `ctx.idempotency_key` carries
    # `created_at`, which the claim filled in for each)
    assert sorted(effects_on("again").values()) == [1, 1]
    assert effects_on("again")[effect_key(app, "again")] == 1


def test_only_a_change_to_pending_is_run(app: App) -> None:
    # Given the records of a task's life: insert, a re-put before the claim, claim, finish
    reader = reader_for(app)
    put(app, pending("life", "NOOP_TASK", {}))
    put(app, pending("life", "NOOP_TASK", {"note": "b"}))  # PENDING → PENDING, not yet claimed
    insert, pending_reput = reader.read()
    app.stream.process([insert])
    claim_and_finish = reader.read()
    assert [r["eventName"] for r in claim_and_finish] == ["MODIFY", "MODIFY"]

    # When they are delivered again, then nothing runs a second time
    result = app.stream.process([pending_reput, *claim_and_finish, insert])
    assert not result.outcomes or all(o.status is None for o in result.outcomes)
    assert effects_on("life") == {effect_key(app, "life"): 1}
    assert app.store.get("life").attempts == 1


def test_a_task_put_again_has_execution_names_of_its_own(app: App) -> None:
    # Given a finished task, created at X, whose one failure had a retry execution
    reader = reader_for(app)
    old = {**pending("fresh", "FLAKY_TASK", {"fail_times": 1}), "status": "DONE", "episode": 1}
    put(app, {**old, "created_at": "2026-01-01T00:00:00.000Z"})
    reader.read()

    # When a task that will fail once is put over it (no created_at), and the stream runs it
    put(app, pending("fresh", "FLAKY_TASK", {"fail_times": 1}))
    result = app.stream.process(reader.read())

    # Then its retryable failure names an execution the old task never had
    assert [o.status for o in result.outcomes] == [TaskStatus.FAILED]
    failed = app.store.get("fresh")
    assert failed.retryable is True and failed.episode == 1
    assert failed.created_at and failed.created_at != "2026-01-01T00:00:00.000Z"
    ref = ExecutionRef.of(failed)
    assert ref.name != execution_name("fresh", "2026-01-01T00:00:00.000Z", 1)


def _old_task_in_retry(app: App, reader: StreamReader, task_id: str) -> AttemptInput:
    """A task that failed from the stream (episode 1), whose execution ran one attempt
    that failed too (RETRYING): what that execution's next attempt is invoked with."""
    put(app, pending(task_id, "ALWAYS_FAILING_TASK", {}))
    app.stream.process(reader.read())
    old = app.store.get(task_id)
    given = AttemptInput(task_id, old.episode, old.type, old.created_at)
    with pytest.raises(TaskRetryableError):
        app.attempts.run(given)
    assert app.store.get(task_id).status is TaskStatus.RETRYING
    reader.read()
    return given


def test_the_old_tasks_execution_never_claims_marks_or_remembers_the_new_one(app: App) -> None:
    # Given an old task in its retry workflow (episode 1), and a new task put over it
    # that has failed retryably in an episode 1 of its own
    reader = reader_for(app)
    old = _old_task_in_retry(app, reader, "u")
    time.sleep(0.002)  # the new task's created_at (its claim's time) differs
    put(app, pending("u", "FLAKY_TASK", {"fail_times": 5}))
    app.stream.process(reader.read())
    new = app.store.get("u")
    assert (new.status, new.episode, new.attempts) == (TaskStatus.FAILED, 1, 1)
    assert new.created_at != old.created_at

    # When the old execution's next attempt runs, its Catch marks, and its start is
    # remembered
    outcome = app.attempts.run(old)
    marked = app.attempts.exhaust(old, "States.Timeout")
    app.store.add_execution("u", 1, "arn:old-execution", old.created_at or "")

    # Then none of them touched the new task
    assert outcome.status is None and outcome.note.startswith("superseded")
    assert marked["outcome"] == "superseded"
    after = app.store.get("u")
    assert (after.status, after.attempts, after.retries_exhausted) == (TaskStatus.FAILED, 1, False)
    assert after.executions == []


def test_a_task_put_over_a_live_claim_waits_for_its_lease(app: App) -> None:
    # Given a task the stream has claimed, whose handler is running now
    reader = reader_for(app)
    item = pending("d", "NOOP_TASK", {"note": "once"})
    put(app, item)
    claimed = app.store.claim_pending("d", source=ClaimSource.STREAM, lease_seconds=60)
    reader.read()

    # When the producer's SDK retries its PutItem (the first reply was lost), replacing
    # the claimed item with the same task, and the stream delivers that MODIFY
    put(app, item)
    result = app.stream.process(reader.read())

    # Then it does not run beside the claim: it is held until the claim's lease is over
    assert [o.status for o in result.outcomes] == [None]
    assert effects_on("d") == {}
    held = app.store.get("d")
    assert held.status is TaskStatus.PENDING
    assert held.lease_expires_at == claimed.lease_expires_at
    assert (app.store.get_values("d") or {}).get("status_shard")  # where a sweep finds it
    with pytest.raises(TaskAlreadyClaimed):
        app.store.claim_pending("d", source=ClaimSource.SWEEPER, lease_seconds=60)

    # And once the lease is over, a sweep runs it (here: no workflow to hand it to)
    later = app.store.clock() + timedelta(seconds=400)
    app.store.clock = lambda: later
    assert app.sweeper.sweep().orphans_run == 1
    assert app.store.get("d").status is TaskStatus.DONE
    assert effects_on("d") == {effect_key(app, "d"): 1}


def test_a_claim_removes_an_expiry_a_reset_to_pending_kept(app: App) -> None:
    # Given a finished task reset to PENDING by an UpdateItem, which keeps its expires_at
    put(app, {**pending("r", "NOOP_TASK", {}), "status": "DONE", "expires_at": 1})
    app.clients.dynamodb.update_item(
        TableName=app.settings.table_name,
        Key={"id": {"S": "r"}},
        UpdateExpression="SET #s = :p",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":p": {"S": "PENDING"}},
    )

    # When it is claimed, then TTL can no longer delete it while it runs
    claimed = app.store.claim_pending("r", source=ClaimSource.STREAM, lease_seconds=60)
    assert claimed.status is TaskStatus.PROCESSING
    assert "expires_at" not in app.store.get_values("r")  # type: ignore[operator]


def test_an_expired_lease_read_from_a_lagging_index_is_not_applied_to_a_newer_claim(
    app: App,
) -> None:
    # Given a claim that died, as a lagging index still shows it ...
    put(app, pending("x", "NOOP_TASK", {}))
    stale = app.store.claim_pending("x", source=ClaimSource.STREAM, lease_seconds=1)
    # ... while the item was put again and claimed anew (same attempt count), and that
    # claim has died too
    put(app, pending("x", "NOOP_TASK", {}))
    newer = app.store.claim_pending("x", source=ClaimSource.STREAM, lease_seconds=1)
    assert (stale.attempts, newer.attempts) == (1, 1)
    later = app.store.clock() + timedelta(seconds=60)
    app.store.clock = lambda: later

    # When the sweeper expires the lease it read, then the newer claim is not touched
    with pytest.raises(TaskConflict):
        app.store.expire_lease(
            stale, TaskErrorInfo(type="TaskTimedOut", message="x", retryable=True)
        )
    assert app.store.get("x").claim_token == newer.claim_token


# --- through the retry state machine (moto's executor) ---------------------------------


@pytest.fixture
def flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    """The state machine's waits pass at once."""
    yield from _build(monkeypatch, instant=True)


@pytest.fixture
def realtime_flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    """The state machine's waits take real time (to wait out a real lease)."""
    yield from _build(monkeypatch, instant=False)


def pump(flow: Workflow, records: list[dict[str, Any]] | None = None) -> None:
    """Deliver stream records to both functions as their filters would (re-puts too)."""
    records = flow.stream.read() if records is None else records
    runs = [r for r in records if r["eventName"] in ("INSERT", "MODIFY")]
    if runs:
        handler.process_stream({"Records": runs}, FakeLambdaContext())
    modifies = [r for r in records if r["eventName"] == "MODIFY"]
    if modifies:
        assert handler.route_failed({"Records": modifies}, FakeLambdaContext()) == {
            "batchItemFailures": []
        }


def settle(flow: Workflow, task_id: str, timeout: float = 30.0) -> Task:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pump(flow)
        task = flow.app.store.get(task_id)
        running = [r for r in flow.executions() if r["status"] == "RUNNING"]
        if task.status is TaskStatus.DONE and not running:
            return task
        time.sleep(0.05)
    raise AssertionError(f"not DONE: {flow.app.store.get(task_id)}")


def first_life(flow: Workflow, task_id: str, item: dict[str, Any]) -> Task:
    """The task fails once, is retried by its execution, and is DONE."""
    put(flow.app, item)
    done = settle(flow, task_id)
    assert done.episode == 1 and len(done.executions) == 1
    return done


def test_a_task_put_again_and_run_by_run_task_while_the_stream_is_paused_is_retried(
    flow: Workflow,
) -> None:
    item = pending("p", "FLAKY_TASK", {"fail_times": 1})
    first = first_life(flow, "p", item)
    # When it is put again while processStream is paused, and run-task runs it (it fails)
    time.sleep(0.002)
    put(flow.app, item)
    paused = flow.stream.read()
    assert TaskRunnerClient(flow.app).run_task("p").status is TaskStatus.FAILED
    # Then, the stream resumed, its retry runs in an execution of its own, to DONE
    pump(flow, paused)
    second = settle(flow, "p")
    assert second.executions and second.executions[0] not in first.executions


def test_the_same_id_after_ttl_deleted_the_task_is_retried(flow: Workflow) -> None:
    item = pending("q", "FLAKY_TASK", {"fail_times": 1})
    first = first_life(flow, "q", item)
    flow.app.clients.dynamodb.delete_item(
        TableName=flow.app.settings.table_name, Key={"id": {"S": "q"}}
    )
    time.sleep(0.002)
    put(flow.app, item)  # days later, an INSERT of the same id
    second = settle(flow, "q")
    assert second.executions and second.executions[0] not in first.executions


def test_a_task_put_again_with_its_created_at_still_reaches_done(flow: Workflow) -> None:
    # Given a task (its producer sets created_at) retried to DONE by execution
    # <id>-<digest>-1, which has ended
    item = {**pending("s", "FLAKY_TASK", {"fail_times": 1}), "created_at": "2026-03-01T00:00:00Z"}
    first = first_life(flow, "s", item)

    # When the very same item is put again: the same id and created_at name the same
    # executions, and its episode 1's has ended
    put(flow.app, item)
    second = settle(flow, "s")

    # Then it is retried in a new episode, under a new name
    assert second.episode == 2
    assert second.executions and second.executions[-1] not in first.executions


def test_a_task_put_over_a_live_claim_is_handed_to_the_workflow_after_the_lease(
    realtime_flow: Workflow,
) -> None:
    flow = realtime_flow
    # Given a task the stream has claimed (its handler running), put again meanwhile
    item = pending("h", "NOOP_TASK", {})
    put(flow.app, item)
    flow.stream.read()
    claimed = flow.app.store.claim_pending("h", source=ClaimSource.STREAM, lease_seconds=2)
    put(flow.app, item)

    # When the stream delivers the MODIFY, it hands the task to an execution, which
    # waits out the claim's lease (TaskLeaseHeld) before its attempt claims
    pump(flow)
    held = flow.app.store.get("h")
    assert held.status is TaskStatus.PENDING and len(held.executions) == 1
    assert effects_on("h") == {}
    done = settle(flow, "h")

    # Then it ran once, after that lease
    assert effects_on("h") == {effect_key(flow.app, "h"): 1}
    assert done.started_at and claimed.lease_expires_at
    assert datetime.fromisoformat(done.started_at).timestamp() > claimed.lease_expires_at
