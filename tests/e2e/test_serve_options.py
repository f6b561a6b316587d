"""`serve`'s options as a user meets them: bad input refused at once, their own task
modules registered beside the demo tasks, the chaos options printed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, base_env, serve

pytestmark = pytest.mark.slow

USER_MODULE = """
from pydantic import BaseModel, Field

from runner.context import TaskContext
from runner.registry import TaskDefinition


class GreetInput(BaseModel):
    name: str = Field(min_length=1)


def greet(data: GreetInput, ctx: TaskContext) -> dict[str, str]:
    return {"greeting": f"hello, {data.name}"}


TASK = TaskDefinition(
    type="GREET_TASK", input_model=GreetInput, handler=greet, description="Greet someone."
)
"""


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.local", "serve", *args],
        cwd=ROOT,
        env={**base_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--faults", "dynamodb.throttle=2"), {}, "error: 'dynamodb.throttle=2': the rate"),
        ((), {"TASK_RUNNER_TASK_MODULES": "no_such_tasks"}, "cannot import 'no_such_tasks'"),
    ],
)
def test_bad_faults_or_task_modules_are_one_line_and_a_nonzero_exit(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_serve(*args, env=env)

    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_users_task_module_runs_beside_the_demo_tasks(tmp_path: Path) -> None:
    # Given a task module of the user's own, outside the repository's tasks/
    (tmp_path / "user_tasks.py").write_text(textwrap.dedent(USER_MODULE))
    env = {"PYTHONPATH": f"{ROOT}:{tmp_path}", "TASK_RUNNER_TASK_MODULES": "user_tasks"}

    with contextlib.contextmanager(serve)("--stage", "e2e", env=env) as stack:
        # Then serve registers it with the demo tasks and says so
        assert stack.env["TASK_RUNNER_TASK_MODULES"] == "runner.local.demo_tasks,user_tasks"
        assert any("fault kinds" in line for line in stack.output)  # `make dev` shows chaos

        # And a task of its type, created with the CLI, runs in the stack's Lambda
        created = stack.run("python", "-m", "runner.cli", "create-task", "greet-task", "--name=x")
        assert created.returncode == 0, created.stderr
        task = stack.wait_for(json.loads(created.stdout)["id"], {"DONE", "FAILED"}, timeout=20)
        assert task["status"] == "DONE" and task["result"] == {"greeting": "hello, x"}


def test_faults_that_take_dynamodb_down_do_not_stop_the_stack_starting() -> None:
    # Given faults that refuse every DynamoDB and Step Functions call from the start
    spec = "dynamodb.unavailable=1,states.throttle=1"

    with contextlib.contextmanager(serve)("--stage", "e2e", "--faults", spec) as stack:
        # Then the stack still starts (its own wiring is done before the faults are on),
        # and the faults are active for what comes after
        state = stack.control("GET", "/faults")
        assert state["faults"] == spec.split(",")
        import boto3
        from botocore.config import Config

        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=stack.endpoint_url,
            region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 1}),
        )
        with pytest.raises(dynamodb.exceptions.ClientError, match="ServiceUnavailable"):
            dynamodb.describe_table(TableName=stack.table_name)
        stack.set_faults("")  # the sweeps it started can end
