"""What every benchmark shares: figures, timing, the moto server, tables and streams."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

REGION = "us-east-1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Environment every benchmark runs under: dummy credentials, never real AWS.
BASE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "POWERTOOLS_LOG_LEVEL": "ERROR",  # the failure paths warn by design
    "TASK_RUNNER_TASK_MODULES": "runner.local.demo_tasks",
}
# Variables that would turn tracing on or point boto3 elsewhere if inherited.
SCRUBBED_ENV = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_LAMBDA_FUNCTION_NAME",
    "LAMBDA_TASK_ROOT",
    "_X_AMZN_TRACE_ID",
    "AWS_XRAY_DAEMON_ADDRESS",
    "POWERTOOLS_TRACE_DISABLED",
)


def apply_base_env() -> None:
    for name in SCRUBBED_ENV:
        os.environ.pop(name, None)
    os.environ.update(BASE_ENV)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a benchmark subprocess: ours, scrubbed, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(BASE_ENV)
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env


@dataclass
class Figure:
    """One measured figure, usually a ratio to a reference measured in the same run."""

    section: str
    name: str
    value: float | None
    unit: str = ""
    reference: float | None = None
    reference_name: str = ""
    target: str = ""
    passed: bool | None = None  # None: no target
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return ""
        return "PASS" if self.passed else "MISS"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def pending_item(task_id: str, task_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """A task as a producer writes it: only the documented required attributes."""
    from runner.items import serialize

    return serialize({"id": task_id, "type": task_type, "status": "PENDING", "data": data})


def insert_tasks(dynamodb: Any, table: str, items: Sequence[dict[str, Any]]) -> None:
    """The producer's inserts, 25 to a BatchWriteItem (not what is being measured)."""
    for start in range(0, len(items), 25):
        requests: dict[str, Any] = {
            table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        }
        while requests:
            response = dynamodb.batch_write_item(RequestItems=requests)
            requests = response.get("UnprocessedItems") or {}


class FakeLambdaContext:
    """What handler.py reads from a Lambda context."""

    def __init__(self, seconds: float = 900.0, name: str = "bench") -> None:
        self._deadline = time.monotonic() + seconds
        self.aws_request_id = "bench-request"
        self.function_name = name

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def clients_for(endpoint: str | None) -> dict[str, Any]:
    import boto3

    session = boto3.session.Session()
    return {
        name: session.client(name, region_name=REGION, endpoint_url=endpoint)
        for name in ("dynamodb", "dynamodbstreams")
    }
