"""process_stream against moto's DynamoDB, with records in AWS's documented shape."""

from __future__ import annotations

import time
from typing import Any

import pytest

import handler
from runner.app import App
from runner.model import TaskStatus
from tests.helpers import FakeLambdaContext, effect_key, effects_on, pending, put_raw, stream_record


@pytest.fixture
def lambda_app(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    """Make handler.py use the test App."""
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    return app


def _override(app: App, monkeypatch: pytest.MonkeyPatch, task_type: str, **changes: Any) -> None:
    import dataclasses

    definition = dataclasses.replace(app.registry.get(task_type), **changes)
    monkeypatch.setitem(app.registry._by_type, task_type, definition)


def _insert(app: App, task_id: str, task_type: str, data: dict[str, Any]) -> dict[str, Any]:
    values = put_raw(
        app.clients.dynamodb, app.settings.table_name, pending(task_id, task_type, data)
    )
    return stream_record(values)


def test_good_task_reaches_done_with_its_result(lambda_app: App) -> None:
    # Given a task inserted with only the documented required attributes
    record = _insert(lambda_app, "t-1", "EXAMPLE_TASK", {"message": "hello"})
    # When the stream delivers its INSERT
    response = handler.process_stream({"Records": [record]}, FakeLambdaContext())
    # Then it is DONE, with its result, timestamps and one attempt
    assert response == {"batchItemFailures": []}
    task = lambda_app.store.get("t-1")
    assert task.status is TaskStatus.DONE
    assert task.result == {"message": "hello"}
    assert task.attempts == 1
    assert task.created_at and task.started_at and task.finished_at and task.expires_at
    assert task.attempt_log[-1].outcome is TaskStatus.DONE


def test_mixed_batch_bad_records_do_not_hurt_good_ones(lambda_app: App) -> None:
    records = [
        _insert(lambda_app, "good", "NOOP_TASK", {}),
        {"eventName": "INSERT", "dynamodb": {"NewImage": {"id": {"BAD": 1}}}},  # malformed
        "not even a dict",
        _insert(lambda_app, "unknown", "NO_SUCH_TASK", {}),
        _insert(lambda_app, "invalid", "EXAMPLE_TASK", {"message": ""}),
        _insert(lambda_app, "wrongtype", "EXAMPLE_TASK", {"message": {"nested": True}}),
    ]
    response = handler.process_stream({"Records": records}, FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    assert lambda_app.store.get("good").status is TaskStatus.DONE
    unknown = lambda_app.store.get("unknown")
    assert unknown.status is TaskStatus.FAILED
    assert unknown.error and unknown.error.type == "UnknownTaskType"
    assert "NO_SUCH_TASK" in unknown.error.message and not unknown.retryable
    invalid = lambda_app.store.get("invalid")
    assert invalid.error and invalid.error.type == "InvalidTaskInput"
    assert "message" in invalid.error.message and invalid.retryable is False
    assert lambda_app.store.get("wrongtype").status is TaskStatus.FAILED


def test_same_insert_twice_in_one_batch_and_across_batches_runs_once(lambda_app: App) -> None:
    record = _insert(lambda_app, "dup", "NOOP_TASK", {})
    handler.process_stream({"Records": [record, record]}, FakeLambdaContext())
    handler.process_stream({"Records": [record]}, FakeLambdaContext())
    assert effects_on("dup") == {effect_key(lambda_app, "dup"): 1}
    assert lambda_app.store.get("dup").attempts == 1


def test_non_insert_and_non_pending_records_are_ignored(lambda_app: App) -> None:
    _insert(lambda_app, "m", "NOOP_TASK", {})
    values = pending("m", "NOOP_TASK", {})
    modify = stream_record({**values, "status": "DONE"}, event_name="MODIFY", old=values)
    not_pending = stream_record({**values, "id": "x", "status": "DONE"})
    remove = stream_record(None, event_name="REMOVE", old=values)
    result = lambda_app.stream.process([modify, not_pending, remove])
    assert result.ignored == 3 and not result.outcomes
    assert lambda_app.store.get("m").status is TaskStatus.PENDING


def test_retryable_failure_is_failed_promptly_with_a_new_episode(lambda_app: App) -> None:
    record = _insert(lambda_app, "flaky", "FLAKY_TASK", {"fail_times": 1})
    handler.process_stream({"Records": [record]}, FakeLambdaContext())
    task = lambda_app.store.get("flaky")
    assert task.status is TaskStatus.FAILED
    assert task.retryable is True and task.episode == 1
    assert task.error and task.error.type == "RetryableTaskError"


def test_unexpected_exception_is_recorded_not_raised(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(data: Any, ctx: Any) -> None:
        raise ZeroDivisionError("division by zero")

    _override(lambda_app, monkeypatch, "NOOP_TASK", handler=boom)
    record = _insert(lambda_app, "boom", "NOOP_TASK", {})
    assert handler.process_stream({"Records": [record]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    task = lambda_app.store.get("boom")
    assert task.error and task.error.type == "ZeroDivisionError"


def test_infrastructure_failure_reports_the_sequence_number(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.errors import StoreError

    good = _insert(lambda_app, "ok", "NOOP_TASK", {})
    bad = _insert(lambda_app, "unlucky", "NOOP_TASK", {})
    real_claim = lambda_app.store.claim_pending

    def claim(task_id: str, **kwargs: Any) -> Any:
        if task_id == "unlucky":
            raise StoreError("DynamoDB unreachable")
        return real_claim(task_id, **kwargs)

    monkeypatch.setattr(lambda_app.store, "claim_pending", claim)
    response = handler.process_stream({"Records": [good, bad]}, FakeLambdaContext())
    assert response == {
        "batchItemFailures": [{"itemIdentifier": bad["dynamodb"]["SequenceNumber"]}]
    }
    assert lambda_app.store.get("ok").status is TaskStatus.DONE


def test_hundred_one_second_tasks_run_concurrently(lambda_app: App) -> None:
    records = [
        _insert(lambda_app, f"ex-{n}", "EXAMPLE_TASK", {"message": f"m{n}"}) for n in range(100)
    ]
    started = time.monotonic()
    response = handler.process_stream({"Records": records}, FakeLambdaContext())
    elapsed = time.monotonic() - started
    print(f"100 one-second EXAMPLE_TASKs in {elapsed:.2f} s")
    assert response == {"batchItemFailures": []}
    statuses = {lambda_app.store.get(f"ex-{n}").status for n in range(100)}
    assert statuses == {TaskStatus.DONE}


def test_timeouts_are_enforced_for_async_and_sync_handlers(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    sleep_def = lambda_app.registry.get("SLEEP_TASK")
    monkeypatch.setitem(
        lambda_app.registry._by_type,
        "SLEEP_TASK",
        dataclasses.replace(sleep_def, timeout_seconds=0.2),
    )

    def slow_sync(data: Any, ctx: Any) -> None:
        time.sleep(2)

    noop_def = lambda_app.registry.get("NOOP_TASK")
    monkeypatch.setitem(
        lambda_app.registry._by_type,
        "NOOP_TASK",
        dataclasses.replace(noop_def, handler=slow_sync, timeout_seconds=0.2),
    )
    records = [
        _insert(lambda_app, "slow-async", "SLEEP_TASK", {"seconds": 5}),
        _insert(lambda_app, "slow-sync", "NOOP_TASK", {}),
    ]
    started = time.monotonic()
    handler.process_stream({"Records": records}, FakeLambdaContext())
    assert time.monotonic() - started < 2
    for task_id in ("slow-async", "slow-sync"):
        task = lambda_app.store.get(task_id)
        assert task.status is TaskStatus.FAILED
        assert task.error and task.error.type == "TaskTimedOut" and task.retryable


def test_local_retries_absorb_quick_transient_errors(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    calls: list[int] = []

    def twice_flaky(data: Any, ctx: Any) -> str:
        calls.append(1)
        if len(calls) < 3:
            from runner.errors import RetryableTaskError

            raise RetryableTaskError("blip")
        return "ok"

    noop_def = lambda_app.registry.get("NOOP_TASK")
    monkeypatch.setitem(
        lambda_app.registry._by_type,
        "NOOP_TASK",
        dataclasses.replace(
            noop_def, handler=twice_flaky, local_retries=2, local_retry_delay_seconds=0.0
        ),
    )
    handler.process_stream(
        {"Records": [_insert(lambda_app, "lr", "NOOP_TASK", {})]}, FakeLambdaContext()
    )
    task = lambda_app.store.get("lr")
    assert task.status is TaskStatus.DONE and task.attempts == 1 and len(calls) == 3


def _refuse_updates(
    app: App, monkeypatch: pytest.MonkeyPatch, code: str, *, times: int = 1
) -> None:
    from botocore.exceptions import ClientError

    real = app.clients.dynamodb.update_item
    calls = {"n": 0}

    def refused_once(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            error = {"Code": code, "Message": "refused"}
            raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, "x")
        return real(**kwargs)

    monkeypatch.setattr(app.clients.dynamodb, "update_item", refused_once)


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "KMSAccessDeniedException", "ResourceNotFoundException"]
)
def test_a_claim_refused_for_a_reason_not_about_the_record_is_retried_not_dropped(
    app: App, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    # Given a task inserted by hand (no status_shard: no index finds it), and DynamoDB
    # refusing its claim for a reason of the moment (IAM propagating, a KMS key, a
    # table being replaced), not about the item
    record = _insert(app, "r", "NOOP_TASK", {})
    _refuse_updates(app, monkeypatch, code)

    # When the stream processes it
    result = app.stream.process([record])

    # Then the record is reported failed (the mapping retries it, then sends it to the
    # on-failure queue the sweeper replays), not dropped as poison
    assert result.failed_sequence_numbers == [record["dynamodb"]["SequenceNumber"]]
    assert result.malformed == 0
    # And the redelivery runs it
    assert [o.status for o in app.stream.process([record]).outcomes] == [TaskStatus.DONE]


def test_a_claim_refused_for_the_record_itself_is_dropped_not_retried(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DynamoDB refusing the claim's write with a ValidationException left after
    # the store's own size handling (redelivery cannot help)
    record = _insert(app, "v", "NOOP_TASK", {})
    _refuse_updates(app, monkeypatch, "ValidationException", times=100)

    result = app.stream.process([record])

    # Then it does not block its shard
    assert result.failed_sequence_numbers == [] and result.malformed == 1
