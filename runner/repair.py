"""Tasks that wait for a retry execution which is not running, started again.

A task can be left waiting with no execution to run it: `routeFailed` gave up on its
record (a StartExecution throttling storm outlasts its retries), `retry-task` wrote
RETRYING but its StartExecution failed, an execution failed in its own final write, or
was stopped. The sweeper finds such tasks with a bounded Query of the `by-status` index
(FAILED and RETRYING shards, `updated_at` within a window, never a Scan) and asks for
their episode's execution: absent, it is started under its name; ended while the task
still waits, the task moves to a new episode (StartExecution refuses a name for 90 days,
whatever the input) and that one is started. Each task on its own: one that fails does
not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from runner.errors import MalformedTask
from runner.executions import ExecutionRef
from runner.items import deserialize_image, iso, task_from_item
from runner.logs import get_logger
from runner.model import Task, TaskStatus
from runner.store import TaskStore
from runner.workflow import RUNNING, RetryWorkflow, waiting_for_workflow

S = TaskStatus
# A retryable FAILED task is routed within seconds; after this long without a change it
# is looked at (starting an execution routeFailed also starts is harmless: same name and
# input, one execution).
FAILED_GRACE_SECONDS = 300
# A RETRYING task changes at least every backoff (at most 300 s) unless it waits out a
# lease (at most the 900 s function's, plus its pad): longer than this, it is looked at.
RETRYING_GRACE_SECONDS = 20 * 60


@dataclass
class RepairReport:
    checked: int = 0
    repaired: int = 0
    errors: int = 0


class ExecutionRepairs:
    """Finds tasks stranded without a running execution and starts one for them."""

    def __init__(self, store: TaskStore, workflow: RetryWorkflow, *, window_hours: float) -> None:
        self.store = store
        self.workflow = workflow
        self.window = timedelta(hours=window_hours)
        self.log = get_logger()

    def candidates(self) -> list[Task]:
        """FAILED (retryable, retries left) and RETRYING tasks quiet for a while, within
        the window."""
        now = self.store.clock()
        since = iso(now - self.window)
        found: list[Task] = []
        waiting_failed = (
            "retryable = :true AND (attribute_not_exists(retries_exhausted)"
            " OR retries_exhausted = :false)",
            {":true": True, ":false": False},
        )
        for status, grace, condition in (
            (S.FAILED, FAILED_GRACE_SECONDS, waiting_failed),
            (S.RETRYING, RETRYING_GRACE_SECONDS, None),
        ):
            until = iso(now - timedelta(seconds=grace))
            for item in self.store.iter_status_items(status, condition, updated=(since, until)):
                try:
                    found.append(task_from_item(deserialize_image(item)))
                except MalformedTask:
                    continue  # the runner never writes such an item in these statuses
        return found

    def run(self, remaining_seconds: Callable[[], float], margin: float) -> RepairReport:
        report = RepairReport()
        for task in self.candidates():
            if remaining_seconds() <= margin:
                break
            report.checked += 1
            try:
                if self.repair(task):
                    report.repaired += 1
            except Exception as exc:
                report.errors += 1
                self.log.error(
                    "repair failed; the next sweep tries again",
                    extra={"task_id": task.id, "error_type": type(exc).__name__},
                )
        return report

    def repair(self, task: Task) -> bool:
        """Start the execution `task` waits for, if none runs; True if one was started."""
        if not waiting_for_workflow(task):
            return False
        if task.lease_expires_at is not None and task.lease_expires_at >= self.store.now_epoch():
            return False  # an attempt may still act; its execution waits for the lease
        ref = ExecutionRef.of(task)
        if self.workflow.status(ref) == RUNNING:
            return False
        started = self.workflow.ensure_running(ref)
        if started is None or not started.new:
            return False
        self.log.warning(
            "retry execution started for a task left without one",
            extra={
                "task_id": task.id,
                "status": task.status.value,
                "episode": started.ref.episode,
                "execution": started.arn,
            },
        )
        return True
