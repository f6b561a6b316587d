"""Staged inputs their producer did not move: the sweeper moves them.

`create_task` uploads a large input under `staging/` (its metadata names the task),
inserts the item, whose reference names the input's key under the task's prefix, then
moves the input there. When that move fails (S3 throttled past the retries, the
producer stopped), a reader would move it on its first load; but a task SCHEDULED days
out, or waiting for a retry, has no reader before the bucket's lifecycle rule (the
backstop for orphans) expires `staging/`. So each sweep moves every staged input older
than `STAGED_AGE_SECONDS` whose item exists and refers to it: a committed input then
lives exactly as long as its task (deleted on its REMOVE record), however far its run.

A staged input no item refers to is never deleted here (its producer may be between its
upload and its insert): the lifecycle rule expires it. The move is a copy then a delete,
idempotent with the producer's and a reader's; an item deleted while its input was being
moved is checked again after the copy, and the copy deleted with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from runner.errors import PayloadCorrupt
from runner.logs import get_logger
from runner.payloads import is_reference, staged_key

if TYPE_CHECKING:
    from runner.store import TaskStore

# A producer moves its input within seconds of its upload (its insert and copy, with
# their retries); a staged input older than this was left behind.
STAGED_AGE_SECONDS = 300


def _reference_to(store: TaskStore, task_id: str, staged: str) -> dict[str, Any] | None:
    """The task's input reference if its item exists and refers to the staged upload
    `staged` (not another create's of the same id: its insert was refused); else None."""
    task = store.find(task_id)
    data = task.data if task is not None else None
    if isinstance(data, dict) and is_reference(data) and staged_key(data) == staged:
        return data
    return None


def move_staged_inputs(
    store: TaskStore,
    *,
    age_seconds: float = STAGED_AGE_SECONDS,
    left: Callable[[], float] = lambda: math.inf,
) -> int:
    """The sweeper's phase: move each staged input left behind to the key its item's
    reference names; the number moved. S3 or DynamoDB failing raises (the next sweep
    tries again: nothing is deleted here but a staged copy already moved)."""
    payloads = store.payloads
    if not payloads.enabled:
        return 0
    moved = 0
    for staged in payloads.staged(before=store.clock() - timedelta(seconds=age_seconds)):
        if left() <= 0:
            break
        named = payloads.staged_for(staged)
        if named is None:
            continue  # moved meanwhile, or it does not say whose it is: the lifecycle's
        task_id, _created_at = named
        ref = _reference_to(store, task_id, staged)
        if ref is None:
            continue  # an orphan (no item came to refer to it): the lifecycle's
        try:
            payloads.commit_input(ref)
        except PayloadCorrupt:
            continue  # moved meanwhile by the producer or a reader, or its task deleted
        if _reference_to(store, task_id, staged) is None:
            # Deleted (TTL) while it was being moved, perhaps after its REMOVE record's
            # cleanup listed the prefix: nothing will refer to the copy.
            payloads.delete(ref)
            continue
        moved += 1
        get_logger().warning(
            "staged input moved by the sweeper (its producer did not)",
            extra={"task_id": task_id},
        )
    return moved
