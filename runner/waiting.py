"""`client.wait`: poll a task until it is final (DONE, CANCELLED, or FAILED for good).

Each poll is one strongly consistent GetItem (a read never misses a write that was
acknowledged), the first at once, then after 50 ms, growing by half each time up to
`MAX_POLL_SECONDS`: a short task is seen DONE within tens of milliseconds, a long one
within half a second, and one waiter reads at most two items a second (2 read units
for an item up to 4 KB) however long it waits.

A read that fails after the SDK's retries (throttling, a 500 spell) does not end the
wait: it is logged and the poll goes on, up to the caller's timeout, which also bounds
each read (its retries by `aws_deadline`, its socket waits by a client of that timeout),
so `--wait 5` answers within about 5 s, even on a stalled connection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from runner.aws import aws_deadline
from runner.errors import StoreError, TaskNotFound, WaitTimedOut
from runner.logs import get_logger
from runner.model import Task
from runner.store import TaskStore

FIRST_POLL_SECONDS = 0.05
POLL_GROWTH = 1.5
MAX_POLL_SECONDS = 0.5
# The least time a read is given, even at the deadline (a wait of 0 still reads once).
MIN_READ_SECONDS = 1.0
# The shared DynamoDB client's read timeout (runner.aws).
SHARED_READ_TIMEOUT_SECONDS = 30


def wait_for(
    store: TaskStore,
    task_id: str,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    on_change: Callable[[Task], None] | None = None,
) -> Task:
    """The task once it is final. TaskNotFound if there is no such task; WaitTimedOut,
    naming the status it is in, after `timeout` seconds. `on_change` is called with the
    task each time its status or progress is seen to change (`get-task --follow`)."""
    if timeout < 0:
        raise ValueError("a wait's timeout must not be negative")
    deadline = monotonic() + timeout
    delay = FIRST_POLL_SECONDS
    seen: tuple[object, ...] | None = None
    status = "unknown"  # until a read succeeds
    while True:
        try:
            # The shared client's socket waits are 30 s; within the wait's last 30 s a
            # read gets one try on a client whose waits end with the wait (whole seconds,
            # so a few clients serve every wait), and the next poll is its retry.
            left = max(deadline - monotonic(), MIN_READ_SECONDS)
            with aws_deadline(left):
                short = math.ceil(left) if left < SHARED_READ_TIMEOUT_SECONDS else None
                task = store.find(task_id, timeout=short)
        except StoreError as exc:
            if not exc.transient:
                raise
            get_logger().warning(
                "a wait's read failed; polling on", extra={"task_id": task_id, "error": str(exc)}
            )
        else:
            if task is None:
                raise TaskNotFound(f"task {task_id} not found")
            status = task.status.value
            if on_change is not None and (task.status, task.progress) != seen:
                seen = (task.status, task.progress)
                on_change(task)
            if task.is_final:
                return task
        left = deadline - monotonic()
        if left <= 0:
            raise WaitTimedOut(
                f"timed out after {timeout:g} s: task {task_id} is {status}", status=status
            )
        sleep(min(delay, left))
        delay = min(delay * POLL_GROWTH, MAX_POLL_SECONDS)
