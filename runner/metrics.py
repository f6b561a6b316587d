"""Operational signals worth a metric. For now each is one structured log line with a
`metric` key (a CloudWatch Logs metric filter can count them); the dashboard work will
emit them with Powertools Metrics from here, the one place that knows them."""

from __future__ import annotations

from runner.logs import get_logger

RETRIES_EXHAUSTED = "RetriesExhausted"


def retries_exhausted(task_type: str, reason: str, episode: int) -> None:
    """The retry workflow gave up on a task: `reason` is the error that ended it
    (`RetriesExhausted`, or an infrastructure error that outlasted its retries)."""
    get_logger().warning(
        "retries exhausted",
        extra={
            "metric": RETRIES_EXHAUSTED,
            "task_type": task_type,
            "reason": reason,
            "episode": episode,
        },
    )
