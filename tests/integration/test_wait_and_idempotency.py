"""`client.wait` (consistent polls with a backoff, a timeout naming the status) and
idempotent enqueue (the key is the id: no read on the happy path; other input conflicts;
a key used again after its task was deleted gets executions of its own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from runner.app import App
from runner.attempts import AttemptInput
from runner.client import TaskRunnerClient
from runner.errors import IdempotencyConflict, TaskNotFound, WaitTimedOut
from runner.executions import ExecutionRef
from runner.idempotency import task_id_for
from runner.model import ClaimSource, TaskStatus, effect_key
from runner.recurring import RecurringFires, fired_task_id
from runner.registry import TaskDefinition
from runner.waiting import MAX_POLL_SECONDS, wait_for
from tests.helpers import pending, put_raw, step_runs

S = TaskStatus


class _Empty(BaseModel):
    pass


class _FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _reads(app: App) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)

    app.clients.dynamodb.meta.events.register("provide-client-params.dynamodb.GetItem", record)
    return calls


def test_wait_returns_the_task_once_it_is_final_reading_consistently(app: App) -> None:
    client = TaskRunnerClient(app)
    task = client.create_task("NOOP_TASK", {})
    fake = _FakeTime()
    reads = _reads(app)
    polls = {"n": 0}

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        polls["n"] += 1
        if polls["n"] == 3:  # the task runs while the waiter sleeps
            app.runner.run_pending(task.id, source=ClaimSource.CLI)

    # (60 s: a wait's last 30 s read on clients of their own, which `reads` does not see)
    done = wait_for(app.store, task.id, 60, sleep=sleep, monotonic=fake.monotonic)

    assert done.status is S.DONE and done.result == {"note": ""}
    assert len(reads) == 4 and all(r["ConsistentRead"] is True for r in reads)
    assert fake.sleeps == pytest.approx([0.05, 0.075, 0.1125])


def test_a_wait_that_times_out_names_the_status_and_backs_off(app: App) -> None:
    client = TaskRunnerClient(app)
    task = client.create_task("NOOP_TASK", {})
    fake = _FakeTime()

    with pytest.raises(WaitTimedOut, match=rf"timed out after 60 s: task {task.id} is PENDING"):
        wait_for(app.store, task.id, 60, sleep=fake.sleep, monotonic=fake.monotonic)

    # At most two reads a second once the backoff has grown; never a poll past the end
    assert max(fake.sleeps) == MAX_POLL_SECONDS and len(fake.sleeps) < 130
    assert fake.now == pytest.approx(60)


def test_wait_on_an_unknown_task_says_not_found(app: App) -> None:
    with pytest.raises(TaskNotFound, match="task nope not found"):
        TaskRunnerClient(app).wait("nope", timeout=5)


def test_a_failed_task_awaiting_a_retry_is_not_final_but_one_failed_for_good_is(
    app: App,
) -> None:
    client = TaskRunnerClient(app)
    task = client.create_task("ALWAYS_FAILING_TASK", {})
    app.runner.run_pending(task.id, source=ClaimSource.CLI)
    fake = _FakeTime()
    with pytest.raises(WaitTimedOut, match="is FAILED"):
        wait_for(app.store, task.id, 1, sleep=fake.sleep, monotonic=fake.monotonic)
    exhausted = app.store.exhaust(
        app.store.get(task.id),
        app.store.get(task.id).error,  # type: ignore[arg-type]
    )
    assert exhausted.is_final
    assert client.wait(task.id, timeout=1).status is S.FAILED


def test_the_same_key_returns_the_same_task_with_one_write_and_no_read(app: App) -> None:
    client = TaskRunnerClient(app)
    calls: list[str] = []
    app.clients.dynamodb.meta.events.register(
        "before-call.dynamodb", lambda event_name, **_: calls.append(event_name.split(".")[-1])
    )

    first = client.create_task("NOOP_TASK", {"note": "a"}, idempotency_key="order-42")
    assert calls == ["PutItem"]  # the happy path: one write, no read
    app.runner.run_pending(first.id, source=ClaimSource.CLI)
    again = client.create_task("NOOP_TASK", {"note": "a"}, idempotency_key="order-42")

    assert first.id == again.id == task_id_for("order-42")
    assert again.status is S.DONE and again.enqueue_key == "order-42"  # whatever its status
    assert app.clients.dynamodb.scan(TableName=app.settings.table_name)["Count"] == 1


def test_the_same_key_with_other_input_is_a_clear_conflict(app: App) -> None:
    client = TaskRunnerClient(app)
    client.create_task("NOOP_TASK", {"note": "a"}, idempotency_key="order-42")

    with pytest.raises(IdempotencyConflict, match=r"'order-42' already names task key-.* other"):
        client.create_task("NOOP_TASK", {"note": "b"}, idempotency_key="order-42")
    with pytest.raises(IdempotencyConflict):
        client.create_task("EXAMPLE_TASK", {"message": "a"}, idempotency_key="order-42")
    with pytest.raises(ValueError, match="not both"):
        client.create_task("NOOP_TASK", {}, idempotency_key="k", task_id="x")
    with pytest.raises(ValueError, match="non-empty"):
        client.create_task("NOOP_TASK", {}, idempotency_key=" ")


def test_a_key_used_again_after_its_task_was_deleted_gets_new_execution_names(
    app: App,
) -> None:
    client = TaskRunnerClient(app)
    old = client.create_task("NOOP_TASK", {}, idempotency_key="nightly-2026-12-01")
    # TTL deletes the finished task (days after its expiry)
    app.clients.dynamodb.delete_item(TableName=app.settings.table_name, Key={"id": {"S": old.id}})
    app.store.clock = _later  # and the key is used again, weeks later

    new = client.create_task("NOOP_TASK", {}, idempotency_key="nightly-2026-12-01")

    assert new.id == old.id and new.created_at != old.created_at
    for episode in (0, 1, 2):
        assert (
            ExecutionRef.of(new.model_copy(update={"episode": episode})).name
            != ExecutionRef.of(old.model_copy(update={"episode": episode})).name
        )


def _later() -> datetime:
    return datetime(2027, 1, 15, tzinfo=UTC)


def test_a_task_put_by_hand_keys_every_attempt_by_its_incarnation(app: App) -> None:
    # Given a task inserted with only the required attributes (no `created_at`: its
    # first claim fills it in), whose second step fails on the first attempt
    put_raw(
        app.clients.dynamodb,
        app.settings.table_name,
        pending("by-hand", "STEPS_TASK", {"fail_at": 2, "fail_times": 1}),
    )

    # When it fails once and its retry finishes it
    assert app.runner.run_pending("by-hand", source=ClaimSource.STREAM).status is S.FAILED
    assert app.attempts.run(AttemptInput("by-hand", 1, "STEPS_TASK")).status is S.DONE

    # Then both attempts had the key of its incarnation: the failed step ran again
    # under the same step key, and the key is not the bare `task:<id>` an id put again
    # (or re-created from an idempotency key) would share with this one
    task = app.store.get("by-hand")
    assert step_runs(app, "by-hand") == {"reserve": 1, "charge": 2, "email": 1}
    assert task.idempotency_key == effect_key("by-hand", task.created_at) != "task:by-hand"


def test_a_fire_created_again_for_its_scheduled_time_keeps_its_effect_keys(app: App) -> None:
    # Given a recurring fire's task, run and then deleted
    seen: list[str] = []

    def handler(data: Any, ctx: Any) -> None:
        seen.append(ctx.step_key("report"))

    app.registry.register(TaskDefinition(type="NIGHTLY", input_model=_Empty, handler=handler))
    fires = RecurringFires(app.store, app.registry)
    body = {
        "kind": "recurring",
        "schedule": "nightly",
        "task_type": "NIGHTLY",
        "data": {},
        "scheduled_time": "2026-12-01T03:00:00Z",
    }
    scheduled = datetime(2026, 12, 1, 3, tzinfo=UTC)
    app.store.clock = lambda: scheduled + timedelta(minutes=1)
    assert fires.fire(body) is True
    task_id = fired_task_id("nightly", "2026-12-01T03:00:00Z")
    app.runner.run_pending(task_id, source=ClaimSource.STREAM)
    app.clients.dynamodb.delete_item(TableName=app.settings.table_name, Key={"id": {"S": task_id}})

    # When the same fire is delivered again, a day later (at least once: its scheduled
    # time is the same)
    app.store.clock = lambda: scheduled + timedelta(days=1)
    assert fires.fire(body) is True
    app.runner.run_pending(task_id, source=ClaimSource.STREAM)

    # Then it is the same occurrence, with the same effect keys (its `created_at` is the
    # scheduled time, not the clock): its effects are not made twice for one night
    assert len(seen) == 2 and seen[0] == seen[1] != f"task:{task_id}:step:report"
