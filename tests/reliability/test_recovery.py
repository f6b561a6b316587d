"""The sweeper without a state machine: lost stream batches read again from the stream,
expired leases failed with an expiry, malformed orphans failed, and a time budget read
when each orphan starts (defects 10, 11, 13, 17)."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import timedelta
from typing import Any

import pytest

import handler
from runner.app import App
from runner.items import utcnow
from runner.local import demo_tasks
from runner.model import ClaimSource, TaskStatus, status_shard
from tests.helpers import FakeLambdaContext, StreamReader, effect_key, pending, put_raw

OLD = "2026-01-01T00:00:00.000Z"


@pytest.fixture
def swept_app(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    return app


def _later(app: App, seconds: float) -> None:
    app.store.clock = lambda: utcnow() + timedelta(seconds=seconds)


def _count_calls(app: App, operation: str) -> list[str]:
    calls: list[str] = []
    app.clients.dynamodb.meta.events.register(
        f"before-send.dynamodb.{operation}", lambda **kw: calls.append(operation)
    )
    return calls


def _indexed_pending(task_id: str, task_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """A PENDING task as the client writes it, inserted long ago."""
    return {
        **pending(task_id, task_type, data),
        "created_at": OLD,
        "updated_at": OLD,
        "status_shard": status_shard(task_id, TaskStatus.PENDING),
    }


def test_an_expired_lease_fails_the_task_with_an_expiry(swept_app: App) -> None:
    app = swept_app
    task = app.store.claim_pending(
        app.store.put_new(
            __import__("runner.model").model.Task(
                id="died", type="NOOP_TASK", status=TaskStatus.PENDING, data={}
            )
        ).id,
        source=ClaimSource.STREAM,
        lease_seconds=60,
    )
    _later(app, 120)
    assert app.sweeper.expire_leases() == 1
    failed = app.store.get(task.id)
    assert failed.status is TaskStatus.FAILED and failed.retryable
    assert failed.expires_at is not None
    assert failed.expires_at >= int(utcnow().timestamp()) + 29 * 86400


def test_malformed_pending_orphans_are_failed_not_skipped(swept_app: App) -> None:
    # Given a PENDING item the stream never delivered, which is not a valid task
    app = swept_app
    bad = {**_indexed_pending("bad", "NOOP_TASK", {}), "data": "not a map", "attempts": "x"}
    put_raw(app.clients.dynamodb, app.settings.table_name, bad)

    # When the sweeper runs (twice: the second finds nothing left to do)
    handler.sweep({}, FakeLambdaContext())
    handler.sweep({}, FakeLambdaContext())

    # Then it is FAILED, non-retryable, saying why, without quoting the item's values
    item = app.clients.dynamodb.get_item(
        TableName=app.settings.table_name, Key={"id": {"S": "bad"}}
    )["Item"]
    assert item["status"] == {"S": "FAILED"} and item["retryable"] == {"BOOL": False}
    assert item["error"]["M"]["type"] == {"S": "MalformedTask"}
    assert "not a map" not in item["error"]["M"]["message"]["S"]


def test_orphans_get_the_time_left_when_each_starts(
    swept_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three PENDING tasks the stream missed, each needing 2.9 s of a 3 s timeout,
    # run one at a time, and a sweep with 8.5 s left
    app = swept_app
    monkeypatch.setattr("runner.sweeper.SWEEPER_CONCURRENCY", 1)
    sleep = dataclasses.replace(app.registry.get("SLEEP_TASK"), timeout_seconds=3)
    monkeypatch.setitem(app.registry._by_type, "SLEEP_TASK", sleep)
    for n in range(3):
        put_raw(
            app.clients.dynamodb,
            app.settings.table_name,
            _indexed_pending(f"slow-{n}", "SLEEP_TASK", {"seconds": 2.9}),
        )

    # When it runs
    started = time.monotonic()
    app.sweeper.sweep(remaining_seconds=8.5)
    elapsed = time.monotonic() - started

    # Then it stops starting orphans once one would not finish in what is left: it ends
    # within its budget, and the others wait for the next sweep, untouched
    assert elapsed < 8.5, elapsed
    statuses = sorted(app.store.get(f"slow-{n}").status.value for n in range(3))
    assert statuses == ["DONE", "PENDING", "PENDING"]


def _given_up_batch(app: App, task_id: str, task_type: str) -> tuple[App, str]:
    """A task inserted by hand (in no index) whose stream batch ran out of retries: the
    on-failure queue holds the batch's metadata, as Lambda sends it. Returns an App whose
    sweeper replays that queue, and the queue's URL."""
    queue_url = app.clients.sqs.create_queue(QueueName="stream-failures")["QueueUrl"]
    stream_arn = app.clients.dynamodb.describe_table(TableName=app.settings.table_name)["Table"][
        "LatestStreamArn"
    ]
    put_raw(app.clients.dynamodb, app.settings.table_name, pending(task_id, task_type, {}))
    reader = StreamReader(app.clients.client("dynamodbstreams"), stream_arn)
    [record] = reader.read()
    shard = app.clients.dynamodbstreams.describe_stream(StreamArn=stream_arn)["StreamDescription"][
        "Shards"
    ][0]["ShardId"]
    sequence = record["dynamodb"]["SequenceNumber"]
    app.clients.sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(
            {
                "requestContext": {"condition": "RetryAttemptsExhausted"},
                "DDBStreamBatchInfo": {
                    "shardId": shard,
                    "startSequenceNumber": sequence,
                    "endSequenceNumber": sequence,
                    "batchSize": 1,
                    "streamArn": stream_arn,
                },
            }
        ),
    )
    replaying = App.build(
        dataclasses.replace(app.settings, failed_batch_queue_url=queue_url),
        app.registry,
        app.clients,
    )
    return replaying, queue_url


def test_a_batch_the_stream_mapping_gave_up_on_is_read_again_without_a_scan(
    swept_app: App,
) -> None:
    app = swept_app
    replaying, queue_url = _given_up_batch(app, "lost", "NOOP_TASK")
    scans = _count_calls(app, "Scan")

    # When the scheduled sweep runs
    report = replaying.sweeper.sweep(remaining_seconds=60.0)

    # Then the task ran, the message is gone, and no Scan read the table
    assert app.store.get("lost").status is TaskStatus.DONE
    assert {effect_key(app, "lost"): 1} == demo_tasks.EFFECTS
    assert report.replayed_batches == 1 and report.replayed_records == 1
    assert app.clients.sqs.receive_message(QueueUrl=queue_url).get("Messages", []) == []
    assert scans == []


def test_a_sweep_that_cannot_run_a_batchs_task_type_leaves_the_batch_queued(
    swept_app: App,
) -> None:
    # Given a given-up batch whose task is of a type the sweeping process (the CLI, with
    # a registry of its own) does not register
    app = swept_app
    replaying, queue_url = _given_up_batch(app, "theirs", "NOOP_TASK")

    # When that process sweeps, running only the types it has
    report = replaying.sweeper.sweep(
        remaining_seconds=60.0, runnable=lambda task: task.type != "NOOP_TASK"
    )

    # Then the task is untouched (not FAILED as an unknown type), and the message stays
    # (hidden for the replay's visibility timeout) for a sweep that can run it
    assert app.store.get("theirs").status is TaskStatus.PENDING
    assert report.replayed_batches == 0
    counts = app.clients.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert int(counts["Attributes"]["ApproximateNumberOfMessagesNotVisible"]) == 1


def test_the_scheduled_sweep_reads_no_table_segment_by_default(swept_app: App) -> None:
    scans = _count_calls(swept_app, "Scan")
    handler.sweep({"time": "2026-11-29T08:05:00Z"}, FakeLambdaContext())
    assert scans == []


def _client_error(code: str, operation: str) -> Exception:
    from botocore.exceptions import ClientError

    error = {"Code": code, "Message": "refused"}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


def test_one_on_failure_message_that_cannot_be_replayed_never_stops_the_others(
    swept_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a given-up batch, and before it in the queue a message the sweep cannot read
    # for a reason other than trimmed records (a stream ARN from before the stream was
    # disabled and enabled again, which the role may not read: AccessDenied)
    app = swept_app
    replaying, queue_url = _given_up_batch(app, "good", "NOOP_TASK")
    [message] = app.clients.sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0)["Messages"]
    good = json.loads(message["Body"])
    info = good["DDBStreamBatchInfo"]
    bad = {**good, "DDBStreamBatchInfo": {**info, "streamArn": info["streamArn"] + "-old"}}
    app.clients.sqs.purge_queue(QueueUrl=queue_url)
    for body in (bad, good):
        app.clients.sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(body))
    streams = app.clients.dynamodbstreams
    real = streams.get_shard_iterator

    def get_shard_iterator(**kwargs: Any) -> Any:
        if kwargs["StreamArn"].endswith("-old"):
            raise _client_error("AccessDeniedException", "GetShardIterator")
        return real(**kwargs)

    monkeypatch.setattr(streams, "get_shard_iterator", get_shard_iterator)

    # When the sweep replays the queue
    report = replaying.sweeper.sweep(remaining_seconds=60.0)

    # Then the good batch is replayed; the bad message is counted and kept (hidden for
    # the visibility timeout, then the dead-letter queue once it keeps failing)
    assert app.store.get("good").status is TaskStatus.DONE
    assert report.replayed_batches == 1 and report.errors == 1
    assert report.phase_errors == ()
    counts = app.clients.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert int(counts["Attributes"]["ApproximateNumberOfMessagesNotVisible"]) == 1


def test_a_throttled_stream_read_is_retried_within_the_same_sweep(
    swept_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a given-up batch, and GetRecords throttled twice (LimitExceededException: the
    # sweeper is a third reader of a shard the two mappings already read)
    app = swept_app
    replaying, queue_url = _given_up_batch(app, "busy", "NOOP_TASK")
    streams = app.clients.dynamodbstreams
    real = streams.get_records
    refusals = iter(range(2))

    def get_records(**kwargs: Any) -> Any:
        if next(refusals, None) is not None:
            raise _client_error("LimitExceededException", "GetRecords")
        return real(**kwargs)

    monkeypatch.setattr(streams, "get_records", get_records)

    # When the sweep runs
    report = replaying.sweeper.sweep(remaining_seconds=60.0)

    # Then the batch is replayed in this sweep, not kept for the next
    assert app.store.get("busy").status is TaskStatus.DONE
    assert report.replayed_batches == 1 and report.errors == 0
    assert app.clients.sqs.receive_message(QueueUrl=queue_url).get("Messages", []) == []
