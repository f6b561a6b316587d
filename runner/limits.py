"""What the runner keeps on a task item, and how much of it: every write it makes fits.

DynamoDB refuses an item over 409,600 bytes (`runner.item_size` has its rules), and on AWS
a refused UpdateItem changes nothing: a task whose failure could not be written would
stay PROCESSING, and the sweeper's own write would be refused the same way. So each
attribute the runner writes is bounded here, a new task must leave `RUNNER_RESERVE`
bytes free for them, and a result (the one unbounded thing the runner writes) is checked
against the room its item has left. This module is the one place that decides what fits
(large payloads may later move to S3 from here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from runner.item_size import MAX_ITEM_BYTES, item_size, number_problem

# --- bounds of what the runner writes ----------------------------------------------
# Stored error: its type name and message, cut to these many UTF-8 bytes.
ERROR_TYPE_BYTES = 128
ERROR_MESSAGE_BYTES = 1000
# An attempt log entry keeps only the start of its error message (the task's `error`
# holds the latest one in full).
ATTEMPT_ERROR_BYTES = 200
# Attempts kept on the task (`get-task`, `history`); older ones are dropped first.
MAX_ATTEMPT_LOG = 20
# Retry executions remembered on the task; older ones are dropped first.
MAX_EXECUTIONS = 10
# Step Functions' own limit on an ARN.
MAX_ARN_BYTES = 256
# Room a new task must leave for the runner's attributes at those bounds (a unit test
# computes the worst case and checks it fits).
RUNNER_RESERVE = 16 * 1024
# A task item, as inserted, may be at most this large.
MAX_INSERT_BYTES = MAX_ITEM_BYTES - RUNNER_RESERVE

# Attributes the runner writes at bounded sizes; everything else on an item counts as the
# producer's part, also the runner's `steps` (step results, runner.steps) and `payloads`
# flag: unbounded like data, each step's write is checked to leave the reserve free.
RUNNER_ATTRIBUTES = frozenset(
    {
        "status",
        "status_shard",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "attempts",
        "effect_key_claims",
        "result",
        "error",
        "retryable",
        "episode",
        "episode_attempts",
        "retries_exhausted",
        "claimed_by",
        "claim_token",
        "lease_expires_at",
        "expires_at",
        "executions",
        "attempt_log",
        "cancel_requested",
        "progress",
    }
)
# A progress report's message, cut to this many UTF-8 bytes.
PROGRESS_MESSAGE_BYTES = 200


def utf8_text(text: str) -> str:
    """`text` as UTF-8 can carry it: a lone surrogate (a str decoded with
    errors="surrogateescape": a file name, a subprocess's output) written as `\\udcff`.
    DynamoDB, S3 and JSON in UTF-8 hold valid text only; boto's serializers raise
    UnicodeEncodeError on anything else."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def cut(text: str, max_bytes: int) -> str:
    """`text` shortened to at most `max_bytes` UTF-8 bytes (never mid-character), marked;
    made valid UTF-8 text first (`utf8_text`): error and progress messages quote anything."""
    text = utf8_text(text)
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    marker = " [cut]"
    kept = raw[: max(0, max_bytes - len(marker))].decode("utf-8", errors="ignore")
    return kept + marker


def producer_size(values: Mapping[str, Any]) -> int:
    """Bytes of the producer's part of an item: everything but the runner's attributes."""
    return item_size({k: v for k, v in values.items() if k not in RUNNER_ATTRIBUTES})


def insert_problem(values: Mapping[str, Any]) -> str | None:
    """Why a new task item cannot be accepted (too large to leave the runner its room)."""
    size = item_size(dict(values))
    if size > MAX_INSERT_BYTES:
        return (
            f"task item would be {size} bytes; the limit is {MAX_INSERT_BYTES} bytes "
            f"(DynamoDB's limit is {MAX_ITEM_BYTES} bytes, {RUNNER_RESERVE} are kept "
            "for the runner's own attributes)"
        )
    return None


def claim_problem(values: Mapping[str, Any]) -> str | None:
    """Why an item (inserted by hand, bypassing the client) is too large to be run."""
    size = producer_size(values)
    if size > MAX_INSERT_BYTES:
        return (
            f"task item too large to run: {size} bytes without the runner's attributes; "
            f"at most {MAX_INSERT_BYTES} leave room to record its outcome"
        )
    return None


def _walk_numbers(value: Any) -> Iterable[Any]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float | Decimal):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk_numbers(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk_numbers(item)


def storable_json(value: Any) -> Any:
    """The value as plain JSON DynamoDB can store; ValueError says why it cannot be.

    NaN and infinity pass `json.dumps` by default, and numbers past DynamoDB's range
    (38 significant digits, magnitude 1E-130 to below 1E+126) pass JSON altogether:
    DynamoDB would refuse the write that records them. A string holding a lone surrogate
    passes `json.dumps` too (escaped as `\\udcff`), and then fails every UTF-8 encoding
    on the way to DynamoDB or S3 (UnicodeEncodeError).
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON-serializable ({type(exc).__name__})") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            "not valid UTF-8 text: a string holds a lone surrogate (text decoded with"
            " errors='surrogateescape'?); decode it with errors='replace', or pass bytes"
            " as base64"
        ) from None
    plain = json.loads(text)
    for number in _walk_numbers(plain):
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError("DynamoDB cannot store NaN or infinity")
        problem = number_problem(number)
        if problem:
            raise ValueError(problem)
    return plain


def fits(values: Mapping[str, Any]) -> bool:
    """True if an item with these attribute values is within DynamoDB's limit."""
    return item_size(dict(values)) <= MAX_ITEM_BYTES
