"""The project's one error tree.

Retryable and permanent task failures are distinct types: the retry workflow depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading


class TaskRunnerError(Exception):
    """Base class of every error this project raises on purpose."""


# --- Registration and input ------------------------------------------------------------


class RegistryError(TaskRunnerError):
    """A task type was registered twice, or is malformed."""


class UnknownTaskType(TaskRunnerError):
    """No task is registered under this type."""


class InvalidTaskInput(TaskRunnerError):
    """The task's data does not match its input model."""


class ItemTooLarge(TaskRunnerError):
    """The item would exceed DynamoDB's 400 KB item limit."""


class MalformedTask(TaskRunnerError):
    """A stored item or stream record is not a task this runner can read."""


# --- Storage ----------------------------------------------------------------------------


class StoreError(TaskRunnerError):
    """DynamoDB could not be reached or refused a request for a reason other than a condition."""

    def __init__(self, message: str, *, transient: bool = True, code: str = "") -> None:
        super().__init__(message)
        # False when a retry cannot help (e.g. a ValidationException on a malformed item).
        self.transient = transient
        # AWS's error code; the message never carries AWS's own text (it may quote data).
        self.code = code


class TaskNotFound(TaskRunnerError):
    """No task with this id exists."""


class TaskConflict(TaskRunnerError):
    """A conditional write lost: the task is not in the state the caller expected."""

    def __init__(self, message: str, old: object | None = None) -> None:
        super().__init__(message)
        # The item as it was when the condition failed, where DynamoDB returned it.
        self.old = old


class TaskAlreadyClaimed(TaskConflict):
    """Another worker (or an earlier delivery of the same record) claimed the task first."""


class IdempotencyConflict(TaskConflict):
    """An idempotency key already names a task with another type or input."""


class WaitTimedOut(TaskRunnerError):
    """`wait` gave up before the task was final; `status` is the one it was last seen in."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


# --- Task outcomes ----------------------------------------------------------------------


class TaskFailure(TaskRunnerError):
    """Raised by task handlers to fail a task; the subclass says whether a retry may help."""

    retryable: bool = False


class RetryableTaskError(TaskFailure):
    """A transient failure: the retry workflow will run the task again with backoff."""

    retryable = True


class PermanentTaskError(TaskFailure):
    """A failure no retry can fix; the task ends FAILED."""

    retryable = False


class TaskCancelled(TaskFailure):
    """Raised by a handler that saw `ctx.cancel_requested` and stopped: the task ends
    CANCELLED (an async handler is cancelled at its next await instead). Also the signal
    run_task raises when its task was cancelled (the state machine ends the execution)."""

    retryable = False


class TaskTimedOut(RetryableTaskError):
    """The task outlived its timeout or lease."""

    def __init__(self, message: str, *, abandoned: Sequence[threading.Thread] = ()) -> None:
        super().__init__(message)
        # The handler's threads that could not be stopped and still run (none: stopped).
        self.abandoned = tuple(abandoned)


# --- Durable steps and payloads ---------------------------------------------------------


class StepError(PermanentTaskError):
    """A step was misused: a name that is not valid, or used twice in one attempt."""


class StepNotStorable(PermanentTaskError):
    """A step's result is not JSON DynamoDB can store, or exceeds the payload cap."""


class StepNotRecorded(TaskRunnerError):
    """A step's result could not be recorded: the claim no longer holds (taken over)."""


class PayloadTooLarge(InvalidTaskInput):
    """A payload exceeds the cap (`runner.payloads.MAX_PAYLOAD_BYTES`)."""


class PayloadUnavailable(TaskRunnerError):
    """The payload bucket could not be reached or refused a request (retryable)."""


class PayloadCorrupt(TaskRunnerError):
    """A payload reference points at an object that is missing or does not match it."""


# --- Workflow signals (names matched by the state machine's Retry/Catch) ------------------


class TaskRetryableError(TaskRunnerError):
    """Raised by run_task so the state machine's Retry schedules another attempt."""


class TaskLeaseHeld(TaskRunnerError):
    """Raised by run_task while an earlier attempt (a timed-out Lambda) still holds the lease."""


class RetriesExhausted(TaskRunnerError):
    """Raised by run_task when the attempts allowed for the task's type are spent."""


class TaskFailedPermanently(TaskRunnerError):
    """Raised by run_task when its attempt ended the task FAILED for good (the execution fails)."""


class TaskInfrastructureError(TaskRunnerError):
    """Raised by run_task when DynamoDB, Step Functions or the runner itself failed, not the
    task: the state machine retries it on its own, longer schedule."""


class WorkflowError(TaskRunnerError):
    """Step Functions could not be asked to start or describe an execution."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        # AWS's error code (e.g. ExecutionAlreadyExists); never AWS's own text.
        self.code = code


class ConfigurationError(TaskRunnerError):
    """A setting the requested operation needs is missing."""


class TimerError(TaskRunnerError):
    """A delayed task's timer (its SQS message or one-time schedule) could not be set."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        # AWS's error code; never AWS's own text.
        self.code = code


# --- The command line -------------------------------------------------------------------


class UsageError(TaskRunnerError):
    """The command line is not one the CLI accepts; nothing ran."""
