"""The sweeper: recovers tasks the stream path left behind.

- A PROCESSING claim made outside a workflow whose lease has expired (its Lambda died or
  timed out) → FAILED, retryable, `TaskTimedOut`, so the retry workflow takes it.
  Workflow claims are left alone: the state machine's own Retry recovers them.
- A PENDING task older than a cutoff (its stream record was lost) → claimed and run.
  Such a task is in no index, so finding it takes a Scan: each scheduled run reads one
  of `scan_segments` segments of the table, the one its scheduled minute names (minutes
  since the epoch, modulo the count). Runs k minutes apart reach every segment in
  `scan_segments` runs whenever k and the count share no factor: at 13, any rate but a
  multiple of 13 minutes; every 5 minutes, the table is read once in 65.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from runner.errors import TaskConflict
from runner.executor import TaskRunner
from runner.items import iso
from runner.logs import get_logger
from runner.model import ClaimSource, Task, TaskErrorInfo, TaskStatus
from runner.store import TaskStore

# A PENDING task this old has been missed by the stream (which delivers within seconds).
DEFAULT_PENDING_AGE_SECONDS = 300
# Orphaned PENDING tasks run this many at a time inside the sweeper.
SWEEPER_CONCURRENCY = 32


@dataclass(frozen=True)
class SweepReport:
    expired_leases: int
    orphans_run: int

    def as_dict(self) -> dict[str, int]:
        return {"expired_leases": self.expired_leases, "orphans_run": self.orphans_run}


class Sweeper:
    def __init__(
        self,
        store: TaskStore,
        runner: TaskRunner,
        *,
        pending_age_seconds: float = DEFAULT_PENDING_AGE_SECONDS,
        scan_segments: int = 1,
    ) -> None:
        if scan_segments < 1:
            raise ValueError("scan_segments must be at least 1")
        self.store = store
        self.runner = runner
        self.pending_age_seconds = pending_age_seconds
        self.scan_segments = scan_segments
        self.log = get_logger()

    def sweep(
        self,
        *,
        remaining_seconds: float | None = None,
        full_scan: bool = False,
        scheduled_at: datetime | None = None,
        runnable: Callable[[Task], bool] | None = None,
    ) -> SweepReport:
        """One run: every expired lease, and the orphans in the Scan segment of the run's
        scheduled time (default: now), or in the whole table with `full_scan`, as the
        CLI's `sweep` does; only the orphans `runnable` accepts, if given (the CLI's
        registry may lack types the deployment's has)."""
        segment = None if full_scan else self.segment_for(scheduled_at or self.store.clock())
        return SweepReport(
            self.expire_leases(), self.run_orphans(remaining_seconds, segment, runnable)
        )

    def segment_for(self, scheduled_at: datetime) -> tuple[int, int] | None:
        """(segment, total) for a run scheduled then; None when the table is one segment.

        By the schedule's own minute (EventBridge's event `time`), not the moment the
        function starts, so a late start does not repeat or skip a segment.
        """
        if self.scan_segments == 1:
            return None
        minute = int(scheduled_at.timestamp() // 60)
        return minute % self.scan_segments, self.scan_segments

    def expire_leases(self) -> int:
        now_epoch = int(self.store.clock().timestamp())
        expired = 0
        stale = self.store.iter_status(
            TaskStatus.PROCESSING,
            (
                "lease_expires_at < :now_epoch AND claimed_by <> :workflow",
                {":now_epoch": now_epoch, ":workflow": ClaimSource.WORKFLOW.value},
            ),
        )
        for task in stale:
            error = TaskErrorInfo(
                type="TaskTimedOut",
                retryable=True,
                message=f"lease expired during attempt {task.attempts} "
                f"(claimed by {task.claimed_by.value if task.claimed_by else 'unknown'})",
            )
            try:
                self.store.expire_lease(task, error)
            except TaskConflict:
                continue  # it finished, or someone else recovered it
            expired += 1
            self.log.warning(
                "lease expired; task marked FAILED for retry",
                extra={"task_id": task.id, "task_type": task.type},
            )
        return expired

    def run_orphans(
        self,
        remaining_seconds: float | None = None,
        segment: tuple[int, int] | None = None,
        runnable: Callable[[Task], bool] | None = None,
    ) -> int:
        cutoff = iso(self.store.clock() - timedelta(seconds=self.pending_age_seconds))
        found = self.store.iter_unindexed_pending(cutoff, segment=segment)
        orphans = [task for task in found if runnable is None or runnable(task)]
        if not orphans:
            return 0
        with ThreadPoolExecutor(max_workers=min(SWEEPER_CONCURRENCY, len(orphans))) as pool:
            outcomes = list(
                pool.map(
                    lambda t: self.runner.run_claimable(
                        t, source=ClaimSource.SWEEPER, remaining_seconds=remaining_seconds
                    ),
                    orphans,
                )
            )
        ran = sum(1 for o in outcomes if o.status is not None)
        if ran:
            self.log.warning("ran PENDING tasks the stream missed", extra={"count": ran})
        return ran
