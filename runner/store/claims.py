"""Claims: the conditional writes that give one worker a task, under a lease.

A claim that finds the item too large for the runner to record its outcome fails the
task at once (`ItemTooLarge`) instead of running it: its outcome could never be written.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from runner.errors import (
    ItemTooLarge,
    MalformedTask,
    StoreError,
    TaskAlreadyClaimed,
    TaskConflict,
)
from runner.items import iso, task_from_item
from runner.limits import claim_problem
from runner.model import ClaimSource, Task, TaskStatus, status_shard
from runner.store.base import (
    StoreBase,
    as_read,
    attempt_log_value,
    bounded_error,
    episode_condition,
)
from runner.store.outcomes import NO_CANCEL_REQUESTED, OutcomeWrites

S = TaskStatus
# A lease that is "live" blocks every claim; absent or past, it blocks none.
LEASE_FREE = "(attribute_not_exists(lease_expires_at) OR lease_expires_at < :now_epoch)"
# What every claim removes, in its own write (no read, no second write): the expiry (a
# running task is never TTL's to delete; its outcome sets a new one), and any cancel
# request, which was for a claim that has ended (`cancel_requested` belongs to the claim
# it was requested for, whose token its write required: heartbeats, outcomes and
# `cancel_expired` then read only this claim's). A dead claim whose cancel was requested
# is never claimed, so nothing a cancel still needs is removed.
CLAIM_REMOVES = ("expires_at", "cancel_requested")
# What every claim adds to beside `attempts`: while the two are equal, no runner of a
# version before incarnation keys claimed the task, and its attempts key effects by its
# incarnation (`Task.idempotency_key`). One ADD in the claim's own write: no read.
EFFECT_KEY_CLAIMS = "effect_key_claims"


class ClaimWrites(OutcomeWrites, StoreBase):
    """PENDING → PROCESSING, and the workflow's claims of a failed task's episode."""

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
        removes: tuple[str, ...] = (),
        compacted: bool = False,
    ) -> Task:
        """→ PROCESSING under `condition`, with a fresh claim token and lease."""
        now = self.clock()
        token = uuid.uuid4().hex
        try:
            claimed = self._update_values(
                task_id,
                {
                    **self._status_sets(task_id, S.PROCESSING, now),
                    "started_at": iso(now),
                    "claimed_by": source.value,
                    "claim_token": token,
                    "lease_expires_at": int(now.timestamp() + lease_seconds),
                },
                extra_set=extra_set,
                adds={**adds, EFFECT_KEY_CLAIMS: 1},
                removes=removes,
                condition=condition,
                values=values,
                return_old_on_conflict=True,
            )
        except TaskConflict as exc:
            if isinstance(exc.old, Task) and exc.old.claim_token == token:
                return exc.old  # our own claim: applied by an earlier try of this request
            raise
        except StoreError as exc:
            if exc.code != "ValidationException" or compacted:
                raise
            self._refuse_oversized(task_id, exc)
            # The producer's part fits: the runner's own attributes, as an earlier
            # version stored them (long errors in the attempt log), take the room.
            self.compact(task_id)
            return self._claim(
                task_id,
                source,
                lease_seconds,
                condition=condition,
                values=values,
                adds=adds,
                extra_set=extra_set,
                removes=removes,
                compacted=True,
            )
        problem = claim_problem(claimed)
        if problem:
            self.fail_oversized(task_id, problem, claimed, token=token)
            raise ItemTooLarge(problem)
        return task_from_item(claimed)

    def _refuse_oversized(self, task_id: str, cause: StoreError) -> None:
        """After DynamoDB refused a claim: if the item is too large, fail it (ItemTooLarge)."""
        values = self.get_values(task_id)
        problem = claim_problem(values) if values else None
        if values is None or problem is None:
            return
        status = values.get("status")
        if status in (S.PENDING.value, S.FAILED.value, S.RETRYING.value):
            try:
                self.fail_oversized(task_id, problem, values)
            except TaskConflict:
                return  # changed since the read (put again): not the item found too large
            raise ItemTooLarge(problem) from cause

    def compact(self, task_id: str) -> None:
        """Rewrite the runner's bounded attributes (attempt log, error) at their bounds."""
        values = self.get_values(task_id)
        if values is None:
            return
        try:
            task = task_from_item(values)
        except MalformedTask:
            return
        sets: dict[str, Any] = {"attempt_log": attempt_log_value(task)}
        if task.error is not None:
            sets["error"] = bounded_error(task.error).model_dump(mode="json")
        condition, seen = as_read(values)
        with contextlib.suppress(TaskConflict):  # changed since the read: nothing to redo
            self._update_values(task_id, sets, condition=condition, values=seen)

    def claim_pending(self, task_id: str, *, source: ClaimSource, lease_seconds: float) -> Task:
        """PENDING → PROCESSING, unless a lease is live (`fence_pending`); raises
        TaskAlreadyClaimed if anyone got there first. An expiry a reset to PENDING kept
        is removed: a running task is never TTL's to delete; so is any cancel request
        (`CLAIM_REMOVES`)."""
        try:
            return self._claim(
                task_id,
                source,
                lease_seconds,
                condition=f"#status = :pending AND {LEASE_FREE}",
                values={":pending": S.PENDING.value, ":now_epoch": self.now_epoch()},
                adds={"attempts": 1},
                extra_set=("created_at = if_not_exists(created_at, :updated_at)",),
                removes=CLAIM_REMOVES,
            )
        except TaskConflict as exc:
            raise TaskAlreadyClaimed(
                f"task {task_id} is not PENDING (already claimed) or waits for a lease"
            ) from exc

    def fence_pending(self, task_id: str, until: int) -> Task:
        """Hold a PENDING task put over a live claim until that claim's lease (`until`,
        epoch seconds) is over: every claim waits for a live lease, so the two never run
        at once. It is put in the `by-status` index and given its `created_at`, as a
        hand-off is. Raises TaskAlreadyClaimed if it is no longer PENDING."""
        now = iso(self.clock())
        try:
            return self._update(
                task_id,
                {"status_shard": status_shard(task_id, S.PENDING), "lease_expires_at": until},
                extra_set=(
                    "created_at = if_not_exists(created_at, :now)",
                    "updated_at = if_not_exists(updated_at, :now)",
                ),
                condition="#status = :pending AND"
                " (attribute_not_exists(lease_expires_at) OR lease_expires_at < :lease_expires_at)",
                values={":pending": S.PENDING.value, ":now": now},
            )
        except TaskConflict as exc:
            raise TaskAlreadyClaimed(f"task {task_id} is not PENDING") from exc

    def claim_for_retry(
        self,
        task_id: str,
        *,
        episode: int,
        lease_seconds: float,
        allowed_attempts: int | None = None,
        created_at: str | None = None,
    ) -> Task:
        """A workflow attempt's claim of one episode → PROCESSING.

        From PENDING (a task handed to the workflow), RETRYING, FAILED while still
        retryable, or PROCESSING whose lease is dead; never while any lease is live (an
        earlier attempt may still act), never past the attempts allowed, never another
        incarnation of the id (`created_at`), never a dead claim whose cancel was
        requested (that one ends CANCELLED: `cancel_expired`). A cancel request on a
        waiting task belonged to a claim that has ended: the claim removes it
        (`CLAIM_REMOVES`). On a lost condition the TaskConflict carries the item as it
        was (`.old`).
        """
        condition = (
            f"{episode_condition(episode)}"
            " AND #status IN (:pending, :failed, :retrying, :processing)"
            f" AND {LEASE_FREE}"
            " AND (#status <> :failed OR (retryable = :true"
            " AND (attribute_not_exists(retries_exhausted) OR retries_exhausted = :false)))"
            f" AND (#status <> :processing OR {NO_CANCEL_REQUESTED})"
        )
        values: dict[str, Any] = {
            ":episode": episode,
            ":pending": S.PENDING.value,
            ":failed": S.FAILED.value,
            ":retrying": S.RETRYING.value,
            ":processing": S.PROCESSING.value,
            ":now_epoch": self.now_epoch(),
            ":true": True,
            ":false": False,
            ":no": False,
        }
        if allowed_attempts is not None:
            condition += (
                " AND (attribute_not_exists(episode_attempts) OR episode_attempts < :allowed)"
            )
            values[":allowed"] = allowed_attempts
        if created_at:
            condition += " AND created_at = :created_at"
            values[":created_at"] = created_at
        return self._claim(
            task_id,
            ClaimSource.WORKFLOW,
            lease_seconds,
            condition=condition,
            values=values,
            adds={"attempts": 1, "episode_attempts": 1},
            extra_set=("created_at = if_not_exists(created_at, :updated_at)",),
            removes=CLAIM_REMOVES,
        )

    def prepare_handoff(self, task_id: str) -> Task:
        """A PENDING task the workflow will run: its `created_at` (which names its
        executions) and its place in the `by-status` index made certain, still PENDING.
        Raises TaskAlreadyClaimed if it is no longer PENDING."""
        now = iso(self.clock())
        try:
            return self._update(
                task_id,
                {"status_shard": status_shard(task_id, S.PENDING)},
                extra_set=(
                    "created_at = if_not_exists(created_at, :now)",
                    "updated_at = if_not_exists(updated_at, :now)",
                ),
                condition="#status = :pending",
                values={":pending": S.PENDING.value, ":now": now},
            )
        except TaskConflict as exc:
            raise TaskAlreadyClaimed(f"task {task_id} is not PENDING") from exc
