"""Control writes: cancelling a task, and what a running claim writes besides its outcome
(the heartbeat and progress).

- A task that waits (PENDING, SCHEDULED, FAILED awaiting a retry, RETRYING) → CANCELLED
  at once, only as it was seen (status, episode, incarnation): a claim or a retry
  that got there first wins, and the canceller looks again.
- A PROCESSING task only gets `cancel_requested`, for the claim seen (its token); its
  claim ends it (CANCELLED on `TaskCancelled`, DONE on a normal return), or, once its
  lease is dead, whoever recovers the claim does: CANCELLED, never FAILED-retryable.
  The flag is that claim's: the next claim or redrive removes it (`CLAIM_REMOVES`).
- Heartbeats and progress leave `status`, `status_shard` and `updated_at` alone, so
  they never rewrite the task's `by-status` index entry; each holds only while the
  claim does (its token).
"""

from __future__ import annotations

from typing import Any

from runner.errors import TaskConflict
from runner.items import deserialize_image, iso, serialize
from runner.model import AttemptRecord, ClaimSource, Task, TaskStatus
from runner.store.base import StoreBase, attempt_log_value, episode_condition, old_item

S = TaskStatus
# Statuses a cancel ends at once.
WAITING = (S.PENDING, S.SCHEDULED, S.FAILED, S.RETRYING)


class ControlWrites(StoreBase):
    """Cancels, heartbeats and progress reports."""

    def cancel_waiting(self, task: Task) -> Task:
        """A waiting task, as seen → CANCELLED (final, with an expiry). A FAILED task
        only while a retry may still come (not one that failed for good). Raises
        TaskConflict if it changed since it was read."""
        if task.status not in WAITING:
            raise TaskConflict(f"task {task.id} is {task.status.value}, not waiting")
        now = self.clock()
        condition = f"#status = :seen AND {episode_condition(task.episode)}"
        values: dict[str, Any] = {":seen": task.status.value, ":episode": task.episode}
        if task.created_at:
            condition += " AND created_at = :created_at"
            values[":created_at"] = task.created_at
        if task.status is S.FAILED:
            condition += (
                " AND retryable = :true"
                " AND (attribute_not_exists(retries_exhausted) OR retries_exhausted = :false)"
            )
            values.update({":true": True, ":false": False})
        return self._update(
            task.id,
            {
                **self._status_sets(task.id, S.CANCELLED, now),
                "finished_at": iso(now),
                "expires_at": self._expiry(now),
            },
            # A final task holds no lease (I4): CANCELLED already refuses every claim. A
            # SCHEDULED one leaves the sparse by-run-at index too (no sweep reads it again).
            removes=("lease_expires_at", "claim_token", "scheduled_shard"),
            condition=condition,
            values=values,
        )

    def request_cancel(self, task: Task) -> Task:
        """A PROCESSING task, under the claim seen → `cancel_requested`. Raises
        TaskConflict if that claim has ended."""
        return self._update(
            task.id,
            {"cancel_requested": True},
            condition="#status = :processing AND claim_token = :token",
            values={":processing": S.PROCESSING.value, ":token": task.claim_token},
        )

    def cancel_expired(self, task: Task) -> Task:
        """A cancel-requested claim whose lease is dead → CANCELLED (never a retry).
        Raises TaskConflict if the claim, as read, has moved on or is still live."""
        now = self.clock()
        record = AttemptRecord(
            attempt=task.attempts,
            episode=task.episode,
            source=(task.claimed_by or ClaimSource.STREAM).value,
            started_at=task.started_at or iso(now),
            finished_at=iso(now),
            outcome=S.CANCELLED,
        )
        condition = (
            "#status = :processing AND attempts = :attempt AND lease_expires_at < :now_epoch"
            " AND cancel_requested = :true"
        )
        values: dict[str, Any] = {
            ":processing": S.PROCESSING.value,
            ":attempt": task.attempts,
            ":now_epoch": int(now.timestamp()),
            ":true": True,
        }
        if task.claim_token:
            condition += " AND claim_token = :token"
            values[":token"] = task.claim_token
        return self._update(
            task.id,
            {
                **self._status_sets(task.id, S.CANCELLED, now),
                "finished_at": iso(now),
                "expires_at": self._expiry(now),
                "attempt_log": attempt_log_value(task, record),
            },
            removes=("lease_expires_at", "claim_token"),
            condition=condition,
            values=values,
        )

    def heartbeat(self, task_id: str, *, token: str, lease_until: int) -> bool:
        """One conditional write while a claim runs: its lease set to `lease_until` (epoch
        seconds), and the cancel flag read back in the same write (ALL_NEW: a write's
        returned values cost no read capacity; UPDATED_NEW would do on AWS, which returns
        every attribute a SET names, but moto returns only those whose value changed).
        True if a cancel was requested. TaskConflict if the claim no longer holds."""
        response = self._call(
            "update_item",
            TableName=self.table_name,
            Key=serialize({"id": task_id}),
            UpdateExpression="SET #lease = :lease",
            ConditionExpression="#status = :processing AND #token = :token",
            ExpressionAttributeNames={
                "#lease": "lease_expires_at",
                "#status": "status",
                "#token": "claim_token",
            },
            ExpressionAttributeValues=serialize(
                {
                    ":lease": lease_until,
                    ":processing": S.PROCESSING.value,
                    ":token": token,
                }
            ),
            ReturnValues="ALL_NEW",
        )
        updated = deserialize_image(response.get("Attributes") or {})
        return updated.get("cancel_requested") is True

    def write_progress(
        self, task_id: str, *, token: str, progress: dict[str, Any], replaces: str | None = None
    ) -> bool:
        """The handler's report on the task, while its claim holds, unless a later one
        is there: the stored report's `updated_at` must not be later than this one's (or
        be `replaces`, the report the claim found, written by an earlier claim whose
        clock may be ahead). False if a later report is stored (this one is moot);
        TaskConflict if the claim no longer holds."""
        names = {
            "#progress": "progress",
            "#at": "updated_at",
            "#status": "status",
            "#token": "claim_token",
        }
        values: dict[str, Any] = {
            ":progress": progress,
            ":at": progress["updated_at"],
            ":processing": S.PROCESSING.value,
            ":token": token,
        }
        newer = "attribute_not_exists(#progress.#at) OR #progress.#at <= :at"
        if replaces is not None:
            newer += " OR #progress.#at = :replaces"
            values[":replaces"] = replaces
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=serialize({"id": task_id}),
                UpdateExpression="SET #progress = :progress",
                ConditionExpression=f"#status = :processing AND #token = :token AND ({newer})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=serialize(values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except TaskConflict as exc:
            old = old_item(exc)
            if old is not None and old.status is S.PROCESSING and old.claim_token == token:
                return False  # the claim holds: a later report is there already
            raise TaskConflict(str(exc), old) from exc.__cause__
        return True
