"""Tasks as DynamoDB items: attribute-value conversion, timestamps, list cursors.

Pure functions; `runner.store` does the reading and writing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from pydantic import ValidationError

from runner.errors import MalformedTask
from runner.model import Task, status_shard

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the format of every timestamp on a task."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _to_dynamo(value: Any) -> Any:
    """Python → values TypeSerializer accepts (floats become Decimals)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {str(k): _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    """Deserialized DynamoDB values → plain JSON-like Python (Decimals to int or float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return sorted(_from_dynamo(v) for v in value)
    if hasattr(value, "value") and type(value).__name__ == "Binary":
        return base64.b64encode(value.value).decode()
    return value


def serialize(values: dict[str, Any]) -> dict[str, Any]:
    """A dict of Python values → DynamoDB attribute values."""
    return {k: _serializer.serialize(_to_dynamo(v)) for k, v in values.items()}


def deserialize_image(image: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB image (attribute values) → a dict of plain Python values."""
    try:
        return {k: _from_dynamo(_deserializer.deserialize(v)) for k, v in image.items()}
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise MalformedTask(f"cannot read item: {exc}") from exc


def task_from_item(values: dict[str, Any]) -> Task:
    """Plain values → Task, or MalformedTask saying what is wrong."""
    try:
        return Task.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise MalformedTask(f"not a valid task item: {problems}") from exc


def task_to_item(task: Task) -> dict[str, Any]:
    """Task → plain values ready for `serialize`, without empty optional attributes."""
    values = task.model_dump(mode="json", exclude_none=True)
    for empty in ("executions", "attempt_log"):
        if not values.get(empty):
            values.pop(empty, None)
    if not values.get("retries_exhausted"):
        values.pop("retries_exhausted", None)
    values["status_shard"] = status_shard(task.id, task.status)
    return values


def encode_cursor(positions: dict[str, Any]) -> str:
    raw = json.dumps(positions, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        positions = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor: pass back the cursor list-tasks printed") from exc
    if not isinstance(positions, dict):
        raise ValueError("invalid cursor: pass back the cursor list-tasks printed")
    return positions
