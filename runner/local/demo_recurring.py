"""A demo task type with a recurring schedule, for `make demo` (not in a deployment).

`TICK_TASK` declares `demo-every-minute`, `rate(1 minute)`: a rate schedule fires first
when it is created (as EventBridge Scheduler's does), so the demo sees a fire at once.
The local stack creates it in its Scheduler as `sls package` would have.
"""

from __future__ import annotations

from pydantic import BaseModel

from runner.context import TaskContext
from runner.recurring import Recurring
from runner.registry import TaskDefinition

DEMO_SCHEDULE = "demo-every-minute"


class TickInput(BaseModel):
    source: str = "schedule"


def tick(data: TickInput, ctx: TaskContext) -> dict[str, str]:
    return {"source": data.source, "task_id": ctx.task_id}


TASK = TaskDefinition(
    type="TICK_TASK",
    input_model=TickInput,
    handler=tick,
    description="Records that a recurring schedule fired.",
    schedules=(Recurring(DEMO_SCHEDULE, "rate(1 minute)", data={"source": DEMO_SCHEDULE}),),
)
