"""The CLI as a user's shell runs it: `python -m runner.cli` in a subprocess, against a
moto server (no stream consumer: a task runs only when a command runs it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import pending, put_raw

ROOT = Path(__file__).resolve().parents[2]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def one_error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def dynamodb(env: dict[str, str]) -> Any:
    return boto3.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")


def items(env: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dynamodb(env).scan(
        TableName=env["AWS_DYNAMO_DB_TABLE_NAME"], ConsistentRead=True
    )["Items"]
    return found


# --- values, and the commands working -----------------------------------------------------


def test_numbers_and_commas_reach_the_model_as_typed(server_env: dict[str, str]) -> None:
    numeric = ok(server_env, "create-task", "example-task", "--message", "42")
    assert numeric["data"] == {"message": "42"} and numeric["status"] == "PENDING"
    comma = ok(server_env, "create-task", "example-task", "--message", "hello, world")
    assert comma["data"] == {"message": "hello, world"}
    equals = ok(server_env, "create-task", "example-task", "--message=007")
    assert equals["data"] == {"message": "007"}
    flaky = ok(server_env, "create-task", "FLAKY_TASK", "--fail-times", "2")
    assert flaky["data"] == {"fail_times": 2} and flaky["type"] == "FLAKY_TASK"


def test_create_run_get_and_list(server_env: dict[str, str]) -> None:
    created = ok(server_env, "create-task", "example-task", "--message", "from the CLI")
    outcome = ok(server_env, "run-task", "--task-id", created["id"])
    assert outcome["status"] == "DONE"
    task = ok(server_env, "get-task", "--task-id", created["id"])
    assert task["status"] == "DONE" and task["result"] == {"message": "from the CLI"}
    # The attempt log and the task agree on when the attempt started
    assert task["attempt_log"][0]["started_at"] == task["started_at"]
    listed = ok(server_env, "list-tasks", "--status", "done", "--limit", "5")
    assert [t["id"] for t in listed["tasks"]] == [created["id"]]
    # Run again: refused, saying who ran it
    again = one_error_line(cli(server_env, "run-task", created["id"]), 1)
    assert "is DONE (claimed by cli); run-task runs only PENDING tasks" in again


def test_numeric_task_id(server_env: dict[str, str]) -> None:
    put_raw(
        dynamodb(server_env),
        server_env["AWS_DYNAMO_DB_TABLE_NAME"],
        pending("123", "NOOP_TASK", {}),
    )
    assert ok(server_env, "run-task", "--task-id", "123")["status"] == "DONE"
    assert ok(server_env, "get-task", "--task-id", "123")["id"] == "123"


def test_export_db_command_validates_the_address(server_env: dict[str, str]) -> None:
    done = cli(server_env, "create-task", "export-db", "--email", "not-an-address")
    assert "--email: value is not a valid email address" in one_error_line(done, 64)
    assert (
        ok(server_env, "create-task", "export-db", "--email", "ops@example.com")["type"]
        == "EXPORT_DB"
    )


# --- 1. the whole command line is checked before anything runs ------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ("create-task", "example-task", "--message", "hi", "--extra", "1"),
            "unknown flag --extra",
        ),
        (("create-task", "example-task", "--mesage", "hi"), "--mesage (did you mean --message?)"),
        (("create-task", "example-task", "--message", "hi", "stray"), "unexpected argument"),
        (("create-task", "example-task", "--message", "hi", "-x"), "unknown flag -x"),
        (("run-task", "--task-id", "t-1", "--force"), "unknown flag --force"),
        (("sweep", "--bogus"), "unknown flag --bogus"),
    ],
)
def test_a_bad_flag_changes_nothing_and_exits_64(
    server_env: dict[str, str], args: tuple[str, ...], named: str
) -> None:
    # Given a PENDING task the stream missed (no created_at: the sweeper would run it)
    table = server_env["AWS_DYNAMO_DB_TABLE_NAME"]
    put_raw(dynamodb(server_env), table, pending("t-1", "NOOP_TASK", {}))
    before = items(server_env)

    # When a command line with one wrong flag is run
    done = cli(server_env, *args)

    # Then it says which flag, in one line, exits 2, and nothing was created or run
    assert named in one_error_line(done, 64)
    assert items(server_env) == before


def test_the_same_sweep_without_the_bad_flag_does_run(server_env: dict[str, str]) -> None:
    # (What the test above would see if the bad flag were ignored.)
    put_raw(
        dynamodb(server_env),
        server_env["AWS_DYNAMO_DB_TABLE_NAME"],
        pending("t-1", "NOOP_TASK", {}),
    )
    report = ok(server_env, "sweep")
    assert (report["expired_leases"], report["orphans_run"], report["errors"]) == (0, 1, 0)


def test_list_tasks_with_a_misspelt_filter_lists_nothing(server_env: dict[str, str]) -> None:
    ok(server_env, "create-task", "noop-task")
    done = cli(server_env, "list-tasks", "--stauts", "FAILED")
    assert "unknown flag --stauts (did you mean --status?)" in one_error_line(done, 64)


# --- 2. stdout is one JSON document; logs go to stderr; a closed pipe is quiet --------------


def test_logs_go_to_stderr_and_stdout_is_one_json_document(server_env: dict[str, str]) -> None:
    # Given INFO logging, a task that prints, and a PENDING task for the sweeper
    env = {
        **server_env,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "TASK_RUNNER_TASK_MODULES": "runner.local.demo_tasks,tests.cli_tasks",
    }
    created = ok(env, "create-task", "printing-task")
    put_raw(dynamodb(env), env["AWS_DYNAMO_DB_TABLE_NAME"], pending("orphan", "NOOP_TASK", {}))

    for args in (("run-task", created["id"]), ("sweep",)):
        done = cli(env, *args)
        assert done.returncode == 0, done.stderr
        # Then stdout is exactly one JSON document, though the task printed
        assert json.loads(done.stdout)["task_id" if args[0] == "run-task" else "orphans_run"]
        # And the log lines (Powertools JSON) and the task's print are on stderr
        logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
        assert any(entry["message"] == "task claimed" for entry in logged), done.stderr
        if args[0] == "run-task":
            assert "printed by the task" in done.stderr


def test_a_closed_pipe_ends_quietly(server_env: dict[str, str]) -> None:
    ok(server_env, "create-task", "noop-task")
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "list-tasks", "--limit", "50"],
        env=server_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the CLI writes: `| head` would be
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert stderr == b""


def test_npm_run_silent_prints_only_the_json(server_env: dict[str, str]) -> None:
    done = subprocess.run(
        ["npm", "run", "-s", "cli", "--", "list-tasks", "--limit", "1"],
        env=server_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"tasks": [], "next_cursor": None}


# --- 3. errors a user can act on ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("get-task", "--task-id", "does-not-exist"), 4, "task does-not-exist not found"),
        (("retry-task", "--task-id", "does-not-exist"), 4, "task does-not-exist not found"),
        (("get-task", "--taskid", "x"), 64, "--taskid (did you mean --task-id?)"),
        (("create-task", "example-task"), 64, "missing --message (Text to log)"),
        (("create-task", "example-taks"), 64, "(did you mean example-task?); known: "),
        (
            ("frobnicate",),
            64,
            "commands: cancel-task, create-task, export-link, get-task, history,"
            " list-schedules, list-tasks",
        ),
        (("list-tasks", "--status", "BOGUS"), 64, "PENDING, PROCESSING, DONE, FAILED, RETRYING"),
        (("list-tasks", "--limit"), 64, "--limit needs a value (a whole number)"),
        (("list-tasks", "--limit", "1e3"), 64, "valid integer, unable to parse string"),
        (("list-tasks", "--cursor", "%%%"), 64, "pass back the cursor list-tasks printed"),
        (("get-task", "--task-id", ""), 64, "--task-id: string should have at least 1 character"),
        (("run-task",), 64, "missing --task-id"),
    ],
)
def test_errors_are_one_line_that_says_what_to_do(
    server_env: dict[str, str], args: tuple[str, ...], code: int, says: str
) -> None:
    env = {
        **server_env,
        "TASK_RUNNER_STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:none",
    }
    assert says in one_error_line(cli(env, *args), code)


def test_the_stored_type_name_creates_the_task(server_env: dict[str, str]) -> None:
    assert (
        ok(server_env, "create-task", "EXAMPLE_TASK", "--message", "hi")["type"] == "EXAMPLE_TASK"
    )


def test_a_demo_type_without_its_module_names_the_variable(server_env: dict[str, str]) -> None:
    env = {k: v for k, v in server_env.items() if k != "TASK_RUNNER_TASK_MODULES"}
    said = one_error_line(cli(env, "create-task", "flaky-task", "--fail-times", "1"), 64)
    assert "unknown task type 'flaky-task'" in said and "TASK_RUNNER_TASK_MODULES" in said
    assert "example-task" in said and "export-db" in said and "noop-task" not in said
    assert items(server_env) == []


@pytest.fixture
def aws_trap() -> Iterator[tuple[dict[str, str], list[bytes]]]:
    """A proxy that records every connection: botocore would go through it to reach AWS."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                seen.append(connection.recv(200))

    threading.Thread(target=accept, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        yield {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": ""}, seen
    finally:
        server.close()


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


def test_no_endpoint_is_named_before_any_call_to_aws(
    server_env: dict[str, str], aws_trap: tuple[dict[str, str], list[bytes]]
) -> None:
    # Given the local stack's dummy key but no AWS_ENDPOINT_URL (an export line missed)
    proxy, seen = aws_trap
    env = {**without(server_env, "AWS_ENDPOINT_URL"), **proxy}

    started = time.monotonic()
    said = one_error_line(cli(env, "list-tasks"), 1)

    # Then the variable is named at once, and nothing left this machine for AWS
    assert "AWS_ENDPOINT_URL is not set" in said and "make dev" in said
    assert time.monotonic() - started < 10
    assert seen == []


def test_no_credentials_are_named(server_env: dict[str, str], tmp_path: Path) -> None:
    env = {
        **without(server_env, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    said = one_error_line(cli(env, "get-task", "x"), 1)
    assert "no AWS credentials: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in said


def test_a_missing_table_is_named(server_env: dict[str, str]) -> None:
    named = one_error_line(
        cli({**server_env, "AWS_DYNAMO_DB_TABLE_NAME": "nope"}, "get-task", "x"), 1
    )
    assert "table 'nope' not found at http://127.0.0.1:" in named
    assert "AWS_DYNAMO_DB_TABLE_NAME" in named
    default = one_error_line(cli(without(server_env, "AWS_DYNAMO_DB_TABLE_NAME"), "list-tasks"), 1)
    assert (
        "table 'task-runner-tasks' not found" in default
        and "is AWS_DYNAMO_DB_TABLE_NAME set?" in default
    )


def test_a_stopped_local_stack_is_named(server_env: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    said = one_error_line(
        cli({**server_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}, "get-task", "x"), 1
    )
    assert f"nothing answers at AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in said


def test_retry_task_without_a_state_machine_names_the_variable(server_env: dict[str, str]) -> None:
    said = one_error_line(
        cli(without(server_env, "TASK_RUNNER_STATE_MACHINE_ARN"), "retry-task", "x"), 1
    )
    assert "TASK_RUNNER_STATE_MACHINE_ARN is not set" in said and "make dev" in said


BAD_REGISTRATIONS = {
    "too_many_attempts": (
        "from pydantic import BaseModel\n"
        "from runner.registry import TaskDefinition\n\n\n"
        "class In(BaseModel):\n    x: str\n\n\n"
        "TASK = TaskDefinition(type='BAD_TASK', input_model=In, handler=print, max_attempts=11)\n",
        "BAD_TASK: max_attempts must be 1..10",
    ),
    "duplicate_type": ("from tasks.example import TASK\n", "EXAMPLE_TASK is already registered"),
    "not_python": ("TASK = (\n", "SyntaxError"),
}


@pytest.mark.parametrize("name", sorted(BAD_REGISTRATIONS))
@pytest.mark.parametrize("args", [("--help",), ("list-tasks",), ("create-task", "--help")])
def test_a_registry_mistake_is_one_line_and_exit_1_everywhere(
    server_env: dict[str, str], tmp_path: Path, name: str, args: tuple[str, ...]
) -> None:
    source, says = BAD_REGISTRATIONS[name]
    (tmp_path / f"{name}.py").write_text(source)
    env = {
        **server_env,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "TASK_RUNNER_TASK_MODULES": name,
    }
    said = one_error_line(cli(env, *args), 1)
    assert "cannot load the task types" in said and says in said


def test_a_task_module_failing_inside_a_library_is_blamed_on_its_own_line(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a task module whose settings model pydantic refuses at import
    (tmp_path / "settings_at_import.py").write_text(
        "from pydantic import BaseModel\n\n\n"
        "class Settings(BaseModel):\n    n: int\n    m: int\n\n\n"
        "Settings(n='x', m='y')\n"
    )
    env = {
        **server_env,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "TASK_RUNNER_TASK_MODULES": "settings_at_import",
    }
    said = one_error_line(cli(env, "list-tasks"), 1)
    # Then one line lists pydantic's problems and names the module's line, not pydantic's
    assert "ValidationError for Settings: n: Input should be a valid integer" in said, said
    assert "m: Input should be a valid integer" in said
    assert said.rstrip().endswith("settings_at_import.py, line 9)"), said
    assert "site-packages" not in said


def test_a_missing_task_module_is_not_blamed_on_importlib(server_env: dict[str, str]) -> None:
    said = one_error_line(
        cli({**server_env, "TASK_RUNNER_TASK_MODULES": "no_such_tasks"}, "--help"), 1
    )
    assert "ModuleNotFoundError: No module named 'no_such_tasks'" in said
    assert "importlib" not in said and ", line " not in said


def test_help_shows_dashed_names_and_plain_types(server_env: dict[str, str]) -> None:
    overview = cli(server_env, "--help")
    assert overview.returncode == 0 and overview.stderr == ""
    assert "list-tasks" in overview.stdout and "list_tasks" not in overview.stdout
    types = cli(server_env, "create-task", "--help").stdout
    assert "example-task" in types and "example_task" not in types
    listing = cli(server_env, "list-tasks", "--help").stdout
    assert "--status STATUS" in listing and "(a whole number, default 20)" in listing
    flaky = cli(server_env, "create-task", "flaky-task", "--help").stdout
    assert "--fail-times" in flaky and "(a whole number, required)" in flaky
    for text in (overview.stdout, types, listing, flaky):
        assert "Optional[" not in text and "<class" not in text and "Type:" not in text


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
        ("export-link",),
        ("sweep",),
    ],
)
def test_help_works_on_every_command(server_env: dict[str, str], args: tuple[str, ...]) -> None:
    done = cli(server_env, *args, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: task-runner")


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
    assert refused.returncode == 64 and "--hours" in refused.stderr
