"""The tasks table's writes: every status change is a conditional write, so two workers
can never both move a task. Queries across the table live in `runner.listing`, the
DynamoDB plumbing in `runner.table`, item conversion in `runner.items`.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from runner.errors import (
    ItemTooLarge,
    MalformedTask,
    TaskAlreadyClaimed,
    TaskConflict,
    TaskNotFound,
)
from runner.item_size import MAX_ITEM_BYTES, item_size
from runner.items import (
    deserialize_image,
    iso,
    serialize,
    task_from_item,
    task_to_item,
)
from runner.listing import TaskListing
from runner.model import (
    AttemptRecord,
    ClaimSource,
    Task,
    TaskErrorInfo,
    TaskStatus,
    status_shard,
)

S = TaskStatus


class TaskStore(TaskListing):
    """Reads and conditional writes on the tasks table (queries: `TaskListing`)."""

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
            old = _old_item(exc)
            raise TaskConflict(str(exc), old) from exc.__cause__
        return task_from_item(deserialize_image(response["Attributes"]))

    def _status_sets(self, task_id: str, status: TaskStatus, now: datetime) -> dict[str, Any]:
        return {
            "status": status.value,
            "status_shard": status_shard(task_id, status),
            "updated_at": iso(now),
        }

    def _expiry(self, now: datetime) -> int:
        return int((now + timedelta(days=self.settings.result_ttl_days)).timestamp())

    # --- create and read -------------------------------------------------------------

    def put_new(self, task: Task) -> Task:
        """Insert a PENDING task; refuses an id that exists or an item over 400 KB."""
        values = task_to_item(task)
        size = item_size(values)
        if size > MAX_ITEM_BYTES:
            raise ItemTooLarge(
                f"task item would be {size} bytes; DynamoDB's limit is {MAX_ITEM_BYTES} bytes"
            )
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=serialize(values),
                ConditionExpression="attribute_not_exists(id)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except TaskConflict as exc:
            old = _old_item(exc)
            if old is not None and (old.type, old.data, old.created_at) == (
                task.type,
                task.data,
                task.created_at,
            ):
                return task  # written by an earlier try whose reply was lost
            raise TaskConflict(f"a task with id {task.id} already exists") from exc
        return task

    def get(self, task_id: str) -> Task:
        response = self._call(
            "get_item",
            TableName=self.table_name,
            Key=serialize({"id": task_id}),
            ConsistentRead=True,
        )
        if "Item" not in response:
            raise TaskNotFound(f"no task with id {task_id}")
        return task_from_item(deserialize_image(response["Item"]))

    # --- claims ----------------------------------------------------------------------

    def _claim(
        self,
        task_id: str,
        source: ClaimSource,
        lease_seconds: float,
        *,
        condition: str,
        values: dict[str, Any],
        adds: dict[str, int],
        extra_set: tuple[str, ...] = (),
    ) -> Task:
        """→ PROCESSING under `condition`, with a fresh claim token and lease."""
        now = self.clock()
        token = uuid.uuid4().hex
        try:
            return self._update(
                task_id,
                {
                    **self._status_sets(task_id, S.PROCESSING, now),
                    "started_at": iso(now),
                    "claimed_by": source.value,
                    "claim_token": token,
                    "lease_expires_at": int(now.timestamp() + lease_seconds),
                },
                extra_set=extra_set,
                adds=adds,
                condition=condition,
                values=values,
                return_old_on_conflict=True,
            )
        except TaskConflict as exc:
            if isinstance(exc.old, Task) and exc.old.claim_token == token:
                return exc.old  # our own claim: applied by an earlier try of this request
            raise

    def claim_pending(self, task_id: str, *, source: ClaimSource, lease_seconds: float) -> Task:
        """PENDING → PROCESSING; raises TaskAlreadyClaimed if anyone got there first."""
        try:
            return self._claim(
                task_id,
                source,
                lease_seconds,
                condition="#status = :pending",
                values={":pending": S.PENDING.value},
                adds={"attempts": 1},
                extra_set=("created_at = if_not_exists(created_at, :updated_at)",),
            )
        except TaskConflict as exc:
            raise TaskAlreadyClaimed(f"task {task_id} is not PENDING (already claimed)") from exc

    def claim_for_retry(self, task_id: str, *, episode: int, lease_seconds: float) -> Task:
        """FAILED/RETRYING (or PROCESSING with a dead lease) → PROCESSING, for one episode.

        On a lost condition the TaskConflict carries the item as it was (`.old`).
        """
        return self._claim(
            task_id,
            ClaimSource.WORKFLOW,
            lease_seconds,
            condition=(
                "episode = :episode AND (#status IN (:failed, :retrying)"
                " OR (#status = :processing AND lease_expires_at < :now_epoch))"
            ),
            values={
                ":episode": episode,
                ":failed": S.FAILED.value,
                ":retrying": S.RETRYING.value,
                ":processing": S.PROCESSING.value,
                ":now_epoch": int(self.clock().timestamp()),
            },
            adds={"attempts": 1, "episode_attempts": 1},
        )

    # --- outcomes --------------------------------------------------------------------

    def record_outcome(
        self,
        task: Task,
        status: TaskStatus,
        *,
        result: Any = None,
        error: TaskErrorInfo | None = None,
        attempt: AttemptRecord,
        new_episode: bool = False,
    ) -> Task:
        """PROCESSING → DONE/FAILED/RETRYING, only while this claim (attempt) still holds."""
        now = self.clock()
        sets: dict[str, Any] = {
            **self._status_sets(task.id, status, now),
            "finished_at": iso(now),
            "attempt_log": [
                a.model_dump(mode="json", exclude_none=True) for a in task.with_attempt(attempt)
            ],
        }
        removes: list[str] = ["lease_expires_at"]
        if status in (S.DONE, S.FAILED):
            sets["expires_at"] = self._expiry(now)
        if result is not None:
            sets["result"] = result
        if error is not None:
            sets["error"] = error.model_dump(mode="json")
            sets["retryable"] = error.retryable
        else:
            removes += ["error", "retryable"]
        if new_episode:
            sets["episode"] = task.episode + 1
            sets["episode_attempts"] = 0
        try:
            return self._update(
                task.id,
                sets,
                removes=tuple(removes),
                condition="#status = :processing AND claim_token = :token",
                values={":processing": S.PROCESSING.value, ":token": task.claim_token},
                return_old_on_conflict=True,
            )
        except TaskConflict as exc:
            old = exc.old
            # Only this claim holds the token (the sweeper removes it when it takes over).
            if (
                isinstance(old, Task)
                and old.claim_token == task.claim_token
                and old.status is status
            ):
                return old  # recorded by an earlier try whose reply was lost
            raise TaskConflict(
                f"task {task.id}: claim {task.attempts} no longer holds (lease taken over)"
            ) from exc

    def fail_unreadable(self, task_id: str, message: str) -> None:
        """PENDING → FAILED (non-retryable) for an item the runner cannot read as a task."""
        now = self.clock()
        error = TaskErrorInfo(type=MalformedTask.__name__, message=message[:2000], retryable=False)
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=serialize({"id": task_id}),
                UpdateExpression="SET #status = :failed, status_shard = :shard, updated_at = :now,"
                " finished_at = :now, #error = :error, retryable = :false, expires_at = :exp",
                ConditionExpression="#status = :pending",
                ExpressionAttributeNames={"#status": "status", "#error": "error"},
                ExpressionAttributeValues=serialize(
                    {
                        ":failed": S.FAILED.value,
                        ":pending": S.PENDING.value,
                        ":shard": status_shard(task_id, S.FAILED),
                        ":now": iso(now),
                        ":error": error.model_dump(mode="json"),
                        ":false": False,
                        ":exp": self._expiry(now),
                    }
                ),
            )
        except TaskConflict as exc:
            raise TaskAlreadyClaimed(f"task {task_id} is not PENDING") from exc

    def expire_lease(self, task: Task, error: TaskErrorInfo) -> Task:
        """A dead claim made outside a workflow → FAILED (retryable) in a new episode."""
        now = self.clock()
        record = AttemptRecord(
            attempt=task.attempts,
            episode=task.episode,
            source=(task.claimed_by or ClaimSource.STREAM).value,
            started_at=task.started_at or iso(now),
            finished_at=iso(now),
            outcome=S.FAILED,
            error=error,
        )
        return self._update(
            task.id,
            {
                **self._status_sets(task.id, S.FAILED, now),
                "finished_at": iso(now),
                "error": error.model_dump(mode="json"),
                "retryable": error.retryable,
                "episode": task.episode + 1,
                "episode_attempts": 0,
                "attempt_log": [
                    a.model_dump(mode="json", exclude_none=True) for a in task.with_attempt(record)
                ],
            },
            removes=("lease_expires_at", "claim_token"),
            condition=(
                "#status = :processing AND attempts = :attempt AND lease_expires_at < :now_epoch"
                " AND claimed_by <> :workflow"
            ),
            values={
                ":processing": S.PROCESSING.value,
                ":attempt": task.attempts,
                ":now_epoch": int(now.timestamp()),
                ":workflow": ClaimSource.WORKFLOW.value,
            },
        )

    def start_retry_episode(self, task_id: str) -> Task:
        """FAILED → RETRYING in a new episode (manual redrive), retries budget reset.

        The expiry moves to a full TTL from now, not away: the workflow's Catch path marks
        exhausted retries without one, and such a task must still expire.
        """
        now = self.clock()
        try:
            return self._update(
                task_id,
                {**self._status_sets(task_id, S.RETRYING, now), "expires_at": self._expiry(now)},
                extra_set=(
                    "episode = if_not_exists(episode, :zero) + :one",
                    "episode_attempts = :zero",
                ),
                removes=("retries_exhausted",),
                condition="#status = :failed",
                values={":failed": S.FAILED.value, ":zero": 0, ":one": 1},
            )
        except TaskConflict as exc:
            raise TaskConflict(
                f"task {task_id} is not FAILED; only a FAILED task can be retried"
            ) from exc

    def continue_episodes(self, task_id: str, episode: int) -> None:
        """A task put over an existing id counts failure episodes on from the old task's.

        Its retry executions are named `<id>-<episode>` and Step Functions keeps a name 90
        days: counted from 0 again, its first retryable failure would get the old task's
        name and start nothing. Only while it is unclaimed and has no count of its own.
        """
        with contextlib.suppress(TaskConflict):
            self._update(
                task_id,
                {"episode": episode},
                condition="#status = :pending AND attribute_not_exists(episode)",
                values={":pending": S.PENDING.value},
            )

    def add_execution(self, task_id: str, episode: int, execution_arn: str) -> None:
        """Remember a workflow execution on the task (once, and only for its episode)."""
        with contextlib.suppress(TaskConflict):  # recorded already, or a newer episode
            self._update(
                task_id,
                {},
                extra_set=("executions = list_append(if_not_exists(executions, :empty), :arn)",),
                condition="attribute_exists(id) AND episode = :episode"
                " AND NOT contains(executions, :arn_value)",
                values={
                    ":empty": [],
                    ":arn": [execution_arn],
                    ":arn_value": execution_arn,
                    ":episode": episode,
                },
            )

    def mark_retries_exhausted(self, task_id: str, episode: int) -> Task:
        """RETRYING/PROCESSING → FAILED with retries_exhausted (the state machine's Catch)."""
        now = self.clock()
        return self._update(
            task_id,
            {
                **self._status_sets(task_id, S.FAILED, now),
                "retries_exhausted": True,
                "retryable": False,
                "expires_at": self._expiry(now),
            },
            condition="episode = :episode AND #status IN (:retrying, :failed, :processing)",
            values={
                ":episode": episode,
                ":retrying": S.RETRYING.value,
                ":failed": S.FAILED.value,
                ":processing": S.PROCESSING.value,
            },
        )


def _old_item(exc: TaskConflict) -> Task | None:
    cause = exc.__cause__
    if isinstance(cause, ClientError):
        item = cause.response.get("Item")
        if isinstance(item, dict) and item:
            try:
                return task_from_item(deserialize_image(item))
            except MalformedTask:
                return None
    return None
