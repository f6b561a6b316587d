"""Payload objects through their life under faults: a REMOVE record in a stream batch the
mapping gave up on, an export meeting a missing object, a wait for an offloaded result."""

from __future__ import annotations

import dataclasses
import gzip
import json

from runner.app import App
from runner.client import TaskRunnerClient
from runner.items import serialize
from runner.payloads import task_prefix
from tests.helpers import StreamReader
from tests.integration.test_payloads import BUCKET, papp

__all__ = ["papp"]  # the fixture: an app with its payload bucket, from the payload tests


def _objects(app: App, prefix: str) -> list[str]:
    listed = app.clients.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_given_up_remove_record_still_deletes_the_tasks_objects(papp: App) -> None:
    app = papp
    stream_arn = app.clients.dynamodb.describe_table(TableName=app.settings.table_name)["Table"][
        "LatestStreamArn"
    ]
    reader = StreamReader(app.clients.client("dynamodbstreams"), stream_arn)
    # Given a task whose input lives in the payload bucket
    task = TaskRunnerClient(app).create_task("BLOB_TASK", {"blob": "x" * 40_000})
    prefix = task_prefix(task.id, task.created_at)
    assert _objects(app, prefix), "the input was offloaded"
    reader.read()
    # and its item removed (TTL), whose REMOVE record's batch routeFailed's mapping gave up
    # on (S3 throttled its DeleteObjects for the mapping's 5 retries): Lambda sends the
    # batch's metadata to the on-failure queue
    app.clients.dynamodb.delete_item(
        TableName=app.settings.table_name, Key=serialize({"id": task.id})
    )
    [removed] = [r for r in reader.read() if r["eventName"] == "REMOVE"]
    shard = app.clients.dynamodbstreams.describe_stream(StreamArn=stream_arn)["StreamDescription"][
        "Shards"
    ][0]["ShardId"]
    sequence = removed["dynamodb"]["SequenceNumber"]
    queue_url = app.clients.sqs.create_queue(QueueName="stream-failures")["QueueUrl"]
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
    # When the sweep replays the given-up batch
    report = replaying.sweeper.sweep(remaining_seconds=60.0)
    assert report.replayed_batches == 1
    # Then the removed task's objects are deleted (no lifecycle rule covers tasks/: left
    # here they are kept, and billed, for ever)
    assert _objects(app, prefix) == []


def test_one_task_with_a_missing_payload_object_does_not_stop_every_export(papp: App) -> None:
    from runner.model import ClaimSource, TaskStatus

    app = papp
    app.clients.s3.create_bucket(Bucket="exports-test")
    app.clients.ses.verify_email_identity(EmailAddress="noreply@example.com")
    client = TaskRunnerClient(app)
    # Given a table where one task's offloaded result object is gone (a producer with
    # PutObject on tasks/* overwrote or a person deleted it; or routeFailed's REMOVE
    # cleanup ran between the export's Scan page and its read)
    lost = client.create_task("BLOB_TASK", {"result_bytes": 40_000})
    app.runner.run_pending(lost.id, source=ClaimSource.STREAM)
    for key in _objects(app, task_prefix(lost.id, lost.created_at)):
        app.clients.s3.delete_object(Bucket=BUCKET, Key=key)
    fine = client.create_task("BLOB_TASK", {"blob": "y"})
    app.runner.run_pending(fine.id, source=ClaimSource.STREAM)
    # When an operator exports the table
    export = client.create_task("export-db", {"email": "ops@example.com"})
    outcome = client.run_task(export.id)
    # Then the export is made (the lost payload marked as such in its row), not failed on
    # every attempt for as long as that one task exists
    assert outcome.status is TaskStatus.DONE, outcome.error
    result = app.store.get(export.id).result
    assert isinstance(result, dict) and result["unreadable_payloads"] == 1
    body = app.clients.s3.get_object(Bucket=result["bucket"], Key=result["key"])["Body"].read()
    rows = {r["id"]: r for r in map(json.loads, gzip.decompress(body).splitlines())}
    assert "payload_unavailable" in rows[lost.id] and "payload_unavailable" not in rows[fine.id]
    assert rows[fine.id]["result"] == app.store.get(fine.id).result


def test_waiting_for_a_task_gives_its_offloaded_result_in_full(papp: App) -> None:
    from runner.model import ClaimSource

    client = TaskRunnerClient(papp)
    # Given a task whose result went to the payload bucket
    task = client.create_task("BLOB_TASK", {"result_bytes": 40_000})
    papp.runner.run_pending(task.id, source=ClaimSource.STREAM)
    # When a producer waits for it (client.wait; the CLI's `get-task --wait --payloads` and
    # `create-task --wait` go the same way, and `--payloads` is then ignored)
    done = client.wait(task.id, timeout=5)
    # Then it sees the result itself, as the issue asks of the client, not a reference
    assert isinstance(done.result, dict) and len(done.result.get("output", "")) == 40_000, (
        done.result
    )
