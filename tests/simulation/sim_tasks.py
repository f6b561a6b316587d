"""Task types for the protocol simulation (registered with TASK_RUNNER_TASK_MODULES).

Each handler tells the simulation's ledger when a run starts, when it makes its side
effect and how it ends, keyed by (task id, nonce, attempt): the nonce tells a re-created
task (same id, after TTL) from the old one, the attempt is the claim's number. Waiting is
on the simulation's virtual clock. With no simulation bound they still run (for a look
with `run-task`), as plain tasks that sleep for real.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from pydantic import BaseModel, Field

from runner.context import TaskContext
from runner.errors import PermanentTaskError, RetryableTaskError
from runner.registry import TaskDefinition


class Ledger(Protocol):
    def started(self, ctx: TaskContext, nonce: str) -> None: ...
    def effect(self, ctx: TaskContext, nonce: str, label: str) -> None: ...
    def ended(self, ctx: TaskContext, nonce: str, outcome: str) -> None: ...
    def sleep(self, seconds: float) -> None: ...


class _NoLedger:
    def started(self, ctx: TaskContext, nonce: str) -> None:
        return None

    def effect(self, ctx: TaskContext, nonce: str, label: str) -> None:
        return None

    def ended(self, ctx: TaskContext, nonce: str, outcome: str) -> None:
        return None

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


LEDGER: list[Ledger] = [_NoLedger()]
# In-process tries of each claim so far (local_retries run the handler again).
_TRIES: dict[tuple[str, str, int], int] = {}


def bind(ledger: Ledger) -> None:
    LEDGER.append(ledger)
    _TRIES.clear()


def unbind(ledger: Ledger) -> None:
    LEDGER.remove(ledger)


def _ledger() -> Ledger:
    return LEDGER[-1]


class SimInput(BaseModel):
    nonce: str = ""
    seconds: float = Field(default=0.0, ge=0)
    fail_times: int = Field(default=0, ge=0)
    blob: str = ""
    outcome: str = "ok"
    result_bytes: int = Field(default=0, ge=0)


class _Run:
    """One run of a handler, as the ledger sees it."""

    def __init__(self, data: SimInput, ctx: TaskContext) -> None:
        self.data, self.ctx = data, ctx

    def __enter__(self) -> _Run:
        _ledger().started(self.ctx, self.data.nonce)
        return self

    def effect(self, label: str = "effect") -> None:
        _ledger().effect(self.ctx, self.data.nonce, label)

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        outcome = "ok" if kind is None else kind.__name__
        _ledger().ended(self.ctx, self.data.nonce, outcome)


def sync_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    with _Run(data, ctx) as run:
        run.effect()
        return {"attempt": ctx.attempt}


async def async_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    with _Run(data, ctx) as run:
        await asyncio.sleep(data.seconds)
        run.effect()
        return {"attempt": ctx.attempt}


def slow_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    """Works `seconds` (possibly past its timeout), then makes its effect."""
    with _Run(data, ctx) as run:
        _ledger().sleep(data.seconds)
        run.effect()
        return {"attempt": ctx.attempt}


def _blocking_work(data: SimInput, ctx: TaskContext) -> None:
    with _Run(data, ctx) as run:
        _ledger().sleep(data.seconds)
        run.effect()


async def slow_async_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    """An async handler whose work is a thread (asyncio.to_thread), as blocking SDKs are."""
    await asyncio.to_thread(_blocking_work, data, ctx)
    return {"attempt": ctx.attempt}


def flaky_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    with _Run(data, ctx) as run:
        if ctx.attempt <= data.fail_times:
            raise RetryableTaskError(f"simulated transient failure {ctx.attempt}")
        run.effect()
        return {"attempt": ctx.attempt}


def local_retry_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    """Each in-process try works `seconds`; the first `fail_times` tries of a claim fail."""
    with _Run(data, ctx) as run:
        key = (ctx.task_id, data.nonce, ctx.attempt)
        _TRIES[key] = tries = _TRIES.get(key, 0) + 1
        _ledger().sleep(data.seconds)
        if tries <= data.fail_times:
            raise RetryableTaskError(f"simulated slow transient failure, try {tries}")
        run.effect()
        return {"attempt": ctx.attempt}


def permanent_task(data: SimInput, ctx: TaskContext) -> None:
    with _Run(data, ctx):
        raise PermanentTaskError("simulated permanent failure")


def large_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    """Carries a large input; fails with a long message, or returns a large result."""
    with _Run(data, ctx) as run:
        if data.outcome == "fail" and ctx.attempt <= data.fail_times:
            raise RetryableTaskError("simulated failure " + "x" * 1500)
        run.effect()
        return {"attempt": ctx.attempt, "pad": "y" * data.result_bytes}


def steps_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    """Three durable steps, each an effect labelled `step:<name>`; step s2 fails on the
    first `fail_times` attempts; s3's result is `result_bytes` long (offloaded if large)."""
    with _Run(data, ctx) as run:

        def act(name: str) -> dict[str, Any]:
            run.effect(f"step:{name}")
            if name == "s2" and ctx.attempt <= data.fail_times:
                raise RetryableTaskError(f"simulated failure of step {name}")
            return {"step": name, "attempt": ctx.attempt, "pad": "p" * data.result_bytes}

        done = [ctx.step(name, act, name)["attempt"] for name in STEP_NAMES]
        run.effect()
        return {"attempt": ctx.attempt, "steps": done}


STEP_NAMES = ("s1", "s2", "s3")


def odd_result_task(data: SimInput, ctx: TaskContext) -> dict[str, Any]:
    """Returns a number JSON allows and DynamoDB does not store."""
    with _Run(data, ctx) as run:
        run.effect()
        value: Any = float("nan") if data.outcome == "nan" else 10**200
        return {"value": value}


TASKS = (
    TaskDefinition(type="SIM_SYNC", input_model=SimInput, handler=sync_task),
    TaskDefinition(type="SIM_ASYNC", input_model=SimInput, handler=async_task),
    TaskDefinition(type="SIM_SLOW", input_model=SimInput, handler=slow_task, timeout_seconds=30),
    TaskDefinition(
        type="SIM_SLOW_ASYNC", input_model=SimInput, handler=slow_async_task, timeout_seconds=30
    ),
    # Longer than the stream function can give a task (as EXPORT_DB's 600 s).
    TaskDefinition(type="SIM_LONG", input_model=SimInput, handler=slow_task, timeout_seconds=600),
    TaskDefinition(type="SIM_FLAKY", input_model=SimInput, handler=flaky_task, max_attempts=3),
    TaskDefinition(
        type="SIM_LOCAL_RETRY",
        input_model=SimInput,
        handler=local_retry_task,
        timeout_seconds=60,
        local_retries=2,
        max_attempts=2,
    ),
    TaskDefinition(type="SIM_PERMANENT", input_model=SimInput, handler=permanent_task),
    TaskDefinition(type="SIM_LARGE", input_model=SimInput, handler=large_task, max_attempts=3),
    TaskDefinition(type="SIM_ODD_RESULT", input_model=SimInput, handler=odd_result_task),
    TaskDefinition(type="SIM_STEPS", input_model=SimInput, handler=steps_task, max_attempts=3),
)
