"""The local stack end to end, driven only through its endpoint as a user would."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import datetime

import pytest

from tests.e2e.conftest import REPORT, ServedStack

pytestmark = pytest.mark.slow


def test_task_put_with_the_aws_cli_reaches_done(local_stack: ServedStack) -> None:
    # Given a task with only the documented attributes, as a user would write it
    task_id = f"cli-{uuid.uuid4().hex[:8]}"
    item = {
        "id": {"S": task_id},
        "type": {"S": "EXAMPLE_TASK"},
        "status": {"S": "PENDING"},
        "data": {"M": {"message": {"S": "put by the AWS CLI"}}},
    }
    # When it is put with the AWS CLI against the printed endpoint
    put = local_stack.run(
        "aws",
        "--endpoint-url",
        local_stack.endpoint_url,
        "dynamodb",
        "put-item",
        "--table-name",
        local_stack.table_name,
        "--item",
        json.dumps(item),
    )
    inserted = time.perf_counter()
    assert put.returncode == 0, put.stderr

    # Then the stream poller runs it to DONE
    task = local_stack.wait_for(task_id, {"DONE", "FAILED"})
    latency = time.perf_counter() - inserted
    assert task["status"] == "DONE", task
    assert task["result"] == {"message": "put by the AWS CLI"}
    assert task["attempts"] == 1
    REPORT.append(f"AWS CLI put-item -> DONE (EXAMPLE_TASK sleeps 1 s): {latency:.2f} s")


def test_insert_to_done_latency_of_a_no_op_task(local_stack: ServedStack) -> None:
    dynamodb = local_stack.client("dynamodb")
    latencies = []
    for n in range(5):
        task_id = f"noop-{uuid.uuid4().hex[:8]}-{n}"
        started = time.perf_counter()
        dynamodb.put_item(
            TableName=local_stack.table_name,
            Item={
                "id": {"S": task_id},
                "type": {"S": "NOOP_TASK"},
                "status": {"S": "PENDING"},
                "data": {"M": {}},
            },
        )
        assert local_stack.wait_for(task_id, {"DONE"}, timeout=10)["status"] == "DONE"
        latencies.append(time.perf_counter() - started)
    REPORT.append(
        "put-item -> DONE for NOOP_TASK (5 in a row): "
        + ", ".join(f"{s * 1000:.0f} ms" for s in latencies)
    )
    assert max(latencies) < 5


def test_flaky_task_retry_execution_is_listed_by_the_aws_cli(local_stack: ServedStack) -> None:
    # Given a task that fails once, created with the runner's CLI
    created = local_stack.run(
        "python", "-m", "runner.cli", "create-task", "flaky-task", "--fail-times", "1"
    )
    assert created.returncode == 0, created.stderr
    task_id = json.loads(created.stdout)["id"]

    # When the retry workflow has run it again
    task = local_stack.wait_for(task_id, {"DONE"}, timeout=30)
    assert task["attempts"] == 2

    # Then `aws stepfunctions list-executions` shows its execution, SUCCEEDED
    listed = local_stack.run(
        "aws",
        "--endpoint-url",
        local_stack.endpoint_url,
        "stepfunctions",
        "list-executions",
        "--state-machine-arn",
        local_stack.state_machine_arn,
    )
    assert listed.returncode == 0, listed.stderr
    from runner.executions import execution_name

    executions = {e["name"]: e for e in json.loads(listed.stdout)["executions"]}
    name = execution_name(task_id, task["created_at"], 1)
    assert executions[name]["status"] == "SUCCEEDED"
    assert task["executions"] == [executions[name]["executionArn"]]


def test_always_failing_task_ends_failed_with_its_retries_exhausted(
    local_stack: ServedStack,
) -> None:
    created = local_stack.run("python", "-m", "runner.cli", "create-task", "always-failing-task")
    assert created.returncode == 0, created.stderr
    task_id = json.loads(created.stdout)["id"]

    deadline = time.monotonic() + 30
    while not (task := local_stack.get_task(task_id)).get("retries_exhausted"):
        assert time.monotonic() < deadline, task
        time.sleep(0.1)

    assert task["status"] == "FAILED"
    sfn = local_stack.client("stepfunctions")
    execution = sfn.describe_execution(executionArn=task["executions"][0])
    assert execution["status"] == "FAILED"


def _started(task: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(task["started_at"]))


def _finished(task: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(task["finished_at"]))


def test_the_repository_stack_runs_a_batch_of_tasks_together(local_stack: ServedStack) -> None:
    # processStream's batchSize is 100 in serverless.yml: tasks written together run together
    ids = _write_together(local_stack, "EXAMPLE_TASK", {"message": {"S": "together"}}, count=3)
    tasks = [local_stack.wait_for(i, {"DONE"}, timeout=20) for i in ids]
    overlapping = sum(1 for a, b in itertools.pairwise(tasks) if _started(b) < _finished(a))
    assert overlapping >= 1, [(t["started_at"], t["finished_at"]) for t in tasks]


def _write_together(
    stack: ServedStack, task_type: str, data: dict[str, object], *, count: int
) -> list[str]:
    """`count` PENDING tasks in one BatchWriteItem, so they reach the stream together."""
    ids = [f"{task_type.lower()}-{uuid.uuid4().hex[:8]}-{n}" for n in range(count)]
    stack.client("dynamodb").batch_write_item(
        RequestItems={
            stack.table_name: [
                {
                    "PutRequest": {
                        "Item": {
                            "id": {"S": task_id},
                            "type": {"S": task_type},
                            "status": {"S": "PENDING"},
                            "data": {"M": data},
                        }
                    }
                }
                for task_id in ids
            ]
        }
    )
    return ids


def test_the_executing_state_machine_is_the_asl_file_with_the_stacks_names(
    local_stack: ServedStack,
) -> None:
    from runner.local.statemachine import load_definition

    lambdas = local_stack.client("lambda")
    run_task = lambdas.get_function(FunctionName="task-runner-e2e-runTask")["Configuration"]
    run_export = lambdas.get_function(FunctionName="task-runner-e2e-runExport")["Configuration"]
    described = local_stack.client("stepfunctions").describe_state_machine(
        stateMachineArn=local_stack.state_machine_arn
    )

    expected = load_definition(
        {
            "RunTaskFunctionArn": run_task["FunctionArn"],
            "ExportFunctionArn": run_export["FunctionArn"],
        }
    )
    # Equal to the file, so nothing was lost (moto's Fn::Sub would turn a `$$` into `$`)
    assert json.loads(described["definition"]) == json.loads(expected)
