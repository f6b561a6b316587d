"""Finished and failed per minute from the runner's CloudWatch metrics (moto's
CloudWatch, as the functions' EMF lines become metrics): only the dimension sets the
runner prints are summed, and past GetMetricData's 500 queries a call nothing is dropped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from runner import metrics
from runner.dashboard.throughput import CloudWatchThroughput

NAMESPACE = "TaskRunner/test"


def put(cloudwatch: Any, name: str, value: float, when: datetime, **dims: str) -> None:
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                "Timestamp": when,
                "Value": value,
                "Unit": "Count",
            }
        ],
    )


def test_only_the_runners_dimension_sets_are_summed(app: Any) -> None:
    cloudwatch = app.clients.client("cloudwatch")
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    put(cloudwatch, metrics.SUCCEEDED, 3, now, type="A")
    put(cloudwatch, metrics.SUCCEEDED, 2, now, type="B")
    put(cloudwatch, metrics.FAILED, 1, now, type="A", outcome="permanent")
    put(cloudwatch, metrics.FAILED, 4, now - timedelta(minutes=2), type="B", outcome="retryable")
    # an aggregate dimension set (none) and another one: never counted again
    put(cloudwatch, metrics.SUCCEEDED, 5, now)
    put(cloudwatch, metrics.FAILED, 5, now, type="A")

    seen = CloudWatchThroughput(cloudwatch, NAMESPACE, clock=lambda: now)()

    assert seen.available
    assert (seen.succeeded, seen.failed) == (5, 5)
    assert seen.minutes[-1].succeeded == 5 and seen.minutes[-1].failed == 1
    assert seen.minutes[-3].failed == 4


def test_more_metrics_than_one_call_can_read_are_all_summed(app: Any) -> None:
    cloudwatch = app.clients.client("cloudwatch")
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    for n in range(520):
        put(cloudwatch, metrics.SUCCEEDED, 1, now, type=f"TYPE_{n}")

    seen = CloudWatchThroughput(cloudwatch, NAMESPACE, clock=lambda: now)()

    assert seen.succeeded == 520
