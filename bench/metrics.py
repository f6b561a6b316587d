"""10. What the runner's metrics add to an invocation (runner/metrics.py).

A stream batch of 100 tasks of 4 types (70 DONE, 20 FAILED retryable of which 5 timed
out, 10 FAILED permanently) is recorded as the executor records it (an outcome, a
handler duration and a queue latency per task), then flushed as the end of the handler
flushes it: one EMF document per type and outcome, printed to stdout (captured here).
The figure is the flush's time per batch; beside it the documents and bytes it printed,
which CloudWatch Logs ingests ($0.50 per GB). No target: it should stay far below the
batch's own DynamoDB writes (figure 2: 2 per task).
"""

from __future__ import annotations

import contextlib
import io
import os
import time

from bench.common import Figure, median

SECTION = "10. metrics"
BATCH = 100
TYPES = ("EXAMPLE_TASK", "NOOP_TASK", "SLEEP_TASK", "FLAKY_TASK")


def _record_batch() -> None:
    from runner import metrics
    from runner.model import TaskErrorInfo

    retryable = TaskErrorInfo(type="RuntimeError", message="boom", retryable=True)
    timed_out = TaskErrorInfo(type="TaskTimedOut", message="late", retryable=True)
    permanent = TaskErrorInfo(type="InvalidTaskInput", message="bad", retryable=False)
    for n in range(BATCH):
        task_type = TYPES[n % len(TYPES)]
        if n < 70:
            metrics.recorded(task_type, "DONE", None)
        elif n < 85:
            metrics.recorded(task_type, "FAILED", retryable)
        elif n < 90:
            metrics.recorded(task_type, "FAILED", timed_out)
        else:
            metrics.recorded(task_type, "FAILED", permanent)
        metrics.handler_duration(task_type, 0.001 * n)
        metrics.queue_latency(task_type, 0.05)


def run(quick: bool) -> list[Figure]:
    from runner import metrics

    repetitions = 5 if quick else 30
    times: list[float] = []
    printed = ""
    saved = os.environ.get(metrics.LAMBDA_ENV)
    os.environ[metrics.LAMBDA_ENV] = "bench-processStream"
    try:
        for _ in range(repetitions):
            _record_batch()
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                started = time.perf_counter()
                documents = metrics.flush()
                times.append(time.perf_counter() - started)
            printed = out.getvalue()
    finally:
        if saved is None:
            os.environ.pop(metrics.LAMBDA_ENV, None)
        else:
            os.environ[metrics.LAMBDA_ENV] = saved
    size = len(printed.encode())
    return [
        Figure(
            SECTION,
            f"EMF flush of a {BATCH}-task batch of {len(TYPES)} types (median of {repetitions})",
            median(times) * 1000,
            "ms",
            note=f"{documents} documents, {size:,} bytes ({size / BATCH:.0f} per task)",
            details={"documents": documents, "bytes": size, "times_ms": [t * 1000 for t in times]},
        )
    ]
