"""Task types for the demo, the tests and the benchmarks; never in a deployment's registry.

Register them with TASK_RUNNER_TASK_MODULES=runner.local.demo_tasks.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

from pydantic import BaseModel, Field

from runner.context import TaskContext
from runner.errors import RetryableTaskError
from runner.registry import TaskDefinition

# Side effects per idempotency key, so tests can prove an effect ran exactly once.
EFFECTS: Counter[str] = Counter()
_effects_lock = threading.Lock()


class NoopInput(BaseModel):
    note: str = ""


def noop(data: NoopInput, ctx: TaskContext) -> dict[str, str]:
    with _effects_lock:
        EFFECTS[ctx.idempotency_key] += 1
    return {"note": data.note}


class FlakyInput(BaseModel):
    fail_times: int = Field(ge=0, le=20, description="Attempts that fail before one succeeds")


def flaky(data: FlakyInput, ctx: TaskContext) -> dict[str, int]:
    if ctx.attempt <= data.fail_times:
        raise RetryableTaskError(f"simulated transient failure {ctx.attempt}/{data.fail_times}")
    return {"succeeded_on_attempt": ctx.attempt}


class AlwaysFailingInput(BaseModel):
    reason: str = "simulated outage"


def always_failing(data: AlwaysFailingInput, ctx: TaskContext) -> None:
    raise RetryableTaskError(f"{data.reason} (attempt {ctx.attempt})")


class SleepInput(BaseModel):
    seconds: float = Field(ge=0, le=60)


async def sleep(data: SleepInput, ctx: TaskContext) -> dict[str, float]:
    await asyncio.sleep(data.seconds)
    return {"slept": data.seconds}


NOOP = TaskDefinition(
    type="NOOP_TASK",
    input_model=NoopInput,
    handler=noop,
    description="Do nothing (benchmarks); counts its effect.",
)
FLAKY = TaskDefinition(
    type="FLAKY_TASK",
    input_model=FlakyInput,
    handler=flaky,
    description="Fail the first N attempts, then succeed.",
    max_attempts=3,
)
ALWAYS_FAILING = TaskDefinition(
    type="ALWAYS_FAILING_TASK",
    input_model=AlwaysFailingInput,
    handler=always_failing,
    description="Always fail (retryable).",
    max_attempts=2,
)
SLEEP = TaskDefinition(
    type="SLEEP_TASK",
    input_model=SleepInput,
    handler=sleep,
    description="Sleep without blocking other tasks.",
    timeout_seconds=120,
)

TASKS = (NOOP, FLAKY, ALWAYS_FAILING, SLEEP)
