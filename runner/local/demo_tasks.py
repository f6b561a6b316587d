"""Task types for the demo, the tests and the benchmarks; never in a deployment's registry.

Register them with TASK_RUNNER_TASK_MODULES=runner.local.demo_tasks.

Handlers run in the functions' own worker processes on the local stack, so an effect a
test must count across processes is recorded where every process can see it:
`EFFECT_TASK` writes one S3 object per effect under `effects/<task id>/` in the export
bucket, holding the attempt, the process and the time (`effects_of` reads them back).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from typing import Any

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


class EffectInput(BaseModel):
    seconds: float = Field(default=0, ge=0, le=60, description="How long the work takes")
    steps: int = Field(default=1, ge=1, le=100, description="Effects spread over that time")


EFFECTS_PREFIX = "effects/"
# Short, so a test can run a handler past it; the lease is this plus the runner's grace.
EFFECT_TIMEOUT_SECONDS = 3.0


def record_effect(ctx: TaskContext, step: int) -> None:
    """One side effect, visible to every process: an S3 object in the export bucket."""
    now = time.time()
    body = {
        "task_id": ctx.task_id,
        "attempt": ctx.attempt,
        "episode": ctx.episode,
        "step": step,
        "at": now,
        "pid": os.getpid(),
        "function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""),
    }
    ctx.clients.s3.put_object(
        Bucket=ctx.settings.export_bucket,
        Key=f"{EFFECTS_PREFIX}{ctx.task_id}/{time.time_ns()}-{ctx.attempt}-{step}-{os.getpid()}",
        Body=json.dumps(body).encode(),
    )


def effect(data: EffectInput, ctx: TaskContext) -> dict[str, int]:
    """Records `steps` effects, one at the start of each equal slice of `seconds`: a sync
    handler, which the runner cannot stop once its timeout has passed."""
    for step in range(data.steps):
        record_effect(ctx, step)
        time.sleep(data.seconds / data.steps)
    return {"effects": data.steps}


def effects_of(s3: Any, bucket: str, task_id: str) -> list[dict[str, Any]]:
    """The effects EFFECT_TASK recorded for a task, oldest first."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{EFFECTS_PREFIX}{task_id}/"
    ):
        for entry in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            found.append(json.loads(body))
    return sorted(found, key=lambda e: e["at"])


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

EFFECT = TaskDefinition(
    type="EFFECT_TASK",
    input_model=EffectInput,
    handler=effect,
    description="Record side effects another process can count (S3 objects).",
    timeout_seconds=EFFECT_TIMEOUT_SECONDS,
    max_attempts=3,
)


class StepsInput(BaseModel):
    fail_at: int = Field(
        default=2, ge=0, le=3, description="Step that fails on the first attempt (0: none)"
    )
    fail_times: int = Field(default=1, ge=0, le=10, description="Attempts on which it fails")


STEP_NAMES = ("reserve", "charge", "email")


def three_steps(data: StepsInput, ctx: TaskContext) -> dict[str, Any]:
    """Three durable steps; step `fail_at` fails on the first `fail_times` attempts, so a
    retry resumes there: the steps before it are not run again (EFFECTS counts runs)."""

    def act(name: str) -> dict[str, Any]:
        with _effects_lock:
            EFFECTS[ctx.step_key(name)] += 1
        if STEP_NAMES.index(name) + 1 == data.fail_at and ctx.attempt <= data.fail_times:
            raise RetryableTaskError(f"step {name} failed on attempt {ctx.attempt}")
        return {"step": name, "attempt": ctx.attempt}

    done = [ctx.step(name, act, name) for name in STEP_NAMES]
    return {"steps": done, "finished_on_attempt": ctx.attempt}


class BlobInput(BaseModel):
    blob: str = Field(default="", description="Any text; large ones go to the payload bucket")
    numbers: list[int] = Field(default=[], description="Any numbers (a structured payload)")
    result_bytes: int = Field(default=0, ge=0, le=11 * 1024 * 1024, description="Result size")
    fail_times: int = Field(default=0, ge=0, le=10, description="Attempts that fail first")


def blob(data: BlobInput, ctx: TaskContext) -> dict[str, Any]:
    """Returns a result of `result_bytes` characters and the input's size and digest."""
    import hashlib

    if ctx.attempt <= data.fail_times:
        raise RetryableTaskError(f"simulated failure {ctx.attempt}/{data.fail_times}")
    return {
        "input_bytes": len(data.blob),
        "input_sha256": hashlib.sha256(data.blob.encode()).hexdigest(),
        "numbers": len(data.numbers),
        "output": "r" * data.result_bytes,
    }


STEPS = TaskDefinition(
    type="STEPS_TASK",
    input_model=StepsInput,
    handler=three_steps,
    description="Three durable steps; a retry resumes at the one that failed.",
    max_attempts=3,
)

BLOB = TaskDefinition(
    type="BLOB_TASK",
    input_model=BlobInput,
    handler=blob,
    description="A large input in, a large result out (the payload bucket).",
    max_attempts=3,
)

TASKS = (NOOP, FLAKY, ALWAYS_FAILING, SLEEP, EFFECT, STEPS, BLOB)
