"""Stream records as Lambda's event source mapping handles them: their event shape, the
mapping's filter, batches within Invoke's payload limit, and the batch response.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from runner.local.lambdas import MAX_PAYLOAD_BYTES, event_json

Record = dict[str, Any]


def lambda_record(raw: Record, *, stream_arn: str, region: str) -> Record:
    """A GetRecords record in the shape Lambda delivers it (eventSourceARN added)."""
    body = dict(raw.get("dynamodb", {}))
    created = body.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        # Lambda's event carries epoch seconds; boto3 parses the wire number into a datetime.
        body["ApproximateCreationDateTime"] = int(created.timestamp())
    record = {key: value for key, value in raw.items() if key != "dynamodb"}
    identity = raw.get("userIdentity")
    if isinstance(identity, dict):  # GetRecords' {Type, PrincipalId}; Lambda's lower case
        record["userIdentity"] = {
            "type": identity.get("Type", identity.get("type")),
            "principalId": identity.get("PrincipalId", identity.get("principalId")),
        }
    record.update(
        eventSource="aws:dynamodb",
        awsRegion=region,  # moto always says us-east-1
        dynamodb=body,
        eventSourceARN=stream_arn,
    )
    record.setdefault("eventVersion", "1.1")
    return record


def sequence_number(record: Record) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


class RecordFilter:
    """A mapping's FilterCriteria: a record passes if any pattern matches (none: all pass)."""

    def __init__(self, patterns: Sequence[dict[str, Any]]) -> None:
        from moto.events.models import EventPattern

        self._patterns = [EventPattern.load(json.dumps(p)) for p in patterns]

    def matches(self, record: Record) -> bool:
        return not self._patterns or any(p.matches_event(cast(Any, record)) for p in self._patterns)


def batches(records: Sequence[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive batches of at most `size` records and Invoke's 6 MB payload."""
    batch: list[Record] = []
    payload = len('{"Records": []}')
    for record in records:
        record_bytes = len(json.dumps(record, default=event_json)) + 2
        if batch and (len(batch) >= size or payload + record_bytes > MAX_PAYLOAD_BYTES):
            yield batch
            batch, payload = [], len('{"Records": []}')
        batch.append(record)
        payload += record_bytes
    if batch:
        yield batch


def first_failed_index(batch: Sequence[Record], response: Any) -> int | None:
    """Where to retry from, given a ReportBatchItemFailures response; None: all succeeded.

    As on AWS: an unreadable response or an identifier that is empty or not a
    SequenceNumber of the batch fails the whole batch.
    """
    if response is None:
        return None
    if not isinstance(response, dict):
        return 0
    failures = response.get("batchItemFailures")
    if failures is None:
        return None
    if not isinstance(failures, list):
        return 0
    if not failures:
        return None
    positions = {sequence_number(r): i for i, r in enumerate(batch)}
    indexes = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or str(identifier) not in positions:
            return 0
        indexes.append(positions[str(identifier)])
    return min(indexes)
