"""What the pages show, read from the table (the index and GetItem, never a Scan) and from
Step Functions, with the caches that keep a page cheap to render again.

A task is read as its raw item, so attributes the runner's model does not know yet
(progress, steps, a cancel request, a scheduled time) are shown when an item has them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.config import STATUS_SHARDS
from runner.dashboard.cache import TtlCache
from runner.dashboard.counts import OldestPending, StatusCount, StatusCounter, counted_statuses
from runner.dashboard.settings import DashboardSettings
from runner.errors import MalformedTask, StoreError, TaskNotFound, WorkflowError
from runner.items import deserialize_image, serialize, task_from_item
from runner.model import Task, TaskStatus
from runner.table import TasksTable

# Step Functions' statuses of an execution that is over: its description and history
# can no longer change, so they are kept.
CLOSED_EXECUTION = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
# Step Functions calls a task page makes at once (two per execution: its description and
# its history).
MAX_PARALLEL_EXECUTION_CALLS = 8
# Step Functions' error codes for an execution that is gone: it deletes an execution's
# history 90 days after it closes (and an ARN from another account or region is not found).
GONE_EXECUTION_CODES = frozenset({"ExecutionDoesNotExist", "InvalidArn", "ResourceNotFound"})


def console_url(execution_arn: str) -> str:
    """The execution's page in the Step Functions console."""
    parts = execution_arn.split(":")
    region = parts[3] if len(parts) > 3 else "us-east-1"
    return (
        f"https://{region}.console.aws.amazon.com/states/home?region={region}"
        f"#/v2/executions/details/{execution_arn}"
    )


@dataclass(frozen=True)
class ExecutionView:
    arn: str
    status: str | None
    started: str
    stopped: str
    events: list[dict[str, Any]]
    console_url: str
    # Why it could not be read (gone, not allowed, throttled); None when it was.
    unavailable: str | None = None

    @property
    def name(self) -> str:
        return self.arn.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class TaskView:
    """One task as its page shows it."""

    task: Task | None  # None when the item is not a valid task (`problem` says why)
    item: dict[str, Any]  # every attribute, as plain values
    executions: list[ExecutionView]
    problem: str | None = None

    @property
    def task_id(self) -> str:
        return str(self.item.get("id", ""))

    @property
    def status(self) -> str:
        return str(self.item.get("status", ""))

    @property
    def progress(self) -> dict[str, Any] | None:
        value = self.item.get("progress")
        return value if isinstance(value, dict) else None

    @property
    def steps(self) -> list[dict[str, Any]]:
        """Recorded durable steps: a map of name → record, or a list of records."""
        value = self.item.get("steps")
        if isinstance(value, dict):
            return [{"name": name, **_as_map(v)} for name, v in sorted(value.items())]
        if isinstance(value, list):
            return [_as_map(v) for v in value]
        return []

    @property
    def cancel_requested(self) -> bool:
        return self.item.get("cancel_requested") is True

    @property
    def live(self) -> bool:
        """Still changing: not final, or a retry execution is still running."""
        if any(e.status == "RUNNING" for e in self.executions):
            return True
        if self.status in ("DONE", "CANCELLED"):
            return False
        if self.status == "FAILED":
            item = self.item
            return item.get("retryable") is True and item.get("retries_exhausted") is not True
        return True

    def version(self) -> str:
        """Changes whenever anything the live part of the page shows changes."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.item, sort_keys=True, default=str).encode())
        for execution in self.executions:
            digest.update(f"{execution.arn}{execution.status}{len(execution.events)}".encode())
        return digest.hexdigest()[:20]


def _as_map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"result": value}


@dataclass(frozen=True)
class ListRow:
    """A row of a list page: the task, or the item and why it is not a valid one."""

    item: dict[str, Any]
    task: Task | None
    problem: str | None = None

    @property
    def id(self) -> str:
        return str(self.item.get("id", ""))


@dataclass(frozen=True)
class Overview:
    counts: list[StatusCount]
    oldest_pending: OldestPending | None
    counted_at: float  # monotonic
    fresh: bool
    throughput: Any = None  # runner.dashboard.throughput.Throughput, when metrics exist
    queries: int = 0
    # Why these are not fresh counts (the table refused or throttled the queries, or a
    # count is still under way): the page says so beside the figures it still shows.
    stale_reason: str | None = None


class ItemReader(TasksTable):
    """One task's item, strongly consistent (an operator wants what is there now)."""

    def item(self, task_id: str) -> dict[str, Any]:
        found = self._call(
            "get_item",
            TableName=self.table_name,
            Key=serialize({"id": task_id}),
            ConsistentRead=True,
        )
        if "Item" not in found:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return deserialize_image(found["Item"])


@dataclass
class DashboardReads:
    """The pages' reads for one App (store, workflow) and one dashboard's settings."""

    app: Any  # runner.app.App
    settings: DashboardSettings
    throughput: Callable[[], Any] | None = None
    counter: StatusCounter = field(init=False)
    items: ItemReader = field(init=False)

    def __post_init__(self) -> None:
        self.counter = StatusCounter(self.app.settings, self.app.clients)
        self.items = ItemReader(self.app.settings, self.app.clients)
        self._overview: TtlCache[Overview] = TtlCache(self.settings.count_ttl_seconds)
        self._closed: TtlCache[ExecutionView] = TtlCache(None, max_entries=2048)
        self._sfn_pool = ThreadPoolExecutor(
            MAX_PARALLEL_EXECUTION_CALLS, thread_name_prefix="dashboard-sfn"
        )

    # --- the overview --------------------------------------------------------------------

    def overview(self) -> Overview:
        """The counts, cached; the last ones (marked stale, with the reason) while a count
        is under way or when the table refuses one; no counts, and the reason, before
        any succeeded."""
        reason = None
        try:
            cached = self._overview.get("overview", self._compute_overview, stale_ok=True)
            if not cached.fresh and self._overview.peek("overview") is None:
                reason = "a new count is under way"
        except StoreError as exc:
            last = self._overview.last("overview")
            reason = f"the table did not answer the count: {exc}"
            if last is None:
                now = time.monotonic()
                return Overview([], None, now, False, self._throughput(), 0, reason)
            cached = last
        value = cached.value
        return Overview(
            value.counts,
            value.oldest_pending,
            value.counted_at,
            cached.fresh,
            self._throughput(),
            value.queries,
            reason,
        )

    def _throughput(self) -> Any:
        return self.throughput() if self.throughput is not None else None

    def _compute_overview(self) -> Overview:
        counts = self.counter.counts(counted_statuses(), self.settings.count_cap)
        oldest = self.counter.oldest_pending()
        queries = sum(c.queries for c in counts) + STATUS_SHARDS  # one per PENDING shard
        return Overview(counts, oldest, time.monotonic(), True, None, queries)

    def forget(self) -> None:
        """Drop the cached counts (after an action changed them)."""
        self._overview.clear()

    def reset(self) -> None:
        """Drop every cache: the next render reads everything (for benchmarks)."""
        self._overview.clear()
        self._closed.clear()
        forget = getattr(self.throughput, "forget", None)
        if callable(forget):
            forget()

    # --- lists and tasks -----------------------------------------------------------------

    def page(
        self, status: TaskStatus | None, cursor: str | None
    ) -> tuple[list[ListRow], str | None]:
        """One page of the list; an item that is not a valid task is a row saying so (the
        CLI refuses such a page; an operator needs to see the rest, and find that one)."""
        items, next_cursor = self.app.store.list_items(
            status, limit=self.settings.page_size, cursor=cursor
        )
        rows = []
        for item in items:
            try:
                rows.append(ListRow(item, task_from_item(item)))
            except MalformedTask as exc:
                rows.append(ListRow(item, None, str(exc)))
        return rows, next_cursor

    def task(self, task_id: str) -> TaskView:
        item = self.items.item(task_id)
        try:
            task: Task | None = task_from_item(item)
            problem = None
        except MalformedTask as exc:
            task, problem = None, str(exc)
        arns = [str(a) for a in item.get("executions") or []]
        return TaskView(task, item, self.executions(arns), problem)

    def executions(self, arns: list[str]) -> list[ExecutionView]:
        """The executions, in order; those not cached read at once (a description and a
        history each, all in parallel)."""
        views: dict[str, ExecutionView] = {}
        pending: list[tuple[str, Any, Any]] = []
        for arn in arns:
            cached = self._closed.peek(arn)
            if cached is not None:
                views[arn] = cached.value
            elif arn not in {p[0] for p in pending}:
                workflow = self.app.workflow
                pending.append(
                    (
                        arn,
                        self._sfn_pool.submit(workflow.describe, arn),
                        self._sfn_pool.submit(workflow.history, arn),
                    )
                )
        for arn, described, history in pending:
            views[arn] = self._execution_view(arn, described.result, history.result)
        return [views[arn] for arn in arns]

    def execution(self, arn: str) -> ExecutionView:
        return self.executions([arn])[0]

    def _execution_view(
        self,
        arn: str,
        describe: Callable[[], dict[str, Any]],
        history: Callable[[], list[dict[str, Any]]],
    ) -> ExecutionView:
        try:
            info = describe()
            events = history()
        except WorkflowError as exc:
            return ExecutionView(
                arn=arn,
                status=None,
                started="",
                stopped="",
                events=[],
                console_url=console_url(arn),
                unavailable=_unavailable(exc),
            )
        view = ExecutionView(
            arn=arn,
            status=info.get("status"),
            started=str(info.get("started") or ""),
            stopped=str(info.get("stopped") or ""),
            events=events,
            console_url=console_url(arn),
        )
        if view.status in CLOSED_EXECUTION:
            self._closed.put(arn, view)
        return view


def _unavailable(exc: WorkflowError) -> str:
    """What the page says of an execution it could not read (not cached: it may be read
    next time)."""
    if exc.code in GONE_EXECUTION_CODES:
        return (
            "No longer available: Step Functions keeps an execution's history for 90 days"
            " after it closes."
        )
    if exc.code in ("AccessDeniedException", "AccessDenied"):
        return (
            "Not readable with these credentials (states:DescribeExecution and"
            " states:GetExecutionHistory are needed)."
        )
    return f"Could not be read now: {exc}. The page tries again on its next refresh."
