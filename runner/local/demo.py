"""The main demo: a mix of tasks through the local stack, watched until they settle.

Successes, an invalid input, transient failures the retry workflow recovers, one that
exhausts its retries, a table export to S3, a `create-task --wait`, and two cancelled
tasks (one before it ran, one while it ran). Exits non-zero if any task ends other
than expected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from runner.local.demo_plan import DEMO_TASKS, DemoTask, Item
from runner.local.server import LocalStack

# The sweeper runs this often in the demo (the template says every 5 minutes).
DEMO_SWEEP_SECONDS = 5.0
# Everything settles in ~10 s; the ASL's retry waits are 2 s and 4 s with full jitter.
DEMO_TIMEOUT_SECONDS = 45.0

# A running handler learns of a cancel at its next heartbeat: every second in the demo.
DEMO_HEARTBEAT_SECONDS = "1"


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
            client.create_task(task.type, task.data, task_id=task.id, delay=task.delay)
        elif task.via == "put-item":
            item = {"id": task.id, "type": task.type, "status": "PENDING", "data": task.data}
            stack.client("dynamodb").put_item(TableName=stack.table_name, Item=serialize(item))
        else:
            task_id = _submit_with_cli(stack, task)
        ids[task_id] = task.id
        print(f"  submitted {task.id:<15} {task.type:<20} via {task.via}", file=out, flush=True)
        if task.cancel == "at-once":
            result = client.cancel_task(task_id)
            print(f"  cancelled {task.id:<15} it was {result['was']}", file=out, flush=True)
    return ids


def cancel_running(stack: LocalStack, tasks: tuple[DemoTask, ...], out: TextIO) -> None:
    """`cancel-task` (the CLI) on each task to be cancelled while it runs, once it does."""
    from runner.app import get_app

    store = get_app().store
    for task in (t for t in tasks if t.cancel == "running"):
        deadline = time.monotonic() + 15
        while store.get(task.id).status.value != "PROCESSING" and time.monotonic() < deadline:
            time.sleep(0.1)
        result = _cli(stack, "cancel-task", "--task-id", task.id)
        said = json.loads(result.stdout) if result.returncode == 0 else {}
        print(
            f"  cancel-task {task.id}: {said.get('status', result.stderr.strip())}"
            f"{', cancel requested' if said.get('cancel_requested') else ''}",
            file=out,
            flush=True,
        )


def _cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _submit_with_cli(stack: LocalStack, task: DemoTask) -> str:
    """`python -m runner.cli create-task ...` in a subprocess, as a user would; its id."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in task.data.items()]
    if task.via == "cli-wait":
        flags += ["--wait", "30"]
    command = task.type.lower().replace("_", "-")
    result = _cli(stack, "create-task", command, *flags)
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
    from runner.local.demo_recurring import DEMO_SCHEDULE
    from runner.local.stack_env import patched_environ
    from runner.recurring import fired_task_id

    with (
        patched_environ({"TASK_RUNNER_HEARTBEAT_SECONDS": DEMO_HEARTBEAT_SECONDS}),
        LocalStack.start(
            port=port,
            stage=stage,
            sweep_interval=DEMO_SWEEP_SECONDS,
            log_level="ERROR",
            task_modules=",".join(
                m
                for m in (
                    "runner.local.demo_recurring",
                    os.environ.get("TASK_RUNNER_TASK_MODULES"),
                )
                if m
            ),
        ) as stack,
    ):
        print(
            f"Ready in {stack.started_in:.1f} s at {stack.endpoint_url}: table "
            f"{stack.table_name}, {len(stack.pollers)} stream pollers, sweeper every "
            f"{DEMO_SWEEP_SECONDS:g} s\n\nSubmitting {len(DEMO_TASKS)} tasks",
            file=out,
            flush=True,
        )
        ids = submit(stack, DEMO_TASKS, out)
        assert stack.timers is not None
        fires = [t for n, t in stack.timers.scheduler.fired if n == DEMO_SCHEDULE][:1]
        for scheduled in fires:  # a rate schedule fires first when it is created
            ids[fired_task_id(DEMO_SCHEDULE, scheduled)] = "recurring"
            print(
                f"  fired     recurring       {DEMO_SCHEDULE} (rate(1 minute)) at {scheduled}",
                file=out,
                flush=True,
            )
        cancel_running(stack, DEMO_TASKS, out)
        print("\nProgress", file=out, flush=True)
        try:
            settled = stack.wait_until_settled(
                set(ids), timeout=timeout, on_poll=Progress(out, ids)
            )
            timed_out = None
        except Exception as exc:
            settled, timed_out = stack.tasks(), str(exc)
        found = {ids[t["id"]]: t for t in settled if t.get("id") in ids}
        recurring = DemoTask("recurring", "TICK_TASK", {}, "DONE", note=f"{DEMO_SCHEDULE} fired")
        shown = (*DEMO_TASKS, recurring)
        problems = summarise(stack, shown, found, out)
        delayed = found.get("delayed-3s", {})
        if delayed.get("started_at") and delayed.get("run_at"):
            late = datetime.fromisoformat(str(delayed["started_at"])) - datetime.fromisoformat(
                str(delayed["run_at"])
            )
            print(
                f"\nDelayed: delayed-3s was due at {delayed['run_at']} and started"
                f" {late.total_seconds():+.2f} s after (its fireTimers and processStream"
                " invocations may have been cold starts)",
                file=out,
            )
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
