"""Lambda entry points. Thin: parse the event, call the runner, shape the response.

Everything heavy is built on the first call (runner.app.get_app), not at import.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runner import tracing
from runner.aws import aws_deadline
from runner.logs import get_logger

# Kept back from the Lambda's remaining time so outcomes are recorded before it ends.
DEADLINE_MARGIN_SECONDS = 10.0
# Used when there is no Lambda context (local runs, tests).
NO_CONTEXT_SECONDS = 900.0


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
    return result.response()


@tracing.lambda_handler
def route_failed(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """DynamoDB stream (MODIFY to FAILED, retryable) → one retry execution per episode."""
    from runner.app import get_app

    _log_context(context)
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        return {"batchItemFailures": []}
    with aws_deadline(_remaining(context) - DEADLINE_MARGIN_SECONDS):
        return get_app().workflow.route(records).response()


@tracing.lambda_handler
def run_task(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One attempt of the retry state machine: {"task_id", "episode"} → outcome.

    Raises TaskRetryableError (the state machine retries) or RetriesExhausted (it gives up).
    """
    from runner.app import get_app
    from runner.errors import PermanentTaskError

    _log_context(context)
    task_id = event.get("task_id") if isinstance(event, dict) else None
    episode = event.get("episode", 0) if isinstance(event, dict) else None
    if not isinstance(task_id, str) or not isinstance(episode, int):
        raise PermanentTaskError("run_task needs {'task_id': str, 'episode': int}")
    remaining = _remaining(context) - DEADLINE_MARGIN_SECONDS
    with aws_deadline(remaining):
        return get_app().runner.run_retry(task_id, episode, remaining_seconds=remaining).as_dict()


def _scheduled_time(event: Any) -> datetime | None:
    """EventBridge's `time` of a scheduled event (its minute, exactly); None without one."""
    value = event.get("time") if isinstance(event, dict) else None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except (AttributeError, ValueError):
        return None


@tracing.lambda_handler
def sweep(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled: expired leases → FAILED for retry; missed PENDING tasks → run."""
    from runner.app import get_app

    _log_context(context)
    remaining = _remaining(context) - DEADLINE_MARGIN_SECONDS
    with aws_deadline(remaining):
        report = get_app().sweeper.sweep(
            remaining_seconds=remaining, scheduled_at=_scheduled_time(event)
        )
    get_logger().info("sweep finished", extra=report.as_dict())
    return report.as_dict()
