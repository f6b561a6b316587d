"""Payloads past 400 KB: the claim check in the payload bucket (moto's S3), end to end
through the stream path, and what is refused."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

import handler
from runner.app import App
from runner.aws import AwsClients
from runner.client import TaskRunnerClient
from runner.config import Settings
from runner.errors import PayloadTooLarge
from runner.items import serialize
from runner.model import ClaimSource, TaskStatus
from runner.payloads import (
    INLINE_MAX_BYTES,
    MAX_PAYLOAD_BYTES,
    is_reference,
    staged_key,
    task_prefix,
)
from tasks import build_registry
from tests.helpers import FakeLambdaContext, StreamReader, create_tasks_table, stream_record

BUCKET = "payloads-test"
MB = 1024 * 1024


@pytest.fixture
def papp(aws: None, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> App:
    """An App whose payload bucket exists (moto's S3), the demo tasks registered."""
    settings = dataclasses.replace(settings, payload_bucket=BUCKET)
    clients = AwsClients(settings)
    create_tasks_table(clients.dynamodb, settings.table_name)
    clients.s3.create_bucket(Bucket=BUCKET)
    app = App.build(settings, build_registry(["runner.local.demo_tasks"]), clients)
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    return app


def keys(app: App, prefix: str = "") -> list[str]:
    listed = app.clients.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def raw_item(app: App, task_id: str) -> dict[str, Any]:
    found = app.clients.dynamodb.get_item(
        TableName=app.settings.table_name, Key=serialize({"id": task_id})
    )
    return dict(found["Item"])


def stream(app: App) -> StreamReader:
    arn = app.clients.dynamodb.describe_table(TableName=app.settings.table_name)["Table"][
        "LatestStreamArn"
    ]
    return StreamReader(app.clients.client("dynamodbstreams"), arn)


def test_a_5_mb_input_and_result_go_through_the_stream_path(papp: App) -> None:
    reader = stream(papp)
    blob = "b" * (5 * MB)
    # Given a task whose input is 5 MB
    task = TaskRunnerClient(papp).create_task("BLOB_TASK", {"blob": blob, "result_bytes": 5 * MB})
    # Then its item holds a reference, and the object sits under the task's prefix
    assert is_reference(task.data)
    prefix = task_prefix(task.id, task.created_at)
    assert f"{prefix}input.json" in keys(papp)
    item = raw_item(papp, task.id)
    assert len(str(item)) < 2000 and item["payloads"] == {"BOOL": True}
    # When the stream delivers its INSERT
    records = [r for r in reader.read() if r["eventName"] == "INSERT"]
    assert handler.process_stream({"Records": records}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    # Then the handler saw the whole input, and the 5 MB result is offloaded too
    done = papp.store.get(task.id)
    assert done.status is TaskStatus.DONE and is_reference(done.result)
    full = TaskRunnerClient(papp).get_task(task.id, payloads=True)
    assert full.data == {"blob": blob, "numbers": [], "result_bytes": 5 * MB, "fail_times": 0}
    assert full.result["input_sha256"] == hashlib.sha256(blob.encode()).hexdigest()
    assert len(full.result["output"]) == 5 * MB


def test_small_payloads_stay_on_the_item_with_no_s3_call(papp: App) -> None:
    task = TaskRunnerClient(papp).create_task("BLOB_TASK", {"blob": "x" * 1000})
    outcome = papp.runner.run_pending(task.id, source=ClaimSource.STREAM)
    assert outcome.status is TaskStatus.DONE
    done = papp.store.get(task.id)
    assert done.data["blob"] == "x" * 1000 and not is_reference(done.result)
    assert keys(papp) == [] and not done.payloads


def test_an_input_just_over_the_threshold_is_offloaded(papp: App) -> None:
    task = TaskRunnerClient(papp).create_task("BLOB_TASK", {"blob": "y" * INLINE_MAX_BYTES})
    assert is_reference(task.data)
    assert papp.runner.run_pending(task.id, source=ClaimSource.STREAM).status is TaskStatus.DONE


def test_an_input_over_the_cap_is_refused_before_anything_is_written(papp: App) -> None:
    with pytest.raises(PayloadTooLarge, match="cap"):
        TaskRunnerClient(papp).create_task("BLOB_TASK", {"blob": "z" * (MAX_PAYLOAD_BYTES + 1)})
    assert keys(papp) == []
    assert papp.clients.dynamodb.scan(TableName=papp.settings.table_name)["Count"] == 0


def test_a_result_over_the_cap_fails_the_task_for_good(papp: App) -> None:
    task = TaskRunnerClient(papp).create_task("BLOB_TASK", {"result_bytes": MAX_PAYLOAD_BYTES})
    outcome = papp.runner.run_pending(task.id, source=ClaimSource.STREAM)
    assert outcome.status is TaskStatus.FAILED and outcome.error
    assert (outcome.error.type, outcome.error.retryable) == ("ResultNotStorable", False)
    assert "cap" in outcome.error.message


def test_a_staged_input_whose_copy_was_lost_is_copied_by_the_reader(papp: App) -> None:
    # Given a producer that stopped after its insert, before the copy out of staging
    client = TaskRunnerClient(papp)
    papp.store.payloads.commit_input = lambda ref: None  # type: ignore[method-assign]
    task = client.create_task("BLOB_TASK", {"blob": "s" * (64 * 1024)})
    del papp.store.payloads.commit_input
    prefix = task_prefix(task.id, task.created_at)
    assert keys(papp) == [staged_key(task.data)]
    assert staged_key(task.data).startswith(f"staging/{prefix.removeprefix('tasks/')}input-")
    # When the task runs, it reads its input all the same
    assert papp.runner.run_pending(task.id, source=ClaimSource.STREAM).status is TaskStatus.DONE
    assert f"{prefix}input.json" in keys(papp)


def test_large_step_results_are_offloaded_and_resumed(papp: App) -> None:
    from pydantic import BaseModel

    from runner.errors import RetryableTaskError
    from runner.registry import TaskDefinition, TaskRegistry

    class Empty(BaseModel):
        pass

    def big_steps(data: Empty, ctx: Any) -> int:
        first = ctx.step("big", lambda: "q" * MB)
        if ctx.attempt == 1:
            raise RetryableTaskError("after the big step")
        return len(first)

    papp.runner.registry = TaskRegistry(
        [*papp.registry, TaskDefinition(type="BIG_STEP_TASK", input_model=Empty, handler=big_steps)]
    )
    from runner.attempts import AttemptInput
    from runner.items import iso
    from runner.model import Task

    now = iso(papp.store.clock())
    papp.store.put_new(
        Task(id="big", type="BIG_STEP_TASK", status=TaskStatus.PENDING, created_at=now)
    )
    papp.runner.run_pending("big", source=ClaimSource.STREAM)
    failed = papp.store.get("big")
    assert failed.payloads and failed.steps and is_reference(failed.steps["big"].result)
    assert failed.steps["big"].bytes == MB + 2
    assert papp.attempts.run(AttemptInput("big", 1, "BIG_STEP_TASK")).status is TaskStatus.DONE
    assert papp.store.get("big").result == MB


def test_removing_a_task_deletes_its_objects_on_the_remove_record(papp: App) -> None:
    reader = stream(papp)
    task = TaskRunnerClient(papp).create_task("BLOB_TASK", {"blob": "r" * MB, "result_bytes": MB})
    papp.runner.run_pending(task.id, source=ClaimSource.STREAM)
    other = TaskRunnerClient(papp).create_task("BLOB_TASK", {"blob": "o" * MB})
    assert len(keys(papp, "tasks/")) == 3
    reader.read()
    # When the item is deleted (as TTL does), its REMOVE record reaches routeFailed
    papp.clients.dynamodb.delete_item(
        TableName=papp.settings.table_name, Key=serialize({"id": task.id})
    )
    removes = [r for r in reader.read() if r["eventName"] == "REMOVE"]
    assert len(removes) == 1
    assert handler.route_failed({"Records": removes}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    # Then its objects are gone, and the other task's are not
    assert keys(papp) == [f"{task_prefix(other.id, other.created_at)}input.json"]


def test_a_remove_record_of_a_task_without_payloads_makes_no_s3_call(papp: App) -> None:
    record = stream_record(None, event_name="REMOVE", old={"id": "t", "status": "DONE"})
    calls: list[str] = []
    papp.clients.s3.meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name)
    )
    assert handler.route_failed({"Records": [record]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    assert calls == []


def test_the_export_holds_offloaded_payloads_in_full(papp: App) -> None:
    import gzip
    import json

    papp.clients.s3.create_bucket(Bucket="exports-test")
    papp.clients.ses.verify_email_identity(EmailAddress="noreply@example.com")
    client = TaskRunnerClient(papp)
    big = client.create_task("BLOB_TASK", {"blob": "x" * MB, "result_bytes": MB})
    papp.runner.run_pending(big.id, source=ClaimSource.STREAM)
    export = client.create_task("export-db", {"email": "ops@example.com"})
    assert client.run_task(export.id).status is TaskStatus.DONE
    result = client.get_task(export.id).result
    body = papp.clients.s3.get_object(Bucket="exports-test", Key=result["key"])["Body"].read()
    rows = {row["id"]: row for row in map(json.loads, gzip.decompress(body).splitlines())}
    assert rows[big.id]["data"]["blob"] == "x" * MB
    assert len(rows[big.id]["result"]["output"]) == MB


def test_the_remove_filter_takes_only_removed_items_that_had_payloads() -> None:
    from runner.local.stream_records import RecordFilter
    from tests.deploy.test_wiring import REMOVED_WITH_PAYLOADS

    matches = RecordFilter([REMOVED_WITH_PAYLOADS]).matches
    with_objects = {"id": "a", "status": "DONE", "payloads": True}
    assert matches(stream_record(None, event_name="REMOVE", old=with_objects))
    assert not matches(stream_record(None, event_name="REMOVE", old={"id": "b", "status": "DONE"}))
    assert not matches(stream_record(with_objects, event_name="MODIFY", old=with_objects))
