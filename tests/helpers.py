"""Shared test helpers: the tasks table, stream records in AWS's shape, task items."""

from __future__ import annotations

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
