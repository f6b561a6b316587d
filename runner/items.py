"""Tasks as DynamoDB items: attribute-value conversion, timestamps, list cursors.

Pure functions; `runner.store` does the reading and writing.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from runner.errors import MalformedTask
from runner.model import Task, TaskStatus, status_shard

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the format of every timestamp on a task."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """A timestamp as `iso` writes it (or any ISO-8601 with an offset) → an aware datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(value: int | float | Decimal) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("DynamoDB cannot store NaN or infinity")
    return str(value if isinstance(value, int) else Decimal(str(value)))


def to_attribute(value: Any) -> dict[str, Any]:
    """A JSON-like Python value → a DynamoDB attribute value ({"S": ...}, {"M": ...}, ...)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float | Decimal):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": bytes(value)}
    if isinstance(value, dict):
        return {"M": {str(k): to_attribute(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attribute(v) for v in value]}
    if isinstance(value, set | frozenset) and value:
        if all(isinstance(v, str) for v in value):
            return {"SS": sorted(value)}
        if all(isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in value):
            return {"NS": sorted(_number(v) for v in value)}
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def _parse_number(text: Any) -> int | float:
    if not isinstance(text, str):
        raise MalformedTask("a number attribute must hold its number as a string")
    try:
        number = Decimal(text)
    except ArithmeticError as exc:
        raise MalformedTask("a number attribute does not hold a number") from exc
    if not number.is_finite():
        raise MalformedTask("a number attribute is not finite")
    return int(number) if number == number.to_integral_value() else float(number)


def _binary(value: Any) -> str:
    # botocore hands over bytes; a Lambda event carries the base64 text itself.
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, str):
        return value
    raise MalformedTask("a binary attribute does not hold binary data")


def _expect(kind: str, value: Any, types: type | tuple[type, ...]) -> Any:
    if not isinstance(value, types):
        raise MalformedTask(f"attribute of type {kind} holds a {type(value).__name__}")
    return value


def from_attribute(attribute: Any) -> Any:
    """A DynamoDB attribute value → plain JSON-like Python; MalformedTask if it is not one.

    MalformedTask messages never quote a value: they are logged and stored, and the
    values are the producer's data.
    """
    if not isinstance(attribute, dict) or len(attribute) != 1:
        raise MalformedTask("not an attribute value (one type tag and its value)")
    ((kind, value),) = attribute.items()
    if kind == "S":
        return _expect(kind, value, str)
    if kind == "N":
        return _parse_number(value)
    if kind == "BOOL":
        return _expect(kind, value, bool)
    if kind == "NULL":
        return None
    if kind == "M":
        return {str(k): from_attribute(v) for k, v in _expect(kind, value, dict).items()}
    if kind == "L":
        return [from_attribute(v) for v in _expect(kind, value, list)]
    if kind == "B":
        return _binary(value)
    if kind == "SS":
        return sorted(_expect(kind, v, str) for v in _expect(kind, value, list))
    if kind == "NS":
        return sorted(_parse_number(v) for v in _expect(kind, value, list))
    if kind == "BS":
        return [_binary(v) for v in _expect(kind, value, list)]
    raise MalformedTask(f"unknown attribute type {str(kind)[:8]!r}")


def serialize(values: dict[str, Any]) -> dict[str, Any]:
    """A dict of Python values → DynamoDB attribute values."""
    return {k: to_attribute(v) for k, v in values.items()}


def deserialize_image(image: Any) -> dict[str, Any]:
    """A DynamoDB image (attribute values) → a dict of plain Python values."""
    if not isinstance(image, dict):
        raise MalformedTask(f"an item must be a map, not {type(image).__name__}")
    return {str(k): from_attribute(v) for k, v in image.items()}


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
    for flag in ("retries_exhausted", "payloads"):
        if not values.get(flag):
            values.pop(flag, None)
    values["status_shard"] = status_shard(task.id, task.status)
    if task.status is TaskStatus.SCHEDULED:
        # Its place in the sparse `by-run-at` index, removed when it becomes PENDING.
        values["scheduled_shard"] = status_shard(task.id, task.status)
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
    if not isinstance(positions, dict) or not all(
        _cursor_position(shard, at) for shard, at in positions.items()
    ):
        raise ValueError("invalid cursor: pass back the cursor list-tasks printed")
    return positions


_CURSOR_KEYS = frozenset({"id", "status_shard", "updated_at"})


def _cursor_position(shard: Any, at: Any) -> bool:
    """A shard's place as `list` writes it: "end", or the index's key of its last item
    (strings only), so DynamoDB is never sent a start key of another shape."""
    if not (isinstance(shard, str) and "#" in shard):
        return False
    if at == "end":
        return True
    return (
        isinstance(at, dict)
        and {"id", "status_shard"} <= at.keys() <= _CURSOR_KEYS
        and all(
            isinstance(v, dict) and list(v) == ["S"] and isinstance(v["S"], str)
            for v in at.values()
        )
    )
