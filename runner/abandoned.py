"""Recording the outcome of an attempt that left handler work running.

Such work may still act (`runner.runtime`), so its outcome must hold a retry back:

- the outcome is written with a lease past the invocation's hard deadline
  (`lease_until`, from `runtime.abandoned_lease`);
- until that write lands, only the claim's own lease fences a retry (as its heartbeat
  last renewed it: in Lambda the claim took only the live lease), so the write is given
  up, and the runtime ended, a margin before that lease ends (a throttled or slow
  DynamoDB: `bounded_by_claim`);
- a write refused (the claim lost, the item put again) or failed leaves only the
  claim's lease: the runtime is ended at once, not at the end of the batch;
- a written lease is handed to the runtime, which cuts or removes it once the work can
  no longer act (`runtime.hold`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from runner import runtime
from runner.aws import aws_deadline
from runner.errors import StoreError
from runner.model import Task
from runner.store import TaskStore

if TYPE_CHECKING:  # the executor imports this module
    from runner.executor import Outcome


def record(
    store: TaskStore,
    task: Task,
    threads: tuple[threading.Thread, ...],
    lease_until: int,
    write: Callable[[], Outcome],
) -> Outcome:
    """`write()` the claim's final write for an attempt whose `threads` still run."""
    try:
        with bounded_by_claim(store, task):
            outcome = write()
    except StoreError:
        runtime.end_if_abandoned()
        raise
    if outcome.status is None:
        runtime.end_if_abandoned()
    else:
        hold(store, task, lease_until, threads)
    return outcome


@contextlib.contextmanager
def bounded_by_claim(store: TaskStore, task: Task) -> Iterator[None]:
    """AWS calls in the block give up, and the runtime is ended if the block still runs,
    `runtime.LATE_WRITE_MARGIN_SECONDS` before the claim's lease ends (`task`'s lease:
    the heartbeat's latest, `runner.executor`)."""
    if task.lease_expires_at is None:
        yield
        return
    left = task.lease_expires_at - store.clock().timestamp() - runtime.LATE_WRITE_MARGIN_SECONDS
    with aws_deadline(left), runtime.ending_if_late(left):
        yield


def hold(
    store: TaskStore, task: Task, lease_until: int, threads: tuple[threading.Thread, ...]
) -> None:
    """Have the runtime release this outcome's lease once its work can no longer act."""
    token = task.claim_token or ""

    def release(exiting: bool) -> None:
        until = store.now_epoch() + runtime.EXIT_LEASE_SECONDS if exiting else None
        timeout = runtime.CUT_CALL_SECONDS
        store.release_lease(task.id, token=token, held=lease_until, until=until, timeout=timeout)

    runtime.hold(threads, release)
