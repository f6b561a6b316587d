"""The runner's CloudWatch metrics, in the embedded metric format (EMF): printed as JSON
log lines that CloudWatch Logs turns into metrics, so emitting them costs no API call.

Per task type (dimension `type`; failures also by `outcome`, retryable or permanent):

- `TaskSucceeded`, `TaskFailed` (`outcome`), `TaskTimedOut`: each recorded outcome (a
  timed-out attempt counts as failed too, retryable);
- `TaskRetried`: an attempt after the first (the retry workflow's, mostly);
- `RetriesExhausted`: the workflow gave up (its exhaust step, `runner.attempts`; Step
  Functions itself emits no EMF);
- `HandlerDuration` (ms): the task's handler, per attempt;
- `QueueLatency` (ms): from the task's creation to its first claim.

One EMF document carries one set of dimension values, so what a batch of mixed types
measured is collected here and printed at the end of the invocation (`flush`, which
`runner.tracing.lambda_handler` calls), one document per type and outcome (Powertools'
`EphemeralMetrics`, which holds many values of a metric, where `single_metric` holds one).
Outside Lambda (the CLI, tests) nothing is printed: the CLI's stdout is its answer.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

from runner.logs import get_logger

if TYPE_CHECKING:
    from runner.model import ClaimSource, Task, TaskErrorInfo

NAMESPACE_ENV = "POWERTOOLS_METRICS_NAMESPACE"
DEFAULT_NAMESPACE = "TaskRunner"
# Set in every Lambda environment (AWS's reserved variable).
LAMBDA_ENV = "AWS_LAMBDA_FUNCTION_NAME"

SUCCEEDED = "TaskSucceeded"
FAILED = "TaskFailed"
TIMED_OUT = "TaskTimedOut"
RETRIED = "TaskRetried"
RETRIES_EXHAUSTED = "RetriesExhausted"
HANDLER_DURATION = "HandlerDuration"
QUEUE_LATENCY = "QueueLatency"
COUNTS = (SUCCEEDED, FAILED, TIMED_OUT, RETRIED, RETRIES_EXHAUSTED)
DURATIONS = (HANDLER_DURATION, QUEUE_LATENCY)

TYPE = "type"
OUTCOME = "outcome"
RETRYABLE, PERMANENT = "retryable", "permanent"

_COUNT, _MILLISECONDS = "Count", "Milliseconds"


def namespace() -> str:
    return os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def enabled() -> bool:
    """In a Lambda environment (the local stack's included), unless Powertools' own
    POWERTOOLS_METRICS_DISABLED says otherwise."""
    return bool(os.environ.get(LAMBDA_ENV))


class Recorder:
    """What an invocation measured, by dimension values, until `flush`. Thread-safe: a
    stream batch runs its tasks on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[tuple[str, str], ...], dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )

    def add(self, name: str, value: float, **dimensions: str) -> None:
        key = tuple(sorted(dimensions.items()))
        with self._lock:
            self._values[key][name].append(float(value))

    def take(self) -> dict[tuple[tuple[str, str], ...], dict[str, list[float]]]:
        with self._lock:
            taken = {k: dict(v) for k, v in self._values.items()}
            self._values.clear()
        return taken

    def flush(self) -> int:
        """Print one EMF document per set of dimension values; returns how many."""
        taken = self.take()
        if not taken or not enabled():
            return 0
        from aws_lambda_powertools.metrics import EphemeralMetrics

        printed = 0
        for dimensions, metrics in taken.items():
            # service="": no `service` dimension from POWERTOOLS_SERVICE_NAME (the
            # dashboard and alarms name exactly `type` and `outcome`).
            emf = EphemeralMetrics(namespace=namespace(), service="")
            for name, values in metrics.items():
                unit = _MILLISECONDS if name in DURATIONS else _COUNT
                for value in values:
                    emf.add_metric(name=name, unit=unit, value=value)
            for dimension, named in dimensions:
                emf.add_dimension(name=dimension, value=named)
            emf.flush_metrics()
            printed += 1
        return printed


_recorder = Recorder()


def flush() -> int:
    """Print what this invocation measured (the end of every handler)."""
    try:
        return _recorder.flush()
    except Exception as exc:  # a metric must never fail the invocation it measures
        get_logger().warning("metrics not emitted", extra={"error_type": type(exc).__name__})
        return 0


def recorded(task_type: str, status: str, error: TaskErrorInfo | None) -> None:
    """A recorded outcome: DONE, or FAILED / RETRYING with the error's retryability
    (another status, CANCELLED say, is neither)."""
    if status == "DONE":
        _recorder.add(SUCCEEDED, 1, **{TYPE: task_type})
        return
    if error is None or status not in ("FAILED", "RETRYING"):
        return
    kind = RETRYABLE if error.retryable else PERMANENT
    _recorder.add(FAILED, 1, **{TYPE: task_type, OUTCOME: kind})
    if error.type == "TaskTimedOut":
        _recorder.add(TIMED_OUT, 1, **{TYPE: task_type})


def claimed(task: Task, source: ClaimSource, claimed_at: str) -> None:
    """A claim about to run: queue latency (creation to first claim), or, past the first
    attempt (the retry workflow's, `retry-task`'s, the sweeper's), a retry."""
    if task.attempts > 1:
        retried(task.type)
    if task.attempts == 1 and task.created_at:
        created, claimed = _parse(task.created_at), _parse(claimed_at)
        if created is not None and claimed is not None:
            queue_latency(task.type, (claimed - created).total_seconds())


def _parse(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def handler_duration(task_type: str, seconds: float) -> None:
    _recorder.add(HANDLER_DURATION, seconds * 1000.0, **{TYPE: task_type})


def queue_latency(task_type: str, seconds: float) -> None:
    _recorder.add(QUEUE_LATENCY, max(0.0, seconds) * 1000.0, **{TYPE: task_type})


def retried(task_type: str) -> None:
    """An attempt after the task's first."""
    _recorder.add(RETRIED, 1, **{TYPE: task_type})


def retries_exhausted(task_type: str, reason: str, episode: int) -> None:
    """The retry workflow gave up on a task: `reason` is the error that ended it
    (`RetriesExhausted`, or an infrastructure error that outlasted its retries). Also
    one structured log line (with the reason, which is no dimension)."""
    _recorder.add(RETRIES_EXHAUSTED, 1, **{TYPE: task_type})
    get_logger().warning(
        "retries exhausted",
        extra={
            "metric": RETRIES_EXHAUSTED,
            "task_type": task_type,
            "reason": reason,
            "episode": episode,
        },
    )


def pending() -> dict[tuple[tuple[str, str], ...], dict[str, list[float]]]:
    """What is recorded and not yet flushed (for tests)."""
    with _recorder._lock:
        return {k: {n: list(v) for n, v in m.items()} for k, m in _recorder._values.items()}


def discard() -> None:
    _recorder.take()


def registered_types() -> list[str]:
    """The task types the deployment registers (tasks/ plus TASK_RUNNER_TASK_MODULES):
    what `infra/metrics.js` makes an alarm and dashboard lines for, at package time."""
    from runner.app import default_registry
    from runner.config import Settings

    return sorted(d.type for d in default_registry(Settings.from_env().task_modules))


if __name__ == "__main__":  # `python -m runner.metrics`: the types, as JSON
    import json

    print(json.dumps(registered_types()))
