"""Outcomes: the claim's final write (DONE, FAILED, RETRYING), and failing items the
runner cannot run at all. Each write is checked against DynamoDB's 400 KB before it is
sent: a result that cannot be stored becomes a short permanent error instead."""

from __future__ import annotations

from typing import Any

from runner.errors import (
    ItemTooLarge,
    MalformedTask,
    PayloadUnavailable,
    StoreError,
    TaskAlreadyClaimed,
    TaskConflict,
)
from runner.items import iso, task_to_item
from runner.limits import claim_problem, fits, storable_json
from runner.model import AttemptRecord, ClaimSource, Task, TaskErrorInfo, TaskStatus
from runner.payloads import INLINE_MAX_BYTES, MAX_PAYLOAD_BYTES, encoded_size, task_prefix
from runner.store.base import StoreBase, as_read, attempt_log_value, bounded_error

S = TaskStatus
# No cancel was requested (`:no` is false): the task may still be retried.
NO_CANCEL_REQUESTED = "(attribute_not_exists(cancel_requested) OR cancel_requested = :no)"
# The error recorded when a result cannot be stored beside its task.
RESULT_NOT_STORABLE = "ResultNotStorable"


class OutcomeWrites(StoreBase):
    """The final write of a claim, and failing unreadable or oversized items."""

    def record_outcome(
        self,
        task: Task,
        status: TaskStatus,
        *,
        result: Any = None,
        error: TaskErrorInfo | None = None,
        attempt: AttemptRecord,
        new_episode: bool = False,
        lease_until: int | None = None,
        unless_cancel_requested: bool = False,
        progress: dict[str, Any] | None = None,
        offload: bool = False,
        refund_attempt: bool = False,
    ) -> Task:
        """PROCESSING → DONE/FAILED/RETRYING/CANCELLED, only while this claim (attempt)
        still holds; `unless_cancel_requested` also only while no cancel was requested (a
        retryable failure then ends CANCELLED instead: `TaskRunner.record`). `progress`:
        the handler's latest report, not yet written.

        A result over `INLINE_MAX_BYTES`, or one its item has no room for, goes to the
        payload bucket (runner.payloads) and the item holds its reference; if S3 cannot
        take it, the attempt fails, retryably (`PayloadUnavailable`). A result DynamoDB
        cannot store (NaN, a number out of its range, past the payload cap, or too large
        for the item with no payload bucket) is not written: the task is FAILED,
        permanently, with a short `ResultNotStorable` error. `lease_until` keeps a lease
        on the outcome (epoch seconds): an attempt whose handler could not be stopped
        holds the task until its process can no longer act; every claim waits for it.
        `refund_attempt`: the attempt failed for the infrastructure's sake (S3), so it does
        not count against the episode's attempts.
        """
        if result is not None:
            try:
                result = storable_json(result)
            except ValueError as exc:
                return self.record_outcome(
                    task,
                    S.FAILED,
                    error=TaskErrorInfo(
                        type=RESULT_NOT_STORABLE,
                        message=f"the task's result cannot be stored: {exc}",
                        retryable=False,
                    ),
                    attempt=attempt.model_copy(update={"outcome": S.FAILED}),
                    lease_until=lease_until,
                    progress=progress,
                )
            size = encoded_size(result)
            if size > MAX_PAYLOAD_BYTES:
                return self.record_outcome(
                    task,
                    S.FAILED,
                    error=TaskErrorInfo(
                        type=RESULT_NOT_STORABLE,
                        message=f"the task's result is {size} bytes; the cap is"
                        f" {MAX_PAYLOAD_BYTES} bytes",
                        retryable=False,
                    ),
                    attempt=attempt.model_copy(update={"outcome": S.FAILED}),
                    lease_until=lease_until,
                )
        if error is not None:
            error = bounded_error(error)
            attempt = attempt.model_copy(update={"error": error})
            # S3 failed (reading the input, writing the result), not the task: a workflow
            # attempt is not counted, and is retried as an infrastructure failure.
            refund_attempt = refund_attempt or (
                status is S.RETRYING and error.type == PayloadUnavailable.__name__
            )
        now = self.clock()
        sets: dict[str, Any] = {
            **self._status_sets(task.id, status, now),
            "finished_at": iso(now),
            "attempt_log": attempt_log_value(task, attempt),
        }
        removes: list[str] = []
        if lease_until is None:
            removes.append("lease_expires_at")
        else:
            sets["lease_expires_at"] = lease_until
        if status in (S.DONE, S.FAILED, S.RETRYING, S.CANCELLED):
            # Every state but a running claim's expires (TTL at least a day: far past a
            # retry's hours), so a task whose retry was lost with its repair is not kept
            # for ever; the claim removes it, its outcome sets it again.
            sets["expires_at"] = self._expiry(now)
        if progress is not None:
            sets["progress"] = progress
        if result is not None:
            sets["result"] = result
        if task.payloads:
            # A step's object whose record's reply was lost: the item must say it has some.
            sets["payloads"] = True
        if error is not None:
            sets["error"] = error.model_dump(mode="json")
            sets["retryable"] = error.retryable
        else:
            removes += ["error", "retryable"]
        if new_episode:
            sets["episode"] = task.episode + 1
            sets["episode_attempts"] = 0
        projected = {**task_to_item(task), **sets}
        for name in removes:
            projected.pop(name, None)
        too_large = TaskErrorInfo(
            type=RESULT_NOT_STORABLE,
            message="the task's result is too large for its item (400 KB)",
            retryable=False,
        )
        offloaded = None
        if (
            result is not None
            and self.payloads.enabled
            and (offload or encoded_size(result) > INLINE_MAX_BYTES or not fits(projected))
        ):
            try:
                offloaded = self.payloads.put(
                    f"{task_prefix(task.id, task.created_at)}result-"
                    f"{(task.claim_token or '')[:12]}.json",
                    result,
                )
            except PayloadUnavailable as exc:
                return self._payload_unavailable(task, attempt, exc, lease_until)
            sets["result"] = offloaded
            sets["payloads"] = True
            projected = {**projected, "result": offloaded, "payloads": True}
        if result is not None and not fits(projected):
            return self.record_outcome(
                task,
                S.FAILED,
                error=too_large,
                attempt=attempt.model_copy(update={"outcome": S.FAILED}),
                lease_until=lease_until,
                progress=progress,
            )
        condition = "#status = :processing AND claim_token = :token"
        values: dict[str, Any] = {":processing": S.PROCESSING.value, ":token": task.claim_token}
        if unless_cancel_requested:
            condition += f" AND {NO_CANCEL_REQUESTED}"
            values[":no"] = False
        try:
            return self._update(
                task.id,
                sets,
                removes=tuple(removes),
                adds={"episode_attempts": -1} if refund_attempt else None,
                condition=condition,
                values=values,
                return_old_on_conflict=True,
            )
        except StoreError as exc:
            if exc.code != "ValidationException":
                raise
            if result is None:
                # The item leaves no room even for this (claimed before the runner kept
                # its reserve): fail it in a write that fits.
                return self._fail_claimed_oversized(task)
            if offloaded is None and self.payloads.enabled:
                return self.record_outcome(
                    task,
                    status,
                    result=result,
                    attempt=attempt,
                    lease_until=lease_until,
                    offload=True,
                )
            # Attributes the model does not know (a producer's own) count too.
            return self.record_outcome(
                task,
                S.FAILED,
                error=too_large,
                attempt=attempt.model_copy(update={"outcome": S.FAILED}),
                lease_until=lease_until,
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
            if offloaded is not None and not (isinstance(old, Task) and old.result == offloaded):
                # No item refers to it. One that does (this write applied, its reply
                # lost, and the item changed since) keeps it: it goes with its task.
                self.payloads.delete(offloaded)
            raise TaskConflict(
                f"task {task.id}: claim {task.attempts} no longer holds (lease taken over)",
                old,
            ) from exc

    def _payload_unavailable(
        self,
        task: Task,
        attempt: AttemptRecord,
        exc: PayloadUnavailable,
        lease_until: int | None,
    ) -> Task:
        """The result could not be put in the payload bucket: a retryable failure (the
        workflow's RETRYING, its attempt not counted: the workflow retries it as an
        infrastructure failure; else FAILED in a new episode), never a lost task."""
        error = TaskErrorInfo(
            type=PayloadUnavailable.__name__,
            message=f"the task's result could not be stored in the payload bucket: {exc}",
            retryable=True,
        )
        in_workflow = attempt.source == ClaimSource.WORKFLOW.value
        status = S.RETRYING if in_workflow else S.FAILED
        try:
            return self.record_outcome(
                task,
                status,
                error=error,
                attempt=attempt.model_copy(update={"outcome": status}),
                new_episode=not in_workflow,
                lease_until=lease_until,
                unless_cancel_requested=True,
            )
        except TaskConflict as conflict:
            old = conflict.old
            if not (
                isinstance(old, Task)
                and old.status is S.PROCESSING
                and old.claim_token == task.claim_token
                and old.cancel_requested
            ):
                raise
        # A cancel came while it ran: no retry follows, the task ends CANCELLED.
        return self.record_outcome(
            task,
            S.CANCELLED,
            error=error,
            attempt=attempt.model_copy(update={"outcome": S.CANCELLED}),
            lease_until=lease_until,
        )

    def fail_unreadable(self, task_id: str, message: str) -> None:
        """PENDING → FAILED (non-retryable) for an item the runner cannot read as a task.

        If DynamoDB refuses even that (the item is at its size limit), the item's `data`
        is dropped with it, so the task still reaches a final status.
        """
        error = bounded_error(
            TaskErrorInfo(type=MalformedTask.__name__, message=message, retryable=False)
        )
        try:
            self._fail_pending(task_id, error, drop_data=False)
        except StoreError as exc:
            if exc.code != "ValidationException":
                raise
            self._fail_pending(task_id, error, drop_data=True)

    def _fail_pending(self, task_id: str, error: TaskErrorInfo, *, drop_data: bool) -> None:
        now = self.clock()
        try:
            self._update_values(  # not parsed: the item is not a valid task
                task_id,
                {
                    **self._status_sets(task_id, S.FAILED, now),
                    "finished_at": iso(now),
                    "error": error.model_dump(mode="json"),
                    "retryable": False,
                    "expires_at": self._expiry(now),
                },
                removes=("data",) if drop_data else (),
                condition="#status = :pending",
                values={":pending": S.PENDING.value},
            )
        except TaskConflict as exc:
            raise TaskAlreadyClaimed(f"task {task_id} is not PENDING") from exc

    def _fail_claimed_oversized(self, task: Task, *, expired_only: bool = False) -> Task:
        """A claimed task whose outcome DynamoDB refused for its size → FAILED ItemTooLarge."""
        values = self.get_values(task.id) or {}
        message = claim_problem(values) or "task item too large to record its outcome"
        self.fail_oversized(
            task.id, message, values, token=task.claim_token, expired_only=expired_only
        )
        return self.get(task.id)

    def fail_oversized(
        self,
        task_id: str,
        message: str,
        values: dict[str, Any],
        *,
        token: str | None = None,
        expired_only: bool = False,
    ) -> None:
        """Fail an item too large to run (non-retryable `ItemTooLarge`), in a write that
        fits: no attempt log entry, and without the item's `data` if even that would not
        fit. `token`: the claim that found it so, whose lease must have expired if
        `expired_only` (else the item must be PENDING, FAILED or RETRYING)."""
        now = self.clock()
        error = bounded_error(
            TaskErrorInfo(type=ItemTooLarge.__name__, message=message, retryable=False)
        )
        sets: dict[str, Any] = {
            **self._status_sets(task_id, S.FAILED, now),
            "finished_at": iso(now),
            "error": error.model_dump(mode="json"),
            "retryable": False,
            "expires_at": self._expiry(now),
        }
        removes = ["lease_expires_at", "claim_token"]
        projected = {k: v for k, v in {**values, **sets}.items() if k not in removes}
        if not fits(projected):
            removes.append("data")
            sets["error"] = {**sets["error"], "message": error.message + "; its data was dropped"}
        if token is not None:
            condition = "#status = :processing AND claim_token = :token"
            condition_values: dict[str, Any] = {":processing": S.PROCESSING.value, ":token": token}
            if expired_only:
                condition += " AND lease_expires_at < :now_epoch"
                condition_values[":now_epoch"] = int(now.timestamp())
        else:
            # `values` must still be the item: `sets`/`removes` were projected from them.
            unchanged, seen = as_read(values)
            condition = f"#status IN (:pending, :failed, :retrying) AND {unchanged}"
            condition_values = {
                ":pending": S.PENDING.value,
                ":failed": S.FAILED.value,
                ":retrying": S.RETRYING.value,
                **seen,
            }
        self._update_values(
            task_id, sets, removes=tuple(removes), condition=condition, values=condition_values
        )
