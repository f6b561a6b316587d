"""Reading many tasks: the sharded status index (list-tasks, the sweeper) and the one
Scan that finds tasks no index holds yet (a last resort, on request)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runner.config import STATUS_INDEX, STATUS_SHARDS
from runner.errors import MalformedTask
from runner.items import decode_cursor, deserialize_image, encode_cursor, serialize, task_from_item
from runner.model import Task, TaskStatus
from runner.table import TasksTable


class TaskListing(TasksTable):
    """Queries across the tasks table; every write is `TaskStore`'s."""

    def _query_shard(
        self,
        shard: str,
        limit: int,
        start: dict[str, Any] | None,
        condition: tuple[str, dict[str, Any]] | None = None,
        updated: tuple[str | None, str | None] = (None, None),
    ) -> dict[str, Any]:
        key = "status_shard = :shard"
        bounds: dict[str, Any] = {":shard": shard}
        after, before = updated
        if after is not None and before is not None:
            key += " AND updated_at BETWEEN :after AND :before"
            bounds.update({":after": after, ":before": before})
        elif before is not None:
            key += " AND updated_at < :before"
            bounds[":before"] = before
        elif after is not None:
            key += " AND updated_at > :after"
            bounds[":after"] = after
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": key,
            "ExpressionAttributeValues": serialize(bounds),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if condition is not None:
            kwargs["FilterExpression"] = condition[0]
            kwargs["ExpressionAttributeValues"].update(serialize(condition[1]))
        if start:
            kwargs["ExclusiveStartKey"] = start
        return self._call("query", **kwargs)

    def list_items(
        self, status: TaskStatus | None = None, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """`list`'s page as the items read (plain values), valid tasks or not (for a
        reader that shows what it cannot parse, as the dashboard does)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        statuses = [status] if status else list(TaskStatus)
        shards = [f"{s.value}#{n:02d}" for s in statuses for n in range(STATUS_SHARDS)]
        positions: dict[str, Any] = decode_cursor(cursor) if cursor else {}
        live = [s for s in shards if positions.get(s) != "end"]

        def fetch(shard: str) -> tuple[str, dict[str, Any]]:
            return shard, self._query_shard(shard, limit, positions.get(shard))

        with ThreadPoolExecutor(max_workers=min(16, max(1, len(live)))) as pool:
            pages = list(pool.map(fetch, live))
        candidates: list[tuple[str, dict[str, Any]]] = []
        for shard, page in pages:
            candidates += [(shard, item) for item in page.get("Items", [])]
        candidates.sort(key=lambda c: c[1].get("updated_at", {}).get("S", ""), reverse=True)
        taken = candidates[:limit]
        next_positions = dict(positions)
        for shard, page in pages:
            mine = [item for s, item in taken if s == shard]
            returned = page.get("Items", [])
            if mine:
                last = mine[-1]
                next_positions[shard] = {
                    k: last[k] for k in ("id", "status_shard", "updated_at") if k in last
                }
            if len(mine) == len(returned) and "LastEvaluatedKey" not in page:
                next_positions[shard] = "end"
        more = any(next_positions.get(s) != "end" for s in shards)
        items = [deserialize_image(item) for _, item in taken]
        return items, (encode_cursor(next_positions) if more and items else None)

    def list(
        self, status: TaskStatus | None = None, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        """Newest first across every shard of the status index; returns (tasks, next cursor).
        An item that is not a valid task raises MalformedTask."""
        items, next_cursor = self.list_items(status, limit=limit, cursor=cursor)
        return [task_from_item(item) for item in items], next_cursor

    def iter_status_items(
        self,
        status: TaskStatus,
        filter_expression: tuple[str, dict[str, Any]] | None = None,
        page_size: int = 100,
        *,
        updated: tuple[str | None, str | None] = (None, None),
    ) -> Iterator[dict[str, Any]]:
        """The raw items of one status (from the index), page by page; only those whose
        `updated_at` is within `updated` (after, before) if given. For the sweeper: a
        Query per shard, reading only that window of the index."""
        for n in range(STATUS_SHARDS):
            start: dict[str, Any] | None = None
            while True:
                page = self._query_shard(
                    f"{status.value}#{n:02d}", page_size, start, filter_expression, updated
                )
                yield from page.get("Items", [])
                start = page.get("LastEvaluatedKey")
                if not start:
                    break

    def iter_status(
        self,
        status: TaskStatus,
        filter_expression: tuple[str, dict[str, Any]] | None = None,
        page_size: int = 100,
        *,
        updated: tuple[str | None, str | None] = (None, None),
    ) -> Iterator[Task]:
        """`iter_status_items` as tasks; items that are not valid tasks are skipped."""
        for item in self.iter_status_items(status, filter_expression, page_size, updated=updated):
            try:
                yield task_from_item(deserialize_image(item))
            except MalformedTask:
                continue

    def iter_unindexed_pending(
        self,
        created_before: str,
        *,
        segment: tuple[int, int] | None = None,
        page_size: int = 500,
    ) -> Iterator[dict[str, Any]]:
        """Raw PENDING items older than a cutoff, read with a filtered Scan of the whole
        table, or of one (segment, total segments) part of it.

        Tasks inserted by hand carry no `status_shard` until they are claimed, so a task
        whose stream record was lost is in no index; only a Scan can find it. It reads
        the whole table: the sweeper does it only when asked (a last resort).
        """
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table_name,
                "FilterExpression": "#status = :pending AND (attribute_not_exists(created_at)"
                " OR created_at < :cutoff)",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": serialize(
                    {":pending": TaskStatus.PENDING.value, ":cutoff": created_before}
                ),
                "Limit": page_size,
            }
            if segment is not None:
                kwargs["Segment"], kwargs["TotalSegments"] = segment
            if start:
                kwargs["ExclusiveStartKey"] = start
            page = self._call("scan", **kwargs)
            yield from page.get("Items", [])
            start = page.get("LastEvaluatedKey")
            if not start:
                return
