"""Idempotent enqueue: `create_task(..., idempotency_key="order-42")`.

The key maps to the task id deterministically (`task_id_for`), so the insert is the
same single conditional PutItem as any other, with no read first. A second create with
the same key meets the existing item: DynamoDB returns it with the failed condition
(ReturnValuesOnConditionCheckFailure), and it is returned as it is, whatever its status,
if its type and input are the same; other input is `IdempotencyConflict`. This lasts as
long as the task exists (TTL deletes finished tasks after 30 days, or days later).

A key used again after its task was deleted makes a new task with the same id but a new
`created_at`, which the retry executions' names carry (`runner.executions`): it never
meets the old task's executions, which Step Functions keeps for 90 days. Its payload
prefix (`runner.payloads.task_prefix`) and the keys its handler gives effects
(`Task.idempotency_key`, `ctx.step_key`) carry it too, so an API or a dedupe table that
remembers the old task's keys does not take the new task's effects for repeats.
"""

from __future__ import annotations

import hashlib

from runner.errors import IdempotencyConflict, TaskConflict
from runner.limits import utf8_text
from runner.model import Task
from runner.store import TaskStore

# Ids made from keys start with this, so they never meet a UUID the client makes.
KEY_ID_PREFIX = "key-"
# Hex digits of sha256(key) in the id: 128 bits.
KEY_DIGEST_CHARS = 32
MAX_KEY_CHARS = 512


def task_id_for(key: str) -> str:
    """The task id an idempotency key names: `key-<32 hex of sha256(key)>`."""
    check_key(key)
    return KEY_ID_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:KEY_DIGEST_CHARS]


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key.strip():
        raise ValueError("an idempotency key must be non-empty text")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"an idempotency key is at most {MAX_KEY_CHARS} characters")
    if utf8_text(key) != key:
        raise ValueError("an idempotency key must be valid UTF-8 text (it holds a lone surrogate)")


def put_idempotent(store: TaskStore, task: Task) -> Task:
    """Insert `task` (its id made from its `enqueue_key`), or return the task the key
    already names if it has the same type and input; IdempotencyConflict if not."""
    try:
        return store.put_new(task)
    except TaskConflict as exc:
        old = exc.old
        if not isinstance(old, Task):
            raise
        if old.enqueue_key != task.enqueue_key:
            raise IdempotencyConflict(
                f"task {task.id} exists but was not created with idempotency key"
                f" {task.enqueue_key!r}"
            ) from exc
        if (old.type, old.data) != (task.type, task.data):
            raise IdempotencyConflict(
                f"idempotency key {task.enqueue_key!r} already names task {old.id}"
                f" ({old.type}, {old.status.value}) with other input; use another key"
            ) from exc
        return old
