"""The main demo: a mix of tasks through the local stack, watched until they settle.

Successes, an invalid input, transient failures the retry workflow recovers, one that
exhausts its retries, and a table export to S3. Exits non-zero if any task ends other
than expected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from runner.local.server import LocalStack

# The sweeper runs this often in the demo (the template says every 5 minutes).
DEMO_SWEEP_SECONDS = 5.0
# Everything settles in ~10 s; the ASL's retry waits are 2 s and 4 s with full jitter.
DEMO_TIMEOUT_SECONDS = 45.0

Item = Mapping[str, Any]


@dataclass(frozen=True)
class DemoTask:
    """One task of the demo: how it is submitted and how it must end."""

    id: str
    type: str
    data: dict[str, Any]
    expected: str  # DONE or FAILED
    via: str = "client"  # client | cli | put-item
    note: str = ""
    check: Callable[[Item, LocalStack], str | None] | None = field(default=None, compare=False)


def _retries_exhausted(task: Item, stack: LocalStack) -> str | None:
    return None if task.get("retries_exhausted") else "retries not marked exhausted"


def _not_retried(task: Item, stack: LocalStack) -> str | None:
    return "was retried" if task.get("executions") else None


def _export_exists(task: Item, stack: LocalStack) -> str | None:
    result = task.get("result") or {}
    try:
        head = stack.client("s3").head_object(Bucket=result["bucket"], Key=result["key"])
    except Exception as exc:
        return f"export object missing: {exc}"
    return None if head["ContentLength"] > 0 else "export object is empty"


def _attempts(expected: int) -> Callable[[Item, LocalStack], str | None]:
    def check(task: Item, stack: LocalStack) -> str | None:
        found = task.get("attempts")
        return None if found == expected else f"{found} attempts, expected {expected}"

    return check


def _resumed_at_the_failed_step(task: Item, stack: LocalStack) -> str | None:
    steps = {name: record.get("attempt") for name, record in (task.get("steps") or {}).items()}
    expected = {"reserve": 1, "charge": 2, "email": 2}
    return None if steps == expected else f"steps recorded on attempts {steps}, not {expected}"


DEMO_TASKS = (
    DemoTask("example-a", "EXAMPLE_TASK", {"message": "hello"}, "DONE", check=_attempts(1)),
    DemoTask("example-b", "EXAMPLE_TASK", {"message": "from the demo"}, "DONE"),
    DemoTask("example-c", "EXAMPLE_TASK", {"message": "third"}, "DONE"),
    DemoTask(
        "example-empty",
        "EXAMPLE_TASK",
        {"message": ""},
        "FAILED",
        via="put-item",
        note="invalid input, put raw: the client would refuse it",
        check=_not_retried,
    ),
    DemoTask(
        "flaky-once",
        "FLAKY_TASK",
        {"fail_times": 1},
        "DONE",
        note="fails once; the retry workflow runs it again",
        check=_attempts(2),
    ),
    DemoTask("flaky-twice", "FLAKY_TASK", {"fail_times": 2}, "DONE", check=_attempts(3)),
    DemoTask(
        "three-steps",
        "STEPS_TASK",
        {"fail_at": 2},
        "DONE",
        note="charge failed once; its retry skipped reserve: `history three-steps`",
        check=_resumed_at_the_failed_step,
    ),
    DemoTask(
        "always-failing",
        "ALWAYS_FAILING_TASK",
        {},
        "FAILED",
        note="retries exhausted",
        check=_retries_exhausted,
    ),
    DemoTask(
        "export-db",
        "EXPORT_DB",
        {"email": "demo@example.com"},
        "DONE",
        via="cli",
        note="the tasks table as gzipped JSON Lines in S3",
        check=_export_exists,
    ),
)


def submit(stack: LocalStack, tasks: tuple[DemoTask, ...], out: TextIO) -> dict[str, str]:
    """Insert the tasks (client library, CLI subprocess or raw PutItem); id → demo name."""
    from runner.app import get_app
    from runner.client import TaskRunnerClient
    from runner.items import serialize

    client = TaskRunnerClient(get_app())
    ids = {}
    for task in tasks:
        task_id = task.id
        if task.via == "client":
            client.create_task(task.type, task.data, task_id=task.id)
        elif task.via == "put-item":
            item = {"id": task.id, "type": task.type, "status": "PENDING", "data": task.data}
            stack.client("dynamodb").put_item(TableName=stack.table_name, Item=serialize(item))
        else:
            task_id = _submit_with_cli(stack, task)
        ids[task_id] = task.id
        print(f"  submitted {task.id:<15} {task.type:<20} via {task.via}", file=out, flush=True)
    return ids


def _submit_with_cli(stack: LocalStack, task: DemoTask) -> str:
    """`python -m runner.cli create-task ...` in a subprocess, as a user would; its id."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in task.data.items()]
    command = task.type.lower().replace("_", "-")
    result = subprocess.run(
        [sys.executable, "-m", "runner.cli", "create-task", command, *flags],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"runner.cli failed: {result.stderr.strip()}")
    # The CLI names tasks itself; the demo tracks them under its own name.
    return str(json.loads(result.stdout)["id"])


class Progress:
    """Prints one line per task status change and per retry execution started."""

    def __init__(self, out: TextIO, names: Mapping[str, str]) -> None:
        self.out = out
        self.names = names  # task id -> demo name
        self.started = time.monotonic()
        self._seen: dict[str, tuple[Any, ...]] = {}

    def __call__(self, tasks: list[dict[str, Any]]) -> None:
        for task in sorted(tasks, key=lambda t: self.names.get(t["id"], t["id"])):
            state = (task.get("status"), task.get("attempts"), len(task.get("executions", [])))
            previous = self._seen.get(task["id"])
            if state == previous:
                continue
            self._seen[task["id"]] = state
            status, attempts, executions = state
            detail = f"attempt {attempts}" if attempts else ""
            if status == "FAILED":
                detail += ", retries exhausted" if task.get("retries_exhausted") else ""
                detail += ", will retry" if task.get("retryable") and not executions else ""
                error = (task.get("error") or {}).get("type")
                detail += f", {error}" if error else ""
            if previous is not None and executions > previous[2]:
                detail += ", retry execution started"
            elapsed = time.monotonic() - self.started
            name = self.names.get(task["id"], task["id"])
            print(
                f"  {elapsed:5.1f}s  {name:<15} {task.get('type', ''):<20} {status:<10} {detail}",
                file=self.out,
                flush=True,
            )


def _seconds(task: Item) -> str:
    try:
        start = datetime.fromisoformat(str(task["created_at"]))
        end = datetime.fromisoformat(str(task["finished_at"]))
    except (KeyError, ValueError):
        return "-"
    return f"{(end - start).total_seconds():.1f} s"


def summarise(
    stack: LocalStack,
    tasks: tuple[DemoTask, ...],
    found: Mapping[str, Item],
    out: TextIO,
) -> list[str]:
    """Print the summary table; return the problems (empty when all is as expected)."""
    problems = []
    header = f"  {'task':<15} {'type':<20} {'status':<8} {'attempts':>8}  {'duration':>8}  check"
    print("\nSummary\n" + header + "\n  " + "-" * (len(header) - 2), file=out)
    for task in tasks:
        item = found.get(task.id, {})
        status = item.get("status", "MISSING")
        problem = None if status == task.expected else f"{status}, expected {task.expected}"
        if problem is None and task.check is not None:
            problem = task.check(item, stack)
        verdict = "ok" if problem is None else f"UNEXPECTED: {problem}"
        if problem:
            problems.append(f"{task.id}: {problem}")
        note = f"  ({task.note})" if task.note and problem is None else ""
        print(
            f"  {task.id:<15} {task.type:<20} {status:<8} {item.get('attempts', 0):>8}"
            f"  {_seconds(item):>8}  {verdict}{note}",
            file=out,
        )
    sfn = stack.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    print("\nRetry executions (Step Functions)", file=out)
    for execution in sorted(executions, key=lambda e: e["startDate"]):
        print(f"  {execution['name']:<40} {execution['status']}", file=out)
    if not executions:
        print("  (none)", file=out)
    print("\nLambda (each function in worker processes of its own)", file=out)
    for name, stats in stack.lambda_stats().items():
        init = stats["init_s"]
        cold = f", cold starts {stats['cold_starts']}" if stats["cold_starts"] else ""
        cold += f" (init {max(init):.2f} s)" if init else ""
        throttled = f", {stats['throttles']} throttled" if stats["throttles"] else ""
        count = stats["invocations"]
        print(
            f"  {name.rsplit('-', 1)[-1]:<15} {count:>3} invocation{'' if count == 1 else 's'}"
            f"{cold}{throttled}",
            file=out,
        )
    return problems


def run_demo(
    *,
    port: int = 0,
    stage: str = "local",
    out: TextIO = sys.stdout,
    timeout: float = DEMO_TIMEOUT_SECONDS,
) -> int:
    """Start the stack, run the demo tasks, print the outcome; 0 if all went as expected."""
    began = time.perf_counter()
    print("Starting the local stack (moto + serverless.yml's packaged template)...", file=out)
    with LocalStack.start(
        port=port, stage=stage, sweep_interval=DEMO_SWEEP_SECONDS, log_level="ERROR"
    ) as stack:
        print(
            f"Ready in {stack.started_in:.1f} s at {stack.endpoint_url}: table "
            f"{stack.table_name}, {len(stack.pollers)} stream pollers, sweeper every "
            f"{DEMO_SWEEP_SECONDS:g} s\n\nSubmitting {len(DEMO_TASKS)} tasks",
            file=out,
            flush=True,
        )
        ids = submit(stack, DEMO_TASKS, out)
        print("\nProgress", file=out, flush=True)
        try:
            settled = stack.wait_until_settled(
                set(ids), timeout=timeout, on_poll=Progress(out, ids)
            )
            timed_out = None
        except Exception as exc:
            settled, timed_out = stack.tasks(), str(exc)
        found = {ids[t["id"]]: t for t in settled if t.get("id") in ids}
        problems = summarise(stack, DEMO_TASKS, found, out)
    if timed_out:
        problems.insert(0, timed_out)
    elapsed = time.perf_counter() - began
    if problems:
        print(f"\nDemo FAILED after {elapsed:.1f} s:", file=out)
        for problem in problems:
            print(f"  - {problem}", file=out)
        return 1
    print(f"\nDemo passed: every task ended as expected ({elapsed:.1f} s in all).", file=out)
    return 0
