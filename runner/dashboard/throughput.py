"""Finished and failed tasks per minute over the last hour, from the runner's CloudWatch
metrics (what its functions emit in the embedded metric format), never by counting
items: DONE tasks are not indexed by finish time, and counting them would read them.

The same CloudWatch API answers on AWS and on the local stack, which turns the
functions' metric log lines into CloudWatch metrics as CloudWatch Logs does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from runner import metrics as runner_metrics
from runner.dashboard.cache import TtlCache

# The metrics' namespace: Powertools' variable, as the functions read it (serverless.yml
# sets TaskRunner/<stage>; the stack's output MetricsNamespace names it).
NAMESPACE_ENV = runner_metrics.NAMESPACE_ENV
DEFAULT_NAMESPACE = runner_metrics.DEFAULT_NAMESPACE
SUCCEEDED_METRIC = runner_metrics.SUCCEEDED
FAILED_METRIC = runner_metrics.FAILED
# The dimension set each is printed with (runner.metrics): only those are summed, so a
# dimension set added later (an aggregate, say) is never counted twice.
DIMENSION_NAMES = {
    SUCCEEDED_METRIC: frozenset({runner_metrics.TYPE}),
    FAILED_METRIC: frozenset({runner_metrics.TYPE, runner_metrics.OUTCOME}),
}
WINDOW_MINUTES = 60
PERIOD_SECONDS = 60
# Per-minute figures change once a minute; CloudWatch bills GetMetricData per metric read.
CACHE_SECONDS = 30.0
# GetMetricData takes at most 500 queries per call.
MAX_QUERIES = 500


@dataclass(frozen=True)
class Minute:
    at: datetime
    succeeded: int
    failed: int


@dataclass(frozen=True)
class Throughput:
    available: bool
    reason: str = ""
    minutes: list[Minute] = field(default_factory=list)
    namespace: str = ""

    @property
    def peak(self) -> int:
        return max([m.succeeded + m.failed for m in self.minutes] or [0])

    @property
    def succeeded(self) -> int:
        return sum(m.succeeded for m in self.minutes)

    @property
    def failed(self) -> int:
        return sum(m.failed for m in self.minutes)


class CloudWatchThroughput:
    """Reads the two counters, every dimension combination of each, summed per minute."""

    def __init__(
        self,
        cloudwatch: Any,
        namespace: str,
        *,
        clock: Any = None,
    ) -> None:
        self.cloudwatch = cloudwatch
        self.namespace = namespace
        self._clock = clock or (lambda: datetime.now(UTC))
        self._cache: TtlCache[Throughput] = TtlCache(CACHE_SECONDS)

    def __call__(self) -> Throughput:
        return self._cache.get("throughput", self._read).value

    def forget(self) -> None:
        self._cache.clear()

    def _metrics(self, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Namespace": self.namespace, "MetricName": name}
        wanted = DIMENSION_NAMES[name]
        while True:
            page = self.cloudwatch.list_metrics(**kwargs)
            found += [
                m
                for m in page.get("Metrics", [])
                if frozenset(d["Name"] for d in m.get("Dimensions", [])) == wanted
            ]
            token = page.get("NextToken")
            if not token:
                return found
            kwargs["NextToken"] = token

    def _read(self) -> Throughput:
        from botocore.exceptions import BotoCoreError, ClientError

        end = self._clock().replace(second=0, microsecond=0) + timedelta(minutes=1)
        start = end - timedelta(minutes=WINDOW_MINUTES)
        try:
            metrics = [(SUCCEEDED_METRIC, m) for m in self._metrics(SUCCEEDED_METRIC)]
            metrics += [(FAILED_METRIC, m) for m in self._metrics(FAILED_METRIC)]
            sums = self._sums(metrics, start, end)
        except (ClientError, BotoCoreError) as exc:
            return Throughput(False, f"CloudWatch could not be read: {exc}", [], self.namespace)
        if not metrics:
            return Throughput(
                False,
                f"No task has finished yet: no {SUCCEEDED_METRIC} or {FAILED_METRIC} metric"
                f" in the namespace {self.namespace!r}.",
                [],
                self.namespace,
            )
        minutes = []
        for n in range(WINDOW_MINUTES):
            at = start + timedelta(minutes=n)
            minutes.append(
                Minute(
                    at, int(sums[SUCCEEDED_METRIC].get(at, 0)), int(sums[FAILED_METRIC].get(at, 0))
                )
            )
        return Throughput(True, "", minutes, self.namespace)

    def _sums(
        self, metrics: list[tuple[str, dict[str, Any]]], start: datetime, end: datetime
    ) -> dict[str, dict[datetime, float]]:
        sums: dict[str, dict[datetime, float]] = {SUCCEEDED_METRIC: {}, FAILED_METRIC: {}}
        for first in range(0, len(metrics), MAX_QUERIES):  # at most 500 per call
            self._sum_into(sums, metrics[first : first + MAX_QUERIES], start, end)
        return sums

    def _sum_into(
        self,
        sums: dict[str, dict[datetime, float]],
        metrics: list[tuple[str, dict[str, Any]]],
        start: datetime,
        end: datetime,
    ) -> None:
        queries = [
            {
                "Id": f"m{i}",
                "MetricStat": {
                    "Metric": {k: metric[k] for k in ("Namespace", "MetricName", "Dimensions")},
                    "Period": PERIOD_SECONDS,
                    "Stat": "Sum",
                },
                "ReturnData": True,
            }
            for i, (_, metric) in enumerate(metrics)
        ]
        names = {f"m{i}": name for i, (name, _) in enumerate(metrics)}
        kwargs: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end}
        while True:
            page = self.cloudwatch.get_metric_data(**kwargs)
            for result in page.get("MetricDataResults", []):
                into = sums[names[result["Id"]]]
                for stamp, value in zip(
                    result.get("Timestamps", []), result.get("Values", []), strict=False
                ):
                    minute = stamp.astimezone(UTC).replace(second=0, microsecond=0)
                    into[minute] = into.get(minute, 0.0) + float(value)
            token = page.get("NextToken")
            if not token:
                return
            kwargs["NextToken"] = token


def throughput_source(app: Any, namespace: str | None = None) -> CloudWatchThroughput:
    """The throughput of the runner `app` talks to (its endpoint, region, credentials), in
    `namespace`, else POWERTOOLS_METRICS_NAMESPACE's, else the default."""
    namespace = namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
    return CloudWatchThroughput(app.clients.client("cloudwatch"), namespace)
