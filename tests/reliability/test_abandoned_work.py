"""Handler work the runner cannot stop never overlaps the task's next run (I1).

Work is abandoned when it outlives its attempt: an async handler that blocks its event
loop, `asyncio.to_thread` work a handler left behind (whatever the handler then
returned), a sync handler past its timeout. Its attempt makes no further try; its
outcome holds the task under a lease past the invocation; and whenever that outcome is
late, refused or lost, the runtime ends before the claim's own lease does. The cuts of
several such leases before the exit all outlast it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import handler
from runner import aws, runtime
from runner.app import App
from runner.errors import RetryableTaskError, TaskLeaseHeld
from runner.items import utcnow
from runner.model import TaskStatus
from tests.helpers import FakeLambdaContext, pending, put_raw, stream_record
from tests.integration.test_reput import reader_for


class Copies:
    """Counts copies of one piece of work running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.running = 0
        self.most = 0
        self.runs = 0

    def __enter__(self) -> None:
        with self.lock:
            self.running += 1
            self.runs += 1
            self.most = max(self.most, self.running)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.running -= 1

    def until_released(self, data: Any = None, ctx: Any = None) -> dict[str, int]:
        with self:
            self.release.wait(10)
            return {"runs": self.runs}


@pytest.fixture
def lambda_app(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    return app


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """In a Lambda runtime (its Runtime API set), `os._exit` recorded instead of run."""
    calls: list[int] = []
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    monkeypatch.setattr("os._exit", calls.append)
    yield calls


def _override(app: App, monkeypatch: pytest.MonkeyPatch, task_type: str, **changes: Any) -> None:
    definition = dataclasses.replace(app.registry.get(task_type), **changes)
    monkeypatch.setitem(app.registry._by_type, task_type, definition)


def _put(app: App, task_id: str, task_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return put_raw(app.clients.dynamodb, app.settings.table_name, pending(task_id, task_type, data))


def test_an_async_handler_blocking_its_event_loop_is_timed_out_and_abandoned(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    # Given an async handler that makes a blocking call (a sync client in async code):
    # its loop cannot fire the 0.2 s timeout while it blocks
    copies = Copies()

    async def blocking(data: Any, ctx: Any) -> None:
        copies.until_released()

    _override(lambda_app, monkeypatch, "SLEEP_TASK", handler=blocking, timeout_seconds=0.2)
    values = _put(lambda_app, "b", "SLEEP_TASK", {"seconds": 0})

    # When the stream runs it
    started = time.monotonic()
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    took = time.monotonic() - started

    # Then the timeout is recorded within the cancel grace, not when the call returns
    task = lambda_app.store.get("b")
    assert took < 0.2 + 1.0 + 1.0, f"the batch took {took:.2f} s"
    assert task.status is TaskStatus.FAILED and task.error and task.error.type == "TaskTimedOut"
    # ... the work is treated as abandoned: the runtime is ended, and the lease it was
    # recorded under outlasts the stream invocation (cut just before the exit)
    assert exits == [runtime.EXIT_STATUS]
    assert (
        task.lease_expires_at is not None and task.lease_expires_at >= lambda_app.store.now_epoch()
    )
    # And a retry arriving once the claim's own lease has passed is still held off
    lambda_app.store.clock = lambda: utcnow() + timedelta(seconds=2)
    with pytest.raises(TaskLeaseHeld):
        handler.run_task({"task_id": "b", "episode": 1}, FakeLambdaContext(seconds=12))
    assert copies.runs == 1
    copies.release.set()


@pytest.mark.parametrize("ending", ["fails retryably", "returns a fallback"])
def test_thread_work_a_handler_left_running_stops_its_retries_and_holds_its_outcome(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int], ending: str
) -> None:
    # Given the careful pattern: an upstream call in a thread, given up after 0.1 s;
    # the thread still runs (and would act when the call returns)
    copies = Copies()

    async def careful(data: Any, ctx: Any) -> str:
        try:
            await asyncio.wait_for(asyncio.to_thread(copies.until_released), 0.1)
        except TimeoutError:
            if ending == "fails retryably":
                raise RetryableTaskError("upstream slow") from None
        return "fallback"

    _override(
        lambda_app,
        monkeypatch,
        "SLEEP_TASK",
        handler=careful,
        timeout_seconds=5,
        local_retries=2,
        local_retry_delay_seconds=0.0,
    )
    values = _put(lambda_app, "l", "SLEEP_TASK", {"seconds": 0})

    # When the stream runs it
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())

    # Then no local retry ran beside the first try's work
    assert copies.runs == 1 and copies.most == 1
    # ... its outcome is recorded under the abandoned lease (not free to claim at once),
    # and the runtime ends before the invocation returns
    task = lambda_app.store.get("l")
    expected = TaskStatus.FAILED if ending == "fails retryably" else TaskStatus.DONE
    assert task.status is expected
    assert (
        task.lease_expires_at is not None and task.lease_expires_at >= lambda_app.store.now_epoch()
    )
    assert exits == [runtime.EXIT_STATUS]
    copies.release.set()


def test_a_late_abandoned_outcome_write_ends_the_runtime_while_the_claim_lease_fences(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    # Given a claim lease of the timeout plus 4 s (30 s in production), and a handler
    # past its 0.2 s timeout
    monkeypatch.setattr("runner.executor.LEASE_GRACE_SECONDS", 4.0)
    monkeypatch.setattr(runtime, "LATE_WRITE_MARGIN_SECONDS", 2.0)
    copies = Copies()
    _override(
        lambda_app, monkeypatch, "NOOP_TASK", handler=copies.until_released, timeout_seconds=0.2
    )
    values = _put(lambda_app, "s", "NOOP_TASK", {})

    # ... whose outcome write is slow (DynamoDB throttling, a read timeout): 6 s
    original = lambda_app.store.record_outcome
    seen: dict[str, Any] = {}
    write_returned = threading.Event()

    def slow_write(task: Any, status: Any, **kwargs: Any) -> Any:
        deadline = aws._deadline.get()
        seen["budget"] = None if deadline is None else deadline - time.monotonic()
        seen["claim_lease"] = task.lease_expires_at
        seen["lease_left"] = task.lease_expires_at - time.time()
        time.sleep(6)
        try:
            return original(task, status, **kwargs)
        finally:
            write_returned.set()

    def exit_(status: int) -> None:
        exits.append(status)
        seen.setdefault("exit_at", (time.time(), write_returned.is_set()))

    monkeypatch.setattr(lambda_app.store, "record_outcome", slow_write)
    monkeypatch.setattr("os._exit", exit_)

    # When the stream runs it
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())

    # Then the write's retries were bounded before the claim's lease ends ...
    assert seen["budget"] is not None
    assert seen["budget"] < seen["lease_left"]
    # ... and the runtime was ended before that lease ended, without waiting for the write
    exit_at, returned = seen["exit_at"]
    assert not returned, "the runtime ended only once the slow write returned"
    assert exit_at < seen["claim_lease"], "the claim's lease ended before the runtime did"
    copies.release.set()


def test_an_abandoned_outcome_refused_by_a_put_again_ends_the_runtime_at_once(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    # Given a task put again by its producer while its claim runs, whose handler is then
    # abandoned past its 0.2 s timeout, in a batch with another task that takes 1.5 s
    app = lambda_app
    copies = Copies()
    _override(app, monkeypatch, "NOOP_TASK", handler=copies.until_released, timeout_seconds=0.2)
    reader = reader_for(app)
    x = _put(app, "x", "NOOP_TASK", {})
    y = _put(app, "y", "SLEEP_TASK", {"seconds": 1.5})
    reader.read()
    seen: dict[str, Any] = {}

    def producer_and_next_lambda() -> None:
        time.sleep(0.1)  # x is claimed and running
        _put(app, "x", "NOOP_TASK", {})
        time.sleep(0.7)  # x timed out and its outcome was refused; y still runs
        seen["exits"] = list(exits)
        # The old claim's lease (timeout + 30 s) has passed: another environment's
        # batch runs the new item
        app.store.clock = lambda: utcnow() + timedelta(seconds=35)
        modify = [
            r
            for r in reader.read()
            if r["eventName"] == "MODIFY"
            and r["dynamodb"]["Keys"]["id"]["S"] == "x"
            and r["dynamodb"]["NewImage"]["status"]["S"] == "PENDING"
        ]
        seen["new_run"] = app.stream.process(modify).outcomes

    side = threading.Thread(target=producer_and_next_lambda)
    side.start()
    # When the old batch runs
    handler.process_stream({"Records": [stream_record(x), stream_record(y)]}, FakeLambdaContext())
    side.join()
    copies.release.set()

    # Then its runtime had ended (with the abandoned work) before the new item could run,
    # not only at the end of its batch
    assert seen["new_run"], "the new item was not run"
    assert seen["exits"] == [runtime.EXIT_STATUS]


def test_every_cut_lease_outlasts_the_exit_however_many_there_are(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four tasks of one batch abandoned past their timeout, and cuts whose replies
    # are slow (1 s connect + 1 s read timeouts allow about 2 s each)
    copies = Copies()
    _override(
        lambda_app, monkeypatch, "NOOP_TASK", handler=copies.until_released, timeout_seconds=0.2
    )
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    ids = [f"c{n}" for n in range(4)]
    records = [stream_record(_put(lambda_app, i, "NOOP_TASK", {})) for i in ids]
    original = lambda_app.store.release_lease

    def slow_cut(task_id: str, **kwargs: Any) -> bool:
        applied = original(task_id, **kwargs)
        time.sleep(1.9)
        return applied

    at_exit: list[tuple[str, int | None, int]] = []

    def exit_(status: int) -> None:
        now = lambda_app.store.now_epoch()
        at_exit.extend((i, lambda_app.store.get(i).lease_expires_at, now) for i in ids)

    monkeypatch.setattr(lambda_app.store, "release_lease", slow_cut)
    monkeypatch.setattr("os._exit", exit_)

    # When the batch ends (the cuts, then the exit)
    handler.process_stream({"Records": records}, FakeLambdaContext())
    copies.release.set()

    # Then at the exit no lease has ended: none of the four is claimable yet
    assert len(at_exit) == 4
    claimable = [i for i, lease, now in at_exit if lease is None or lease < now]
    assert claimable == [], f"{claimable} claimable while their work still ran"


def test_an_async_handlers_own_timeout_error_is_its_own_error(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an async handler whose upstream call times out (asyncio.TimeoutError, a
    # socket timeout) long before its own 60 s timeout
    async def upstream_timeout(data: Any, ctx: Any) -> None:
        await asyncio.wait_for(asyncio.sleep(1), 0.01)

    _override(lambda_app, monkeypatch, "SLEEP_TASK", handler=upstream_timeout, timeout_seconds=60)
    values = _put(lambda_app, "e", "SLEEP_TASK", {"seconds": 0})

    # When it runs
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())

    # Then it is recorded as the handler's own TimeoutError, not the runner's timeout
    task = lambda_app.store.get("e")
    assert task.error is not None and task.error.type == "TimeoutError", task.error
    assert "exceeded its" not in task.error.message
