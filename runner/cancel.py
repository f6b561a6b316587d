"""`cancel-task`: stop a task that has not finished.

- PENDING, SCHEDULED, FAILED awaiting a retry, RETRYING → CANCELLED at once, with one
  conditional write on the status as read (a claim or a retry's start that wins the race
  makes it PROCESSING: the cancel looks again and asks the claim to stop). CANCELLED is
  written first; only then is the episode's execution stopped (StopExecution: ABORTED in
  the console), and a SCHEDULED task's schedule removed. StopExecution does not stop a
  `runTask` invocation already running: that one's claim, or its final write, loses on
  its condition (every claim and outcome requires a status CANCELLED never has again).
- PROCESSING → `cancel_requested`: the handler learns of it at its next heartbeat (an
  async one is cancelled at its next await; a sync one sees `ctx.cancel_requested` and
  may raise `TaskCancelled`). A normal return still records DONE ("finished first").
- DONE, FAILED for good: refused, one line. CANCELLED: nothing to do (safe to repeat).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.errors import TaskConflict
from runner.executions import ExecutionRef
from runner.logs import get_logger
from runner.model import Task, TaskStatus
from runner.store.control import WAITING

if TYPE_CHECKING:
    from runner.store import TaskStore
    from runner.workflow import RetryWorkflow

S = TaskStatus
# Looks at a task that keeps changing under the cancel before giving up.
MAX_CANCEL_TRIES = 5


@dataclass(frozen=True)
class CancelResult:
    task_id: str
    status: TaskStatus  # CANCELLED, or PROCESSING with the cancel requested
    was: TaskStatus
    execution_stopped: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task_id": self.task_id,
            "status": self.status.value,
            "was": self.was.value,
            "cancel_requested": self.status is S.PROCESSING,
        }
        if self.execution_stopped:
            out["execution_stopped"] = self.execution_stopped
        if self.note:
            out["note"] = self.note
        return out


class Cancellation:
    """Cancels tasks: the conditional writes, then the execution and the schedule."""

    def __init__(
        self,
        store: TaskStore,
        workflow: RetryWorkflow | None,
        forget_schedule: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.workflow = workflow
        # Best effort (runner.delays.DelayTimers.forget): a schedule left behind fires
        # into a task that is no longer SCHEDULED, which does nothing.
        self.forget_schedule = forget_schedule
        self.log = get_logger()

    def cancel(self, task_id: str) -> CancelResult:
        """Cancel the task, or ask its claim to stop. Raises TaskNotFound, or TaskConflict
        (one line) for a task that has finished."""
        for _ in range(MAX_CANCEL_TRIES):
            task = self.store.get(task_id)  # strongly consistent
            refusal = refused(task)
            if refusal:
                raise TaskConflict(refusal)
            if task.status is S.CANCELLED:
                return self._already_cancelled(task)
            try:
                if task.status is S.PROCESSING:
                    self.store.request_cancel(task)
                    self.log.info("cancel requested", extra={"task_id": task.id})
                    return CancelResult(
                        task.id,
                        S.PROCESSING,
                        S.PROCESSING,
                        note="cancel requested: the handler learns of it within about 30 s;"
                        " a handler that finishes first records DONE",
                    )
                self.store.cancel_waiting(task)
            except TaskConflict:
                continue  # claimed, retried or finished since the read: look again
            self.log.info("task cancelled", extra={"task_id": task.id, "status": S.CANCELLED.value})
            if task.status is S.SCHEDULED and self.forget_schedule is not None:
                self.forget_schedule(task.id)
            return CancelResult(
                task.id, S.CANCELLED, task.status, execution_stopped=self._stop(task)
            )
        raise TaskConflict(f"task {task_id} kept changing while it was cancelled; try again")

    def _already_cancelled(self, task: Task) -> CancelResult:
        """A CANCELLED task: its cancel may be this call's own, whose write applied but
        whose reply was lost (the SDK's retry then failed its condition), or one whose
        caller died before it stopped the execution or removed the schedule. Both are
        seen to again: each is idempotent and best effort."""
        if task.run_at is not None and task.attempts == 0 and self.forget_schedule is not None:
            self.forget_schedule(task.id)  # it was SCHEDULED when cancelled
        stopped = self._stop(task) if task.episode > 0 else None
        return CancelResult(
            task.id, S.CANCELLED, S.CANCELLED, execution_stopped=stopped, note="already cancelled"
        )

    def _stop(self, task: Task) -> str | None:
        """Stop the execution that waits to run the cancelled task, if one runs."""
        if self.workflow is None or not self.workflow.settings.state_machine_arn:
            return None
        if task.status not in (S.PENDING, S.FAILED, S.RETRYING, S.CANCELLED):
            return None
        try:
            return self.workflow.stop(ExecutionRef.of(task), cause="cancel-task")
        except Exception as exc:
            # CANCELLED is written: that execution's next attempt ends it without a claim.
            self.log.warning(
                "could not stop the cancelled task's execution; its next attempt ends it",
                extra={"task_id": task.id, "error_type": type(exc).__name__},
            )
            return None


def refused(task: Task) -> str | None:
    """Why a cancel of this task is refused (it has finished), or None."""
    if task.status is S.DONE:
        return f"task {task.id} is DONE: it finished first; nothing to cancel"
    if task.status is S.FAILED and task.is_final:
        kind = task.error.type if task.error else "an error"
        return f"task {task.id} FAILED for good ({kind}); nothing to cancel"
    if task.status not in (*WAITING, S.PROCESSING, S.CANCELLED):
        return f"task {task.id} is {task.status.value}; it cannot be cancelled"
    return None
