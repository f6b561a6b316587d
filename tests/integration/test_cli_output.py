"""The CLI's output channels as a shell sees them: stdout holds the one JSON document
whatever a task module writes, and what goes wrong with stdout or the process (a closed or
full stdout, Ctrl-C) is one line on stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.helpers import pending, put_raw
from tests.integration.test_cli import ROOT, cli, dynamodb, items, one_error_line

# A task module writing to fd 1 every way a careless module does: at import, through a
# Powertools Logger and a logging handler made at import (they hold sys.stdout as it was),
# from a child process, and with os.write.
WRITING_MODULE = """
import logging
import os
import subprocess
import sys

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from runner.context import TaskContext
from runner.registry import TaskDefinition

print("printed at import")
logger = Logger(service="my-tasks")
plain = logging.getLogger("mine")
plain.addHandler(logging.StreamHandler(sys.stdout))


class In(BaseModel):
    text: str = "x"


def run(data: In, ctx: TaskContext) -> dict[str, str]:
    logger.warning("from a module-level Powertools Logger")
    plain.warning("from a handler bound to sys.stdout at import")
    subprocess.run(["echo", "from a child process"], check=True)
    os.write(1, b"written to fd 1\\n")
    return {"text": data.text}


TASK = TaskDefinition(type="WRITING_TASK", input_model=In, handler=run)
"""


def module_env(
    server_env: dict[str, str], tmp_path: Path, name: str, source: str
) -> dict[str, str]:
    """server_env with the module `name` (source as given) registered."""
    (tmp_path / f"{name}.py").write_text(source)
    return {
        **server_env,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
        "TASK_RUNNER_TASK_MODULES": f"runner.local.demo_tasks,{name}",
    }


def test_stdout_is_the_json_alone_whatever_a_task_module_writes_to_fd_1(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a task module that writes to stdout at import and while it runs
    env = module_env(server_env, tmp_path, "writing_tasks", WRITING_MODULE)

    # When a task of it is created and run
    created = cli(env, "create-task", "writing-task")
    assert created.returncode == 0, created.stderr
    task = json.loads(created.stdout)
    ran = cli(env, "run-task", task["id"])
    assert ran.returncode == 0, ran.stderr

    # Then each stdout is exactly the command's JSON document
    assert json.loads(ran.stdout)["status"] == "DONE"
    # And everything the module wrote is on stderr
    assert "printed at import" in created.stderr
    for text in (
        "printed at import",
        "from a module-level Powertools Logger",
        "from a handler bound to sys.stdout at import",
        "from a child process",
        "written to fd 1",
    ):
        assert text in ran.stderr, text


def test_a_closed_stdout_is_refused_before_anything_runs(server_env: dict[str, str]) -> None:
    # Given a shell that closed stdout (`>&-`)
    done = subprocess.run(
        [sys.executable, "-m", "runner.cli", "create-task", "noop-task"],
        env=server_env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.close(1),
    )
    # Then it says so in one line, exits 1, and created nothing
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: stdout is closed") and done.stderr.count("\n") == 1
    assert items(server_env) == []


def test_a_full_stdout_is_one_line_that_says_the_command_ran(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "runner.cli", "create-task", "noop-task"],
            env=server_env,
            cwd=ROOT,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "the command ran, but its output could not be written" in done.stderr
    assert "No space left on device" in done.stderr
    # The task was created: the line says so rather than pretending nothing happened
    assert len(items(server_env)) == 1


def wait_for_status(env: dict[str, str], task_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        found = [i for i in items(env) if i["id"]["S"] == task_id]
        if found and found[0]["status"]["S"] == status:
            return found[0]
        assert time.monotonic() < deadline, f"{task_id} never became {status}: {found}"
        time.sleep(0.05)


def start_run_task(env: dict[str, str], task_id: str, seconds: float) -> subprocess.Popen[str]:
    """`run-task` of a new SLEEP_TASK in a subprocess, returned once the task is PROCESSING
    (the caller ends the process)."""
    put_raw(
        dynamodb(env),
        env["AWS_DYNAMO_DB_TABLE_NAME"],
        pending(task_id, "SLEEP_TASK", {"seconds": seconds}),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "run-task", task_id],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_status(env, task_id, "PROCESSING")
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process


def test_ctrl_c_during_run_task_is_one_line_naming_the_lease(server_env: dict[str, str]) -> None:
    # Given run-task running a long task
    process = start_run_task(server_env, "slow", 30)
    try:
        # When the user presses Ctrl-C
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    # Then one line says what became of the task, and the exit status is a shell's 130
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    said = one_error_line(done, -signal.SIGINT)
    assert "interrupted" in said and "task slow" in said and "lease" in said
