"""CloudWatch Logs' part in the embedded metric format, for a local Lambda environment:
a line the function prints that is an EMF document becomes the metrics it declares
(PutMetricData on the local endpoint), as CloudWatch Logs extracts them on AWS. Every
line still reaches stdout, as it reaches the function's log stream there.

Installed by `runner.local.lambda_worker` around the handler's stdout; the runner itself
only prints (runner.metrics).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

# PutMetricData takes at most 1,000 data points per call.
MAX_DATUMS = 1000


def metric_data(document: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """(namespace, MetricData) for one EMF document, or None if it is not one. Each
    metric, under each dimension set the directive names, one datum per value."""
    directives = (
        document.get("_aws", {}).get("CloudWatchMetrics") if isinstance(document, dict) else None
    )
    if not isinstance(directives, list) or not directives:
        return None
    stamp = document["_aws"].get("Timestamp")
    when = (
        datetime.fromtimestamp(stamp / 1000, UTC)
        if isinstance(stamp, (int, float))
        else datetime.now(UTC)
    )
    namespace, data = "", []
    for directive in directives:
        namespace = str(directive.get("Namespace", ""))
        for dimension_set in directive.get("Dimensions", []) or [[]]:
            dimensions = [
                {"Name": n, "Value": str(document[n])} for n in dimension_set if n in document
            ]
            for metric in directive.get("Metrics", []):
                name = metric.get("Name")
                value = document.get(name)
                values = value if isinstance(value, list) else [value]
                for number in values:
                    if isinstance(number, (int, float)):
                        datum: dict[str, Any] = {
                            "MetricName": name,
                            "Dimensions": dimensions,
                            "Timestamp": when,
                            "Value": float(number),
                            "Unit": metric.get("Unit", "None"),
                        }
                        data.append(datum)
    return (namespace, data) if namespace and data else None


class EmfLogs:
    """A text stream in front of the real stdout: every write goes through; each whole
    line that is an EMF document is also put to CloudWatch."""

    def __init__(self, stream: IO[str], cloudwatch: Any = None) -> None:
        self._stream = stream
        self._cloudwatch = cloudwatch  # made on the first document (boto3 is slow to import)
        self._partial = ""

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.startswith("{") and '"_aws"' in line:
                self._put(line)
        return written

    def _put(self, line: str) -> None:
        try:
            found = metric_data(json.loads(line))
            if found is None:
                return
            namespace, data = found
            if self._cloudwatch is None:
                import boto3

                self._cloudwatch = boto3.client("cloudwatch")
            for start in range(0, len(data), MAX_DATUMS):
                self._cloudwatch.put_metric_data(
                    Namespace=namespace, MetricData=data[start : start + MAX_DATUMS]
                )
        except Exception as exc:  # CloudWatch Logs drops a document it cannot read
            print(f"local EMF: metrics not put: {type(exc).__name__}: {exc}", file=sys.stderr)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install() -> None:
    """Put this environment's EMF lines to the local endpoint's CloudWatch."""
    sys.stdout = EmfLogs(sys.stdout)
