"""The CLI's own runs of tasks (`run-task`, `sweep`): what this shell's registry lacks it
leaves alone, and what it reports is what happened."""

from __future__ import annotations

import json
from typing import Any

from runner.items import deserialize_image
from tests.helpers import pending, put_raw
from tests.integration.test_cli import cli, dynamodb, ok, one_error_line, without
from tests.integration.test_cli_output import start_run_task


def task(env: dict[str, str], task_id: str) -> dict[str, Any]:
    found: dict[str, Any] = dynamodb(env).get_item(
        TableName=env["AWS_DYNAMO_DB_TABLE_NAME"], Key={"id": {"S": task_id}}, ConsistentRead=True
    )["Item"]
    return deserialize_image(found)


def test_run_task_refuses_a_type_this_shell_does_not_register(server_env: dict[str, str]) -> None:
    # Given a PENDING demo task, and a shell without the demo's TASK_RUNNER_TASK_MODULES
    table = server_env["AWS_DYNAMO_DB_TABLE_NAME"]
    before = put_raw(dynamodb(server_env), table, pending("f-1", "FLAKY_TASK", {"fail_times": 0}))
    shell = without(server_env, "TASK_RUNNER_TASK_MODULES")

    # When run-task is asked to run it
    said = one_error_line(cli(shell, "run-task", "f-1"), 1)

    # Then it names the type and the variable, and the task is as it was: not FAILED
    assert "FLAKY_TASK" in said and "TASK_RUNNER_TASK_MODULES" in said, said
    assert "nothing ran" in said
    assert task(server_env, "f-1") == before


def test_sweep_leaves_tasks_of_types_this_shell_does_not_register(
    server_env: dict[str, str],
) -> None:
    # Given two PENDING tasks the stream missed: one of a shipped type, one of a demo type
    table = server_env["AWS_DYNAMO_DB_TABLE_NAME"]
    put_raw(dynamodb(server_env), table, pending("e-1", "EXAMPLE_TASK", {"message": "hi"}))
    flaky = put_raw(dynamodb(server_env), table, pending("f-1", "FLAKY_TASK", {"fail_times": 0}))
    shell = without(server_env, "TASK_RUNNER_TASK_MODULES")

    # When this shell, which lacks the demo's types, sweeps
    report = ok(shell, "sweep")

    # Then it runs the task it can run, leaves the other PENDING, and says so in one line
    assert report["orphans_run"] == 1 and report["orphans_skipped"] == 1, report
    assert "\n" not in report["note"]
    assert "FLAKY_TASK" in report["note"] and "TASK_RUNNER_TASK_MODULES" in report["note"]
    assert task(server_env, "e-1")["status"] == "DONE"
    assert task(server_env, "f-1") == flaky


def test_run_task_whose_claim_is_lost_while_it_runs_says_so(server_env: dict[str, str]) -> None:
    # Given run-task running a task
    table = server_env["AWS_DYNAMO_DB_TABLE_NAME"]
    process = start_run_task(server_env, "s-1", 2)
    try:
        # When the task is put again over it while it runs (its claim no longer holds)
        put_raw(dynamodb(server_env), table, pending("s-1", "SLEEP_TASK", {"seconds": 0}))
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    # Then it says the task ran here but its outcome was not recorded, not "is PENDING"
    # (after the runner's warning, a log line)
    assert process.returncode == 1 and stdout == "", stderr
    errors = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr
    said = errors[0]
    assert "ran here" in said and "not recorded" in said, said
    assert "runs only PENDING tasks" not in said
    assert task(server_env, "s-1")["status"] == "PENDING"


def test_run_task_of_a_task_that_fails_exits_0_with_its_outcome(
    server_env: dict[str, str],
) -> None:
    # (The README says so: run-task ran the task; the outcome is in the JSON.)
    table = server_env["AWS_DYNAMO_DB_TABLE_NAME"]
    put_raw(dynamodb(server_env), table, pending("a-1", "ALWAYS_FAILING_TASK", {}))
    done = cli(server_env, "run-task", "a-1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "FAILED"
