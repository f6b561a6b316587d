"""The README's snippets, run as written: the shell blocks against the local stack, and the
example task added to a scratch copy of the repository, which must then pass the lint, the
type check and the unit tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BIN, ROOT, ServedStack, user_path

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text()


def block(after: str, language: str, containing: str = "") -> str:
    """The first fenced block of `language` after the text `after` (that holds `containing`)."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README[README.index(after) :], re.S)
    return next(b for b in blocks if containing in b)


def bash(stack: ServedStack, script: str) -> subprocess.CompletedProcess[str]:
    """A README block as a user runs it: in a shell with the stack's exports and a user's
    PATH, on which neither .venv/bin nor node_modules/.bin is."""
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        env={**stack.env, "PATH": user_path()},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_put_item_example_refuses_a_second_put(local_stack: ServedStack) -> None:
    # Given the README's put-item, for an id of this run
    task_id = f"hello-{uuid.uuid4().hex[:8]}"
    put = block("Insert one with the AWS CLI", "sh", "put-item").replace("hello-1", task_id)

    # When it is run, the task is run by the stream
    first = bash(local_stack, put)
    assert first.returncode == 0, first.stderr
    done = local_stack.wait_for(task_id, {"DONE", "FAILED"})
    assert done["status"] == "DONE" and len(done["attempt_log"]) == 1

    # And run again, it is refused, and the finished task keeps its result and attempts
    second = bash(local_stack, put)
    assert second.returncode != 0 and "ConditionalCheckFailedException" in second.stderr
    time.sleep(1)
    assert local_stack.get_task(task_id) == done


def test_the_local_stack_block_runs_as_written(local_stack: ServedStack) -> None:
    put = block("Insert one with the AWS CLI", "sh", "put-item")
    if local_stack.get_task("hello-1") == {}:
        assert bash(local_stack, put).returncode == 0
    commands = block("Then the CLI, boto3 and the AWS CLI work against it", "sh")
    done = bash(local_stack, commands)
    assert done.returncode == 0, done.stderr
    assert '"task_id": "hello-1"' in done.stdout and '"executions"' in done.stdout


def test_run_task_under_the_stack_says_the_stream_took_the_task(local_stack: ServedStack) -> None:
    created = local_stack.run("python", "-m", "runner.cli", "create-task", "noop-task")
    task_id = json.loads(created.stdout)["id"]
    local_stack.wait_for(task_id, {"PROCESSING", "DONE"})
    again = local_stack.run("python", "-m", "runner.cli", "run-task", "--task-id", task_id)
    assert again.returncode == 1 and again.stdout == ""
    assert "(claimed by stream); run-task runs only PENDING tasks" in again.stderr


def test_a_task_put_over_a_retried_one_is_retried_too(local_stack: ServedStack) -> None:
    # Given a task that failed once, was retried by execution <id>-<digest>-1, and is DONE
    dynamodb = local_stack.client("dynamodb")
    task_id = f"again-{uuid.uuid4().hex[:8]}"
    item = {
        "id": {"S": task_id},
        "type": {"S": "FLAKY_TASK"},
        "status": {"S": "PENDING"},
        "data": {"M": {"fail_times": {"N": "1"}}},
    }
    dynamodb.put_item(TableName=local_stack.table_name, Item=item)
    first = local_stack.wait_for(task_id, {"DONE"}, timeout=60)
    (first_name,) = [arn.rsplit(":", 1)[1] for arn in first["executions"]]
    assert re.fullmatch(rf"{task_id}-[0-9a-f]{{16}}-1", first_name)

    # When the same task is put again over it (no condition), failing once again
    dynamodb.put_item(TableName=local_stack.table_name, Item=item)

    # Then it runs, fails, and is retried to DONE by an execution of its own (its name's
    # digest is of the id and the new task's created_at)
    deadline = time.monotonic() + 60
    while True:
        second = local_stack.get_task(task_id)
        names = [arn.rsplit(":", 1)[1] for arn in second.get("executions", [])]
        if second["status"] == "DONE" and len(names) == 1 and names != [first_name]:
            break
        assert time.monotonic() < deadline, f"stuck: {second['status']}, executions {names}"
        time.sleep(0.1)
    assert re.fullmatch(rf"{task_id}-[0-9a-f]{{16}}-1", names[0])
    assert second["attempts"] == 2 and second["episode"] == 1
    assert second["created_at"] != first["created_at"]


# --- the example task, added to a scratch copy ------------------------------------------------


def scratch_copy(target: Path) -> Path:
    """The repository's files (tracked, and new ones not ignored), without the venvs."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def add_the_readme_task(copy: Path) -> None:
    module = block("**1. Create `tasks/resize_image.py`**", "python")
    (copy / "tasks" / "resize_image.py").write_text(module)
    registry = copy / "tasks" / "__init__.py"
    source = registry.read_text()
    # The README's two registration lines replace the two that name the task modules
    for line in block("**2. Register it**", "python").strip().splitlines():
        if line.strip():
            start = line.split("(")[0].split(" import ")[0]
            pattern = re.compile(rf"^{re.escape(start)}.*$", re.M)
            assert pattern.search(source), f"tasks/__init__.py has no line like {line!r}"
            source = pattern.sub(line.replace("\\", "\\\\"), source, count=1)
    registry.write_text(source)


def run_in(copy: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run(
        list(args),
        cwd=copy,
        env={**(env or os.environ), "PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_readme_task_added_to_a_copy_passes_lint_types_and_tests(
    tmp_path: Path, server_env: dict[str, str]
) -> None:
    # Given a scratch copy of the repository with the README's example task added
    copy = scratch_copy(tmp_path / "repo")
    add_the_readme_task(copy)

    # Then the project's own lint and type check pass as written
    run_in(copy, str(BIN / "ruff"), "check", ".")
    run_in(copy, str(BIN / "ruff"), "format", "--check", ".")
    run_in(
        copy,
        str(BIN / "mypy"),
        "--cache-dir",
        str(tmp_path / "mypy"),
        "runner",
        "tasks",
        "handler.py",
    )
    # And the unit tests, the registry's and the README's among them
    run_in(copy, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit")

    # And the CLI has the new type, whose task runs to DONE
    env = {**server_env, "TASK_RUNNER_TASK_MODULES": ""}
    flags = run_in(
        copy, sys.executable, "-m", "runner.cli", "create-task", "resize-image", "--help", env=env
    )
    assert "--key" in flags.stdout and "--width" in flags.stdout
    created = json.loads(
        run_in(
            copy,
            sys.executable,
            "-m",
            "runner.cli",
            "create-task",
            "resize-image",
            "--key",
            "a.png",
            "--width",
            "200",
            env=env,
        ).stdout
    )
    assert created["type"] == "RESIZE_IMAGE" and created["data"] == {"key": "a.png", "width": 200}
    ran = json.loads(
        run_in(copy, sys.executable, "-m", "runner.cli", "run-task", created["id"], env=env).stdout
    )
    assert ran["status"] == "DONE"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "create-task",
            "resize-image",
            "--key",
            "a.gif",
            "--width",
            "0",
        ],
        cwd=copy,
        env={**env, "PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 64 and "--width: input should be greater than 0" in refused.stderr
