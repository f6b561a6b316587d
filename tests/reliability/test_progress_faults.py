"""Faults on progress writes: the latest report always wins, whatever order
the writes land in, and a report never holds up the handler that makes it.

- a progress write held up (throttled, retried by the SDK) while an async handler goes
  on: `ctx.report_progress` returns at once, the event loop keeps running, the later
  report goes with the outcome, and the held write, landing last, changes nothing;
- a stale report landing after a later one is refused by the store's condition (while
  the claim holds that is no error: a later report is there);
- a claim's first report replaces the one an earlier claim left, even when that claim's
  clock was ahead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from runner.app import App
from runner.client import TaskRunnerClient
from runner.context import TaskContext
from runner.errors import TaskConflict
from runner.heartbeat import LeasePolicy
from runner.items import iso
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskDefinition

S = TaskStatus
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
PROGRESS = "SET #progress = :progress"


class _Empty(BaseModel):
    pass


def _until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def client(app: App) -> TaskRunnerClient:
    return TaskRunnerClient(app)


def test_a_held_progress_write_never_holds_an_async_handler_nor_overwrites_a_later_report(
    app: App, client: TaskRunnerClient
) -> None:
    # Given the first progress write held up for seconds (throttled, retried by the SDK)
    dynamodb = app.clients.dynamodb
    original = dynamodb.update_item
    release, landed = threading.Event(), threading.Event()
    held: list[float] = []

    def update_item(**kwargs: Any) -> Any:
        if kwargs.get("UpdateExpression") != PROGRESS or held:
            return original(**kwargs)
        held.append(kwargs["ExpressionAttributeValues"][":progress"]["M"]["done"]["N"])
        release.wait(3)
        try:
            return original(**kwargs)
        finally:
            landed.set()

    dynamodb.update_item = update_item  # type: ignore[method-assign]
    timings: dict[str, float] = {}

    async def handler(data: _Empty, ctx: TaskContext) -> dict[str, bool]:
        started = time.monotonic()
        ctx.report_progress(10, 100)
        timings["report"] = time.monotonic() - started
        started = time.monotonic()
        await asyncio.sleep(0.05)
        timings["sleep"] = time.monotonic() - started
        ctx.report_progress(100, 100, "all done")
        await asyncio.sleep(0.3)  # the later report falls due while the first is held
        return {"ok": True}

    app.registry.register(
        TaskDefinition(
            type="ASYNC_PROGRESS_TASK", input_model=_Empty, handler=handler, timeout_seconds=30
        )
    )
    app.runner.leases = LeasePolicy(progress_seconds=0.05, live_lease_seconds=None)
    task = client.create_task("ASYNC_PROGRESS_TASK", {})

    # When it runs, and the held write lands only after its outcome
    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    release.set()
    assert landed.wait(5)

    # Then the handler's loop never waited on the write
    assert outcome.status is S.DONE
    assert held == ["10"]
    assert timings["report"] < 0.1 and timings["sleep"] < 0.5, timings
    # and the task shows the latest report: the outcome carried it, the late write lost
    stored = client.get_task(task.id)
    assert stored.progress is not None
    assert (stored.progress.done, stored.progress.message) == (100, "all done")


def _at(seconds: float) -> str:
    return iso(T0 + timedelta(seconds=seconds))


def test_a_stale_progress_write_landing_late_is_refused_by_its_condition(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("NOOP_TASK", {})
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=60)
    token = claimed.claim_token or ""
    later = {"done": 2, "message": "", "updated_at": _at(5)}
    assert app.store.write_progress(task.id, token=token, progress=later)

    # When an earlier report's write lands after it: refused, and no error (claim holds)
    earlier = {"done": 1, "message": "", "updated_at": _at(0)}
    assert app.store.write_progress(task.id, token=token, progress=earlier) is False
    progress = app.store.get(task.id).progress
    assert progress is not None and progress.done == 2
    # The same report again (an SDK retry of a write that applied) still holds
    assert app.store.write_progress(task.id, token=token, progress=later)
    # and a claim that no longer holds is a conflict, old or new
    for value in (earlier, {**later, "updated_at": _at(9)}):
        with pytest.raises(TaskConflict):
            app.store.write_progress(task.id, token="another-claim", progress=value)


def test_a_claims_first_report_replaces_an_earlier_claims_whose_clock_was_ahead(
    app: App, client: TaskRunnerClient
) -> None:
    # Given a task whose earlier claim left a report stamped an hour ahead of this clock
    task = client.create_task("NOOP_TASK", {})
    ahead = {"done": {"N": "7"}, "message": {"S": ""}, "updated_at": {"S": _at(3600)}}
    app.clients.dynamodb.update_item(
        TableName=app.settings.table_name,
        Key={"id": {"S": task.id}},
        UpdateExpression="SET progress = :p",
        ExpressionAttributeValues={":p": {"M": ahead}},
    )
    app.store.clock = lambda: T0
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=60)
    assert claimed.progress is not None and claimed.progress.done == 7
    control, _beat = LeasePolicy(live_lease_seconds=None).supervise(
        app.store, claimed, 60, time.monotonic
    )
    assert control.progress is not None

    # When this claim reports
    control.progress.report(1, 3)

    # Then its report replaces the old one (written from a thread of the heartbeat's)
    def shown() -> float | None:
        progress = app.store.get(task.id).progress
        return None if progress is None else progress.done

    assert _until(lambda: shown() == 1), shown()


def test_a_failed_progress_write_is_tried_again_once_due_and_a_lost_claim_ends_the_tries() -> None:
    from runner.errors import StoreError
    from runner.progress import ProgressReporter

    now = [0.0]
    results: list[Exception | None] = [StoreError("throttled"), None, TaskConflict("gone")]
    sent: list[float] = []

    def write(value: dict[str, Any]) -> None:
        sent.append(value["done"])
        outcome = results.pop(0)
        if outcome is not None:
            raise outcome

    reporter = ProgressReporter(
        write, clock=lambda: T0 + timedelta(seconds=now[0]), monotonic=lambda: now[0]
    )
    # Given a report whose write fails (throttled past the retries)
    reporter.report(1, 3)
    assert sent == [1] and not reporter.due()
    # Then it is tried again once its interval is over (not before), and stored
    now[0] = 5.0
    assert reporter.due()
    reporter.flush_due()
    assert sent == [1, 1] and not reporter.due()
    # A later report finds the claim gone: no more writes, and none for the outcome
    now[0] = 10.0
    reporter.report(2, 3)
    now[0] = 20.0
    reporter.report(3, 3)
    reporter.flush_due()
    assert sent == [1, 1, 2]
    assert reporter.close() is None
