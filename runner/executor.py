"""TaskRunner: claim a task, validate its input, run its handler, record the outcome.

Flow (as in Powertools' idempotency): call the handler; on failure record the failure,
never raise it to the caller, who only learns the outcome. Infrastructure errors
(StoreError) do propagate: the caller cannot know what was recorded.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from runner import runtime
from runner.aws import AwsClients
from runner.config import Settings
from runner.context import TaskContext
from runner.errors import (
    ConfigurationError,
    InvalidTaskInput,
    ItemTooLarge,
    MalformedTask,
    PayloadCorrupt,
    RetryableTaskError,
    StoreError,
    TaskAlreadyClaimed,
    TaskConflict,
    TaskFailure,
    TaskRunnerError,
    TaskTimedOut,
    UnknownTaskType,
)
from runner.invoke import invoke_handler
from runner.items import iso
from runner.logs import get_logger
from runner.model import AttemptRecord, ClaimSource, Task, TaskErrorInfo, TaskStatus
from runner.registry import DEFAULT_TASK_TIMEOUT_SECONDS, TaskDefinition, TaskRegistry
from runner.steps import StepRecorder
from runner.store import TaskStore
from runner.tracing import task_span

S = TaskStatus
# Time kept back from the Lambda's remaining time to record the outcome after a timeout.
RECORDING_MARGIN_SECONDS = 5.0
# A lease outlives the task's own timeout by this much before the sweeper may take over.
LEASE_GRACE_SECONDS = 30.0
# Errors of the runner's own whose messages are written without task data in them.
_PERMANENT_RUNNER_ERRORS = (
    InvalidTaskInput,
    UnknownTaskType,
    MalformedTask,
    ConfigurationError,
    ItemTooLarge,
    PayloadCorrupt,
)


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
        if self.error:
            out["error"] = self.error.model_dump()
        if self.note:
            out["note"] = self.note
        return out


# The project's root; in the Lambda zip the dependencies live beside these directories.
_ROOT = Path(__file__).resolve().parents[1]
_OWN_TOP = frozenset({"tasks", "runner", "handler.py", "tests"})


def _is_own(filename: str) -> bool:
    path = Path(filename)
    try:
        top = path.resolve().relative_to(_ROOT).parts[0]
    except (ValueError, IndexError, OSError):
        return "site-packages" not in filename and "/lib/python" not in filename
    return top in _OWN_TOP


def _where(exc: BaseException) -> str:
    """`tasks/x.py:42 in run`: the innermost frame of the project's own code (else the
    innermost), as a data-free pointer to where an exception was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if _is_own(f.filename)]
    chosen = own or frames
    if not chosen:
        return "an unknown place"
    frame = chosen[-1]
    path = PurePath(frame.filename)
    return f"{'/'.join(path.parts[-2:])}:{frame.lineno} in {frame.name}"


def describe_error(exc: BaseException) -> TaskErrorInfo:
    """A structured, storable account of why a task failed, and whether to retry it.

    Messages of `TaskFailure`s (written by the task's author) and of the runner's own
    errors are kept. An exception nobody classified may quote anything (an address, a
    value of the input, AWS's text about a request), so only its type, an AWS error
    code and where it was raised are kept.
    """
    if isinstance(exc, TaskFailure):
        return TaskErrorInfo(
            type=type(exc).__name__, message=str(exc) or type(exc).__name__, retryable=exc.retryable
        )
    if isinstance(exc, _PERMANENT_RUNNER_ERRORS):
        return TaskErrorInfo(type=type(exc).__name__, message=str(exc), retryable=False)
    if isinstance(exc, TaskRunnerError):
        return TaskErrorInfo(type=type(exc).__name__, message=str(exc), retryable=True)
    kind = type(exc).__name__
    if isinstance(exc, ClientError):
        kind += f" ({exc.response.get('Error', {}).get('Code', 'unknown code')})"
    # Unclassified: assumed transient. Retries are bounded per task type, so a real bug
    # ends FAILED after a few attempts.
    return TaskErrorInfo(
        type=type(exc).__name__,
        message=f"{kind} raised at {_where(exc)}",
        retryable=True,
    )


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
    ) -> None:
        self.store = store
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
        lease = self.lease_seconds(None, remaining_seconds)
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
        lease = self.lease_seconds(self.definition_or_none(task.type), remaining_seconds)
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
            abandoned: tuple[threading.Thread, ...] = ()
            steps = StepRecorder(self.store, task)
            try:
                result = self._execute(task, remaining_seconds, steps)
            except TaskTimedOut as exc:
                error = describe_error(exc)
                abandoned = exc.abandoned
                if abandoned:
                    left = None if ends_at is None else ends_at - self._monotonic()
                    lease_until = runtime.abandoned_lease(
                        self.store.now_epoch(), left, self.lease_seconds(None, None)
                    )
            except Exception as exc:
                error = describe_error(exc)
            if steps.steps is not None or steps.offloaded:
                # The outcome's size check counts the steps this attempt recorded.
                task = task.model_copy(
                    update={"steps": steps.steps, "payloads": task.payloads or steps.offloaded}
                )
            try:
                outcome = self.record(
                    task,
                    source,
                    result=result,
                    error=error,
                    started=started,
                    lease_until=lease_until,
                )
            except StoreError:
                if lease_until is not None:
                    # The lease that should hold off a retry was not written, and the
                    # claim's own lease may end before this invocation does: end the
                    # runtime now, so the handler cannot outlive it.
                    runtime.end_if_abandoned()
                raise
            if lease_until is not None and outcome.status is not None:
                self._hold(task, lease_until, abandoned)
            span.annotate("outcome", outcome.status.value if outcome.status else "LOST_CLAIM")
            return outcome

    def _hold(self, task: Task, lease_until: int, threads: tuple[threading.Thread, ...]) -> None:
        """Have the runtime release this outcome's lease once its work can no longer act."""
        token = task.claim_token or ""

        def release(exiting: bool) -> None:
            until = self.store.now_epoch() + runtime.EXIT_LEASE_SECONDS if exiting else None
            timeout = runtime.CUT_CALL_SECONDS
            self.store.release_lease(
                task.id, token=token, held=lease_until, until=until, timeout=timeout
            )

        runtime.hold(threads, release)

    def record(
        self,
        task: Task,
        source: ClaimSource,
        *,
        result: Any = None,
        error: TaskErrorInfo | None = None,
        started: str | None = None,
        lease_until: int | None = None,
    ) -> Outcome:
        """The claim's final write: DONE, FAILED or (in a workflow) RETRYING."""
        fields = {"task_id": task.id, "task_type": task.type, "attempt": task.attempts}
        status = self._status_for(error, source)
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
        try:
            recorded = self.store.record_outcome(
                task,
                status,
                result=result,
                error=error,
                attempt=record,
                new_episode=new_episode,
                lease_until=lease_until,
            )
        except TaskConflict:
            self.log.warning("outcome not recorded: claim lost", extra=fields)
            return Outcome(task.id, None, error=error, note="claim lost", attempt=task.attempts)
        status, error = recorded.status, recorded.error if recorded.status is not S.DONE else None
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

    def _execute(self, task: Task, remaining_seconds: float | None, steps: StepRecorder) -> Any:
        definition = self.registry.get(task.type)
        data = definition.parse_input(self.store.payloads.load(task.data))
        timeout = definition.timeout_seconds
        if remaining_seconds is not None:
            timeout = min(timeout, max(0.1, remaining_seconds - RECORDING_MARGIN_SECONDS))
        context = TaskContext(
            task_id=task.id,
            task_type=task.type,
            attempt=task.attempts,
            episode=task.episode,
            idempotency_key=task.idempotency_key,
            settings=self.settings,
            clients=self.clients,
            logger=self.log,
            step_recorder=steps,
        )
        # One deadline for every in-process try: the lease covers one timeout, not one
        # per try.
        deadline = self._monotonic() + timeout
        tries = definition.local_retries + 1
        for number in range(1, tries + 1):
            left = deadline - self._monotonic()
            if left <= 0:
                raise TaskTimedOut(f"{definition.type} exceeded its {timeout:.1f} s timeout")
            try:
                result = invoke_handler(definition, data, context, left)
                break
            except TaskTimedOut:
                raise
            except RetryableTaskError:
                if number == tries:
                    raise
                delay = definition.local_retry_delay_seconds * 2 ** (number - 1)
                self._sleep(max(0.0, min(delay, deadline - self._monotonic())))
        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        return result

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
