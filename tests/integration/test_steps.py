"""Durable steps: a retry resumes at the step that failed; records are claim-conditional."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from runner.app import App
from runner.attempts import AttemptInput
from runner.client import TaskRunnerClient
from runner.errors import StepNotRecorded, TaskRetryableError
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskDefinition, TaskRegistry
from runner.steps import StepRecorder
from tests.helpers import effect_key, step_runs

READS = {"GetItem", "BatchGetItem", "Query", "Scan"}


@pytest.fixture
def calls(app: App) -> Iterator[collections.Counter[str]]:
    """DynamoDB operations the app's client sends from now on."""
    counted: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def count(model: Any, **_: Any) -> None:
        with lock:
            counted[model.name] += 1

    app.clients.dynamodb.meta.events.register("before-call.dynamodb", count)
    yield counted


def test_a_retry_skips_the_steps_an_earlier_attempt_completed(
    app: App, calls: collections.Counter[str]
) -> None:
    # Given a three-step task whose second step fails on the first attempt
    task = TaskRunnerClient(app).create_task("STEPS_TASK", {"fail_at": 2})
    calls.clear()
    first = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    assert first.status is TaskStatus.FAILED and first.error and first.error.retryable
    # Then the first step is recorded by one conditional write beside the claim and outcome
    assert calls["UpdateItem"] == 3 and not READS & set(calls)
    assert set(app.store.get(task.id).steps or {}) == {"reserve"}
    # When the retry workflow runs it again
    calls.clear()
    outcome = app.attempts.run(AttemptInput(task.id, 1, "STEPS_TASK"))
    # Then it resumes at the failed step: reserve is not run again, with no read to know it
    assert outcome.status is TaskStatus.DONE
    assert calls["UpdateItem"] == 4 and not READS & set(calls)
    assert step_runs(app, task.id) == {"reserve": 1, "charge": 2, "email": 1}
    done = app.store.get(task.id)
    assert {n: r.attempt for n, r in (done.steps or {}).items()} == {
        "reserve": 1,
        "charge": 2,
        "email": 2,
    }
    assert done.result["steps"][0] == {"step": "reserve", "attempt": 1}  # the recorded value


def test_a_task_without_steps_keeps_two_writes_and_no_read(
    app: App, calls: collections.Counter[str]
) -> None:
    task = TaskRunnerClient(app).create_task("NOOP_TASK", {})
    calls.clear()
    assert app.runner.run_pending(task.id, source=ClaimSource.STREAM).status is TaskStatus.DONE
    assert dict(calls) == {"UpdateItem": 2}
    assert app.store.get(task.id).steps is None


def _registry_with(app: App, definition: TaskDefinition) -> None:
    app.runner.registry = TaskRegistry([*app.registry, definition])


def test_a_step_name_used_twice_in_one_attempt_fails_the_task_for_good(app: App) -> None:
    from pydantic import BaseModel

    class Empty(BaseModel):
        pass

    def twice(data: Empty, ctx: Any) -> None:
        ctx.step("a", lambda: 1)
        ctx.step("a", lambda: 2)

    _registry_with(app, TaskDefinition(type="TWICE_TASK", input_model=Empty, handler=twice))
    from runner.items import iso
    from runner.model import Task

    now = iso(app.store.clock())
    app.store.put_new(
        Task(id="twice", type="TWICE_TASK", status=TaskStatus.PENDING, created_at=now)
    )
    outcome = app.runner.run_pending("twice", source=ClaimSource.STREAM)
    assert outcome.status is TaskStatus.FAILED and outcome.error
    assert (outcome.error.type, outcome.error.retryable) == ("StepError", False)


def test_a_step_result_that_is_not_json_fails_for_good_and_records_nothing(app: App) -> None:
    from pydantic import BaseModel

    class Empty(BaseModel):
        pass

    def bad(data: Empty, ctx: Any) -> None:
        ctx.step("nan", lambda: float("nan"))

    _registry_with(app, TaskDefinition(type="NAN_STEP_TASK", input_model=Empty, handler=bad))
    from runner.items import iso
    from runner.model import Task

    now = iso(app.store.clock())
    app.store.put_new(
        Task(id="nan", type="NAN_STEP_TASK", status=TaskStatus.PENDING, created_at=now)
    )
    outcome = app.runner.run_pending("nan", source=ClaimSource.STREAM)
    assert outcome.error and (outcome.error.type, outcome.error.retryable) == (
        "StepNotStorable",
        False,
    )
    assert app.store.get("nan").steps is None


def test_async_steps_are_durable_too(app: App) -> None:
    from pydantic import BaseModel

    class Empty(BaseModel):
        pass

    runs: collections.Counter[str] = collections.Counter()

    async def work(name: str) -> str:
        runs[name] += 1
        return name.upper()

    async def handler(data: Empty, ctx: Any) -> list[str]:
        first = await ctx.astep("one", work, "one")
        if ctx.attempt == 1:
            raise TaskRetryableError("after the first step")
        return [first, await ctx.astep("two", work, "two")]

    _registry_with(app, TaskDefinition(type="ASYNC_STEPS_TASK", input_model=Empty, handler=handler))
    from runner.items import iso
    from runner.model import Task

    now = iso(app.store.clock())
    app.store.put_new(
        Task(id="async", type="ASYNC_STEPS_TASK", status=TaskStatus.PENDING, created_at=now)
    )
    assert app.runner.run_pending("async", source=ClaimSource.STREAM).status is TaskStatus.FAILED
    outcome = app.attempts.run(AttemptInput("async", 1, "ASYNC_STEPS_TASK"))
    assert outcome.status is TaskStatus.DONE
    assert app.store.get("async").result == ["ONE", "TWO"]
    assert runs == {"one": 1, "two": 1}


def test_a_dead_claim_cannot_record_a_step(app: App) -> None:
    # Given a claim whose lease the sweeper took over
    task = TaskRunnerClient(app).create_task("STEPS_TASK", {})
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=-1)
    recorder = StepRecorder(app.store, claimed)
    assert recorder.begin("reserve") is None
    expired = app.sweeper.sweep().expired_leases
    assert expired == 1
    # When that claim's handler completes a step
    # Then the record is refused, and the item holds no step of it
    with pytest.raises(StepNotRecorded):
        recorder.complete("reserve", {"late": True})
    assert app.store.get(task.id).steps is None


def test_redrive_with_reset_steps_clears_them(app: App) -> None:
    task = TaskRunnerClient(app).create_task("STEPS_TASK", {"fail_at": 3})
    app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    failed = app.store.get(task.id)
    assert set(failed.steps or {}) == {"reserve", "charge"}
    kept = app.store.redrive(failed, statuses=(TaskStatus.FAILED,))
    assert set(kept.steps or {}) == {"reserve", "charge"}
    again = app.store.get(task.id)
    app.store.redrive(again, statuses=(TaskStatus.RETRYING,), reset_steps=True)
    assert app.store.get(task.id).steps is None


def test_step_key_is_stable_and_per_step(app: App) -> None:
    from runner.context import TaskContext

    ctx = TaskContext(
        task_id="t",
        task_type="X",
        attempt=1,
        episode=0,
        idempotency_key="task:t",
        settings=app.settings,
        clients=app.clients,
        logger=app.runner.log,
    )
    assert ctx.step_key("charge") == "task:t:step:charge" != ctx.step_key("email")


def test_the_readmes_durable_steps_example_runs_and_resumes(app: App) -> None:
    import re
    import types
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Durable steps") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    module = types.ModuleType("charge_order")
    exec(compile(code.group(1), "README.md", "exec"), module.__dict__)
    charged: list[str] = []
    real = module.charge_card

    def counted(order_id: str, key: str) -> dict[str, str]:
        charged.append(key)
        return real(order_id, key)

    module.charge_card = counted

    async def receipt_fails_once(order_id: str, charge_id: str) -> bool:
        if len(charged) == 1 and not getattr(receipt_fails_once, "failed", False):
            receipt_fails_once.failed = True  # type: ignore[attr-defined]
            raise TaskRetryableError("the mailer is down")
        return True

    module.send_receipt = receipt_fails_once
    _registry_with(app, module.TASK)
    from runner.items import iso
    from runner.model import Task

    now = iso(app.store.clock())
    app.store.put_new(
        Task(
            id="order-1",
            type="CHARGE_ORDER",
            status=TaskStatus.PENDING,
            data={"order_id": "42"},
            created_at=now,
        )
    )
    assert app.runner.run_pending("order-1", source=ClaimSource.STREAM).status is TaskStatus.FAILED
    outcome = app.attempts.run(AttemptInput("order-1", 1, "CHARGE_ORDER"))
    assert outcome.status is TaskStatus.DONE
    # charged once, with its step key
    assert charged == [f"{effect_key(app, 'order-1')}:step:charge"]
    assert app.store.get("order-1").result == {"charge_id": "ch-42"}


def _put_task(app: App, task_id: str, task_type: str) -> None:
    from runner.items import iso
    from runner.model import Task

    now = iso(app.store.clock())
    app.store.put_new(Task(id=task_id, type=task_type, status=TaskStatus.PENDING, created_at=now))


def test_a_local_retry_runs_again_a_step_that_raised_and_keeps_the_check_within_a_try(
    app: App,
) -> None:
    from pydantic import BaseModel

    from runner.errors import RetryableTaskError

    class Empty(BaseModel):
        pass

    runs = {"flaky": 0, "handler": 0}

    def flaky() -> str:
        runs["flaky"] += 1
        if runs["flaky"] == 1:
            raise RetryableTaskError("upstream busy")  # nothing recorded
        return "ok"

    def handler(data: Empty, ctx: Any) -> str:
        runs["handler"] += 1
        value = str(ctx.step("flaky", flaky))
        if runs["handler"] == 2:
            ctx.step("flaky", flaky)  # a name twice within one try is still an error
        return value

    _registry_with(
        app,
        TaskDefinition(
            type="FLAKY_STEP_TASK",
            input_model=Empty,
            handler=handler,
            local_retries=2,
            local_retry_delay_seconds=0.0,
        ),
    )
    _put_task(app, "flaky-step", "FLAKY_STEP_TASK")
    # When its step raises on the first try, then the second try uses the name twice
    outcome = app.runner.run_pending("flaky-step", source=ClaimSource.STREAM)
    # Then the second try ran the unrecorded step again, and its duplicate is StepError
    assert runs == {"flaky": 2, "handler": 2}
    assert outcome.status is TaskStatus.FAILED and outcome.error
    assert (outcome.error.type, outcome.error.retryable) == ("StepError", False)
    assert set(app.store.get("flaky-step").steps or {}) == {"flaky"}


def test_no_local_retry_starts_once_a_cancel_was_requested(app: App) -> None:
    from pydantic import BaseModel

    from runner.errors import RetryableTaskError

    class Empty(BaseModel):
        pass

    runs = []

    def handler(data: Empty, ctx: Any) -> None:
        runs.append(ctx.attempt)
        ctx.control.request_cancel()  # as the heartbeat does when it reads the flag
        raise RetryableTaskError("busy")

    _registry_with(
        app,
        TaskDefinition(
            type="CANCELLED_RETRY_TASK",
            input_model=Empty,
            handler=handler,
            local_retries=3,
            local_retry_delay_seconds=0.0,
        ),
    )
    _put_task(app, "cancelled-retry", "CANCELLED_RETRY_TASK")
    outcome = app.runner.run_pending("cancelled-retry", source=ClaimSource.STREAM)
    # The effects do not run again after the user asked to stop; the task ends CANCELLED
    assert runs == [1]
    assert outcome.status is TaskStatus.CANCELLED
