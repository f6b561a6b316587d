"""Shared test helpers: the tasks table, stream records in AWS's shape, task items."""

from __future__ import annotations

import re
import time
from typing import Any

from runner.items import serialize
from runner.local.motoserver import StreamReader, create_tasks_table

__all__ = ["StreamReader", "create_tasks_table"]

REGION = "us-east-1"
STREAM_ARN = (
    "arn:aws:dynamodb:us-east-1:123456789012:table/tasks-test/stream/2026-01-01T00:00:00.000"
)


_sequence = [100000000000000000000]


def next_sequence() -> str:
    _sequence[0] += 1
    return str(_sequence[0])


def stream_record(
    new: dict[str, Any] | None,
    *,
    event_name: str = "INSERT",
    old: dict[str, Any] | None = None,
    stream_arn: str = STREAM_ARN,
    sequence: str | None = None,
) -> dict[str, Any]:
    """A DynamoDB stream record as Lambda delivers it (documented shape)."""
    body: dict[str, Any] = {
        "ApproximateCreationDateTime": time.time(),
        "SequenceNumber": sequence or next_sequence(),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    source = new or old or {}
    if "id" in source:
        body["Keys"] = serialize({"id": source["id"]})
    if new is not None:
        body["NewImage"] = serialize(new)
    if old is not None:
        body["OldImage"] = serialize(old)
    return {
        "eventID": f"evt-{body['SequenceNumber']}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": body,
        "eventSourceARN": stream_arn,
    }


def put_raw(dynamodb: Any, table: str, values: dict[str, Any]) -> dict[str, Any]:
    """Insert an item exactly as given (as a user with the AWS CLI would) and return it."""
    dynamodb.put_item(TableName=table, Item=serialize(values))
    return values


def effect_key(app: Any, task_id: str) -> str:
    """The task's `ctx.idempotency_key` as the item now gives it."""
    key: str = app.store.get(task_id).idempotency_key
    return key


def effects_on(task_id: str, step: str | None = None) -> dict[str, int]:
    """The demo tasks' effects (`demo_tasks.EFFECTS`) under every effect key an
    incarnation of `task_id` has or had (`task:<id>`, `task:<id>:<16 hex>`), or under
    those of its step `step` (`ctx.step_key`), by key."""
    from runner.local import demo_tasks

    tail = "" if step is None else f":step:{re.escape(step)}"
    pattern = re.compile(f"task:{re.escape(task_id)}(:[0-9a-f]{{16}})?{tail}")
    return {k: n for k, n in demo_tasks.EFFECTS.items() if pattern.fullmatch(k) and n}


def step_runs(app: Any, task_id: str) -> dict[str, int]:
    """Runs of each of the demo's steps (`demo_tasks.STEP_NAMES`) for `task_id`, checked
    to be all under the task's own step keys (`ctx.step_key`): one key on every attempt."""
    from runner.local import demo_tasks

    key = effect_key(app, task_id)
    runs = {name: effects_on(task_id, name) for name in demo_tasks.STEP_NAMES}
    assert all(set(on) <= {f"{key}:step:{name}"} for name, on in runs.items()), runs
    return {name: sum(on.values()) for name, on in runs.items()}


def pending(task_id: str, task_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """Only the documented required attributes of a task."""
    return {"id": task_id, "type": task_type, "status": "PENDING", "data": data}


class FakeLambdaContext:
    """What handler.py reads from a Lambda context."""

    def __init__(self, seconds: float = 300.0) -> None:
        self._deadline = time.monotonic() + seconds
        self.aws_request_id = "req-test"
        self.function_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def payload_expirations() -> list[tuple[str, int]]:
    """(prefix, days) of every expiring rule of the payload bucket as deployed
    (infra/resources.yml): what the tests' lifecycle applies."""
    from pathlib import Path

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    text = (Path(__file__).parents[1] / "infra" / "resources.yml").read_text()
    resources = yaml.load(text, Loader=Loader)["Resources"]
    rules = resources["PayloadBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    return [(r["Prefix"], r["ExpirationInDays"]) for r in rules if "ExpirationInDays" in r]


def apply_lifecycle(s3: Any, bucket: str, now: Any) -> list[str]:
    """Delete what the payload bucket's lifecycle rules would have expired by `now` (moto
    stores a lifecycle configuration but never applies it: docs/MOTO-GAPS.md). As AWS
    documents it: a rule's days are added to the object's creation time and rounded up
    to the next midnight UTC. The keys deleted."""
    from datetime import timedelta

    expired: list[str] = []
    for prefix, days in payload_expirations():
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        for found in listed.get("Contents", []):
            due = found["LastModified"] + timedelta(days=days)
            midnight = due.replace(hour=0, minute=0, second=0, microsecond=0)
            if midnight < due:
                midnight += timedelta(days=1)
            if midnight <= now:
                s3.delete_object(Bucket=bucket, Key=found["Key"])
                expired.append(found["Key"])
    return expired
