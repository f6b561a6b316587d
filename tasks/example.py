"""EXAMPLE_TASK: waits a second without blocking other tasks, then logs its message."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from runner.context import TaskContext
from runner.registry import TaskDefinition

# The example's simulated work.
EXAMPLE_DELAY_SECONDS = 1.0


class ExampleInput(BaseModel):
    message: str = Field(min_length=1, description="Text to log")


async def run(data: ExampleInput, ctx: TaskContext) -> dict[str, str]:
    await asyncio.sleep(EXAMPLE_DELAY_SECONDS)
    # The message is the task's own data: logged here on purpose, as the example's output.
    ctx.logger.info(f"Function Triggered | Message: {data.message}", extra={"task_id": ctx.task_id})
    return {"message": data.message}


TASK = TaskDefinition(
    type="EXAMPLE_TASK",
    input_model=ExampleInput,
    handler=run,
    description="Wait one second, then log a message.",
    timeout_seconds=30,
)
