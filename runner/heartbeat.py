"""The heartbeat of a long-running claim: one conditional write about every 30 s while
its handler runs, which keeps the lease alive and reads the cancel flag.

A handler that ends within `HEARTBEAT_SECONDS` never meets it: the claim and the
outcome stay the task's two writes, with no read. Past that, each beat sets the lease
to `now + live lease`, never past the lease the claim's deadline allows (`cap`: the
task's timeout, or the invocation's time, plus the grace, as the claim computed it;
past its deadline a handler is abandoned, `runner.runtime`), and reads back
`cancel_requested` in the same write (`runner.store.control.heartbeat`).

Where the runtime can be ended (in Lambda) the claim's lease is only the live lease
(`LIVE_LEASE_SECONDS`), so a worker that died is taken over within two minutes rather
than after its task's whole timeout; the heartbeat keeps it alive. If beats fail (a
throttled write, retried by the AWS policy, then given up) until the lease could lapse
before the next one, or the claim is found gone, the runtime is ended at once: no
handler runs on past a lease another worker may take over. Elsewhere (the CLI, tests)
the claim's lease already covers the deadline, and a lost claim only asks the handler
to stop (`ctx.cancel_requested`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from runner import runtime
from runner.control import TaskControl
from runner.errors import TaskConflict
from runner.items import parse_iso
from runner.logs import get_logger
from runner.progress import PROGRESS_INTERVAL_SECONDS, ProgressReporter

if TYPE_CHECKING:
    from runner.model import Task
    from runner.store import TaskStore

HEARTBEAT_SECONDS = 30.0
# The heartbeat thread wakes this often to see whether it was stopped, or progress is due.
TICK_SECONDS = 1.0
# A claim's lease where the runtime can be ended: four beats.
LIVE_LEASE_SECONDS = 120
# A beat that fails with less than one interval and this much of its lease left ends
# the runtime (the next beat might come too late).
LAPSE_MARGIN_SECONDS = 15.0
# Reason the control gives the handler when its claim is gone.
CLAIM_LOST = "the claim was lost"


class Heartbeat:
    """Beats for one claim from a thread of its own, from `start` until `stop`."""

    def __init__(
        self,
        store: TaskStore,
        task_id: str,
        token: str,
        control: TaskControl,
        *,
        lease: int,
        cap: int,
        live_seconds: float | None,
        interval: float = HEARTBEAT_SECONDS,
        end_runtime: Callable[[str], bool] = runtime.end_now,
        on_tick: Callable[[], None] | None = None,
        tick_seconds: float = TICK_SECONDS,
    ) -> None:
        self.store = store
        self.task_id = task_id
        self.token = token
        self.control = control
        # The lease as last written (epoch seconds), and the most it may become.
        self.lease = lease
        self.cap = max(cap, lease)
        self.live_seconds = live_seconds
        self.interval = interval
        self._end_runtime = end_runtime
        # Called about every `tick` while the handler runs (progress due to be written).
        self._on_tick = on_tick
        self.tick = min(tick_seconds, interval)
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.beats = 0
        self.failures = 0
        self.log = get_logger()

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{self.task_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """No beat starts after this; the thread ends at its next tick, unjoined (the
        handler's outcome is not held up). A beat already sent may still land: before
        the outcome's write it only extends the lease; after it, its condition fails,
        which a stopped heartbeat ignores."""
        self._stopped = True

    def _run(self) -> None:
        # Short sleeps, not an Event: time.sleep is what a simulation (and a test)
        # replaces with its own clock, and the tick also writes progress that is due.
        next_beat = time.monotonic() + self.interval
        while True:
            time.sleep(max(0.0, min(self.tick, next_beat - time.monotonic())))
            if self._stopped:
                return
            if self._on_tick is not None:
                self._on_tick()
            if time.monotonic() >= next_beat:
                if self._stopped or not self.beat():
                    return
                next_beat += self.interval

    def next_lease(self, now_epoch: int) -> int:
        """The lease to write now: extended by the live lease, never past the cap, never
        shortened."""
        if self.live_seconds is None:
            return self.lease
        return max(self.lease, min(int(now_epoch + self.live_seconds), self.cap))

    def beat(self) -> bool:
        """One beat; False once the claim is lost (no more beats)."""
        target = self.next_lease(self.store.now_epoch())
        try:
            cancel = self.store.heartbeat(self.task_id, token=self.token, lease_until=target)
        except TaskConflict:
            if not self._stopped:  # else the outcome was written meanwhile: all is well
                self._lost(CLAIM_LOST)
            return False
        except Exception as exc:
            if self._stopped:
                return False
            self.failures += 1
            left = self.lease - self.store.now_epoch()
            self.log.warning(
                "heartbeat not written",
                extra={
                    "task_id": self.task_id,
                    "error_type": type(exc).__name__,
                    "lease_left_seconds": left,
                },
            )
            if self.live_seconds is not None and left <= self.interval + LAPSE_MARGIN_SECONDS:
                self._lost("its lease could not be renewed")
                return False
            return True
        self.lease = target
        self.beats += 1
        if cancel:
            self.control.request_cancel()
        return True

    def _lost(self, reason: str) -> None:
        self.log.warning("claim lost while its handler runs", extra={"task_id": self.task_id})
        self.control.request_cancel(reason, lost=True)
        if self.live_seconds is not None:
            # Its lease may lapse (or has): nothing of this runtime may act past it.
            self._end_runtime(f"task {self.task_id}: {reason}")


@dataclass(frozen=True)
class LeasePolicy:
    """How claims lease their tasks and beat: `live_lease_seconds` "auto" takes the live
    lease where the runtime can be ended (`runtime.can_end`), else None (the whole
    deadline's lease); tests shorten the intervals."""

    heartbeat_seconds: float = HEARTBEAT_SECONDS
    live_lease_seconds: float | Literal["auto"] | None = "auto"
    progress_seconds: float = PROGRESS_INTERVAL_SECONDS

    def live(self) -> float | None:
        if self.live_lease_seconds == "auto":
            return LIVE_LEASE_SECONDS if runtime.can_end() else None
        return self.live_lease_seconds

    def claim_lease(self, full: float) -> float:
        live = self.live()
        return full if live is None else min(full, live)

    def supervise(
        self, store: TaskStore, task: Task, full: float, monotonic: Callable[[], float]
    ) -> tuple[TaskControl, Heartbeat]:
        """A claimed task's control (with its progress reporter, writing under the
        claim) and its heartbeat, capped at the `full` lease from the claim's time."""
        token = task.claim_token or ""

        def write(value: dict[str, Any]) -> None:
            store.write_progress(task.id, token=token, progress=value)

        reporter = ProgressReporter(
            write,
            clock=store.clock,
            monotonic=monotonic,
            interval=self.progress_seconds,
            task_id=task.id,
        )
        control = TaskControl(reporter)
        claimed = parse_iso(task.started_at) if task.started_at else store.clock()
        cap = int(claimed.timestamp() + full)
        heartbeat = Heartbeat(
            store,
            task.id,
            token,
            control,
            lease=task.lease_expires_at or cap,
            cap=cap,
            live_seconds=self.live(),
            interval=self.heartbeat_seconds,
            on_tick=reporter.flush_due,
            tick_seconds=min(TICK_SECONDS, self.progress_seconds),
        )
        return control, heartbeat
