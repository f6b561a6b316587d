"""A cancel the retry execution sees: not a failed execution (no alarm), and one whose
write's reply was lost still stops the execution."""

from __future__ import annotations

from runner.client import TaskRunnerClient
from runner.model import TaskStatus
from tests.integration.test_cancel_workflow import (
    _describe,
    flow,
    held_in_its_execution,
    realtime_flow,
)
from tests.integration.test_workflow import Workflow

__all__ = ["flow", "realtime_flow"]  # the fixtures, from the cancel tests


def test_a_cancelled_tasks_execution_is_not_counted_as_a_failed_execution(flow: Workflow) -> None:
    # Given a retryable failure whose retry execution has not started yet, cancelled
    # before routeFailed starts it (StopExecution finds nothing to stop)
    flow.insert("raced", "FLAKY_TASK", {"fail_times": 3})
    flow.pump()
    assert TaskRunnerClient(flow.app).cancel_task("raced")["status"] == "CANCELLED"
    flow.wait()
    assert flow.app.store.get("raced").status is TaskStatus.CANCELLED
    # Then its execution does not end FAILED: AWS/States ExecutionsFailed feeds
    # RetryExecutionsFailedAlarm (threshold 0, "a task's retries are exhausted"), and a
    # user's cancel is no failure (the runner's own metrics do not count it either)
    assert _describe(flow, "raced")["status"] != "FAILED"


def test_a_cancel_whose_write_reply_was_lost_still_stops_the_execution(
    realtime_flow: Workflow,
) -> None:
    from typing import Any

    from botocore.exceptions import ReadTimeoutError

    flow = realtime_flow
    app = flow.app
    # Given a retryable failure whose execution runs (waiting out a live lease)
    held_in_its_execution(flow, "held")
    # and the reply of the cancel's write lost (it applied; the SDK's retry then fails its
    # condition, the status being CANCELLED already)
    lost: list[int] = []

    def before(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["cancel_write"] = b'"CANCELLED"' in params.get("body", b"")

    def after(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if context.get("cancel_write") and not lost and "Error" not in parsed:
            lost.append(1)
            raise ReadTimeoutError(endpoint_url="https://dynamodb")

    app.clients.dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", before)
    app.clients.dynamodb.meta.events.register("after-call.dynamodb.UpdateItem", after)
    result = TaskRunnerClient(app).cancel_task("held")
    assert lost == [1] and app.store.get("held").status is TaskStatus.CANCELLED
    # Then this cancel still stops the execution (ABORTED), as when no reply was lost,
    # rather than answering "already cancelled" and leaving it to run into its Cancelled
    # state (see #2)
    assert result.get("execution_stopped"), result
    assert _describe(flow, "held")["status"] == "ABORTED"
