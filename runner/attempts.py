"""The retry workflow's attempts (handler.run_task): run one attempt of an episode, or
make the workflow's final write when it gives up ("exhaust").

Every answer is a signal the state machine matches by name (statemachine/retry.asl.json):
`TaskRetryableError` (retry with backoff), `TaskLeaseHeld` (wait for a lease),
`RetriesExhausted` (the Catch: exhaust), `TaskFailedPermanently` (the execution fails),
`TaskCancelled` (the task was cancelled: the execution ends in its `Cancelled` state).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner import metrics
from runner.errors import (
    ItemTooLarge,
    PayloadUnavailable,
    RetriesExhausted,
    TaskCancelled,
    TaskConflict,
    TaskFailedPermanently,
    TaskInfrastructureError,
    TaskLeaseHeld,
    TaskRetryableError,
)
from runner.executor import Outcome, TaskRunner
from runner.logs import get_logger
from runner.model import ClaimSource, Task, TaskErrorInfo, TaskStatus

S = TaskStatus
# What the exhaust mode tells the state machine.
EXHAUSTED, DONE, SUPERSEDED = "exhausted", "done", "superseded"
# Re-reads when the task changes between the exhaust's read and its write.
EXHAUST_TRIES = 3
# A live lease that ends this soon is waited out here, in the invocation, rather than by
# the state machine's TaskLeaseHeld retry, whose waits grow with each one (a lease cut to
# a few seconds at a runtime's end, runner.runtime, is the common case).
SHORT_LEASE_WAIT_SECONDS = 10.0
# Kept back from the invocation's time when waiting for a lease here.
LEASE_WAIT_MARGIN_SECONDS = 15.0


@dataclass(frozen=True)
class AttemptInput:
    """One invocation's payload (see the ASL); the previous version sent only the first two."""

    task_id: str
    episode: int
    task_type: str | None = None
    created_at: str | None = None


class WorkflowAttempts:
    """What run_task does for one execution of the retry state machine."""

    def __init__(
        self,
        runner: TaskRunner,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.store = runner.store
        self._sleep = sleep
        self._monotonic = monotonic
        self.log = get_logger()

    def run(self, given: AttemptInput, *, remaining_seconds: float | None = None) -> Outcome:
        """One attempt: claim the episode (leased by the task's type), run, record.

        Raises TaskRetryableError so the state machine's Retry schedules another attempt,
        RetriesExhausted when the type's attempts are spent, TaskFailedPermanently when
        the attempt ended the task FAILED for good, TaskLeaseHeld while an earlier
        attempt may still act.
        """
        definition = self.runner.definition_or_none(given.task_type)
        allowed = definition.max_attempts if definition else None
        started = self._monotonic()
        while True:
            left = (
                None
                if remaining_seconds is None
                else remaining_seconds - (self._monotonic() - started)
            )
            lease = self.runner.claim_lease(self.runner.lease_seconds(definition, left))
            try:
                task = self.store.claim_for_retry(
                    given.task_id,
                    episode=given.episode,
                    lease_seconds=lease,
                    allowed_attempts=allowed,
                    created_at=given.created_at,
                )
                break
            except ItemTooLarge as exc:
                raise TaskFailedPermanently(f"task item too large: {exc}") from exc
            except TaskConflict as exc:
                old = exc.old if isinstance(exc.old, Task) else None
                if not self._waited_for_lease(old, left):
                    return self._not_claimed(given, old, allowed)
        remaining_seconds = left
        outcome = self.runner.run_claimed(task, ClaimSource.WORKFLOW, remaining_seconds)
        if outcome.status is S.RETRYING:
            if outcome.error is not None and outcome.error.type == PayloadUnavailable.__name__:
                # S3 failed, not the task (the attempt was not counted): the state machine
                # retries it on its infrastructure schedule.
                raise TaskInfrastructureError(outcome.error.message)
            if allowed is None:
                found = self.runner.definition_or_none(task.type)
                allowed = found.max_attempts if found else 1
            message = outcome.error.message if outcome.error else "retryable failure"
            if task.episode_attempts >= allowed:
                raise RetriesExhausted(
                    f"{task.episode_attempts} of {allowed} attempts spent: {message}"
                )
            raise TaskRetryableError(message)
        if outcome.status is S.FAILED:
            kind = outcome.error.type if outcome.error else "error"
            raise TaskFailedPermanently(f"the task failed for good ({kind})")
        if outcome.status is S.CANCELLED:
            raise TaskCancelled(f"task {given.task_id} was cancelled")
        return outcome

    def _waited_for_lease(self, task: Task | None, remaining_seconds: float | None) -> bool:
        """If a live lease holds the task and ends within `SHORT_LEASE_WAIT_SECONDS` (and
        this invocation has the time), sleep until it has passed; True if it slept."""
        if task is None or task.lease_expires_at is None:
            return False
        # Leases are whole epoch seconds, compared as `lease < now`: one more second.
        wait = task.lease_expires_at + 1 - self.store.clock().timestamp()
        if wait <= 0 or wait > SHORT_LEASE_WAIT_SECONDS:
            return False
        if remaining_seconds is not None and remaining_seconds - wait < LEASE_WAIT_MARGIN_SECONDS:
            return False
        self.log.info(
            "waiting for a lease that ends soon",
            extra={"task_id": task.id, "seconds": round(wait, 1)},
        )
        self._sleep(wait)
        return True

    def _not_claimed(self, given: AttemptInput, old: Task | None, allowed: int | None) -> Outcome:
        """Why the claim was refused, as the state machine must hear it."""
        if old is None:
            old = self.store.find(given.task_id)
        state = self._superseded(given, old)
        if state:
            self.log.info(
                "retry superseded",
                extra={"task_id": given.task_id, "episode": given.episode, "found": state},
            )
            return Outcome(given.task_id, None, note=f"superseded: task is {state}")
        assert old is not None
        if old.status is S.CANCELLED:
            raise TaskCancelled(f"task {given.task_id} was cancelled")
        if old.status is S.PROCESSING and old.cancel_requested and not self._lease_live(old):
            # Its claim died after a cancel was requested: it ends here, never retried.
            try:
                self.store.cancel_expired(old)
            except TaskConflict as exc:
                raise TaskInfrastructureError(f"task {given.task_id} changed; look again") from exc
            raise TaskCancelled(f"task {given.task_id} was cancelled")
        if old.status is S.DONE:
            return Outcome(given.task_id, S.DONE, note="already done", attempt=old.attempts)
        if old.lease_expires_at is not None and old.lease_expires_at >= self.store.now_epoch():
            # A previous attempt's Lambda may still be running: wait out its lease (the
            # state machine retries this error on the lease's timescale).
            raise TaskLeaseHeld(f"task {given.task_id} is held by a live lease")
        if old.status is S.FAILED and old.retries_exhausted:
            raise RetriesExhausted(f"task {given.task_id}: retries already exhausted")
        if old.status is S.FAILED and not old.retryable:
            raise TaskFailedPermanently(f"task {given.task_id} failed for good")
        if allowed is not None and old.episode_attempts >= allowed:
            raise RetriesExhausted(f"{old.episode_attempts} of {allowed} attempts spent")
        raise TaskInfrastructureError(f"task {given.task_id}: claim refused ({old.status.value})")

    def _lease_live(self, task: Task) -> bool:
        return task.lease_expires_at is not None and task.lease_expires_at >= self.store.now_epoch()

    @staticmethod
    def _superseded(given: AttemptInput, task: Task | None) -> str | None:
        """Why this execution no longer owns the task, or None if it still does."""
        if task is None:
            return "missing"
        if given.created_at and task.created_at != given.created_at:
            return "another task with the same id"
        if task.episode != given.episode:
            return f"{task.status.value}, episode {task.episode}"
        return None

    # --- the Catch: retries exhausted ------------------------------------------------

    def exhaust(
        self, given: AttemptInput, reason: str | None, *, remaining_seconds: float | None = None
    ) -> dict[str, Any]:
        """The state machine gave up (`reason`: the error its Catch caught): FAILED with
        retries exhausted, unless a live claim holds the task (TaskLeaseHeld: wait) or
        it is done or another episode's. Returns {"outcome": exhausted|done|superseded}."""
        reason = reason or RetriesExhausted.__name__
        for _ in range(EXHAUST_TRIES):
            task = self.store.find(given.task_id)
            state = self._superseded(given, task)
            if state:
                return {"outcome": SUPERSEDED, "found": state}
            assert task is not None
            if task.status is S.DONE:
                return {"outcome": DONE}
            if task.status is S.CANCELLED:
                return {"outcome": SUPERSEDED, "found": S.CANCELLED.value}
            if task.status is S.PROCESSING and task.cancel_requested and not self._lease_live(task):
                # Its claim died after a cancel was requested: CANCELLED, not exhausted
                # (which retry-task would run again).
                try:
                    self.store.cancel_expired(task)
                except TaskConflict:
                    continue  # it changed since the read: look again
                return {"outcome": SUPERSEDED, "found": S.CANCELLED.value}
            if task.status is S.FAILED and task.retries_exhausted:
                # Marked by this call's write whose reply was lost, or by an invocation
                # that crashed after its write: counted again rather than never (a
                # duplicate count is better than a silent alarm).
                metrics.retries_exhausted(task.type, reason, task.episode)
                return {"outcome": EXHAUSTED}
            if (
                task.lease_expires_at is not None
                and task.lease_expires_at >= self.store.now_epoch()
            ):
                if self._waited_for_lease(task, remaining_seconds):
                    continue
                raise TaskLeaseHeld(f"task {given.task_id} is held by a live lease")
            try:
                self.store.exhaust(task, self._final_error(task, reason))
            except TaskConflict:
                continue  # it changed since the read: look again
            metrics.retries_exhausted(task.type, reason, task.episode)
            return {"outcome": EXHAUSTED}
        raise TaskInfrastructureError(f"task {given.task_id} kept changing; not marked")

    @staticmethod
    def _final_error(task: Task, reason: str) -> TaskErrorInfo:
        if reason == RetriesExhausted.__name__ and task.error is not None:
            return task.error.model_copy(update={"retryable": False})
        return TaskErrorInfo(
            type=reason,
            message=f"the retry workflow stopped after {reason}",
            retryable=False,
        )
