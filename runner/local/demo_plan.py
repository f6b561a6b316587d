"""What the main demo submits, and how each of its tasks must end (runner.local.demo runs it).

Each DemoTask names its type, its input, how it is submitted (client library, CLI
subprocess, raw PutItem), the status it must reach and an optional check of the item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runner.local.server import LocalStack

Item = Mapping[str, Any]


@dataclass(frozen=True)
class DemoTask:
    """One task of the demo: how it is submitted and how it must end."""

    id: str
    type: str
    data: dict[str, Any]
    expected: str  # DONE, FAILED or CANCELLED
    via: str = "client"  # client | cli | cli-wait (create-task --wait) | put-item
    cancel: str = ""  # at-once (right after it is created) | running (once PROCESSING)
    note: str = ""
    delay: float | None = None  # seconds: created SCHEDULED, run then
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


def _cancelled_by_its_handler(task: Item, stack: LocalStack) -> str | None:
    error = (task.get("error") or {}).get("type")
    return None if error == "TaskCancelled" else f"ended by {error}, not TaskCancelled"


# A delayed task starts after its run_at, by its timer: within seconds here, where each
# function's first invocations are cold starts (bench/delays.py measures it warm), and
# not a minute later, when the sweeper would have promoted it.
DEMO_DELAY_TOLERANCE_SECONDS = 20.0


def _on_time(task: Item, stack: LocalStack) -> str | None:
    """A delayed task started after its run_at, within the tolerance."""
    try:
        late = (
            datetime.fromisoformat(str(task["started_at"]))
            - datetime.fromisoformat(str(task["run_at"]))
        ).total_seconds()
    except (KeyError, ValueError):
        return "no run_at or started_at"
    if 0 <= late <= DEMO_DELAY_TOLERANCE_SECONDS:
        return None
    return f"started {late:+.2f} s from its run_at"


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
        "delayed-3s",
        "EXAMPLE_TASK",
        {"message": "three seconds later"},
        "DONE",
        note="SCHEDULED for 3 s, then run",
        delay=3.0,
        check=_on_time,
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
    DemoTask(
        "waited-for",
        "EXAMPLE_TASK",
        {"message": "create-task --wait"},
        "DONE",
        via="cli-wait",
        note="`create-task ... --wait 30` returned it DONE, exit 0",
    ),
    DemoTask(
        "cancel-pending",
        "SLEEP_TASK",
        {"seconds": 20},
        "CANCELLED",
        cancel="at-once",
        note="cancelled right after it was created",
    ),
    DemoTask(
        "cancel-running",
        "SLEEP_TASK",
        {"seconds": 20},
        "CANCELLED",
        cancel="running",
        note="cancelled while it ran: its async handler stopped at its next await",
        check=_cancelled_by_its_handler,
    ),
)
