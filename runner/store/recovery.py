"""Recovery and control writes: expired leases, redrives into a new episode, the
executions remembered on a task, and the workflow's final "retries exhausted" write."""

from __future__ import annotations

import contextlib
from typing import Any

from runner.errors import StoreError, TaskConflict
from runner.items import iso, serialize
from runner.limits import MAX_EXECUTIONS
from runner.model import AttemptRecord, ClaimSource, Task, TaskErrorInfo, TaskStatus
from runner.store.base import StoreBase, attempt_log_value, bounded_error, episode_condition
from runner.store.claims import LEASE_FREE
from runner.store.outcomes import NO_CANCEL_REQUESTED, OutcomeWrites

S = TaskStatus


class RecoveryWrites(OutcomeWrites, StoreBase):
    """Writes that recover or redrive a task rather than run it."""

    def expire_lease(
        self, task: Task, error: TaskErrorInfo, *, workflow_claim: bool = False
    ) -> Task:
        """A dead claim → FAILED (retryable) in a new episode, which routes it for retry.

        Workflow claims are the state machine's to recover; `workflow_claim` expires one
        whose execution is known to be over (the sweeper checked). A claim whose cancel
        was requested is not failed (TaskConflict): `cancel_expired` ends it CANCELLED.
        """
        now = self.clock()
        error = bounded_error(error)
        record = AttemptRecord(
            attempt=task.attempts,
            episode=task.episode,
            source=(task.claimed_by or ClaimSource.STREAM).value,
            started_at=task.started_at or iso(now),
            finished_at=iso(now),
            outcome=S.FAILED,
            error=error,
        )
        condition = (
            "#status = :processing AND attempts = :attempt AND lease_expires_at < :now_epoch"
            f" AND {NO_CANCEL_REQUESTED}"
        )
        values: dict[str, Any] = {
            ":processing": S.PROCESSING.value,
            ":attempt": task.attempts,
            ":now_epoch": int(now.timestamp()),
            ":no": False,
        }
        if not workflow_claim:
            condition += " AND claimed_by <> :workflow"
            values[":workflow"] = ClaimSource.WORKFLOW.value
        if task.claim_token:
            # The claim as read (the index may lag): not a newer one of an item put over it.
            condition += " AND claim_token = :token"
            values[":token"] = task.claim_token
        try:
            return self._update(
                task.id,
                {
                    **self._status_sets(task.id, S.FAILED, now),
                    "finished_at": iso(now),
                    "error": error.model_dump(mode="json"),
                    "retryable": error.retryable,
                    "episode": task.episode + 1,
                    "episode_attempts": 0,
                    "expires_at": self._expiry(now),
                    "attempt_log": attempt_log_value(task, record),
                },
                removes=("lease_expires_at", "claim_token"),
                condition=condition,
                values=values,
            )
        except StoreError as exc:
            if exc.code != "ValidationException":
                raise
            # Too large for even this (claimed before the runner kept its reserve).
            return self._fail_claimed_oversized(task, expired_only=True)

    def release_lease(
        self, task_id: str, *, token: str, held: int, until: int | None, timeout: float
    ) -> bool:
        """Shorten the lease an abandoned attempt's outcome holds (`held`) to `until`, or
        remove it (None), if the item still holds that outcome (its claim token, that
        lease). One try within `timeout` seconds per socket wait, however DynamoDB
        answers: it is made just before the runtime ends. True if it applied."""
        if until is not None and until >= held:
            return False
        names = {"#lease": "lease_expires_at", "#token": "claim_token"}
        values: dict[str, Any] = {":token": token, ":held": held}
        if until is None:
            expression = "REMOVE #lease"
        else:
            expression = "SET #lease = :until"
            values[":until"] = until
        try:
            self._call(
                "update_item",
                client=self.clients.client("dynamodb", timeout=timeout),
                TableName=self.table_name,
                Key=serialize({"id": task_id}),
                UpdateExpression=expression,
                ConditionExpression="#token = :token AND #lease = :held",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=serialize(values),
            )
        except TaskConflict:
            return False  # taken over or moved on since: not this outcome's lease any more
        return True

    def redrive(
        self, task: Task, *, statuses: tuple[TaskStatus, ...], reset_steps: bool = False
    ) -> Task:
        """→ RETRYING in a new episode (the task as seen, if still in one of `statuses`),
        its retries budget reset and its expiry a full TTL from now; `reset_steps`
        clears its recorded steps, so they run again (their objects go with the task).
        A cancel request goes too: it was for a claim that has ended (no status a
        redrive starts from is PROCESSING), and the new episode is run on purpose.

        A lease is kept: a redriven task whose last attempt could not be stopped is
        claimed only once that lease is over.
        """
        if S.PROCESSING in statuses:
            raise ValueError("a running claim is never redriven")
        now = self.clock()
        names = {f":s{n}": status.value for n, status in enumerate(statuses)}
        condition = (
            f"{episode_condition(task.episode, ':seen_episode')}"
            f" AND #status IN ({', '.join(names)})"
        )
        values: dict[str, Any] = {**names, ":seen_episode": task.episode}
        if task.created_at:
            condition += " AND created_at = :created_at"
            values[":created_at"] = task.created_at
        return self._update(
            task.id,
            {
                **self._status_sets(task.id, S.RETRYING, now),
                "episode": task.episode + 1,
                "episode_attempts": 0,
                "expires_at": self._expiry(now),
            },
            removes=("retries_exhausted", "cancel_requested", *(("steps",) if reset_steps else ())),
            condition=condition,
            values=values,
        )

    def add_execution(
        self, task_id: str, episode: int, execution_arn: str, created_at: str = ""
    ) -> None:
        """Remember a workflow execution on the task (once, only for its episode and, if
        given, the incarnation `created_at`), keeping the latest `MAX_EXECUTIONS`."""
        incarnation = " AND created_at = :created_at" if created_at else ""
        with contextlib.suppress(TaskConflict):  # recorded already, or a newer episode
            try:
                self._update(
                    task_id,
                    {},
                    extra_set=(
                        "executions = list_append(if_not_exists(executions, :empty), :arn)",
                    ),
                    condition=f"attribute_exists(id) AND {episode_condition(episode)}"
                    f"{incarnation} AND NOT contains(executions, :arn_value)"
                    " AND (attribute_not_exists(executions) OR size(executions) < :max)",
                    values={
                        ":empty": [],
                        ":arn": [execution_arn],
                        ":arn_value": execution_arn,
                        ":episode": episode,
                        ":max": MAX_EXECUTIONS,
                        **({":created_at": created_at} if created_at else {}),
                    },
                    return_old_on_conflict=True,
                )
            except TaskConflict as exc:
                old = exc.old
                if not (
                    isinstance(old, Task)
                    and len(old.executions) >= MAX_EXECUTIONS
                    and old.episode == episode
                    and (not created_at or old.created_at == created_at)
                    and execution_arn not in old.executions
                ):
                    raise
                kept = [*old.executions[-(MAX_EXECUTIONS - 1) :], execution_arn]
                self._update(
                    task_id,
                    {"executions": kept},
                    condition=f"{episode_condition(episode)} AND size(executions) = :seen",
                    values={":episode": episode, ":seen": len(old.executions)},
                )

    def exhaust(self, task: Task, error: TaskErrorInfo) -> Task:
        """The task as seen → FAILED, retries exhausted, for good: the retry workflow gave
        up. Only if it is still as seen and no lease is live (a live claim is never
        overwritten), and not a dead claim whose cancel was requested (`cancel_expired`
        ends that one CANCELLED); leaves no claim token or lease, and sets the expiry."""
        now = self.clock()
        values: dict[str, Any] = {
            ":seen": task.status.value,
            ":episode": task.episode,
            ":now_epoch": int(now.timestamp()),
            ":processing": S.PROCESSING.value,
            ":no": False,
        }
        condition = (
            f"#status = :seen AND {episode_condition(task.episode)} AND {LEASE_FREE}"
            f" AND (#status <> :processing OR {NO_CANCEL_REQUESTED})"
        )
        if task.created_at:
            condition += " AND created_at = :created_at"
            values[":created_at"] = task.created_at
        return self._update(
            task.id,
            {
                **self._status_sets(task.id, S.FAILED, now),
                "finished_at": iso(now),
                "retries_exhausted": True,
                "retryable": False,
                "error": bounded_error(error).model_dump(mode="json"),
                "expires_at": self._expiry(now),
            },
            removes=("claim_token", "lease_expires_at"),
            condition=condition,
            values=values,
            return_old_on_conflict=True,
        )
