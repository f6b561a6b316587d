"""Durable steps and offloaded payloads under the faults they must survive: a crash after
a step's effect but before its record, a record racing a lease takeover, S3 unavailable
while a result is written, and objects no item refers to."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from runner.app import App
from runner.attempts import AttemptInput
from runner.aws import AwsClients
from runner.client import TaskRunnerClient
from runner.config import Settings
from runner.errors import TaskConflict
from runner.items import utcnow
from runner.model import ClaimSource, TaskStatus
from runner.payloads import is_reference, task_prefix
from tasks import build_registry
from tests.helpers import create_tasks_table, step_runs

BUCKET = "payloads-faults"
MB = 1024 * 1024


class Crash(BaseException):
    """The process dying at this point: nothing after it runs (not an Exception)."""


@pytest.fixture
def papp(aws: None, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> App:
    return payload_app(settings, monkeypatch)


def payload_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> App:
    """An App over moto with a payload bucket; S3 retried 3 times, without sleeping."""
    settings = dataclasses.replace(settings, payload_bucket=BUCKET)
    clients = AwsClients(settings)
    create_tasks_table(clients.dynamodb, settings.table_name)
    clients.s3.create_bucket(Bucket=BUCKET)
    app = App.build(settings, build_registry(["runner.local.demo_tasks"]), clients)
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    app.store.payloads.retry_policy = dataclasses.replace(
        app.store.payloads.retry_policy, max_attempts=3
    )
    app.store.payloads._sleep = lambda seconds: None
    return app


def _later(app: App, seconds: float) -> None:
    app.store.clock = lambda: utcnow() + timedelta(seconds=seconds)


def _keys(app: App) -> list[str]:
    listed = app.clients.s3.list_objects_v2(Bucket=BUCKET)
    return sorted(o["Key"] for o in listed.get("Contents", []))


@contextlib.contextmanager
def s3_down(app: App, operation: str) -> Iterator[list[int]]:
    """Every S3 `operation` the app's client sends fails to connect, as if S3 were down."""
    calls: list[int] = []

    def refuse(**_: Any) -> None:
        calls.append(1)
        raise EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com")

    event = f"before-send.s3.{operation}"
    app.clients.s3.meta.events.register_first(event, refuse)
    try:
        yield calls
    finally:
        app.clients.s3.meta.events.unregister(event, refuse)


def test_a_crash_after_a_steps_effect_before_its_record_runs_that_step_again(papp: App) -> None:
    app = papp
    task = TaskRunnerClient(app).create_task("STEPS_TASK", {"fail_at": 0})
    real = app.store.record_step

    def crash_at_charge(task_: Any, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "charge":
            raise Crash  # the effect happened; the record never will
        real(task_, name, *args, **kwargs)

    app.store.record_step = crash_at_charge  # type: ignore[method-assign]
    # Given an attempt that dies after charge's effect, before its record
    with pytest.raises(Crash):
        app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    del app.store.record_step
    assert app.store.get(task.id).status is TaskStatus.PROCESSING
    # When its lease runs out and the sweeper hands it to a retry
    _later(app, 1000)
    assert app.sweeper.sweep().expired_leases == 1
    outcome = app.attempts.run(AttemptInput(task.id, 1, "STEPS_TASK"))
    # Then the recorded step is skipped, the unrecorded one runs again (the documented
    # limit: give its effect ctx.step_key), and every step is recorded once
    assert outcome.status is TaskStatus.DONE
    assert step_runs(app, task.id) == {"reserve": 1, "charge": 2, "email": 1}
    steps = app.store.get(task.id).steps or {}
    assert {n: r.attempt for n, r in steps.items()} == {"reserve": 1, "charge": 2, "email": 2}


def test_a_step_record_racing_a_lease_takeover_is_refused(papp: App) -> None:
    app = papp
    task = TaskRunnerClient(app).create_task("STEPS_TASK", {"fail_at": 0})
    real_step = app.store.record_step
    taken: list[int] = []

    def takeover_first(task_: Any, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "charge" and not taken:
            # The lease ran out while charge ran: the sweeper takes the task over first
            taken.append(1)
            _later(app, 1000)
            assert app.sweeper.sweep().expired_leases == 1
        real_step(task_, name, *args, **kwargs)

    app.store.record_step = takeover_first  # type: ignore[method-assign]
    # When the old claim then records its step
    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    del app.store.record_step
    # Then nothing of it is recorded: neither the step nor the outcome
    assert outcome.status is None and outcome.note == "claim lost"
    after = app.store.get(task.id)
    assert after.status is TaskStatus.FAILED and after.retryable
    assert set(after.steps or {}) == {"reserve"}
    # And the retry finishes it, running charge again
    assert app.attempts.run(AttemptInput(task.id, 1, "STEPS_TASK")).status is TaskStatus.DONE
    assert step_runs(app, task.id) == {"reserve": 1, "charge": 2, "email": 1}


def test_s3_unavailable_while_writing_a_result_ends_retryable_not_lost(papp: App) -> None:
    app = papp
    task = TaskRunnerClient(app).create_task("BLOB_TASK", {"result_bytes": MB})
    # Given S3 down when the attempt writes its 1 MB result
    with s3_down(app, "PutObject") as calls:
        outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    assert len(calls) == 3  # retried, then given up
    # Then the task is FAILED, retryable, in a new episode: routed for a retry, not lost
    assert outcome.status is TaskStatus.FAILED and outcome.error
    assert (outcome.error.type, outcome.error.retryable) == ("PayloadUnavailable", True)
    failed = app.store.get(task.id)
    assert failed.retryable and failed.episode == 1 and failed.claim_token
    # And once S3 is back, the retry records the result
    assert app.attempts.run(AttemptInput(task.id, 1, "BLOB_TASK")).status is TaskStatus.DONE
    full = TaskRunnerClient(app).get_task(task.id, payloads=True)
    assert len(full.result["output"]) == MB


def test_s3_unavailable_in_a_workflow_attempt_is_retried_by_the_workflow(papp: App) -> None:
    app = papp
    task = TaskRunnerClient(app).create_task(
        "BLOB_TASK", {"blob": "w" * MB, "result_bytes": MB, "fail_times": 1}
    )
    app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    from runner.errors import TaskInfrastructureError

    # S3 failed, not the task: retried on the infrastructure schedule, the attempt not
    # counted against the task's own (a long outage does not exhaust its retries)
    with s3_down(app, "PutObject"), pytest.raises(TaskInfrastructureError, match="payload"):
        app.attempts.run(AttemptInput(task.id, 1, "BLOB_TASK"))
    waiting = app.store.get(task.id)
    assert waiting.status is TaskStatus.RETRYING and waiting.episode_attempts == 0
    with s3_down(app, "GetObject"), pytest.raises(TaskInfrastructureError):
        app.attempts.run(AttemptInput(task.id, 1, "BLOB_TASK"))  # reading its input
    assert app.store.get(task.id).episode_attempts == 0
    assert app.attempts.run(AttemptInput(task.id, 1, "BLOB_TASK")).status is TaskStatus.DONE


def test_s3_unavailable_while_reading_an_input_ends_retryable(papp: App) -> None:
    app = papp
    task = TaskRunnerClient(app).create_task("BLOB_TASK", {"blob": "i" * MB})
    with s3_down(app, "GetObject"):
        outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    assert outcome.error and (outcome.error.type, outcome.error.retryable) == (
        "PayloadUnavailable",
        True,
    )
    assert app.attempts.run(AttemptInput(task.id, 1, "BLOB_TASK")).status is TaskStatus.DONE


def test_objects_no_item_refers_to_are_deleted(papp: App) -> None:
    app = papp
    client = TaskRunnerClient(app)
    # A staged input whose insert was refused (the id exists): deleted at once
    first = client.create_task("BLOB_TASK", {"blob": "a" * MB}, task_id="same")
    with pytest.raises(TaskConflict):
        client.create_task("BLOB_TASK", {"blob": "b" * MB}, task_id="same")
    assert _keys(app) == [f"{task_prefix('same', first.created_at)}input.json"]
    # A result uploaded by a claim that had lost the task by its outcome write: deleted
    task = client.create_task("BLOB_TASK", {"result_bytes": MB})
    real = app.store.payloads.put

    def put_then_lose_claim(key: str, value: Any) -> dict[str, Any]:
        ref = real(key, value)
        _later(app, 1000)
        assert app.sweeper.sweep().expired_leases == 1
        return ref

    app.store.payloads.put = put_then_lose_claim  # type: ignore[method-assign]
    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    del app.store.payloads.put
    assert outcome.status is None
    assert not [k for k in _keys(app) if k.startswith(task_prefix(task.id, task.created_at))]
    # A step result offloaded by a dead claim: deleted when its record is refused
    steps_task = client.create_task("STEPS_TASK", {"fail_at": 0})
    claimed = app.store.claim_pending(steps_task.id, source=ClaimSource.STREAM, lease_seconds=-1)
    from runner.errors import StepNotRecorded
    from runner.steps import StepRecorder

    recorder = StepRecorder(app.store, claimed)
    recorder.begin("reserve")
    assert app.sweeper.sweep().expired_leases == 1
    with pytest.raises(StepNotRecorded):
        recorder.complete("reserve", "x" * MB)
    assert not [
        k for k in _keys(app) if k.startswith(task_prefix(steps_task.id, claimed.created_at))
    ]
    assert is_reference(app.store.get("same").data)


def _lose_reply_then(app: App, marker: str, between: Any) -> list[int]:
    """The first UpdateItem whose expression names `marker` applies, but its reply is
    lost (a read timeout); `between` runs before the runner's retry of it is sent."""
    from botocore.exceptions import ReadTimeoutError

    real = app.clients.dynamodb.update_item
    lost: list[int] = []

    def lose_reply(**kwargs: Any) -> Any:
        response = real(**kwargs)
        if marker in kwargs["UpdateExpression"] and not lost:
            lost.append(1)
            between()
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
        return response

    app.clients.dynamodb.update_item = lose_reply  # type: ignore[method-assign]
    return lost


def test_a_step_record_whose_reply_was_lost_before_a_takeover_keeps_its_object(
    papp: App,
) -> None:
    app = papp
    task = TaskRunnerClient(app).create_task("STEPS_TASK", {"fail_at": 0})
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=-1)
    from runner.steps import StepRecorder

    recorder = StepRecorder(app.store, claimed)
    recorder.begin("reserve")

    def takeover() -> None:
        # The retries of the lost reply are throttled past the lease: the sweeper takes
        # the task over (a new claim's token from here on)
        assert app.sweeper.sweep().expired_leases == 1

    # Given an offloaded step result whose record applied, its reply lost, and a
    # takeover before the runner's retry of the write (which then fails its condition)
    lost = _lose_reply_then(app, "#steps", takeover)
    with contextlib.suppress(Exception):
        recorder.complete("reserve", "x" * MB)
    del app.clients.dynamodb.update_item
    assert lost == [1]
    # Then the object the item's record refers to is kept
    record = (app.store.get(task.id).steps or {})["reserve"]
    assert is_reference(record.result)
    assert record.result["$payload"]["key"] in _keys(app)
    # And the next attempt resumes with it: the step is not run again, the task ends DONE
    assert app.attempts.run(AttemptInput(task.id, 1, "STEPS_TASK")).status is TaskStatus.DONE
    assert step_runs(app, task.id)["reserve"] == 0
    full = TaskRunnerClient(app).get_task(task.id, payloads=True)
    assert (full.steps or {})["reserve"].result == "x" * MB


def test_a_result_whose_write_applied_is_never_deleted_whatever_the_item_became(
    papp: App,
) -> None:
    app = papp
    task = TaskRunnerClient(app).create_task("BLOB_TASK", {"result_bytes": MB})

    def moved_on() -> None:
        # Whatever changes the task after its DONE applied (no runner path moves a DONE
        # task today; an operator's write could), its result stays referenced
        app.clients.dynamodb.update_item(
            TableName=app.settings.table_name,
            Key={"id": {"S": task.id}},
            UpdateExpression="SET claim_token = :other",
            ExpressionAttributeValues={":other": {"S": "someone-else"}},
        )

    # Given a 1 MB result whose outcome write applied, its reply lost
    lost = _lose_reply_then(app, "#result", moved_on)
    app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    del app.clients.dynamodb.update_item
    assert lost == [1]
    # Then the object its item refers to is still there, and readable
    done = app.store.get(task.id)
    assert done.status is TaskStatus.DONE and is_reference(done.result)
    assert done.result["$payload"]["key"] in _keys(app)
    assert len(TaskRunnerClient(app).get_task(task.id, payloads=True).result["output"]) == MB
