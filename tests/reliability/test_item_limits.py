"""Every write the runner makes fits DynamoDB's 400 KB, and a result DynamoDB cannot store
ends the task FAILED instead of leaving it PROCESSING (defects 1 and 9).

The local DynamoDB refuses and applies writes as DynamoDB does (atomic UpdateItem, its
size rules): bare moto would half-apply the refused writes and mask these.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import timedelta
from typing import Any

import pytest

import handler
from runner.app import App
from runner.errors import TaskRetryableError
from runner.item_size import MAX_ITEM_BYTES, item_size
from runner.items import utcnow
from runner.model import TaskStatus, status_shard
from tests.helpers import FakeLambdaContext, effect_key, effects_on, pending, put_raw, stream_record


@pytest.fixture
def lambda_app(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    return app


def _padded(values: dict[str, Any], target: int) -> dict[str, Any]:
    """`values` with data.padding grown so the whole item is exactly `target` bytes."""
    values = {**values, "data": {**values["data"], "padding": ""}}
    values["data"]["padding"] = "p" * (target - item_size(values))
    assert item_size(values) == target
    return values


def _override(app: App, monkeypatch: pytest.MonkeyPatch, task_type: str, **changes: Any) -> None:
    definition = dataclasses.replace(app.registry.get(task_type), **changes)
    monkeypatch.setitem(app.registry._by_type, task_type, definition)


def test_a_near_limit_task_whose_lease_expired_does_not_stop_the_sweep(lambda_app: App) -> None:
    # Given a stream claim whose Lambda died, on an item only 100 bytes under DynamoDB's
    # limit (so the sweeper's failure write cannot fit as it is), and a PENDING task
    # whose stream record was lost
    app = lambda_app
    now = int(utcnow().timestamp())
    stuck = _padded(
        {
            **pending("near-limit", "NOOP_TASK", {}),
            "status": "PROCESSING",
            "status_shard": "PROCESSING#00",
            "updated_at": "2026-01-01T00:00:00.000Z",
            "claimed_by": "stream",
            "claim_token": "dead",
            "attempts": 1,
            "lease_expires_at": now - 60,
        },
        MAX_ITEM_BYTES - 100,
    )
    put_raw(app.clients.dynamodb, app.settings.table_name, stuck)
    old = "2026-01-01T00:00:00.000Z"
    lost = {**pending("lost", "NOOP_TASK", {}), "created_at": old, "updated_at": old}
    put_raw(
        app.clients.dynamodb,
        app.settings.table_name,
        {**lost, "status_shard": status_shard("lost", TaskStatus.PENDING)},
    )

    # When the sweeper runs
    report = handler.sweep({}, FakeLambdaContext())

    # Then it finished: the lost task ran, and the oversized one is FAILED for good
    # (its data dropped, the one write that could still fit), with an expiry
    assert effects_on("lost") == {effect_key(app, "lost"): 1}
    assert app.store.get("lost").status is TaskStatus.DONE
    failed = app.store.get("near-limit")
    assert failed.status is TaskStatus.FAILED and failed.retryable is False
    assert failed.error is not None and failed.error.type == "ItemTooLarge"
    assert failed.claim_token is None and failed.lease_expires_at is None
    assert failed.expires_at is not None
    assert report["errors"] == 0


def test_a_hand_inserted_near_limit_task_fails_at_once_instead_of_sticking(
    lambda_app: App,
) -> None:
    # Given a PENDING item inserted by hand, small enough for DynamoDB to take its claim
    # but too large for a failure to be recorded beside it
    app = lambda_app
    big = _padded(pending("big", "ALWAYS_FAILING_TASK", {"reason": "r"}), MAX_ITEM_BYTES - 600)
    put_raw(app.clients.dynamodb, app.settings.table_name, big)

    # When the stream delivers it
    response = handler.process_stream({"Records": [stream_record(big)]}, FakeLambdaContext())

    # Then it is FAILED, permanently, saying why, and not left PROCESSING
    assert response == {"batchItemFailures": []}
    task = app.store.get("big")
    assert task.status is TaskStatus.FAILED and not task.retryable
    assert task.error is not None and task.error.type == "ItemTooLarge"
    assert "too large" in task.error.message and task.expires_at is not None


def test_a_long_attempt_log_of_long_errors_still_fits_the_next_failure(lambda_app: App) -> None:
    # Given a task the workflow owns, with 366 KB of data and 19 attempts on record, each
    # with a 2,000-character error (as the runner stored them before): the item fits,
    # but one more such attempt, stored the same way, would not
    app = lambda_app
    message = "e" * 2000
    entry = {
        "attempt": 1,
        "episode": 1,
        "source": "workflow",
        "started_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:00:01.000Z",
        "outcome": "RETRYING",
        "error": {"type": "RetryableTaskError", "message": message, "retryable": True},
    }
    values = {
        **pending("long-log", "ALWAYS_FAILING_TASK", {"reason": "x" * 1990}),
        "status": "FAILED",
        "retryable": True,
        "episode": 1,
        "created_at": "2026-01-01T00:00:00.000Z",
        "attempts": 19,
        "attempt_log": [entry] * 19,
    }
    values["data"]["padding"] = "p" * 366_000
    assert item_size(values) <= MAX_ITEM_BYTES
    grown = {**values, "attempt_log": [entry] * 20, "error": entry["error"]}
    assert item_size(grown) > MAX_ITEM_BYTES
    put_raw(app.clients.dynamodb, app.settings.table_name, values)

    # When the workflow's next attempt fails too
    with pytest.raises(TaskRetryableError):
        handler.run_task({"task_id": "long-log", "episode": 1}, FakeLambdaContext())

    # Then that failure is recorded (RETRYING), with the attempt log kept short
    task = app.store.get("long-log")
    assert task.status is TaskStatus.RETRYING and task.attempts == 20
    assert len(task.attempt_log) == 20
    assert all(
        a.error is not None and len(a.error.message.encode()) <= 200 for a in task.attempt_log
    )


@pytest.mark.parametrize(
    ("label", "result"),
    [
        ("NaN", {"x": float("nan")}),
        ("infinity", [float("inf")]),
        ("39 digits", 10**38 + 1),
        ("magnitude 1E+200", 10**200),
        ("magnitude 1E-200", {"tiny": 1e-200}),
    ],
)
def test_a_result_dynamodb_cannot_store_fails_the_task_permanently(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, label: str, result: Any
) -> None:
    # Given a handler whose result DynamoDB would refuse
    _override(lambda_app, monkeypatch, "NOOP_TASK", handler=lambda data, ctx: result)
    values = put_raw(
        lambda_app.clients.dynamodb, lambda_app.settings.table_name, pending(label, "NOOP_TASK", {})
    )

    # When the stream runs it
    response = handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())

    # Then it ends FAILED at once, permanently, and is not run again by anyone
    assert response == {"batchItemFailures": []}
    task = lambda_app.store.get(label)
    assert task.status is TaskStatus.FAILED, label
    assert task.error is not None and task.error.type == "ResultNotStorable"
    assert task.retryable is False and task.result is None
    lambda_app.store.clock = lambda: utcnow() + timedelta(hours=2)
    assert lambda_app.sweeper.sweep().expired_leases == 0


def test_results_too_large_for_their_item_fail_with_a_short_error(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    _override(lambda_app, monkeypatch, "NOOP_TASK", handler=lambda data, ctx: "r" * 300_000)
    values = put_raw(
        lambda_app.clients.dynamodb,
        lambda_app.settings.table_name,
        pending("big-result", "NOOP_TASK", {"note": "n" * 200_000}),
    )
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    task = lambda_app.store.get("big-result")
    assert task.status is TaskStatus.FAILED and task.retryable is False
    assert task.error is not None and task.error.type == "ResultNotStorable"
    assert "too large" in task.error.message


def _write_after_the_read(app: App, monkeypatch: pytest.MonkeyPatch, write: Any) -> list[int]:
    """The store's next read of an item is followed at once by `write()` (a competing
    writer between a read-modify-write's read and its write)."""
    read = app.store.get_values
    done: list[int] = []

    def get_values(task_id: str) -> Any:
        values = read(task_id)
        if not done:
            done.append(1)
            write()
        return values

    monkeypatch.setattr(app.store, "get_values", get_values)
    return done


def test_a_compaction_never_writes_back_what_a_competing_write_changed(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a FAILED task with an error on record
    app = lambda_app
    put_raw(
        app.clients.dynamodb,
        app.settings.table_name,
        {
            **pending("c", "NOOP_TASK", {}),
            "status": "FAILED",
            "retryable": True,
            "error": {"type": "X", "message": "m" * 3000, "retryable": True},
        },
    )

    # ... and another claimer that runs it to DONE (error removed) just after this
    # compaction read the item
    def finish() -> None:
        app.clients.dynamodb.update_item(
            TableName=app.settings.table_name,
            Key={"id": {"S": "c"}},
            UpdateExpression="SET #s = :done, updated_at = :now REMOVE #e",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},
            ExpressionAttributeValues={":done": {"S": "DONE"}, ":now": {"S": "2026-12-01T01:00Z"}},
        )

    raced = _write_after_the_read(app, monkeypatch, finish)

    # When the compaction writes
    app.store.compact("c")

    # Then the competing write stands: the stale error is not put back on the DONE task
    task = app.store.get("c")
    assert raced == [1]
    assert task.status is TaskStatus.DONE and task.error is None


def test_a_small_task_put_over_a_too_large_one_is_not_failed_for_its_size(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a PENDING item too large to claim, put again (small) by its producer right
    # after the claim's refusal made the store read it (each put with its own
    # created_at, as the client writes them)
    app = lambda_app
    big = _padded(
        {**pending("g", "NOOP_TASK", {}), "created_at": "2026-12-01T00:00:00.000Z"},
        MAX_ITEM_BYTES - 100,
    )
    put_raw(app.clients.dynamodb, app.settings.table_name, big)
    small = {**pending("g", "NOOP_TASK", {"keep": "me"}), "created_at": "2026-12-01T00:00:05.000Z"}
    raced = _write_after_the_read(
        app, monkeypatch, lambda: put_raw(app.clients.dynamodb, app.settings.table_name, small)
    )

    # When a claim comes
    from runner.errors import ItemTooLarge, TaskAlreadyClaimed
    from runner.model import ClaimSource

    with contextlib.suppress(ItemTooLarge, TaskAlreadyClaimed):
        app.store.claim_pending("g", source=ClaimSource.STREAM, lease_seconds=60)

    # Then the small item is not FAILED as too large, and keeps its data
    task = app.store.get("g")
    assert raced == [1]
    assert task.status is not TaskStatus.FAILED, task.error
    assert task.data == {"keep": "me"}
