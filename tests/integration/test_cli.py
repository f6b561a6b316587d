"""The fire CLI as a user runs it: a subprocess against a moto server."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_numbers_and_commas_reach_the_model_as_typed(server_env: dict[str, str]) -> None:
    numeric = ok(server_env, "create-task", "example-task", "--message", "42")
    assert numeric["data"] == {"message": "42"} and numeric["status"] == "PENDING"
    comma = ok(server_env, "create-task", "example-task", "--message", "hello, world")
    assert comma["data"] == {"message": "hello, world"}
    equals = ok(server_env, "create-task", "example-task", "--message=007")
    assert equals["data"] == {"message": "007"}


def test_create_run_get_and_list(server_env: dict[str, str]) -> None:
    created = ok(server_env, "create-task", "example-task", "--message", "from the CLI")
    outcome = ok(server_env, "run-task", "--task-id", created["id"])
    assert outcome["status"] == "DONE"
    task = ok(server_env, "get-task", "--task-id", created["id"])
    assert task["status"] == "DONE" and task["result"] == {"message": "from the CLI"}
    listed = ok(server_env, "list-tasks", "--status", "DONE", "--limit", "5")
    assert [t["id"] for t in listed["tasks"]] == [created["id"]]


def test_numeric_task_id(server_env: dict[str, str]) -> None:
    import boto3

    from runner.items import serialize

    dynamodb = boto3.client(
        "dynamodb", endpoint_url=server_env["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )
    dynamodb.put_item(
        TableName=server_env["AWS_DYNAMO_DB_TABLE_NAME"],
        Item=serialize({"id": "123", "type": "NOOP_TASK", "status": "PENDING", "data": {}}),
    )
    assert ok(server_env, "run-task", "--task-id", "123")["status"] == "DONE"
    assert ok(server_env, "get-task", "--task-id", "123")["id"] == "123"


def test_export_db_command_validates_the_address(server_env: dict[str, str]) -> None:
    done = cli(server_env, "create-task", "export-db", "--email", "not-an-address")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "email" in done.stderr
    assert (
        ok(server_env, "create-task", "export-db", "--email", "ops@example.com")["type"]
        == "EXPORT_DB"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("create-task", "example-task", "--message", ""),
        ("create-task", "no-such-task", "--message", "x"),
        ("get-task", "--task-id", "missing"),
        ("list-tasks", "--status", "SLEEPING"),
        ("list-tasks", "--limit", "many"),
        ("list-tasks", "--cursor", "%%%"),
        ("frobnicate",),
        ("run-task",),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_a_nonzero_exit(
    server_env: dict[str, str], args: tuple[str, ...]
) -> None:
    done = cli(server_env, *args)
    assert done.returncode != 0
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("create-task",),
        ("create-task", "example-task"),
        ("run-task",),
        ("list-tasks",),
        ("retry-task",),
        ("history",),
    ],
)
def test_help_works_on_every_command(server_env: dict[str, str], args: tuple[str, ...]) -> None:
    done = cli(server_env, *args, "--help")
    assert done.returncode == 0, done.stderr
    assert "NAME" in done.stdout or "Usage" in done.stdout or "SYNOPSIS" in done.stdout


def test_export_link_signs_a_fresh_link_for_a_finished_export(server_env: dict[str, str]) -> None:
    import boto3

    from runner.items import serialize

    endpoint = server_env["AWS_ENDPOINT_URL"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="exports-cli")
    s3.put_object(Bucket="exports-cli", Key="exports/task-x.jsonl.gz", Body=b"{}")
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    done = {
        "id": "x",
        "type": "EXPORT_DB",
        "status": "DONE",
        "data": {"email": "ops@example.com"},
        "result": {"bucket": "exports-cli", "key": "exports/task-x.jsonl.gz", "rows": 1},
    }
    dynamodb.put_item(TableName=server_env["AWS_DYNAMO_DB_TABLE_NAME"], Item=serialize(done))

    link = ok(server_env, "export-link", "--task-id", "x", "--hours", "2")

    assert link["valid_for_up_to_hours"] == 2
    assert "X-Amz-Expires=7200" in link["url"] and "exports/task-x.jsonl.gz" in link["url"]
    refused = cli(server_env, "export-link", "--task-id", "x", "--hours", "200")
    assert refused.returncode == 1 and "--hours" in refused.stderr
