"""The sweeper: recovers tasks the stream path and the workflow left behind.

Each run, every phase on its own (one that fails does not stop the next, one task that
fails does not stop the others):

1. **Failed stream batches** (`runner.replay`): the records a mapping gave up on, read
   again from the stream and run or routed.
2. **Expired leases**: a PROCESSING claim whose Lambda died or timed out → FAILED,
   retryable, `TaskTimedOut`, so the retry workflow takes it (CANCELLED instead if a
   cancel was requested). A workflow claim is left
   to its execution while that runs; once it does not, it is failed the same way.
3. **PENDING tasks never claimed** (stream record lost), found in the `by-status` index
   by age, and run here or handed to the workflow (`runner.dispatch`); an item that is
   not a valid task is FAILED, as the stream does.
4. **Tasks waiting for an execution that is not running** (`runner.repair`).
5. **SCHEDULED tasks well past their `run_at`** (their timer was lost), found in the
   sparse `by-run-at` index, promoted to PENDING (`runner.delays.promote_overdue`).
6. **Staged inputs their producer did not move** to the key their item refers to, before
   the `staging/` lifecycle rule expires them (`runner.staged_inputs`).

A PENDING task inserted without `status_shard` is in no index: if its stream record is
lost and no on-failure message says so, only a Scan finds it. The scheduled sweep does
not Scan unless configured (`TASK_RUNNER_ORPHAN_SCAN_SEGMENTS`, one segment per run, by
its scheduled minute); `sweep` from the CLI Scans the whole table.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runner.delays import promote_overdue
from runner.dispatch import Dispatcher
from runner.errors import MalformedTask, TaskAlreadyClaimed, TaskConflict
from runner.executions import ExecutionRef
from runner.executor import RECORDING_MARGIN_SECONDS, Outcome
from runner.items import deserialize_image, iso, task_from_item
from runner.logs import get_logger
from runner.model import ClaimSource, Task, TaskErrorInfo, TaskStatus
from runner.repair import ExecutionRepairs
from runner.replay import FailedBatchReplay
from runner.staged_inputs import move_staged_inputs
from runner.store import TaskStore
from runner.workflow import RUNNING, RetryWorkflow

# A PENDING task this old has been missed by the stream (which delivers within seconds).
DEFAULT_PENDING_AGE_SECONDS = 300
# Orphaned PENDING tasks run this many at a time inside the sweeper.
SWEEPER_CONCURRENCY = 32
# Without a Lambda deadline (the CLI) a sweep may take this long.
NO_DEADLINE_SECONDS = 3600.0
# A phase is not started with less than this left.
PHASE_MARGIN_SECONDS = 2 * RECORDING_MARGIN_SECONDS


@dataclass(frozen=True)
class SweepReport:
    expired_leases: int
    orphans_run: int
    handed_off: int = 0
    malformed_failed: int = 0
    replayed_batches: int = 0
    replayed_records: int = 0
    lost_batches: int = 0
    repaired: int = 0
    errors: int = 0
    phase_errors: tuple[str, ...] = field(default_factory=tuple)
    promoted: int = 0
    inputs_moved: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "expired_leases": self.expired_leases,
            "orphans_run": self.orphans_run,
            "handed_off": self.handed_off,
            "malformed_failed": self.malformed_failed,
            "replayed_batches": self.replayed_batches,
            "replayed_records": self.replayed_records,
            "lost_batches": self.lost_batches,
            "repaired": self.repaired,
            "promoted": self.promoted,
            "inputs_moved": self.inputs_moved,
            "errors": self.errors,
        }
        if self.phase_errors:
            out["phase_errors"] = list(self.phase_errors)
        return out


@dataclass
class _Tally:
    expired: int = 0
    ran: int = 0
    handed_off: int = 0
    malformed: int = 0
    errors: int = 0
    phase_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bump(self, name: str) -> None:
        """Count one (from any of the sweeper's worker threads)."""
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class Sweeper:
    def __init__(
        self,
        store: TaskStore,
        dispatcher: Dispatcher,
        *,
        workflow: RetryWorkflow | None = None,
        replay: FailedBatchReplay | None = None,
        repairs: ExecutionRepairs | None = None,
        pending_age_seconds: float = DEFAULT_PENDING_AGE_SECONDS,
        scan_segments: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if scan_segments < 0:
            raise ValueError("scan_segments must be 0 (no scheduled Scan) or more")
        self.store = store
        self.dispatcher = dispatcher
        self.runner = dispatcher.runner
        self.workflow = workflow
        self.replay = replay
        self.repairs = repairs
        self.pending_age_seconds = pending_age_seconds
        self.scan_segments = scan_segments
        self._monotonic = monotonic
        self.log = get_logger()

    def sweep(
        self,
        *,
        remaining_seconds: float | None = None,
        full_scan: bool = False,
        scheduled_at: datetime | None = None,
        runnable: Callable[[Task], bool] | None = None,
    ) -> SweepReport:
        """One run of every phase within the time given; `full_scan` also Scans the whole
        table for PENDING tasks no index holds (the CLI's `sweep`). Only the tasks
        `runnable` accepts are run here, if given (the CLI's registry may lack types the
        deployment's has): the others are left for the deployment's sweep."""
        ends = self._monotonic() + (
            NO_DEADLINE_SECONDS if remaining_seconds is None else remaining_seconds
        )

        def left() -> float:
            return ends - self._monotonic()

        tally = _Tally()
        replayed = self._phase("replay", tally, lambda: self._replay(left, runnable, tally))
        self._phase("leases", tally, lambda: self.expire_leases(tally))
        self._phase(
            "pending", tally, lambda: self._run_pending(self._due_pending(), left, tally, runnable)
        )
        repaired = self._phase("repairs", tally, lambda: self._repair(left, tally))
        promoted = self._phase(
            "scheduled", tally, lambda: promote_overdue(self.store, left=lambda: left() - 1)
        )
        moved = self._phase(
            "staged", tally, lambda: move_staged_inputs(self.store, left=lambda: left() - 1)
        )
        segment = None if full_scan else self.segment_for(scheduled_at or self.store.clock())
        if full_scan or segment is not None:
            self._phase(
                "scan",
                tally,
                lambda: self._run_pending(self._scanned(segment), left, tally, runnable),
            )
        return SweepReport(
            expired_leases=tally.expired,
            orphans_run=tally.ran,
            handed_off=tally.handed_off,
            malformed_failed=tally.malformed,
            replayed_batches=replayed[0] if replayed else 0,
            replayed_records=replayed[1] if replayed else 0,
            lost_batches=replayed[2] if replayed else 0,
            repaired=repaired or 0,
            promoted=promoted or 0,
            inputs_moved=moved or 0,
            errors=tally.errors,
            phase_errors=tuple(tally.phase_errors),
        )

    def _phase(self, name: str, tally: _Tally, run: Callable[[], Any]) -> Any:
        """Run one phase; its failure is logged and counted, never raised."""
        try:
            return run()
        except Exception as exc:
            tally.phase_errors.append(f"{name}: {type(exc).__name__}")
            self.log.error(
                "sweep phase failed; the others still run",
                extra={"phase": name, "error_type": type(exc).__name__, "error": str(exc)[:200]},
            )
            return None

    def segment_for(self, scheduled_at: datetime) -> tuple[int, int] | None:
        """(segment, total) of a scheduled Scan for a run scheduled then; None when the
        scheduled sweep does not Scan.

        By the schedule's own minute (EventBridge's event `time`), not the moment the
        function starts, so a late start does not repeat or skip a segment.
        """
        if self.scan_segments == 0:
            return None
        minute = int(scheduled_at.timestamp() // 60)
        return minute % self.scan_segments, self.scan_segments

    # --- 1. failed stream batches --------------------------------------------------

    def _replay(
        self, left: Callable[[], float], runnable: Callable[[Task], bool] | None, tally: _Tally
    ) -> tuple[int, int, int]:
        if self.replay is None:
            return 0, 0, 0
        report = self.replay.run(left, runnable)
        for _ in range(report.failed):  # one error per message left unreplayed
            tally.bump("errors")
        return report.messages, report.records, report.lost

    # --- 2. expired leases ---------------------------------------------------------

    def expire_leases(self, tally: _Tally | None = None) -> int:
        tally = tally if tally is not None else _Tally()
        stale = self.store.iter_status(
            TaskStatus.PROCESSING,
            ("lease_expires_at < :now_epoch", {":now_epoch": self.store.now_epoch()}),
        )
        for task in stale:
            try:
                if self._expire(task):
                    tally.expired += 1
            except Exception as exc:
                tally.errors += 1
                self.log.error(
                    "could not recover an expired lease; the next sweep tries again",
                    extra={"task_id": task.id, "error_type": type(exc).__name__},
                )
        return tally.expired

    def _expire(self, task: Task) -> bool:
        workflow_claim = task.claimed_by is ClaimSource.WORKFLOW
        # The state machine's next attempt takes a dead claim over while the execution
        # runs; only an execution that has ended leaves it stranded.
        if workflow_claim and (
            self.workflow is None or self.workflow.status(ExecutionRef.of(task)) == RUNNING
        ):
            return False
        error = TaskErrorInfo(
            type="TaskTimedOut",
            retryable=True,
            message=f"lease expired during attempt {task.attempts} "
            f"(claimed by {task.claimed_by.value if task.claimed_by else 'unknown'})",
        )
        try:
            self.store.expire_lease(task, error, workflow_claim=workflow_claim)
        except TaskConflict:
            # A cancel was requested (the index may not show it yet): CANCELLED, not a
            # retry. Else it finished, or someone else recovered it.
            return self._cancel_expired(task)
        self.log.warning(
            "lease expired; task marked FAILED for retry",
            extra={"task_id": task.id, "task_type": task.type},
        )
        return True

    def _cancel_expired(self, task: Task) -> bool:
        try:
            self.store.cancel_expired(task)
        except TaskConflict:
            return False
        self.log.warning(
            "lease expired after a cancel was requested; task CANCELLED",
            extra={"task_id": task.id, "task_type": task.type},
        )
        return True

    # --- 3. PENDING tasks never claimed --------------------------------------------

    def _due_pending(self) -> Iterable[dict[str, Any]]:
        cutoff = iso(self.store.clock() - timedelta(seconds=self.pending_age_seconds))
        return self.store.iter_status_items(TaskStatus.PENDING, updated=(None, cutoff))

    def _scanned(self, segment: tuple[int, int] | None) -> Iterable[dict[str, Any]]:
        cutoff = iso(self.store.clock() - timedelta(seconds=self.pending_age_seconds))
        return self.store.iter_unindexed_pending(cutoff, segment=segment)

    def _run_pending(
        self,
        items: Iterable[dict[str, Any]],
        left: Callable[[], float],
        tally: _Tally,
        runnable: Callable[[Task], bool] | None = None,
    ) -> None:
        budget = left()

        def run_one(item: dict[str, Any]) -> Outcome | None:
            try:
                task = self._parse(item)
                if task is None:
                    tally.bump("malformed")
                    return None
                if runnable is not None and not runnable(task):
                    return None
                # The time left now, not when the phase began: orphans run 32 at a time,
                # and one started late must not overrun the Lambda.
                remaining = left()
                fits = self.dispatcher.fits_here
                if not fits(task, remaining) and fits(task, budget):
                    return None  # it fits a sweep, not what is left of this one: next sweep
                outcome = self.dispatcher.dispatch(
                    task, source=ClaimSource.SWEEPER, remaining_seconds=remaining
                )
            except Exception as exc:
                tally.bump("errors")
                self.log.error(
                    "could not run a PENDING task; the next sweep tries again",
                    extra={"error_type": type(exc).__name__},
                )
                return None
            if outcome.status is not None:
                tally.bump("ran")
            elif outcome.note.startswith("handed"):
                tally.bump("handed_off")
            return outcome

        batch = list(items)
        if not batch:
            return
        with ThreadPoolExecutor(max_workers=min(SWEEPER_CONCURRENCY, len(batch))) as pool:
            list(pool.map(run_one, batch))
        if tally.ran:
            self.log.warning("ran PENDING tasks the stream missed", extra={"count": tally.ran})

    def _parse(self, item: dict[str, Any]) -> Task | None:
        """The item as a task; an unreadable one is FAILED (non-retryable) and None."""
        try:
            return task_from_item(deserialize_image(item))
        except MalformedTask as exc:
            raw_id = item.get("id")
            task_id = raw_id.get("S") if isinstance(raw_id, dict) else None
            if isinstance(task_id, str) and task_id:
                try:
                    self.store.fail_unreadable(task_id, str(exc))
                except TaskAlreadyClaimed:
                    return None
                self.log.warning("malformed PENDING item FAILED", extra={"task_id": task_id})
            return None

    # --- 4. tasks waiting for an execution -----------------------------------------

    def _repair(self, left: Callable[[], float], tally: _Tally) -> int:
        if self.repairs is None:
            return 0
        report = self.repairs.run(left, PHASE_MARGIN_SECONDS)
        tally.errors += report.errors
        return report.repaired

    # Kept for the tests and the CLI: every PENDING task the stream missed, now.
    def run_orphans(self, remaining_seconds: float | None = None) -> int:
        tally = _Tally()
        ends = self._monotonic() + (
            NO_DEADLINE_SECONDS if remaining_seconds is None else remaining_seconds
        )
        self._run_pending(self._due_pending(), lambda: ends - self._monotonic(), tally)
        self._run_pending(self._scanned(None), lambda: ends - self._monotonic(), tally)
        return tally.ran
