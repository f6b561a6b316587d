"""The sweeper: recovers tasks the stream path left behind.

- A PROCESSING claim made outside a workflow whose lease has expired (its Lambda died or
  timed out) → FAILED, retryable, `TaskTimedOut`, so the retry workflow takes it.
  Workflow claims are left alone: the state machine's own Retry recovers them.
- A PENDING task older than a cutoff (its stream record was lost) → claimed and run.
  Such a task is in no index, so finding it takes a Scan: each scheduled run reads one
  of `scan_segments` segments of the table, in rotation by time, so the table is read
  once per `scan_segments` runs (about an hour at 13 and every 5 minutes).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from runner.errors import TaskConflict
from runner.executor import TaskRunner
from runner.items import iso
from runner.logs import get_logger
from runner.model import ClaimSource, TaskErrorInfo, TaskStatus
from runner.store import TaskStore

# A PENDING task this old has been missed by the stream (which delivers within seconds).
DEFAULT_PENDING_AGE_SECONDS = 300
# Orphaned PENDING tasks run this many at a time inside the sweeper.
SWEEPER_CONCURRENCY = 32
# The schedule's rate in serverless.yml: consecutive runs scan consecutive segments. With
# another rate they still reach every segment, the number of segments being prime.
SWEEP_PERIOD_SECONDS = 300


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
        self, *, remaining_seconds: float | None = None, full_scan: bool = False
    ) -> SweepReport:
        """One run: every expired lease, and the orphans in this run's Scan segment (or in
        the whole table with `full_scan`, as the CLI's `sweep` does)."""
        segment = None if full_scan else self.current_segment()
        return SweepReport(self.expire_leases(), self.run_orphans(remaining_seconds, segment))

    def current_segment(self) -> tuple[int, int] | None:
        """(segment, total) for a run now; None when the table is one segment."""
        if self.scan_segments == 1:
            return None
        bucket = int(self.store.clock().timestamp() // SWEEP_PERIOD_SECONDS)
        return bucket % self.scan_segments, self.scan_segments

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
        self, remaining_seconds: float | None = None, segment: tuple[int, int] | None = None
    ) -> int:
        cutoff = iso(self.store.clock() - timedelta(seconds=self.pending_age_seconds))
        orphans = list(self.store.iter_unindexed_pending(cutoff, segment=segment))
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
