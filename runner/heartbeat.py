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
than after its task's whole timeout; the heartbeat keeps it alive. No handler may run on
past a lease another worker may take over, whatever an AWS call does (a throttled write
is retried for up to 20 s by the AWS policy, a stalled socket waits out its 30 s read
timeout), so:

- the heartbeat's own thread makes no AWS call: it watches the lease, and starts each
  beat, and each progress write that is due, in a thread of its own (one beat at a time,
  one progress write at a time; a kept-back report is started only while no beat is in
  flight; a handler's first report is started at once, in a thread of its own too, so
  an async handler's event loop never waits on a write);
- it ends the runtime once the lease, as last renewed, is within `LAPSE_MARGIN_SECONDS`
  of its end, even while a call still hangs (each beat that lands moves that point);
- every beat and progress write gives up its retries by then (`aws_deadline`);
- a beat that fails with too little lease left for the next one, or that finds the
  claim gone, ends the runtime at once.

The runtime is ended before the handler is asked to stop (`ctx.cancel_requested`): a
handler that unwound first could record an outcome for a claim that may still hold, and
a stop for a lost claim is never recorded as CANCELLED (`runner.executor`). Elsewhere
(the CLI, tests) the claim's lease already covers the deadline, and a lost claim only
asks the handler to stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from runner import runtime
from runner.aws import aws_deadline
from runner.control import TaskControl
from runner.errors import TaskConflict
from runner.items import parse_iso
from runner.logs import get_logger
from runner.progress import PROGRESS_INTERVAL_SECONDS, ProgressReporter

if TYPE_CHECKING:
    from runner.model import Task
    from runner.store import TaskStore

HEARTBEAT_SECONDS = 30.0
# The heartbeat's thread looks this often whether it was stopped, the lease runs out, a
# beat or progress is due.
TICK_SECONDS = 1.0
# A claim's lease where the runtime can be ended: four beats.
LIVE_LEASE_SECONDS = 120
# The runtime is ended this long before the lease ends if no beat renewed it (clock skew
# between the Lambdas that compare it, the exit itself); a beat that fails with less
# than one interval and this much left ends it at once (the next might come too late).
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
        progress: ProgressReporter | None = None,
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
        # Reports kept back, written once due (from a thread of their own).
        self._progress = progress
        self.tick = min(tick_seconds, interval)
        self._stopped = False
        self._done = False  # the claim is lost: no more beats
        self._lost_lock = threading.Lock()
        self._lost_once = False
        self._thread: threading.Thread | None = None
        self._beating: threading.Thread | None = None
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
        # replaces with its own clock. This thread never waits on a call.
        next_beat = time.monotonic() + self.interval
        while True:
            wait = self.tick
            if not _busy(self._beating):
                wait = min(wait, next_beat - time.monotonic())
            time.sleep(max(0.0, wait))
            if self._stopped or self._done:
                return
            if self.lapsing():
                self._lost("its lease could not be renewed in time")
                return
            if _busy(self._beating):
                continue  # the next beat waits for it; no progress write beside it
            now = time.monotonic()
            if now >= next_beat:
                self._beating = self._spawn(self._beat_once, "beat")
                next_beat += self.interval
                if next_beat <= now:  # that beat came late: the next one interval after
                    next_beat = now + self.interval
            elif self._progress is not None and self._progress.due():
                self._progress.flush_due()  # started in a thread of its own: `write_progress`

    def write_progress(self, send: Callable[[], None]) -> None:
        """Run a progress write (`ProgressReporter`, one at a time) in a thread of its
        own: never in the handler's, nor in this watch's."""
        self._spawn(send, "progress")

    def _spawn(self, target: Callable[[], object], what: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"{what}-{self.task_id}", daemon=True)
        thread.start()
        return thread

    def _beat_once(self) -> None:
        if not self.beat():
            self._done = True

    def lapsing(self) -> bool:
        """True once the lease, as last renewed, is within the margin of its end where
        it is only the live lease (the runtime must end before another may claim)."""
        if self.live_seconds is None:
            return False
        return self.store.clock().timestamp() >= self.lease - LAPSE_MARGIN_SECONDS

    def call_budget(self) -> float:
        """How long a call under this claim may take: until the lease's margin."""
        return self.lease - self.store.clock().timestamp() - LAPSE_MARGIN_SECONDS

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
            with aws_deadline(self.call_budget()):
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
        self.lease = max(self.lease, target)
        self.beats += 1
        if cancel:
            self.control.request_cancel()
        return True

    def _lost(self, reason: str) -> None:
        with self._lost_lock:  # the watch and a failed beat may both find it
            if self._lost_once:
                return
            self._lost_once = self._done = True
        self.log.warning(
            "claim lost while its handler runs", extra={"task_id": self.task_id, "reason": reason}
        )
        if self.live_seconds is not None:
            # Its lease may lapse (or has): nothing of this runtime may act past it. Ended
            # before the handler is told: unwound, it could record an outcome meanwhile.
            self._end_runtime(f"task {self.task_id}: {reason}")
        self.control.request_cancel(reason, lost=True)


def _busy(thread: threading.Thread | None) -> bool:
    return thread is not None and thread.is_alive()


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

        # The report an earlier claim left: this claim's first may replace it whatever
        # the two clocks say.
        inherited = task.progress.updated_at if task.progress is not None else None

        def write(value: dict[str, Any]) -> bool:
            # Given up before the lease could lapse, as the heartbeat's own calls are.
            with aws_deadline(heartbeat.call_budget()):
                return store.write_progress(
                    task.id, token=token, progress=value, replaces=inherited
                )

        reporter = ProgressReporter(
            write,
            clock=store.clock,
            monotonic=monotonic,
            interval=self.progress_seconds,
            task_id=task.id,
            # (a lambda: `heartbeat` is made below, with this reporter)
            start=lambda send: heartbeat.write_progress(send),  # noqa: PLW0108
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
            progress=reporter,
            tick_seconds=min(TICK_SECONDS, self.progress_seconds),
        )
        return control, heartbeat
