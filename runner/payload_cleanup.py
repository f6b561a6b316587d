"""Deleting a task's payload objects with the task: the stream's REMOVE records.

TTL (or anyone) deleting an item whose `payloads` is true sends a REMOVE record with its
old image; `routeFailed`'s mapping has a filter for exactly those (a third reader of the
stream would risk its throttling), and `handler.route_failed` hands them here. S3's
lifecycle counts whole days from an object's creation and `retry-task` renews a task's
TTL, so deleting on the record is what keeps objects exactly as long as their task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runner.errors import MalformedTask, PayloadUnavailable
from runner.items import deserialize_image
from runner.logs import get_logger
from runner.payloads import PayloadStore


def removed_task(record: Any) -> tuple[str, str | None] | None:
    """(id, created_at) of a REMOVE record's item if it had payload objects, else None."""
    if not isinstance(record, dict) or record.get("eventName") != "REMOVE":
        return None
    body = record.get("dynamodb")
    old = body.get("OldImage") if isinstance(body, dict) else None
    if not isinstance(old, dict):
        return None
    try:
        values = deserialize_image(old)
    except MalformedTask:
        return None
    task_id, created_at = values.get("id"), values.get("created_at")
    if values.get("payloads") is not True or not isinstance(task_id, str):
        return None
    return task_id, created_at if isinstance(created_at, str) else None


def delete_removed(payloads: PayloadStore, records: Sequence[Any]) -> list[str]:
    """Delete the objects of every removed task in `records`; the sequence numbers of the
    records whose deletion failed (the stream delivers them again)."""
    log = get_logger()
    failed: list[str] = []
    for record in records:
        found = removed_task(record)
        if found is None:
            continue
        try:
            deleted = payloads.delete_task(*found)
        except PayloadUnavailable as exc:
            log.error(
                "payload objects not deleted; the stream will redeliver",
                extra={"task_id": found[0], "error": str(exc)},
            )
            sequence = record["dynamodb"].get("SequenceNumber")
            if sequence is not None:
                failed.append(str(sequence))
            continue
        log.info(
            "payload objects deleted with their task",
            extra={"task_id": found[0], "objects": deleted},
        )
    return failed
