"""The tasks table's writes, shared by every family of them: one conditional UpdateItem,
the status and expiry attributes, and the bounded shapes of what the runner stores
(`runner.limits`), so every write fits DynamoDB's 400 KB."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from runner.errors import ItemTooLarge, MalformedTask, TaskConflict, TaskNotFound
from runner.items import deserialize_image, iso, serialize, task_from_item, task_to_item
from runner.limits import (
    ATTEMPT_ERROR_BYTES,
    ERROR_MESSAGE_BYTES,
    ERROR_TYPE_BYTES,
    cut,
    insert_problem,
)
from runner.listing import TaskListing
from runner.model import AttemptRecord, Task, TaskErrorInfo, TaskStatus, status_shard
from runner.payloads import PayloadStore

S = TaskStatus


def bounded_error(error: TaskErrorInfo, message_bytes: int = ERROR_MESSAGE_BYTES) -> TaskErrorInfo:
    """The error as the runner stores it: type and message cut to their bounds."""
    return TaskErrorInfo(
        type=cut(error.type, ERROR_TYPE_BYTES),
        message=cut(error.message, message_bytes),
        retryable=error.retryable,
    )


def attempt_log_value(task: Task, record: AttemptRecord | None = None) -> list[dict[str, Any]]:
    """The task's attempt log (with `record` appended) as stored: bounded in length by the
    model, each entry's error message cut to `ATTEMPT_ERROR_BYTES`."""
    entries = task.with_attempt(record) if record is not None else task.attempt_log
    out = []
    for entry in entries:
        kept = entry
        if entry.error is not None:
            kept = entry.model_copy(
                update={"error": bounded_error(entry.error, ATTEMPT_ERROR_BYTES)}
            )
        out.append(kept.model_dump(mode="json", exclude_none=True))
    return out


def old_item(exc: TaskConflict) -> Task | None:
    """The item as it was when a condition failed (ReturnValuesOnConditionCheckFailure)."""
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        item = cause.response.get("Item")
        if isinstance(item, dict) and item:
            try:
                return task_from_item(deserialize_image(item))
            except MalformedTask:
                return None
    return None


def episode_condition(episode: int, placeholder: str = ":episode") -> str:
    """`episode = :episode`, where a task that never failed has no episode attribute.

    (A write that also SETs `episode` needs another placeholder: `_update` names the
    value it sets `:episode`.)"""
    if episode == 0:
        return f"(attribute_not_exists(episode) OR episode = {placeholder})"
    return f"episode = {placeholder}"


# What every write that matters to a read-modify-write changes: a claim (token,
# attempts), an outcome (status), any status change (updated_at), a re-put (created_at).
_AS_READ = ("status", "attempts", "claim_token", "updated_at", "created_at")


def as_read(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A condition (and its values) that holds only while the item is still as `values`
    were read: for a write computed from that read (a compaction, a projection)."""
    clauses: list[str] = []
    bound: dict[str, Any] = {}
    for name in _AS_READ:
        ref = "#status" if name == "status" else name
        if name in values:
            clauses.append(f"{ref} = :seen_{name}")
            bound[f":seen_{name}"] = values[name]
        else:
            clauses.append(f"attribute_not_exists({ref})")
    return " AND ".join(clauses), bound


class StoreBase(TaskListing):
    """Reads and the conditional-update helper every write goes through."""

    @functools.cached_property
    def payloads(self) -> PayloadStore:
        """The payload bucket (runner.payloads), with this table's retries and sleep."""
        return PayloadStore(
            self.settings, self.clients, retry_policy=self.retry_policy, sleep=self._sleep
        )

    def _update(
        self,
        task_id: str,
        sets: dict[str, Any],
        *,
        condition: str,
        values: dict[str, Any] | None = None,
        adds: dict[str, int] | None = None,
        removes: tuple[str, ...] = (),
        extra_set: tuple[str, ...] = (),
        return_old_on_conflict: bool = False,
    ) -> Task:
        """UpdateItem that SETs `sets`, ADD-s counters, REMOVEs names, under `condition`."""
        return task_from_item(
            self._update_values(
                task_id,
                sets,
                condition=condition,
                values=values,
                adds=adds,
                removes=removes,
                extra_set=extra_set,
                return_old_on_conflict=return_old_on_conflict,
            )
        )

    def _update_values(
        self,
        task_id: str,
        sets: dict[str, Any],
        *,
        condition: str,
        values: dict[str, Any] | None = None,
        adds: dict[str, int] | None = None,
        removes: tuple[str, ...] = (),
        extra_set: tuple[str, ...] = (),
        return_old_on_conflict: bool = False,
    ) -> dict[str, Any]:
        """`_update`, returning the item's plain values as the write left them."""
        names: dict[str, str] = {"#status": "status"}
        attr_values: dict[str, Any] = dict(values or {})
        clauses = list(extra_set)
        for name, value in sets.items():
            names[f"#{name}"] = name
            attr_values[f":{name}"] = value
            clauses.append(f"#{name} = :{name}")
        expression = "SET " + ", ".join(clauses)
        if adds:
            for name, amount in adds.items():
                names[f"#{name}"] = name
                attr_values[f":inc_{name}"] = amount
            expression += " ADD " + ", ".join(f"#{n} :inc_{n}" for n in adds)
        if removes:
            for name in removes:
                names[f"#{name}"] = name
            expression += " REMOVE " + ", ".join(f"#{n}" for n in removes)
        used = {n for n in names if n in expression or n in condition}
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": serialize({"id": task_id}),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {k: v for k, v in names.items() if k in used},
            "ExpressionAttributeValues": serialize(attr_values),
            "ReturnValues": "ALL_NEW",
        }
        if return_old_on_conflict:
            kwargs["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            response = self._call("update_item", **kwargs)
        except TaskConflict as exc:
            raise TaskConflict(str(exc), old_item(exc)) from exc.__cause__
        return deserialize_image(response["Attributes"])

    def _status_sets(self, task_id: str, status: TaskStatus, now: datetime) -> dict[str, Any]:
        return {
            "status": status.value,
            "status_shard": status_shard(task_id, status),
            "updated_at": iso(now),
        }

    def _expiry(self, now: datetime) -> int:
        return int((now + timedelta(days=self.settings.result_ttl_days)).timestamp())

    def now_epoch(self) -> int:
        return int(self.clock().timestamp())

    # --- create and read -------------------------------------------------------------

    def put_new(self, task: Task) -> Task:
        """Insert a PENDING task; refuses an id that exists, or an item that would leave
        the runner no room for its own attributes (`runner.limits`)."""
        values = task_to_item(task)
        problem = insert_problem(values)
        if problem:
            raise ItemTooLarge(problem)
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=serialize(values),
                ConditionExpression="attribute_not_exists(id)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except TaskConflict as exc:
            old = old_item(exc)
            if old is not None and (old.type, old.data, old.created_at, old.run_at) == (
                task.type,
                task.data,
                task.created_at,
                task.run_at,  # the same moment, due at another time: another create
            ):
                return task  # written by an earlier try whose reply was lost
            raise TaskConflict(f"a task with id {task.id} already exists", old) from exc
        return task

    def get_values(self, task_id: str, *, timeout: float | None = None) -> dict[str, Any] | None:
        """The item's plain values (consistent read), or None if there is none. With
        `timeout`, one try whose socket waits are that many seconds."""
        response = self._call(
            "get_item",
            client=None if timeout is None else self.clients.client("dynamodb", timeout=timeout),
            TableName=self.table_name,
            Key=serialize({"id": task_id}),
            ConsistentRead=True,
        )
        if "Item" not in response:
            return None
        return deserialize_image(response["Item"])

    def get(self, task_id: str) -> Task:
        values = self.get_values(task_id)
        if values is None:
            raise TaskNotFound(f"task {task_id} not found")
        return task_from_item(values)

    def find(self, task_id: str, *, timeout: float | None = None) -> Task | None:
        """The task, or None if there is none (`timeout`: as `get_values`)."""
        values = self.get_values(task_id, timeout=timeout)
        return None if values is None else task_from_item(values)
