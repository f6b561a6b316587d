"""TaskRunner: claim a task, validate its input, run its handler, record the outcome.

Flow (as in Powertools' idempotency): call the handler; on failure record the failure,
never raise it to the caller, who only learns the outcome. Infrastructure errors
(StoreError) do propagate: the caller cannot know what was recorded.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from runner.aws import AwsClients
from runner.config import Settings
from runner.context import TaskContext
from runner.errors import (
    ConfigurationError,
    InvalidTaskInput,
    MalformedTask,
    PermanentTaskError,
    RetriesExhausted,
    RetryableTaskError,
    TaskAlreadyClaimed,
    TaskConflict,
    TaskFailure,
    TaskLeaseHeld,
    TaskRetryableError,
    TaskTimedOut,
    UnknownTaskType,
)
from runner.item_size import MAX_ITEM_BYTES, item_size, value_size
from runner.items import iso, task_to_item
from runner.logs import get_logger
from runner.model import AttemptRecord, ClaimSource, Task, TaskErrorInfo, TaskStatus
from runner.registry import DEFAULT_TASK_TIMEOUT_SECONDS, TaskDefinition, TaskRegistry
from runner.store import TaskStore
from runner.tracing import task_span

S = TaskStatus
# Time kept back from the Lambda's remaining time to record the outcome after a timeout.
RECORDING_MARGIN_SECONDS = 5.0
# A lease outlives the task's own timeout by this much before the sweeper may take over.
LEASE_GRACE_SECONDS = 30.0
# Error messages are cut to this length on the task item.
MAX_ERROR_MESSAGE = 2000


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


def describe_error(exc: BaseException) -> TaskErrorInfo:
    """A structured, storable account of why a task failed, and whether to retry it."""
    if isinstance(exc, TaskFailure):
        retryable = exc.retryable
    elif isinstance(exc, InvalidTaskInput | UnknownTaskType | MalformedTask | ConfigurationError):
        retryable = False
    else:
        # An exception the task did not classify: assume it is transient. Retries are
        # bounded per task type, so a real bug ends FAILED after a few attempts.
        retryable = True
    message = str(exc) or type(exc).__name__
    return TaskErrorInfo(
        type=type(exc).__name__, message=message[:MAX_ERROR_MESSAGE], retryable=retryable
    )


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    try:
        return json.loads(json.dumps(result))
    except (TypeError, ValueError) as exc:
        raise PermanentTaskError(f"task result is not JSON-serializable: {exc}") from exc


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
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings or store.settings
        self.clients = clients or store.clients
        self._sleep = sleep
        self.log = get_logger()

    # --- entry points ----------------------------------------------------------------

    def run_pending(
        self, task_id: str, *, source: ClaimSource, remaining_seconds: float | None = None
    ) -> Outcome:
        """Claim a PENDING task and run it. A lost claim is a SKIPPED outcome, not an error."""
        lease = self._lease_seconds(None, remaining_seconds)
        try:
            task = self.store.claim_pending(task_id, source=source, lease_seconds=lease)
        except TaskAlreadyClaimed:
            self.log.info(
                "task already claimed; skipping", extra={"task_id": task_id, "source": source.value}
            )
            return Outcome(task_id, None, note="already claimed")
        return self._run_claimed(task, source, remaining_seconds)

    def run_claimable(
        self, task: Task, *, source: ClaimSource, remaining_seconds: float | None = None
    ) -> Outcome:
        """Like run_pending, for a task already read (a stream record carries it whole)."""
        lease = self._lease_seconds(self._definition_or_none(task.type), remaining_seconds)
        try:
            claimed = self.store.claim_pending(task.id, source=source, lease_seconds=lease)
        except TaskAlreadyClaimed:
            self.log.info(
                "task already claimed; skipping", extra={"task_id": task.id, "task_type": task.type}
            )
            return Outcome(task.id, None, note="already claimed")
        return self._run_claimed(claimed, source, remaining_seconds)

    def run_retry(
        self, task_id: str, episode: int, *, remaining_seconds: float | None = None
    ) -> Outcome:
        """One attempt of the retry workflow (handler.run_task).

        Raises TaskRetryableError so the state machine's Retry schedules another attempt,
        or RetriesExhausted when the type's attempts are spent (only the Catch matches).
        """
        lease = self._lease_seconds(None, remaining_seconds)
        try:
            task = self.store.claim_for_retry(task_id, episode=episode, lease_seconds=lease)
        except TaskConflict as exc:
            old = exc.old if isinstance(exc.old, Task) else None
            if old is not None and old.status is S.PROCESSING and old.episode == episode:
                # A previous attempt's Lambda may still be running: wait out its lease
                # (the state machine retries this error on the lease's timescale).
                raise TaskLeaseHeld(
                    f"task {task_id} is still PROCESSING under a live lease"
                ) from exc
            state = f"{old.status.value}, episode {old.episode}" if old else "missing"
            self.log.info(
                "retry superseded", extra={"task_id": task_id, "episode": episode, "found": state}
            )
            return Outcome(task_id, None, note=f"superseded: task is {state}")
        outcome = self._run_claimed(task, ClaimSource.WORKFLOW, remaining_seconds)
        if outcome.status is S.RETRYING:
            definition = self._definition_or_none(task.type)
            allowed = definition.max_attempts if definition else 1
            message = outcome.error.message if outcome.error else "retryable failure"
            if task.episode_attempts >= allowed:
                raise RetriesExhausted(
                    f"{task.episode_attempts} of {allowed} retries spent: {message}"
                )
            raise TaskRetryableError(message)
        return outcome

    # --- the run itself --------------------------------------------------------------

    def _run_claimed(
        self, task: Task, source: ClaimSource, remaining_seconds: float | None
    ) -> Outcome:
        # The claim's own time, which the task's top-level started_at also shows.
        started = task.started_at or iso(self.store.clock())
        fields = {"task_id": task.id, "task_type": task.type, "attempt": task.attempts}
        with task_span(f"task {task.type}", task_id=task.id, task_type=task.type) as span:
            self.log.info(
                "task claimed",
                extra={**fields, "status": S.PROCESSING.value, "source": source.value},
            )
            result: Any = None
            error: TaskErrorInfo | None = None
            try:
                result = self._execute(task, remaining_seconds)
            except Exception as exc:
                error = describe_error(exc)
            status = self._status_for(error, source)
            record = AttemptRecord(
                attempt=task.attempts,
                episode=task.episode,
                source=source.value,
                started_at=started,
                finished_at=iso(self.store.clock()),
                outcome=status,
                error=error,
            )
            new_episode = status is S.FAILED and error is not None and error.retryable
            try:
                self.store.record_outcome(
                    task,
                    status,
                    result=result,
                    error=error,
                    attempt=record,
                    new_episode=new_episode,
                )
            except TaskConflict as exc:
                self.log.warning(
                    "outcome not recorded: claim lost", extra={**fields, "reason": str(exc)}
                )
                span.annotate("outcome", "LOST_CLAIM")
                return Outcome(task.id, None, error=error, note="claim lost", attempt=task.attempts)
            span.annotate("outcome", status.value)
            level = self.log.info if status is S.DONE else self.log.warning
            level(
                f"task {status.value.lower()}",
                extra={
                    **fields,
                    "status": status.value,
                    **(
                        {
                            "error_type": error.type,
                            "error": error.message,
                            "retryable": error.retryable,
                        }
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

    def _execute(self, task: Task, remaining_seconds: float | None) -> Any:
        definition = self.registry.get(task.type)
        data = definition.parse_input(task.data)
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
        )
        tries = definition.local_retries + 1
        for number in range(1, tries + 1):
            try:
                result = _jsonable(_invoke(definition, data, context, timeout))
                break
            except RetryableTaskError:
                if number == tries:
                    raise
                self._sleep(definition.local_retry_delay_seconds * 2 ** (number - 1))
        if item_size(task_to_item(task)) + value_size(result) + 512 > MAX_ITEM_BYTES:
            raise PermanentTaskError("task result is too large for the task item (400 KB)")
        return result

    # --- helpers ---------------------------------------------------------------------

    def _definition_or_none(self, task_type: str | None) -> TaskDefinition | None:
        if task_type is None or task_type not in self.registry:
            return None
        return self.registry.get(task_type)

    def _lease_seconds(self, definition: TaskDefinition | None, remaining: float | None) -> float:
        # Without the item (a claim by id) the type is unknown until the claim returns it;
        # the lease then covers the longest timeout of any registered type.
        if definition is not None:
            timeout = definition.timeout_seconds
        else:
            timeout = max(
                (d.timeout_seconds for d in self.registry), default=DEFAULT_TASK_TIMEOUT_SECONDS
            )
        if remaining is not None:
            timeout = min(timeout, remaining)
        return timeout + LEASE_GRACE_SECONDS


def _invoke(
    definition: TaskDefinition, data: BaseModel, context: TaskContext, timeout: float
) -> Any:
    """Run a handler, sync or async, and enforce its timeout."""
    if definition.is_async:

        async def bounded() -> Any:
            return await asyncio.wait_for(definition.handler(data, context), timeout)

        try:
            return asyncio.run(bounded())
        except TimeoutError as exc:
            raise TaskTimedOut(f"{definition.type} exceeded its {timeout:.1f} s timeout") from exc
    # A sync handler runs in a daemon thread so the wait, at least, is bounded; the thread
    # cannot be killed, but the Lambda freezes it when the invocation returns.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = definition.handler(data, context)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(target,),
        daemon=True,
        name=f"task-{context.task_id}",
    )
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TaskTimedOut(f"{definition.type} exceeded its {timeout:.1f} s timeout")
    if "error" in box:
        raise box["error"]
    return box.get("result")
