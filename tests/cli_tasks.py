"""A task type for the CLI's tests only: its handler prints to stdout, as careless code does.

Register it with TASK_RUNNER_TASK_MODULES=tests.cli_tasks.
"""

from __future__ import annotations

from pydantic import BaseModel

from runner.context import TaskContext
from runner.registry import TaskDefinition


class PrintingInput(BaseModel):
    text: str = "printed by the task"


def run(data: PrintingInput, ctx: TaskContext) -> dict[str, str]:
    print(data.text)  # the point: stdout must still carry the CLI's JSON alone
    return {"text": data.text}


TASK = TaskDefinition(
    type="PRINTING_TASK",
    input_model=PrintingInput,
    handler=run,
    description="Print to stdout, then finish.",
)
