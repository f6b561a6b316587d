"""The package as a producer application uses it: the wheel installed in a virtualenv of
its own, run from a directory that is not this repository (so no `tasks/`), against the
served local stack: the README's producer example as written, and the `task-runner`
command.

The virtualenv reaches the third-party libraries through a .pth file naming this
repository's .venv (no download here; which ones it declares is tests/deploy/
test_wheel.py's check), and the test checks that what it imports is not the local stack
or the dashboard.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, ServedStack
from tests.wheel import built_wheel

pytestmark = pytest.mark.slow

_BLOCK = re.compile(r"<!-- producer:start -->\s*```python\n(?P<code>.*?)```", re.S)


@pytest.fixture(scope="module")
def installed() -> Path:
    """A virtualenv with the wheel installed in it; its python."""
    home = Path(tempfile.mkdtemp(prefix="producer-venv-"))
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
    python = home / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(built_wheel())],
        check=True,
        capture_output=True,
        text=True,
    )
    return python


def producer_env(stack: ServedStack) -> dict[str, str]:
    env = {k: v for k, v in stack.env.items() if k != "PYTHONPATH"}
    env.pop("TASK_RUNNER_TASK_MODULES", None)  # a producer registers none
    return env


def test_the_readmes_producer_example_runs_with_the_installed_package(
    local_stack: ServedStack, installed: Path, tmp_path: Path
) -> None:
    # Given the README's example, in an application's own directory
    match = _BLOCK.search((ROOT / "README.md").read_text())
    assert match, "README has no producer example"
    app = tmp_path / "producer.py"
    report = (
        "print(json.dumps({'runner': runner.__file__, 'id': task.id,"
        " 'status': task.status.value, 'result': task.result, 'heavy': sorted(m for m in"
        " sys.modules if m.split('.')[0] in ('moto', 'starlette', 'uvicorn', 'jinja2', 'tasks'))}))"
    )
    app.write_text(f"{match['code']}\nimport json, sys, runner\n{report}\n")
    # with a top-level `tasks` package of the application's own (a Celery app, say),
    # which the runner must not import (it would run its side effects, and fail here)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text("raise RuntimeError('the app tasks ran')\n")

    # When it runs there
    ran = subprocess.run(
        [str(installed), str(app)],
        cwd=tmp_path,
        env=producer_env(local_stack),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then it created the task and saw it DONE, with the installed runner, nothing heavier
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["runner"].startswith(str(installed.parent.parent)), report
    assert report["status"] == "DONE" and report["result"] == {"message": "Hello from a producer"}
    assert report["heavy"] == []
    assert local_stack.get_task(report["id"])["status"] == "DONE"


def test_input_the_runner_refuses_ends_failed_with_the_runners_reason(
    local_stack: ServedStack, installed: Path, tmp_path: Path
) -> None:
    # Without tasks/ the client cannot validate: the runner does, when the task runs
    code = (
        "from runner.client import TaskRunnerClient\n"
        "task = TaskRunnerClient().create_task('example-task', {'message': ''})\n"
        "print(task.id, task.type)\n"
    )
    ran = subprocess.run(
        [str(installed), "-c", code],
        cwd=tmp_path,
        env=producer_env(local_stack),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    task_id, task_type = ran.stdout.split()
    assert task_type == "EXAMPLE_TASK"
    task = local_stack.wait_for(task_id, {"FAILED"})
    assert task["error"]["type"] == "InvalidTaskInput" and task["retryable"] is False


def test_the_installed_command_is_the_cli(
    local_stack: ServedStack, installed: Path, tmp_path: Path
) -> None:
    command = installed.parent / "task-runner"
    task_id = local_stack.run(
        ".venv/bin/python", "-m", "runner.cli", "create-task", "example-task", "--message", "hi"
    )
    created = json.loads(task_id.stdout)
    local_stack.wait_for(created["id"], {"DONE"})

    shown = subprocess.run(
        [str(command), "get-task", created["id"]],
        cwd=tmp_path,
        env=producer_env(local_stack),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "DONE"
    helped = subprocess.run(
        [str(command), "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0 and "get-task" in helped.stdout
