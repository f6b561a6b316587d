"""13. Durable steps: what a step costs (DynamoDB writes, time), and how soon a retry of a
10-step task reaches the step that failed (the runner in-process, the moto server over
HTTP, every AWS call counted with botocore's before-call).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.common import Figure, median
from bench.workflow import CallCounter, dynamodb_split
from runner.local.motoserver import create_tasks_table as create_table
from runner.local.motoserver import moto_server

SECTION = "13. durable steps"
STEPS = 10
# Each step's own work in the retry figure: what a retry that skips it saves.
STEP_WORK_SECONDS = 0.05


def build_app(endpoint: str, table: str, counter: CallCounter, definitions: list[Any]) -> Any:
    """An App on the moto server whose AWS calls `counter` counts, with `definitions`."""
    import botocore.session

    from runner.app import App
    from runner.aws import AwsClients
    from runner.config import Settings
    from runner.registry import TaskRegistry
    from tasks import build_registry

    session = botocore.session.get_session()
    session.register("before-call", counter)
    settings = Settings(table_name=table, region="us-east-1", endpoint_url=endpoint)
    registry = TaskRegistry([*build_registry(["runner.local.demo_tasks"]), *definitions])
    return App.build(settings, registry, AwsClients(settings, session=session))


def _definitions(reached: dict[str, float]) -> list[Any]:
    from pydantic import BaseModel, Field

    from runner.errors import RetryableTaskError
    from runner.registry import TaskDefinition

    class StepsInput(BaseModel):
        steps: int = Field(ge=0, le=100)
        fail_last_once: bool = False
        work: float = 0.0

    def many_steps(data: StepsInput, ctx: Any) -> int:
        def work(n: int) -> int:
            if n == data.steps - 1:
                reached[f"{ctx.task_id}:{ctx.attempt}"] = time.perf_counter()
                if data.fail_last_once and ctx.attempt == 1:
                    raise RetryableTaskError("the last step fails once")
            time.sleep(data.work)
            return n

        return sum(ctx.step(f"step-{n}", work, n) for n in range(data.steps))

    return [TaskDefinition(type="BENCH_STEPS", input_model=StepsInput, handler=many_steps)]


def run(quick: bool) -> list[Figure]:
    from runner.attempts import AttemptInput
    from runner.client import TaskRunnerClient
    from runner.model import ClaimSource, TaskStatus

    rounds = 3 if quick else 10
    reached: dict[str, float] = {}
    counter = CallCounter()
    with moto_server() as endpoint:
        import boto3

        table = f"bench-steps-{uuid.uuid4().hex[:8]}"
        create_table(
            boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1"), table
        )
        app = build_app(endpoint, table, counter, _definitions(reached))
        client = TaskRunnerClient(app)

        def one(steps: int) -> tuple[float, tuple[int, int]]:
            task = client.create_task("BENCH_STEPS", {"steps": steps})
            with counter.measuring() as calls:
                started = time.perf_counter()
                outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
                elapsed = time.perf_counter() - started
            assert outcome.status is TaskStatus.DONE, outcome
            return elapsed, dynamodb_split(calls)

        one(STEPS)  # warm: clients, connections, moto's tables
        plain = [one(0) for _ in range(rounds)]
        stepped = [one(STEPS) for _ in range(rounds)]
        per_step = (median([t for t, _ in stepped]) - median([t for t, _ in plain])) / STEPS
        writes_plain, reads_plain = plain[-1][1]
        writes_stepped, reads_stepped = stepped[-1][1]

        # The retry of a 10-step task whose last step failed: until it reaches that step
        first_reach, retry_reach, retry_reads = [], [], 0
        for _ in range(rounds):
            task = client.create_task(
                "BENCH_STEPS", {"steps": STEPS, "fail_last_once": True, "work": STEP_WORK_SECONDS}
            )
            started = time.perf_counter()
            failed = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
            assert failed.status is TaskStatus.FAILED, failed
            first_reach.append(reached[f"{task.id}:1"] - started)
            with counter.measuring() as calls:
                started = time.perf_counter()
                done = app.attempts.run(AttemptInput(task.id, 1, "BENCH_STEPS"))
            assert done.status is TaskStatus.DONE, done
            retry_reach.append(reached[f"{task.id}:2"] - started)
            retry_reads = dynamodb_split(calls)[1]
    return [
        Figure(
            SECTION,
            "DynamoDB writes / reads of a task with 10 steps (without: 2 / 0)",
            writes_stepped,
            reference=writes_plain,
            reference_name="writes of the same task without steps",
            note=f"reads {reads_stepped} (without steps {reads_plain}): one write per step",
            details={"plain": plain, "stepped": stepped},
        ),
        Figure(
            SECTION,
            "time per completed step (its conditional write), ms",
            per_step * 1000,
            reference=median([t for t, _ in plain]) * 1000,
            reference_name="a task without steps, claim to outcome, ms",
            note=f"median of {rounds} tasks with {STEPS} no-op steps against {rounds} without",
        ),
        Figure(
            SECTION,
            f"{STEPS}-step task's retry: claim to its failed step, ms",
            median(retry_reach) * 1000,
            reference=median(first_reach) * 1000,
            reference_name=f"the first attempt, {STEPS - 1} steps of {STEP_WORK_SECONDS:g} s run",
            note=f"{STEPS - 1} recorded steps skipped, {retry_reads} reads (the claim has them)",
        ),
    ]
