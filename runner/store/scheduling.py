"""Delayed tasks in the table: SCHEDULED → PENDING at `run_at`, and the sparse index the
sweeper reads to find a SCHEDULED task whose timer was lost (`runner.delays`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from runner.config import RUN_AT_INDEX, STATUS_SHARDS
from runner.errors import TaskConflict, TaskNotFound
from runner.items import serialize
from runner.model import Task, TaskStatus
from runner.store.base import StoreBase

S = TaskStatus
# A task leaves the `by-run-at` index when this attribute goes (at its promotion).
SCHEDULED_SHARD = "scheduled_shard"


class SchedulingWrites(StoreBase):
    """The promotion of a delayed task, and the read of overdue ones."""

    def promote(self, task_id: str, run_at: str) -> Task | None:
        """SCHEDULED → PENDING, only for the incarnation that was scheduled for `run_at`
        (a timer outliving its task, or a task re-created under the id, changes nothing).
        Returns the PENDING task, or None if it was not (any longer) that SCHEDULED task.

        The MODIFY record (old SCHEDULED, new PENDING) is what runs it: processStream's
        filter for a MODIFY to PENDING from any other status admits it."""
        try:
            return self.promote_timer(task_id, run_at)
        except TaskNotFound:
            return None

    def promote_timer(self, task_id: str, run_at: str) -> Task | None:
        """`promote`, telling the timer apart a task that is not there (TaskNotFound: its
        producer's insert may still be on its way, as the timer is set first) from one
        that is no longer that SCHEDULED task (None). The failed condition's ALL_OLD
        image says which, in the same write."""
        try:
            return self._update(
                task_id,
                self._status_sets(task_id, S.PENDING, self.clock()),
                condition="#status = :scheduled AND run_at = :run_at",
                values={":scheduled": S.SCHEDULED.value, ":run_at": run_at},
                removes=(SCHEDULED_SHARD,),
                return_old_on_conflict=True,
            )
        except TaskConflict as exc:
            if exc.old is None:
                raise TaskNotFound(f"no task {task_id}") from exc
            return None

    def iter_overdue(self, before: str, page_size: int = 100) -> Iterator[tuple[str, str]]:
        """(id, run_at) of SCHEDULED tasks whose `run_at` is before `before` (ISO): one
        bounded Query per shard of the sparse `by-run-at` index, never a Scan. The index
        is eventually consistent: the promotion's condition decides."""
        for n in range(STATUS_SHARDS):
            start: dict[str, Any] | None = None
            while True:
                kwargs: dict[str, Any] = {
                    "TableName": self.table_name,
                    "IndexName": RUN_AT_INDEX,
                    "KeyConditionExpression": "scheduled_shard = :shard AND run_at < :before",
                    "ExpressionAttributeValues": serialize(
                        {":shard": f"{S.SCHEDULED.value}#{n:02d}", ":before": before}
                    ),
                    "Limit": page_size,
                }
                if start:
                    kwargs["ExclusiveStartKey"] = start
                page = self._call("query", **kwargs)
                for item in page.get("Items", []):
                    task_id, run_at = item.get("id", {}).get("S"), item.get("run_at", {}).get("S")
                    if isinstance(task_id, str) and isinstance(run_at, str):
                        yield task_id, run_at
                start = page.get("LastEvaluatedKey")
                if not start:
                    break
