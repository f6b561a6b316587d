"""Lambda entry points. Thin: parse the event, call the runner, shape the response.

Everything heavy is built on the first call (runner.app.get_app), not at import.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner import runtime, tracing
from runner.aws import aws_deadline
from runner.logs import get_logger

if TYPE_CHECKING:
    from runner.attempts import AttemptInput

# Kept back from the Lambda's remaining time so outcomes are recorded before it ends.
DEADLINE_MARGIN_SECONDS = runtime.DEADLINE_MARGIN_SECONDS
# Used when there is no Lambda context (local runs, tests).
NO_CONTEXT_SECONDS = 900.0
# run_task's error messages are cut to this before they leave the Lambda: Step Functions
# puts the error in the Catch's `$.error`, and a state's data over 256 KiB fails the
# execution with States.DataLimitExceeded, which `States.ALL` does not catch.
ERROR_MESSAGE_MAX_BYTES = 8 * 1024


def _remaining(context: Any) -> float:
    getter = getattr(context, "get_remaining_time_in_millis", None)
    return getter() / 1000.0 if callable(getter) else NO_CONTEXT_SECONDS


def _log_context(context: Any) -> None:
    request_id = getattr(context, "aws_request_id", None)
    if request_id:
        get_logger().append_keys(request_id=request_id)


@tracing.lambda_handler
def process_stream(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """DynamoDB stream → run the batch's PENDING INSERTs; report unrecorded outcomes."""
    from runner.app import get_app

    _log_context(context)
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        get_logger().warning(
            "stream event without Records", extra={"event_type": type(event).__name__}
        )
        return {"batchItemFailures": []}
    try:
        with aws_deadline(_remaining(context) - DEADLINE_MARGIN_SECONDS):
            result = get_app().stream.process(
                records, remaining_seconds=lambda: _remaining(context) - DEADLINE_MARGIN_SECONDS
            )
        get_logger().info(
            "batch processed",
            extra={
                "records": len(records),
                "tasks": len(result.outcomes),
                "ignored": result.ignored,
                "malformed": result.malformed,
                "failures": len(result.failed_sequence_numbers),
            },
        )
    finally:
        # Every outcome is recorded; a handler still running must not outlive the runtime.
        runtime.end_if_abandoned()
    return result.response()


@tracing.lambda_handler
def route_failed(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """DynamoDB stream (MODIFY to FAILED, retryable) → one retry execution per episode;
    (REMOVE of an item with payload objects) → its objects deleted."""
    from runner.app import get_app

    _log_context(context)
    from runner.payload_cleanup import delete_removed

    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        return {"batchItemFailures": []}
    # Its mapping's second filter: items with payload objects, removed (TTL): delete them.
    removed = [r for r in records if isinstance(r, dict) and r.get("eventName") == "REMOVE"]
    changed = [r for r in records if not (isinstance(r, dict) and r.get("eventName") == "REMOVE")]
    app = get_app()
    with aws_deadline(_remaining(context) - DEADLINE_MARGIN_SECONDS):
        response = app.workflow.route(changed).response() if changed else {"batchItemFailures": []}
        failed = delete_removed(app.store.payloads, removed) if removed else []
    response["batchItemFailures"] += [{"itemIdentifier": s} for s in failed]
    return response


@tracing.lambda_handler
def run_task(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One step of the retry state machine. Payload {"mode", "task_id", "episode",
    "task_type", "created_at"} ({"task_id", "episode"} from the previous version's
    executions, in flight during a deploy):

    - mode "run" (the default): one attempt; returns its outcome, or raises
      TaskRetryableError, TaskLeaseHeld, RetriesExhausted, TaskFailedPermanently or
      TaskCancelled;
    - mode "exhaust" (the Catch, with "error": the error it caught): marks the task
      FAILED with its retries exhausted; returns {"outcome": exhausted|done|superseded}.

    Any other failure is raised as TaskInfrastructureError, without its text.
    """
    from runner.app import get_app
    from runner.attempts import AttemptInput
    from runner.errors import (
        PermanentTaskError,
        RetriesExhausted,
        TaskCancelled,
        TaskFailedPermanently,
        TaskInfrastructureError,
        TaskLeaseHeld,
        TaskRetryableError,
    )

    # What run_task raises on purpose: the state machine matches each by name. Anything
    # else becomes TaskInfrastructureError, which it retries on a schedule of its own.
    signals = (
        TaskRetryableError,
        TaskLeaseHeld,
        RetriesExhausted,
        TaskFailedPermanently,
        TaskInfrastructureError,
        PermanentTaskError,
        TaskCancelled,
    )

    _log_context(context)
    if not isinstance(event, dict):
        raise PermanentTaskError("run_task needs a JSON object")
    task_id, episode = event.get("task_id"), event.get("episode", 0)
    if not isinstance(task_id, str) or not isinstance(episode, int) or isinstance(episode, bool):
        raise PermanentTaskError("run_task needs {'task_id': str, 'episode': int}")
    given = AttemptInput(
        task_id=task_id,
        episode=episode,
        task_type=event.get("task_type") if isinstance(event.get("task_type"), str) else None,
        created_at=event.get("created_at") if isinstance(event.get("created_at"), str) else None,
    )
    mode = event.get("mode", "run")
    remaining = _remaining(context) - DEADLINE_MARGIN_SECONDS
    try:
        with aws_deadline(remaining):
            attempts = get_app().attempts
            if mode == "exhaust":
                error = event.get("error")
                return attempts.exhaust(
                    given, error if isinstance(error, str) else None, remaining_seconds=remaining
                )
            if mode != "run":
                raise PermanentTaskError(f"run_task: unknown mode {str(mode)[:20]!r}")
            try:
                return attempts.run(given, remaining_seconds=remaining).as_dict()
            except Exception as exc:
                if "mode" in event:
                    raise
                return _for_the_previous_definition(exc, given, remaining)
    except Exception as exc:
        if isinstance(exc, signals):
            from runner.limits import cut

            message = str(exc)
            # Cut, and made valid UTF-8 (a lone surrogate would fail the runtime's reply)
            bounded = cut(message, ERROR_MESSAGE_MAX_BYTES)
            if bounded != message:
                raise type(exc)(bounded) from None
            raise
        get_logger().error(
            "run_task failed", extra={"task_id": task_id, "error_type": type(exc).__name__}
        )
        raise TaskInfrastructureError(f"{type(exc).__name__} in run_task") from exc
    finally:
        # An attempt whose handler could not be stopped: end the runtime (Step Functions
        # sees the invocation fail and retries; the next attempt waits for the lease).
        runtime.end_if_abandoned()


def _for_the_previous_definition(
    exc: Exception, given: AttemptInput, remaining: float
) -> dict[str, Any]:
    """An attempt of an execution started before the deploy (its payload has no "mode"):
    it keeps the previous definition (UpdateStateMachine: running executions continue to
    use it), whose Retry knows only TaskRetryableError, TaskLeaseHeld and Lambda's errors,
    and whose Catch is a native update that checks only the episode, so it would mark a
    live claim exhausted. So what reached that Catch is answered here: a permanent failure
    ends the execution as it did (its outcome returned), exhausted retries are marked by
    the exhaust mode's own conditional write, and anything else is TaskLeaseHeld, which
    that definition retries (20 times, 60 s apart) until the claim's lease has passed."""
    from runner.app import get_app
    from runner.errors import (
        PermanentTaskError,
        RetriesExhausted,
        TaskCancelled,
        TaskFailedPermanently,
        TaskLeaseHeld,
        TaskRetryableError,
    )

    if isinstance(exc, TaskRetryableError | TaskLeaseHeld | PermanentTaskError):
        raise exc
    if isinstance(exc, TaskFailedPermanently):
        return {"task_id": given.task_id, "status": "FAILED", "note": str(exc)}
    if isinstance(exc, TaskCancelled):  # the task stays CANCELLED: the execution ends now
        return {"task_id": given.task_id, "status": "CANCELLED", "note": str(exc)}
    try:
        if isinstance(exc, RetriesExhausted):
            return get_app().attempts.exhaust(
                given, RetriesExhausted.__name__, remaining_seconds=remaining
            )
    except TaskLeaseHeld:
        raise
    except Exception as inner:
        exc = inner
    get_logger().error(
        "run_task failed (an execution of the previous definition: retried as a held lease)",
        extra={"task_id": given.task_id, "error_type": type(exc).__name__},
    )
    raise TaskLeaseHeld(f"{type(exc).__name__} in run_task") from exc


# The export function (its own, least-privileged role) runs the same code: the state
# machine invokes it for EXPORT_DB, the only task type that reads the whole table.
run_export = run_task


@tracing.lambda_handler
def fire_timers(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The timer queue (SQS): delayed tasks promoted SCHEDULED → PENDING at their time,
    early ones handed back to the queue, recurring schedules' fires turned into tasks."""
    from runner.app import get_app

    _log_context(context)
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        return {"batchItemFailures": []}
    with aws_deadline(_remaining(context) - DEADLINE_MARGIN_SECONDS):
        report = get_app().timer_inbox.handle(records)
    get_logger().info(
        "timers fired",
        extra={
            "records": len(records),
            "promoted": report.promoted,
            "requeued": report.requeued,
            "stale": report.stale,
            "fires_created": report.created,
            "duplicates": report.duplicates,
            "failures": len(report.failed_message_ids),
        },
    )
    return report.response()


def _scheduled_time(event: Any) -> datetime | None:
    """EventBridge's `time` of a scheduled event (its minute, exactly); None without one."""
    value = event.get("time") if isinstance(event, dict) else None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except (AttributeError, ValueError):
        return None


@tracing.lambda_handler
def sweep(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled: failed stream batches replayed, expired leases → FAILED for retry,
    missed PENDING tasks run, tasks left without a retry execution given one."""
    from runner.app import get_app

    _log_context(context)
    remaining = _remaining(context) - DEADLINE_MARGIN_SECONDS
    try:
        with aws_deadline(remaining):
            report = get_app().sweeper.sweep(
                remaining_seconds=remaining, scheduled_at=_scheduled_time(event)
            )
        get_logger().info("sweep finished", extra=report.as_dict())
    finally:
        runtime.end_if_abandoned()
    return report.as_dict()
