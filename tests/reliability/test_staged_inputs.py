"""Large inputs staged by their producer (`runner.staged_inputs`): one the producer did
not move under its task's prefix (S3 throttled past the retries, the producer died)
outlives any delay, because the sweeper moves it within minutes; one no item refers to
is left to the staging/ lifecycle rule (applied here as AWS documents it: moto does
not); and the races between the producer, a reader, the sweeper and TTL lose nothing."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from datetime import timedelta
from typing import Any

import pytest

from runner.app import App
from runner.client import TaskRunnerClient
from runner.config import Settings
from runner.errors import PayloadCorrupt
from runner.items import utcnow
from runner.model import ClaimSource, TaskStatus
from runner.payloads import task_prefix
from tests.helpers import apply_lifecycle
from tests.reliability.test_steps_and_payload_faults import (
    BUCKET,
    MB,
    Crash,
    _keys,
    payload_app,
    s3_down,
)


@pytest.fixture
def papp(aws: None, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> App:
    return payload_app(settings, monkeypatch)


class Clock:
    """The store's time, moved only by the test."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> Any:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def dapp(papp: App) -> tuple[App, Clock]:
    """`papp` with delayed tasks' timers (moto's SQS and EventBridge Scheduler) and a
    clock the test moves."""
    app = papp
    url = app.clients.sqs.create_queue(QueueName="timers-faults")["QueueUrl"]
    app.clients.client("scheduler").create_schedule_group(Name="delays-faults")
    app.settings = dataclasses.replace(
        app.settings,
        timer_queue_url=url,
        scheduler_role_arn="arn:aws:iam::123456789012:role/scheduler",
        delay_schedule_group="delays-faults",
    )
    app.store.settings = app.settings
    clock = Clock()
    app.store.clock = clock
    return app, clock


DAY = 86400


def _staged_key(task_id: str, created_at: str | None) -> str:
    return "staging/" + task_prefix(task_id, created_at).removeprefix("tasks/") + "input.json"


@pytest.mark.parametrize("fault", ["s3 throttled", "producer died"])
def test_a_staged_input_its_producer_did_not_move_outlives_a_long_delay(
    dapp: tuple[App, Clock], fault: str
) -> None:
    app, clock = dapp
    client = TaskRunnerClient(app)
    blob = "s" * MB
    # Given a task delayed 30 days whose producer inserted its item, then did not move
    # its staged input under the task's prefix
    if fault == "s3 throttled":
        with s3_down(app, "CopyObject"):
            task = client.create_task("BLOB_TASK", {"blob": blob}, delay=30 * DAY)
    else:

        def die(ref: Any) -> None:
            raise Crash

        app.store.payloads.commit_input = die  # type: ignore[method-assign]
        with pytest.raises(Crash):
            client.create_task("BLOB_TASK", {"blob": blob}, delay=30 * DAY)
        del app.store.payloads.commit_input
        [task] = client.list_tasks("SCHEDULED")[0]
    assert _keys(app) == [_staged_key(task.id, task.created_at)]
    # When the sweeper runs in the days before it is due (every 5 minutes), the staging/
    # lifecycle rule runs (whole days, rounded up to midnight UTC), and its time comes
    clock.advance(600)
    moved = app.sweeper.sweep().as_dict().get("inputs_moved")
    clock.advance(30 * DAY)
    apply_lifecycle(app.clients.s3, BUCKET, clock())
    app.sweeper.sweep()  # promotes it (the test delivers no timer)
    assert app.store.get(task.id).status is TaskStatus.PENDING
    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    # Then it runs with its whole input: the sweeper had moved it, within minutes
    assert outcome.status is TaskStatus.DONE, outcome.error
    full = client.get_task(task.id, payloads=True)
    assert full.result["input_sha256"] == hashlib.sha256(blob.encode()).hexdigest()
    assert moved == 1
    assert _keys(app) == [f"{task_prefix(task.id, task.created_at)}input.json"]


def test_a_staged_input_no_item_refers_to_is_left_to_the_lifecycle_rule(
    dapp: tuple[App, Clock],
) -> None:
    app, clock = dapp

    def die(task: Any) -> None:
        raise Crash

    # Given a producer that died between its upload and its insert
    app.store.put_new = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        TaskRunnerClient(app).create_task("BLOB_TASK", {"blob": "o" * MB}, task_id="never")
    del app.store.put_new
    [staged] = _keys(app)
    # Then the sweeper leaves it (no item refers to it; a producer may be about to insert)
    clock.advance(DAY)
    assert app.sweeper.sweep().inputs_moved == 0
    assert _keys(app) == [staged]
    # And the lifecycle rule, the backstop for exactly these, expires it
    assert apply_lifecycle(app.clients.s3, BUCKET, clock.now + timedelta(days=8)) == [staged]
    assert _keys(app) == []


def test_a_staged_input_whose_task_is_deleted_while_it_is_moved_is_not_left_behind(
    dapp: tuple[App, Clock],
) -> None:
    app, clock = dapp
    client = TaskRunnerClient(app)
    with s3_down(app, "CopyObject"):
        task = client.create_task("BLOB_TASK", {"blob": "d" * MB}, delay=DAY)
    real = app.store.payloads.commit_input

    def deleted_first(ref: Any) -> None:
        # TTL deletes the item, and its REMOVE record's cleanup runs, as the sweeper moves
        # the input: the cleanup listed the prefix before the copy landed
        app.clients.dynamodb.delete_item(
            TableName=app.settings.table_name, Key={"id": {"S": task.id}}
        )
        app.store.payloads.delete_task(task.id, task.created_at)
        with contextlib.suppress(Exception):
            app.clients.s3.put_object(
                Bucket=BUCKET, Key=_staged_key(task.id, task.created_at), Body=b"{}"
            )
        real(ref)

    app.store.payloads.commit_input = deleted_first  # type: ignore[method-assign]
    clock.advance(600)
    report = app.sweeper.sweep()
    del app.store.payloads.commit_input
    # Then nothing is left under its prefix: the copy is deleted once the item is gone
    assert report.inputs_moved == 0 and not report.phase_errors
    assert not [k for k in _keys(app) if k.startswith(task_prefix(task.id, task.created_at))]


def test_a_reader_racing_the_producers_move_reads_the_moved_input(papp: App) -> None:
    app = papp
    client = TaskRunnerClient(app)
    blob = "r" * MB
    # Given an input its producer could not move at once
    with s3_down(app, "CopyObject"):
        task = client.create_task("BLOB_TASK", {"blob": blob})
    real_get = app.store.payloads._get
    raced: list[int] = []

    def moved_after_the_miss(key: str) -> bytes:
        if not raced:
            # The reader misses the input; before its own copy the producer's late move
            # (or the sweeper's) lands, deleting the staged copy
            raced.append(1)
            app.store.payloads.commit_input(app.store.get(task.id).data)
            raise PayloadCorrupt("payload object missing (get_object)")
        return real_get(key)

    app.store.payloads._get = moved_after_the_miss  # type: ignore[method-assign]
    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    del app.store.payloads._get
    # Then the reader reads what was moved: the task is not failed for good
    assert raced == [1]
    assert outcome.status is TaskStatus.DONE, outcome.error
    full = client.get_task(task.id, payloads=True)
    assert full.result["input_sha256"] == hashlib.sha256(blob.encode()).hexdigest()


def test_a_producer_whose_move_a_reader_made_first_gets_its_task(papp: App) -> None:
    app = papp
    real = app.store.payloads.commit_input

    def reader_first(ref: Any) -> None:
        real(ref)  # a reader (the stream delivers within milliseconds) moved it first
        real(ref)  # the producer's own move then finds nothing staged

    app.store.payloads.commit_input = reader_first  # type: ignore[method-assign]
    task = TaskRunnerClient(app).create_task("BLOB_TASK", {"blob": "p" * MB})
    del app.store.payloads.commit_input
    # Then create_task returns the task it inserted (not PayloadCorrupt), input in place
    assert app.store.get(task.id).status is TaskStatus.PENDING
    assert _keys(app) == [f"{task_prefix(task.id, task.created_at)}input.json"]


def test_an_id_too_long_for_the_staged_inputs_metadata_is_refused_plainly(papp: App) -> None:
    from runner.errors import InvalidTaskInput, TaskNotFound

    client = TaskRunnerClient(papp)
    # Any ASCII id (up to the model's 1,024 characters) fits S3's 2 KB of metadata
    assert client.create_task("BLOB_TASK", {"blob": "a" * MB}, task_id="a" * 1024).id
    # One of 1,024 two-byte characters does not: refused before anything is written
    long_id = "é" * 1024
    with pytest.raises(InvalidTaskInput, match="shorter id"):
        client.create_task("BLOB_TASK", {"blob": "b" * MB}, task_id=long_id)
    with pytest.raises(TaskNotFound):
        papp.store.get(long_id)
    assert len(_keys(papp)) == 1
