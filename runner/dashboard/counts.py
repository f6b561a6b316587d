"""How many tasks each status holds, and the oldest PENDING one: Queries of the `by-status`
index only, never a Scan.

A COUNT query costs the read units of the items it counts, so a count stops at a cap
and reads about that many items, however large the status: the budget is shared out
over the 16 shards, and shards that still have items get what the others left. Past
the cap the figure is "at least N".
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from runner.config import STATUS_INDEX, STATUS_SHARDS
from runner.items import serialize
from runner.model import TaskStatus
from runner.table import TasksTable

# Statuses a task leaves by itself or by the runner; what the overview counts. CANCELLED
# (once cancellation exists) is final too; SCHEDULED is not.
FINAL_STATUSES = frozenset({"DONE", "FAILED", "CANCELLED"})
# Shards queried at once.
MAX_PARALLEL_QUERIES = 16


def counted_statuses() -> list[TaskStatus]:
    """The non-final statuses, in the model's order (new statuses join by themselves)."""
    return [s for s in TaskStatus if s.value not in FINAL_STATUSES]


def shards(status: TaskStatus) -> list[str]:
    return [f"{status.value}#{n:02d}" for n in range(STATUS_SHARDS)]


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int
    # True when counting stopped at the cap: there are at least `count` tasks.
    at_least: bool
    queries: int

    @property
    def shown(self) -> str:
        return f"≥ {self.count:,}" if self.at_least else f"{self.count:,}"


@dataclass(frozen=True)
class OldestPending:
    task_id: str
    created_at: str  # the index's sort key (`updated_at`), which a PENDING task got at insert


class StatusCounter(TasksTable):
    """The overview's queries, on the table's plumbing (retries, errors translated)."""

    def __init__(self, *args: Any, pool: ThreadPoolExecutor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pool = pool or ThreadPoolExecutor(MAX_PARALLEL_QUERIES, "dashboard-query")

    def _count_page(self, shard: str, limit: int, start: dict[str, Any] | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "status_shard = :shard",
            "ExpressionAttributeValues": serialize({":shard": shard}),
            "Select": "COUNT",
            "Limit": limit,
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        return self._call("query", **kwargs)

    def count(self, status: TaskStatus, cap: int) -> StatusCount:
        """The tasks of one status, exactly below `cap`, else "at least" what was read."""
        if cap < 1:
            raise ValueError("cap must be at least 1")
        open_shards: dict[str, dict[str, Any] | None] = dict.fromkeys(shards(status))
        total = queries = 0
        while open_shards and total < cap:
            share = max(1, math.ceil((cap - total) / len(open_shards)))
            names = list(open_shards)
            limits = [share] * len(names)
            starts = [open_shards[s] for s in names]
            pages = list(self._pool.map(self._count_page, names, limits, starts))
            queries += len(names)
            for shard, page in zip(names, pages, strict=True):
                total += int(page.get("Count", 0))
                if page.get("LastEvaluatedKey"):
                    open_shards[shard] = page["LastEvaluatedKey"]
                else:
                    del open_shards[shard]
        return StatusCount(status.value, total, bool(open_shards), queries)

    def counts(self, statuses: list[TaskStatus], cap: int) -> list[StatusCount]:
        return [self.count(status, cap) for status in statuses]

    def oldest_pending(self) -> OldestPending | None:
        """The PENDING task inserted first, among those the index holds."""

        def first(shard: str) -> dict[str, Any] | None:
            page = self._call(
                "query",
                TableName=self.table_name,
                IndexName=STATUS_INDEX,
                KeyConditionExpression="status_shard = :shard",
                ExpressionAttributeValues=serialize({":shard": shard}),
                ExpressionAttributeNames={"#id": "id", "#at": "updated_at"},
                ProjectionExpression="#id, #at",
                ScanIndexForward=True,
                Limit=1,
            )
            items: list[dict[str, Any]] = page.get("Items", [])
            return items[0] if items else None

        found = [i for i in self._pool.map(first, shards(TaskStatus.PENDING)) if i is not None]
        if not found:
            return None
        oldest = min(found, key=lambda i: i.get("updated_at", {}).get("S", ""))
        return OldestPending(oldest["id"]["S"], oldest.get("updated_at", {}).get("S", ""))
