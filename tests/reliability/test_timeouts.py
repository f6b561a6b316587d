"""A handler past its timeout can make no effect after its retry starts (I1; defects 4
and 7): its outcome keeps a lease past the invocation's hard deadline, every claim waits
for it, and the Lambda runtime is ended before the invocation returns, so a frozen
thread can never resume."""

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
from runner import runtime
from runner.app import App
from runner.attempts import AttemptInput, WorkflowAttempts
from runner.errors import RegistryError, RetryableTaskError, StoreError, TaskLeaseHeld
from runner.items import utcnow
from runner.model import TaskStatus
from runner.registry import TaskDefinition
from tests.helpers import FakeLambdaContext, pending, put_raw, stream_record


class Overlap:
    """A sync handler that runs until released, and counts copies running at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.runs = 0

    def __call__(self, data: Any, ctx: Any) -> dict[str, int]:
        with self.lock:
            self.running += 1
            self.runs += 1
            self.most = max(self.most, self.running)
        try:
            self.release.wait(10)
            return {"runs": self.runs}
        finally:
            with self.lock:
                self.running -= 1


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


def _watch_the_cut(
    app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> list[tuple[str, int]]:
    """("cut", the lease as it was) when a held lease is released, ("exit", status) when
    the runtime ends, in order."""
    events: list[tuple[str, int]] = []
    release = app.store.release_lease

    def cut(task_id: str, **kwargs: Any) -> bool:
        events.append(("cut", app.store.get(task_id).lease_expires_at or 0))
        return release(task_id, **kwargs)

    def exit_(status: int) -> None:
        events.append(("exit", status))
        exits.append(status)

    monkeypatch.setattr(app.store, "release_lease", cut)
    monkeypatch.setattr("os._exit", exit_)
    return events


def _override(app: App, monkeypatch: pytest.MonkeyPatch, task_type: str, **changes: Any) -> None:
    definition = dataclasses.replace(app.registry.get(task_type), **changes)
    monkeypatch.setitem(app.registry._by_type, task_type, definition)


def test_a_timed_out_sync_handler_is_never_overlapped_by_its_retry(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    events = _watch_the_cut(lambda_app, monkeypatch, exits)
    # Given a sync handler that outlives its 0.2 s timeout
    work = Overlap()
    _override(lambda_app, monkeypatch, "NOOP_TASK", handler=work, timeout_seconds=0.2)
    values = put_raw(
        lambda_app.clients.dynamodb, lambda_app.settings.table_name, pending("t", "NOOP_TASK", {})
    )

    # When the stream runs it, it records the timeout (retryable) ...
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    task = lambda_app.store.get("t")
    assert task.status is TaskStatus.FAILED and task.error and task.error.type == "TaskTimedOut"
    # ... and ends the runtime before returning, since the handler still runs
    assert exits, "the runtime was not ended"

    # Then the retry workflow's attempt waits: the task was held past the stream
    # invocation's deadline (300 s here) until the runtime's end, and a few seconds after
    # it (the exit follows the cut at once)
    assert [e[0] for e in events] == ["cut", "exit"]
    assert events[0][1] >= int(utcnow().timestamp()) + 290  # the lease it cut
    assert task.lease_expires_at is not None
    assert task.lease_expires_at <= int(utcnow().timestamp()) + runtime.EXIT_LEASE_SECONDS + 1
    # (an attempt with the time would wait those seconds out: here the thread lives on,
    # since os._exit was not run, so the attempt is given too little time to wait)
    with pytest.raises(TaskLeaseHeld):
        handler.run_task({"task_id": "t", "episode": 1}, FakeLambdaContext(seconds=12))
    assert work.runs == 1

    # And once the lease is over (the first run is long gone), the retry runs alone
    work.release.set()
    lambda_app.store.clock = lambda: utcnow() + timedelta(seconds=400)
    handler.run_task({"task_id": "t", "episode": 1}, FakeLambdaContext())
    assert lambda_app.store.get("t").status is TaskStatus.DONE
    assert work.most == 1 and work.runs == 2


def test_a_lease_the_cut_cannot_shorten_stays_whole_and_the_runtime_still_ends(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    # Given a handler past its timeout, and DynamoDB refusing the write that would cut
    # its lease before the exit
    work = Overlap()
    _override(lambda_app, monkeypatch, "NOOP_TASK", handler=work, timeout_seconds=0.2)
    values = put_raw(
        lambda_app.clients.dynamodb, lambda_app.settings.table_name, pending("k", "NOOP_TASK", {})
    )

    def refused(task_id: str, **kwargs: Any) -> bool:
        raise StoreError("DynamoDB update_item failed: ThrottlingException", transient=True)

    monkeypatch.setattr(lambda_app.store, "release_lease", refused)

    # When the stream runs it
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())

    # Then the runtime ends all the same, and the lease past the deadline holds the retry
    assert exits
    task = lambda_app.store.get("k")
    assert task.lease_expires_at is not None
    assert task.lease_expires_at >= int(utcnow().timestamp()) + 290
    work.release.set()


def test_outside_lambda_a_lease_holds_while_its_work_runs_and_goes_once_it_ends(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no Lambda runtime to end (the CLI, a test), and a handler past its timeout
    work = Overlap()
    _override(lambda_app, monkeypatch, "NOOP_TASK", handler=work, timeout_seconds=0.2)
    values = put_raw(
        lambda_app.clients.dynamodb, lambda_app.settings.table_name, pending("o", "NOOP_TASK", {})
    )
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())

    # Then while it runs, its lease (past the invocation's deadline) holds the retry off
    assert (lambda_app.store.get("o").lease_expires_at or 0) >= int(utcnow().timestamp()) + 290
    with pytest.raises(TaskLeaseHeld):
        handler.run_task({"task_id": "o", "episode": 1}, FakeLambdaContext())
    assert work.runs == 1

    # When it has ended by itself, the end of an invocation removes the lease
    work.release.set()
    deadline = time.monotonic() + 5
    while runtime.abandoned():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    handler.process_stream({"Records": []}, FakeLambdaContext())
    assert lambda_app.store.get("o").lease_expires_at is None

    # And the retry runs now, alone
    work.release.clear()
    threading.Timer(0.05, work.release.set).start()
    _override(lambda_app, monkeypatch, "NOOP_TASK", handler=work, timeout_seconds=2)
    handler.run_task({"task_id": "o", "episode": 1}, FakeLambdaContext())
    assert lambda_app.store.get("o").status is TaskStatus.DONE
    assert work.most == 1 and work.runs == 2


def test_an_attempt_waits_out_a_lease_that_ends_in_seconds_in_its_own_invocation(
    lambda_app: App,
) -> None:
    # Given a task whose last attempt's lease was cut to a few seconds (its runtime ended)
    put_raw(
        lambda_app.clients.dynamodb,
        lambda_app.settings.table_name,
        {
            **pending("w", "NOOP_TASK", {}),
            "status": "FAILED",
            "retryable": True,
            "episode": 1,
            "lease_expires_at": int(utcnow().timestamp()) + runtime.EXIT_LEASE_SECONDS,
        },
    )
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # time passes for the store too
        slept.append(seconds)
        passed = sum(slept)
        lambda_app.store.clock = lambda: utcnow() + timedelta(seconds=passed)

    attempts = WorkflowAttempts(lambda_app.runner, sleep=sleep)

    # When the workflow's attempt comes, with the time to wait
    outcome = attempts.run(AttemptInput("w", 1, "NOOP_TASK"), remaining_seconds=800)

    # Then it waited those seconds here (no TaskLeaseHeld round trip) and ran the task
    assert outcome.status is TaskStatus.DONE
    assert len(slept) == 1 and 0 < slept[0] <= runtime.EXIT_LEASE_SECONDS + 1


def test_an_async_handler_with_hung_thread_work_does_not_hold_its_record(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    # Given an async handler awaiting thread work that takes 3 s, with a 0.2 s timeout
    async def hung(data: Any, ctx: Any) -> None:
        await asyncio.to_thread(time.sleep, 3)

    _override(lambda_app, monkeypatch, "SLEEP_TASK", handler=hung, timeout_seconds=0.2)
    values = put_raw(
        lambda_app.clients.dynamodb,
        lambda_app.settings.table_name,
        pending("a", "SLEEP_TASK", {"seconds": 0}),
    )

    # When the stream runs it
    started = time.monotonic()
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())

    # Then the timeout is recorded at once (not after the thread's 3 s), under a lease,
    # and the runtime is ended since the thread still runs
    assert time.monotonic() - started < 2.0
    task = lambda_app.store.get("a")
    assert task.status is TaskStatus.FAILED and task.error and task.error.type == "TaskTimedOut"
    assert task.lease_expires_at is not None and exits


def test_an_async_handler_cancelled_in_time_leaves_nothing_to_end(
    lambda_app: App, monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    _override(lambda_app, monkeypatch, "SLEEP_TASK", timeout_seconds=0.2)
    values = put_raw(
        lambda_app.clients.dynamodb,
        lambda_app.settings.table_name,
        pending("c", "SLEEP_TASK", {"seconds": 5}),
    )
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    task = lambda_app.store.get("c")
    assert task.error and task.error.type == "TaskTimedOut" and task.lease_expires_at is None
    assert exits == []


def test_local_retries_share_one_deadline(lambda_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a handler that fails after 0.3 s, allowed 3 quick in-process retries, with a
    # 0.5 s timeout: four tries would take 1.2 s, past the lease a single timeout buys
    calls: list[float] = []

    async def slow_blip(data: Any, ctx: Any) -> None:
        calls.append(time.monotonic())
        await asyncio.sleep(0.3)
        raise RetryableTaskError("blip")

    _override(
        lambda_app,
        monkeypatch,
        "SLEEP_TASK",
        handler=slow_blip,
        timeout_seconds=0.5,
        local_retries=3,
        local_retry_delay_seconds=0.0,
    )
    values = put_raw(
        lambda_app.clients.dynamodb,
        lambda_app.settings.table_name,
        pending("lr", "SLEEP_TASK", {"seconds": 0}),
    )

    # When it runs
    started = time.monotonic()
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())

    # Then all tries together stay within the one timeout
    assert time.monotonic() - started < 0.9
    assert len(calls) == 2
    task = lambda_app.store.get("lr")
    assert task.error is not None and task.error.type == "TaskTimedOut"


def test_the_registry_refuses_a_timeout_no_function_can_give() -> None:
    from pydantic import BaseModel

    class In(BaseModel):
        pass

    TaskDefinition(type="LONGEST", input_model=In, handler=lambda d, c: None, timeout_seconds=885)
    with pytest.raises(RegistryError, match="at most 885"):
        TaskDefinition(
            type="TOO_LONG", input_model=In, handler=lambda d, c: None, timeout_seconds=886
        )
