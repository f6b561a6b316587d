"""TaskRunner: claim a task, validate its input, run its handler, record the outcome.

Flow (as in Powertools' idempotency): call the handler; on failure record the failure,
never raise it to the caller, who only learns the outcome. Infrastructure errors
(StoreError) do propagate: the caller cannot know what was recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner import abandoned as abandoned_work
from runner import metrics, runtime
from runner.aws import AwsClients
from runner.config import Settings
from runner.context import TaskContext
from runner.control import TaskControl
from runner.errors import (
    ItemTooLarge,
    TaskAlreadyClaimed,
    TaskCancelled,
    TaskConflict,
)
from runner.failures import describe_error
from runner.heartbeat import LeasePolicy
from runner.items import iso
from runner.local_retries import run_tries
from runner.logs import get_logger
from runner.model import AttemptRecord, ClaimSource, Task, TaskErrorInfo, TaskStatus
from runner.progress import ProgressReporter
from runner.registry import DEFAULT_TASK_TIMEOUT_SECONDS, TaskDefinition, TaskRegistry
from runner.steps import StepRecorder
from runner.store import TaskStore
from runner.store.base import bounded_error
from runner.tracing import task_span

S = TaskStatus
# Time kept back from the Lambda's remaining time to record the outcome after a timeout.
RECORDING_MARGIN_SECONDS = 5.0
# A lease outlives the task's own timeout by this much before the sweeper may take over.
LEASE_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Outcome:
    """What happened to one task in one call of the runner."""

    task_id: str
    status: TaskStatus | None  # None: nothing ran (a duplicate delivery, a lost claim)
    error: TaskErrorInfo | None = None
    note: str = ""
    attempt: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task_id": self.task_id,
            "status": self.status.value if self.status else "SKIPPED",
            "attempt": self.attempt,
        }
        if self.error:  # bounded as stored: this answer may be a Step Functions state's data
            out["error"] = bounded_error(self.error).model_dump()
        if self.note:
            out["note"] = self.note
        return out


class TaskRunner:
    """Runs tasks from the table; every status change goes through TaskStore's conditions."""

    def __init__(
        self,
        store: TaskStore,
        registry: TaskRegistry,
        *,
        settings: Settings | None = None,
        clients: AwsClients | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        leases: LeasePolicy | None = None,
    ) -> None:
        self.store = store
        # Claims' leases and heartbeats (runner.heartbeat).
        self.leases = leases or LeasePolicy()
        self.registry = registry
        self.settings = settings or store.settings
        self.clients = clients or store.clients
        self._sleep = sleep
        self._monotonic = monotonic
        self.log = get_logger()

    # --- entry points ----------------------------------------------------------------

    def run_pending(
        self, task_id: str, *, source: ClaimSource, remaining_seconds: float | None = None
    ) -> Outcome:
        """Claim a PENDING task and run it. A lost claim is a SKIPPED outcome, not an error."""
        lease = self.claim_lease(self.lease_seconds(None, remaining_seconds))
        return self._claim_and_run(
            task_id,
            lambda: self.store.claim_pending(task_id, source=source, lease_seconds=lease),
            source,
            remaining_seconds,
        )

    def run_claimable(
        self, task: Task, *, source: ClaimSource, remaining_seconds: float | None = None
    ) -> Outcome:
        """Like run_pending, for a task already read (a stream record carries it whole)."""
        lease = self.claim_lease(
            self.lease_seconds(self.definition_or_none(task.type), remaining_seconds)
        )
        return self._claim_and_run(
            task.id,
            lambda: self.store.claim_pending(task.id, source=source, lease_seconds=lease),
            source,
            remaining_seconds,
        )

    def fail_claimable(self, task: Task, *, source: ClaimSource, reason: Exception) -> Outcome:
        """Claim a PENDING task and fail it with `reason`, without running it."""
        lease = self.lease_seconds(None, 0.0)
        try:
            claimed = self.store.claim_pending(task.id, source=source, lease_seconds=lease)
        except TaskAlreadyClaimed:
            return Outcome(task.id, None, note="already claimed")
        except ItemTooLarge as exc:
            return Outcome(task.id, S.FAILED, error=describe_error(exc))
        return self.record(
            claimed, source, error=describe_error(reason), started=claimed.started_at
        )

    def _claim_and_run(
        self,
        task_id: str,
        claim: Callable[[], Task],
        source: ClaimSource,
        remaining_seconds: float | None,
    ) -> Outcome:
        try:
            task = claim()
        except TaskAlreadyClaimed:
            self.log.info(
                "task already claimed; skipping", extra={"task_id": task_id, "source": source.value}
            )
            return Outcome(task_id, None, note="already claimed")
        except ItemTooLarge as exc:
            self.log.warning(
                "task item too large to run; FAILED", extra={"task_id": task_id, "status": "FAILED"}
            )
            return Outcome(task_id, S.FAILED, error=describe_error(exc))
        return self.run_claimed(task, source, remaining_seconds)

    # --- the run itself --------------------------------------------------------------

    def run_claimed(
        self, task: Task, source: ClaimSource, remaining_seconds: float | None
    ) -> Outcome:
        """Run a task this process has claimed, and record its outcome."""
        # The claim's own time, which the task's top-level started_at also shows.
        started = task.started_at or iso(self.store.clock())
        ends_at = None if remaining_seconds is None else self._monotonic() + remaining_seconds
        fields = {"task_id": task.id, "task_type": task.type, "attempt": task.attempts}
        with task_span(f"task {task.type}", task_id=task.id, task_type=task.type) as span:
            self.log.info(
                "task claimed",
                extra={**fields, "status": S.PROCESSING.value, "source": source.value},
            )
            result: Any = None
            error: TaskErrorInfo | None = None
            lease_until: int | None = None
            left_running: list[threading.Thread] = []
            metrics.claimed(task, source, started)
            began = self._monotonic()
            full = self.lease_seconds(self.definition_or_none(task.type), remaining_seconds)
            control, heartbeat = self.leases.supervise(self.store, task, full, self._monotonic)
            steps = StepRecorder(self.store, task)
            try:
                with heartbeat:
                    result = self._execute(
                        task, remaining_seconds, control, steps, left_running=left_running
                    )
            except Exception as exc:
                error = describe_error(exc)
            metrics.handler_duration(task.type, self._monotonic() - began)
            # Work left running, whatever the outcome (a timeout, or an async handler's
            # to_thread work that outlived it): no retry may claim while it can act.
            abandoned = tuple(left_running)
            if abandoned:
                left = None if ends_at is None else ends_at - self._monotonic()
                lease_until = runtime.abandoned_lease(
                    self.store.now_epoch(), left, self.lease_seconds(None, None)
                )
            # The lease as the heartbeat last renewed it fences the outcome's write of work
            # left running (runner.abandoned); the size check counts this attempt's steps.
            updates: dict[str, Any] = {"lease_expires_at": heartbeat.lease}
            if steps.steps is not None or steps.offloaded:
                updates.update(steps=steps.steps, payloads=task.payloads or steps.offloaded)
            task = task.model_copy(update=updates)
            progress = (
                control.progress.close() if isinstance(control.progress, ProgressReporter) else None
            )

            def write() -> Outcome:
                return self.record(
                    task,
                    source,
                    result=result,
                    error=error,
                    started=started,
                    lease_until=lease_until,
                    progress=progress,
                    cancel_requested=control.cancelled_by_request,
                    claim_lost=control.lost,
                )

            if lease_until is None:
                outcome = write()
            else:
                outcome = abandoned_work.record(self.store, task, abandoned, lease_until, write)
            span.annotate("outcome", outcome.status.value if outcome.status else "LOST_CLAIM")
            return outcome

    def record(
        self,
        task: Task,
        source: ClaimSource,
        *,
        result: Any = None,
        error: TaskErrorInfo | None = None,
        started: str | None = None,
        lease_until: int | None = None,
        progress: dict[str, Any] | None = None,
        cancel_requested: bool = False,
        claim_lost: bool = False,
    ) -> Outcome:
        """The claim's final write: DONE, FAILED, (in a workflow) RETRYING, or CANCELLED.

        `TaskCancelled` ends the task CANCELLED. So does a failure a retry would follow
        once a cancel was requested (known here, or found by the write's condition: one
        more write, only then); a normal return is DONE, a permanent failure FAILED.
        A stop for a lost claim (`claim_lost`) is no cancel: nothing is written."""
        fields = {"task_id": task.id, "task_type": task.type, "attempt": task.attempts}
        status = self._status_for(error, source)
        if status in (S.FAILED, S.RETRYING) and error is not None and error.retryable:
            if cancel_requested:
                status = S.CANCELLED
        elif error is not None and error.type == TaskCancelled.__name__:
            status = S.CANCELLED
        if claim_lost and status is S.CANCELLED:  # the heartbeat ended it: the lease decides
            self.log.warning("outcome not recorded: claim lost", extra=fields)
            return Outcome(task.id, None, error=error, note="claim lost", attempt=task.attempts)
        record = AttemptRecord(
            attempt=task.attempts,
            episode=task.episode,
            source=source.value,
            started_at=started or iso(self.store.clock()),
            finished_at=iso(self.store.clock()),
            outcome=status,
            error=error,
        )
        new_episode = status is S.FAILED and error is not None and error.retryable
        retried = status in (S.FAILED, S.RETRYING) and error is not None and error.retryable
        try:
            recorded = self.store.record_outcome(
                task,
                status,
                result=result,
                error=error,
                attempt=record,
                new_episode=new_episode,
                lease_until=lease_until,
                unless_cancel_requested=retried,
                progress=progress,
            )
        except TaskConflict as exc:
            old = exc.old
            if (
                retried
                and isinstance(old, Task)
                and old.cancel_requested
                and old.status is S.PROCESSING
                and old.claim_token == task.claim_token
            ):
                # A cancel came while it ran: no retry follows, the task ends CANCELLED.
                return self.record(
                    task,
                    source,
                    result=result,
                    error=error,
                    started=started,
                    lease_until=lease_until,
                    progress=progress,
                    cancel_requested=True,
                )
            self.log.warning("outcome not recorded: claim lost", extra=fields)
            return Outcome(task.id, None, error=error, note="claim lost", attempt=task.attempts)
        status, error = recorded.status, recorded.error if recorded.status is not S.DONE else None
        if status is S.CANCELLED:
            error = error or TaskErrorInfo(
                type=TaskCancelled.__name__, message="cancelled", retryable=False
            )
        metrics.recorded(task.type, status.value, error)
        level = self.log.info if status is S.DONE else self.log.warning
        level(
            f"task {status.value.lower()}",
            extra={
                **fields,
                "status": status.value,
                **(
                    {"error_type": error.type, "error": error.message, "retryable": error.retryable}
                    if error
                    else {}
                ),
            },
        )
        return Outcome(task.id, status, error=error, attempt=task.attempts)

    @staticmethod
    def _status_for(error: TaskErrorInfo | None, source: ClaimSource) -> TaskStatus:
        if error is None:
            return S.DONE
        if error.retryable and source is ClaimSource.WORKFLOW:
            return S.RETRYING  # the workflow owns the task; the stream filter ignores this
        return S.FAILED

    def claim_lease(self, full: float) -> float:
        """The lease a claim takes: `full` (its deadline's), or less where a heartbeat
        keeps it alive (`runner.heartbeat`)."""
        return self.leases.claim_lease(full)

    def _execute(
        self,
        task: Task,
        remaining_seconds: float | None,
        control: TaskControl,
        steps: StepRecorder,
        *,
        left_running: list[threading.Thread],
    ) -> Any:
        definition = self.registry.get(task.type)
        loading = self.store.clock()
        data = definition.parse_input(self.store.payloads.load(task.data))
        # The timeout counts from the claim, as the lease's cap does (claim + timeout +
        # grace): an input slow to load (S3 throttled) is time the handler no longer has,
        # or it would run past the point where the heartbeat's watchdog ends the runtime.
        spent = max(0.0, (self.store.clock() - loading).total_seconds())
        timeout = max(0.0, definition.timeout_seconds - spent)
        if remaining_seconds is not None:
            left = remaining_seconds - spent - RECORDING_MARGIN_SECONDS
            timeout = min(timeout, max(0.1, left))
        context = TaskContext(
            task_id=task.id,
            task_type=task.type,
            attempt=task.attempts,
            episode=task.episode,
            idempotency_key=task.idempotency_key,
            settings=self.settings,
            clients=self.clients,
            logger=self.log,
            control=control,
            step_recorder=steps,
        )
        return run_tries(
            definition,
            data,
            context,
            timeout,
            left_running=left_running,
            sleep=self._sleep,
            monotonic=self._monotonic,
        )

    # --- helpers ---------------------------------------------------------------------

    def definition_or_none(self, task_type: str | None) -> TaskDefinition | None:
        if task_type is None or task_type not in self.registry:
            return None
        return self.registry.get(task_type)

    def lease_seconds(self, definition: TaskDefinition | None, remaining: float | None) -> float:
        # Without the type (a claim by id) the lease covers the longest timeout of any
        # registered type.
        if definition is not None:
            timeout = definition.timeout_seconds
        else:
            timeout = max(
                (d.timeout_seconds for d in self.registry), default=DEFAULT_TASK_TIMEOUT_SECONDS
            )
        if remaining is not None:
            timeout = min(timeout, remaining)
        return timeout + LEASE_GRACE_SECONDS
