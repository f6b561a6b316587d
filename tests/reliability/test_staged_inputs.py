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
from runner.errors import PayloadCorrupt, TaskConflict
from runner.items import utcnow
from runner.model import ClaimSource, Task, TaskStatus
from runner.payloads import staged_key, task_prefix
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


def _staged_key(task: Task) -> str:
    """Where its producer uploaded a task's input: `staging/<digest>/input-<16 hex>.json`."""
    key = staged_key(task.data)
    assert key.startswith("staging/" + task_prefix(task.id, task.created_at)[len("tasks/") :])
    return key


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
    assert _keys(app) == [_staged_key(task)]
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
            app.clients.s3.put_object(Bucket=BUCKET, Key=_staged_key(task), Body=b"{}")
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


def test_two_creates_of_one_id_in_one_millisecond_never_share_a_staged_upload(
    papp: App,
) -> None:
    app = papp
    moment = utcnow()
    app.store.clock = lambda: moment  # both creates in the same millisecond: one created_at
    client = TaskRunnerClient(app)
    first_blob, second_blob = "1" * MB, "2" * MB
    # Given a create whose producer inserted its item and has not moved its input yet
    real = app.store.payloads.commit_input
    app.store.payloads.commit_input = lambda ref: None  # type: ignore[method-assign]
    first = client.create_task("BLOB_TASK", {"blob": first_blob}, task_id="twice")
    del app.store.payloads.commit_input
    # When a second create of that id (a retried request) uploads its own input and has
    # its insert refused (which deletes its upload), and only then the first producer's
    # move lands
    with pytest.raises(TaskConflict):
        client.create_task("BLOB_TASK", {"blob": second_blob}, task_id="twice")
    real(first.data)
    # Then the task runs with the first create's input, whole
    outcome = app.runner.run_pending("twice", source=ClaimSource.STREAM)
    assert outcome.status is TaskStatus.DONE, outcome.error
    full = client.get_task("twice", payloads=True)
    assert full.result["input_sha256"] == hashlib.sha256(first_blob.encode()).hexdigest()
    assert _keys(app) == sorted(
        [f"{task_prefix('twice', first.created_at)}input.json", *_result_keys(app, "twice")]
    )


def _result_keys(app: App, task_id: str) -> list[str]:
    result = app.store.get(task_id).result
    return [result["$payload"]["key"]] if isinstance(result, dict) and "$payload" in result else []


def test_a_staged_input_left_by_a_refused_create_is_never_moved_over_the_tasks_input(
    dapp: tuple[App, Clock],
) -> None:
    app, clock = dapp
    client = TaskRunnerClient(app)
    moment = clock.now
    # Given a task whose producer did not move its input, and a second create of its id
    # in the same millisecond whose refused upload could not be deleted (S3 failing)
    app.store.payloads.commit_input = lambda ref: None  # type: ignore[method-assign]
    first = client.create_task("BLOB_TASK", {"blob": "1" * MB}, task_id="kept", delay=DAY)
    del app.store.payloads.commit_input
    clock.now = moment
    with s3_down(app, "DeleteObject"), pytest.raises(TaskConflict):
        client.create_task("BLOB_TASK", {"blob": "2" * MB}, task_id="kept", delay=DAY)
    assert len(_keys(app)) == 2
    # When the sweeper moves what was left
    clock.advance(600)
    assert app.sweeper.sweep().inputs_moved == 1
    # Then it moved the task's own input (the other is left to the lifecycle rule)
    clock.advance(DAY)
    app.sweeper.sweep()  # promotes it (the test delivers no timer)
    outcome = app.runner.run_pending("kept", source=ClaimSource.STREAM)
    assert outcome.status is TaskStatus.DONE, outcome.error
    digest = client.get_task("kept", payloads=True).result["input_sha256"]
    assert digest == hashlib.sha256(("1" * MB).encode()).hexdigest()
    assert first.data["$payload"]["key"] in _keys(app)


def _refuse_with_access_denied(app: App, operation: str) -> Any:
    """S3 refuses `operation` as it refuses a principal without the permission (403),
    before the request is sent (raised: moto's own before-send handler runs after)."""
    from botocore.exceptions import ClientError

    def refuse(**_: Any) -> None:
        error = {"Code": "AccessDenied", "Message": "Access Denied"}
        raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}, operation)

    event = f"before-send.s3.{operation}"
    app.clients.s3.meta.events.register_first(event, refuse)
    return lambda: app.clients.s3.meta.events.unregister(event, refuse)


def test_an_operator_who_may_not_move_a_staged_input_reads_it_where_it_is(papp: App) -> None:
    app = papp
    blob = "o" * MB
    # Given a task whose producer stopped between its insert and its move
    app.store.payloads.commit_input = lambda ref: None  # type: ignore[method-assign]
    task = TaskRunnerClient(app).create_task("BLOB_TASK", {"blob": blob})
    del app.store.payloads.commit_input
    staged = _staged_key(task)
    # When an operator (PayloadOperatorPolicy: GetObject only) asks for it in full, S3
    # refusing its CopyObject and DeleteObject
    undo = [_refuse_with_access_denied(app, op) for op in ("CopyObject", "DeleteObject")]
    try:
        full = TaskRunnerClient(app).get_task(task.id, payloads=True)
    finally:
        for step in undo:
            step()
    # Then it gets the input, read where it was staged, and nothing was moved or lost
    assert full.data == {"blob": blob, "numbers": [], "result_bytes": 0, "fail_times": 0}
    assert _keys(app) == [staged]
