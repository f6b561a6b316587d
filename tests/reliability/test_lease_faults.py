"""Faults on a live claim's lease where the runtime can be ended (Lambda): its lease is
120 s, kept alive by the heartbeat, so everything the claim still does must be fenced by
the lease as last renewed, and nothing may wait on an AWS call past it.

- work abandoned long after its claim: its outcome's write is bounded by the heartbeat's
  lease, not by the claim's first one;
- a heartbeat or progress call stuck (a stalled socket, throttling retried): the runtime
  is ended before the lease could lapse, whatever the call does; every such call gives
  up before then; a stuck progress write never holds a beat back;
- beats throttled until the lease could lapse: the runtime is ended first, and the task
  is never recorded CANCELLED, which nobody asked for.

Time is the store's injected clock; real waits are fractions of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import BaseModel

from runner import aws, runtime
from runner.app import App
from runner.client import TaskRunnerClient
from runner.context import TaskContext
from runner.control import TaskControl
from runner.errors import TaskCancelled
from runner.heartbeat import LAPSE_MARGIN_SECONDS, Heartbeat, LeasePolicy
from runner.model import ClaimSource, Task, TaskStatus
from runner.registry import TaskDefinition

S = TaskStatus
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
EPOCH = int(T0.timestamp())
HEARTBEAT = "SET #lease = :lease"


class _Empty(BaseModel):
    pass


class _Clock:
    """The store's clock, moved by the test (or by a handler)."""

    def __init__(self, app: App) -> None:
        self.now = T0
        app.store.clock = lambda: self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)


@pytest.fixture
def ended() -> Iterator[list[str]]:
    """The runtime can be ended (as in Lambda): each end is recorded, and returns."""
    calls: list[str] = []
    runtime.set_ender(lambda: calls.append("ended"))
    yield calls
    runtime.set_ender(None)


@pytest.fixture
def client(app: App) -> TaskRunnerClient:
    return TaskRunnerClient(app)


def _until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _register(app: App, handler: Any, timeout: float = 600) -> None:
    app.registry.register(
        TaskDefinition(type="LEASED", input_model=_Empty, handler=handler, timeout_seconds=timeout)
    )


def _claimed(app: App, client: TaskRunnerClient) -> Task:
    _register(app, lambda data, ctx: None)
    task = client.create_task("LEASED", {})
    return app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=120)


# --- 1. an abandoned outcome is fenced by the heartbeat's lease ------------------------


def test_work_abandoned_long_after_its_claim_is_recorded_under_the_heartbeats_lease(
    app: App, client: TaskRunnerClient, ended: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock(app)
    app.runner.leases = LeasePolicy(heartbeat_seconds=0.02)  # live: the 120 s lease
    release = threading.Event()
    lease_now = {"at": 0}

    async def long_then_leaves_work(data: _Empty, ctx: TaskContext) -> str:
        # 150 s go by, the heartbeat renewing the lease every 10 s of them ...
        for offset in range(10, 160, 10):
            clock.at(offset)
            gives_up = time.monotonic() + 10
            while (app.store.get(ctx.task_id).lease_expires_at or 0) < EPOCH + offset + 120:
                assert time.monotonic() < gives_up, f"no beat landed at {offset} s"
                await asyncio.sleep(0.005)
        lease_now["at"] = app.store.get(ctx.task_id).lease_expires_at or 0
        # ... then an upstream call in a thread is given up on: its work still runs
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(release.wait, 10), 0.05)
        return "fallback"

    _register(app, long_then_leaves_work)
    task = client.create_task("LEASED", {})
    original = app.store.record_outcome
    seen: dict[str, Any] = {}

    def slow_write(task: Task, status: TaskStatus, **kwargs: Any) -> Task:
        deadline = aws._deadline.get()
        seen["budget"] = None if deadline is None else deadline - time.monotonic()
        time.sleep(0.3)  # a slow reply: a guard due at once has fired by now
        seen["ended_during_write"] = list(ended)
        return original(task, status, **kwargs)

    monkeypatch.setattr(app.store, "record_outcome", slow_write)
    try:
        outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
    finally:
        release.set()

    # The claim's first lease (T0 + 120 s) was long over, the heartbeat's (T0 + 270 s)
    # was not: the write had its time, and the runtime was not ended during it
    assert lease_now["at"] == EPOCH + 270
    assert seen["budget"] is not None
    assert seen["budget"] > 120 - runtime.LATE_WRITE_MARGIN_SECONDS - 5, seen
    assert seen["ended_during_write"] == []
    # The outcome is recorded, under a lease past the invocation (the work may still act)
    assert outcome.status is S.DONE
    stored = app.store.get(task.id)
    assert stored.status is S.DONE and stored.attempt_log
    assert (stored.lease_expires_at or 0) > EPOCH + 150


# --- 2. a stuck call never lets the lease lapse under a running handler ----------------


def test_a_beat_stuck_in_its_call_ends_the_runtime_before_the_lease_could_lapse(
    app: App, client: TaskRunnerClient
) -> None:
    clock = _Clock(app)
    claimed = _claimed(app, client)
    lease = claimed.lease_expires_at or 0
    assert lease == EPOCH + 120
    stall, entered = threading.Event(), threading.Event()
    original = app.store.heartbeat

    def stalled(task_id: str, **kwargs: Any) -> bool:
        entered.set()
        stall.wait(10)  # a stalled socket (its read timeout is 30 s), or retried throttling
        return original(task_id, **kwargs)

    app.store.heartbeat = stalled  # type: ignore[method-assign]
    ended: list[str] = []
    control = TaskControl()
    beat = Heartbeat(
        app.store,
        claimed.id,
        claimed.claim_token or "",
        control,
        lease=lease,
        cap=lease + 480,
        live_seconds=120,
        interval=0.02,
        end_runtime=lambda reason: ended.append(reason) is None,
        tick_seconds=0.01,
    )
    try:
        with beat:
            # The first beat's call is sent, and hangs
            assert entered.wait(5)
            clock.at(120 - LAPSE_MARGIN_SECONDS - 1)
            time.sleep(0.1)
            assert ended == [], "ended while the lease still had its margin"
            # The margin is reached while the call still hangs
            clock.at(120 - LAPSE_MARGIN_SECONDS)
            assert _until(lambda: bool(ended)), "the runtime ran on past its margin"
            assert not stall.is_set()
    finally:
        stall.set()

    # It was ended before the lease lapsed: the sweeper could not take the task over yet
    assert control.lost and "lease" in ended[0]
    assert app.sweeper.expire_leases() == 0


def test_a_stuck_progress_write_never_holds_a_beat_back(app: App, client: TaskRunnerClient) -> None:
    claimed = _claimed(app, client)
    stall = threading.Event()
    writes: list[int] = []
    original = app.store.write_progress

    def stalled_after_the_first(
        task_id: str, *, token: str, progress: dict[str, Any], **kw: Any
    ) -> bool:
        writes.append(int(progress["done"]))
        if len(writes) > 1:
            stall.wait(10)
        return original(task_id, token=token, progress=progress, **kw)

    app.store.write_progress = stalled_after_the_first  # type: ignore[method-assign]
    policy = LeasePolicy(heartbeat_seconds=0.05, live_lease_seconds=120, progress_seconds=0.02)
    control, beat = policy.supervise(app.store, claimed, 600, time.monotonic)
    assert control.progress is not None
    try:
        with beat:
            control.progress.report(1, 3)  # written at once
            control.progress.report(2, 3)  # kept, then written by the heartbeat's thread
            assert _until(lambda: len(writes) == 2)
            # While that write hangs, the beats go on
            assert _until(lambda: beat.beats >= 3), f"{beat.beats} beats"
    finally:
        stall.set()


def test_every_heartbeat_and_progress_call_gives_up_before_the_lease_could_lapse(
    app: App, client: TaskRunnerClient
) -> None:
    clock = _Clock(app)
    claimed = _claimed(app, client)
    budgets: dict[str, float | None] = {}

    def spy(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def bounded(*args: Any, **kwargs: Any) -> Any:
            deadline = aws._deadline.get()
            budgets[name] = None if deadline is None else deadline - time.monotonic()
            return call(*args, **kwargs)

        return bounded

    app.store.heartbeat = spy("heartbeat", app.store.heartbeat)  # type: ignore[method-assign]
    app.store.write_progress = spy("progress", app.store.write_progress)  # type: ignore[method-assign]
    policy = LeasePolicy(heartbeat_seconds=30, live_lease_seconds=120)
    control, beat = policy.supervise(app.store, claimed, 600, time.monotonic)
    assert control.progress is not None

    # 90 s into the claim's 120 s lease: 30 s left, less the margin
    clock.at(90)
    assert beat.beat()
    clock.at(100)  # the beat renewed the lease to T0 + 210 s
    control.progress.report(1)  # written from a thread of its own
    assert _until(lambda: "progress" in budgets)

    left_at_beat = 120 - 90 - LAPSE_MARGIN_SECONDS
    left_at_progress = 210 - 100 - LAPSE_MARGIN_SECONDS
    beat_budget, progress_budget = budgets["heartbeat"], budgets["progress"]
    assert beat_budget is not None and left_at_beat - 1 < beat_budget <= left_at_beat
    assert progress_budget is not None
    assert left_at_progress - 1 < progress_budget <= left_at_progress


# --- 8. throttled beats never end a task CANCELLED -------------------------------------


def _throttle_heartbeats(app: App) -> dict[str, int]:
    client = app.clients.dynamodb
    original = client.update_item
    counts = {"throttled": 0}

    def update_item(**kwargs: Any) -> Any:
        if kwargs.get("UpdateExpression") == HEARTBEAT:
            counts["throttled"] += 1
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem"
            )
        return original(**kwargs)

    client.update_item = update_item  # type: ignore[method-assign]
    app.store._sleep = lambda seconds: None  # the retry policy's backoff, not waited here
    return counts


@pytest.mark.parametrize("kind", ["async, cancelled at its await", "sync, polling the flag"])
def test_beats_throttled_until_the_lease_could_lapse_never_end_a_task_cancelled(
    app: App, client: TaskRunnerClient, ended: list[str], kind: str
) -> None:
    clock = _Clock(app)
    counts = _throttle_heartbeats(app)
    app.runner.leases = LeasePolicy(heartbeat_seconds=0.02)  # live: the 120 s lease
    seen: dict[str, Any] = {}

    def beats_fail_until(offset: int) -> bool:
        """Moves the clock by 30 s once the last beat was refused; True at `offset`."""
        if counts["throttled"] > seen.setdefault("refused", 0):
            seen["refused"] = counts["throttled"]
            seen["at"] = seen.get("at", 0) + 30
            clock.at(min(seen["at"], offset))
        return seen.get("at", 0) >= offset

    late = int(120 - LAPSE_MARGIN_SECONDS + 1)  # the claim's lease still holds
    gives_up = time.monotonic() + 20

    async def awaits(data: _Empty, ctx: TaskContext) -> str:
        while not beats_fail_until(late):
            assert time.monotonic() < gives_up, "the beats were not refused"
            await asyncio.sleep(0.005)
        try:
            for _ in range(500):
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            seen["ended_when_stopped"] = list(ended)
            raise
        return "ran on"

    def polls(data: _Empty, ctx: TaskContext) -> str:
        while not beats_fail_until(late):
            assert time.monotonic() < gives_up, "the beats were not refused"
            time.sleep(0.005)
        for _ in range(500):
            if ctx.cancel_requested:
                seen["ended_when_stopped"] = list(ended)
                raise TaskCancelled("asked to stop")
            time.sleep(0.01)
        return "ran on"

    _register(app, awaits if kind.startswith("async") else polls, timeout=60)
    task = client.create_task("LEASED", {})

    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)

    # The beats failed (throttled) while the claim still held; the runtime was ended
    # before the handler was asked to stop ...
    assert counts["throttled"] >= 3
    assert seen.get("ended_when_stopped") == ["ended"], seen
    # ... and the stop is a lost claim, not a cancel: nothing is recorded, the task stays
    # PROCESSING until its lease lapses (then it is retried), never CANCELLED
    assert outcome.status is None and outcome.note == "claim lost"
    stored = app.store.get(task.id)
    assert stored.status is S.PROCESSING and not stored.cancel_requested


def test_a_lease_it_cannot_renew_ends_the_runtime_before_the_handler_is_told(
    app: App, client: TaskRunnerClient
) -> None:
    clock = _Clock(app)
    _throttle_heartbeats(app)
    claimed = _claimed(app, client)
    lease = claimed.lease_expires_at or 0
    order: list[str] = []
    control = TaskControl()
    control.on_cancel(lambda: order.append("handler told to stop"))
    beat = Heartbeat(
        app.store,
        claimed.id,
        claimed.claim_token or "",
        control,
        lease=lease,
        cap=lease + 480,
        live_seconds=120,
        interval=30,
        end_runtime=lambda reason: order.append("runtime ended") is None,
    )

    # 90 s in, a beat fails after its retries: the next one could come after the lease
    clock.at(90)
    assert not beat.beat()

    assert order == ["runtime ended", "handler told to stop"]
    assert control.lost and not control.cancelled_by_request
