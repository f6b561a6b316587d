"""The local stack as a user runs it: `python -m runner.local serve` in a subprocess.

Tests talk to it only through its endpoint (boto3, the AWS CLI, the runner CLI) and its
chaos control endpoint, using the lines it prints. Packaging is cached by
runner.local.template, so a stack starts in ~4 s once `sls package` has run for the
same serverless.yml.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
NODE_BIN = ROOT / "node_modules" / ".bin"
# First start packages with `sls package` (~10 s cold); later ones reuse the cache.
START_TIMEOUT_SECONDS = 120
_READY = re.compile(r"^Local stack ready in [\d.]+ s: (?P<url>http://\S+)$")
_EXPORT = re.compile(r"^\s*export (?P<name>[A-Z_]+)=(?P<value>.*)$")
_CONTROL = re.compile(r"^Chaos control: (?P<url>http://\S+)/faults\b")
_DASHBOARD = re.compile(r"^Dashboard: (?P<url>http://\S+)$")

# Measurements shown at the end of the run.
REPORT: list[str] = []


def base_env() -> dict[str, str]:
    """This environment without pytest's variables, with dummy credentials and the tools."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_LAMBDA_FUNCTION_NAME"):
        env.pop(name, None)
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        PYTHONPATH=str(ROOT),
        PATH=f"{BIN}{os.pathsep}{NODE_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def user_path() -> str:
    """PATH as a new user's shell has it: the system's directories and those of the tools
    the README asks for (node, npm, make), but neither this repository's .venv/bin and
    node_modules/.bin nor any other Python environment: a snippet run with it must name
    what it takes from them (`.venv/bin/aws`), as a user would have to type it."""
    outside = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not Path(entry).resolve().is_relative_to(ROOT)
    )
    found = [shutil.which(tool, path=outside) for tool in ("node", "npm", "make", "bash")]
    directories = [str(Path(tool).parent) for tool in found if tool] + ["/usr/bin", "/bin"]
    return os.pathsep.join(dict.fromkeys(directories))


@dataclass
class ServedStack:
    """A `serve` subprocess and what it printed."""

    process: subprocess.Popen[str]
    endpoint_url: str
    env: dict[str, str]  # base_env() plus the printed exports
    started_in: float
    output: list[str] = field(default_factory=list)
    control_url: str = ""
    dashboard_url: str = ""  # the printed one, with the token

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """A request to the chaos control endpoint; its JSON reply."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.control_url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def set_faults(self, spec: str) -> dict[str, Any]:
        state: dict[str, Any] = self.control("PUT", "/faults", {"faults": spec})
        return state

    def injected(self, fault: str) -> int:
        return int(self.control("GET", "/faults")["injected"].get(fault, 0))

    def lambda_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control("GET", "/lambda")
        return stats

    @property
    def table_name(self) -> str:
        return self.env["AWS_DYNAMO_DB_TABLE_NAME"]

    @property
    def state_machine_arn(self) -> str:
        return self.env["TASK_RUNNER_STATE_MACHINE_ARN"]

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_url, region_name="us-east-1"
        )

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command in a shell that ran the printed `export` lines."""
        return subprocess.run(
            list(args),
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def get_task(self, task_id: str) -> dict[str, Any]:
        from runner.items import deserialize_image

        item = self.client("dynamodb").get_item(
            TableName=self.table_name, Key={"id": {"S": task_id}}, ConsistentRead=True
        )
        return deserialize_image(item["Item"]) if "Item" in item else {}

    def wait_for(self, task_id: str, statuses: set[str], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task = self.get_task(task_id)
            if task.get("status") in statuses:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"{task_id} is {task.get('status')}, not {statuses}")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def serve(*args: str, env: dict[str, str] | None = None) -> Iterator[ServedStack]:
    """Start `python -m runner.local serve ARGS`, yield once it is ready, then stop it."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.local", "serve", "--log-level", "WARNING", *args],
        cwd=ROOT,
        env={**base_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def drain() -> None:  # keep reading, or the child blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line.rstrip("\n"))
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    endpoint, exports, control, dashboard = None, {}, "", ""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            pytest.fail("local stack did not start:\n" + "\n".join(output[-40:]))
        if match := _READY.match(line):
            endpoint = match["url"]
        elif match := _EXPORT.match(line):
            exports[match["name"]] = match["value"]
        elif match := _CONTROL.match(line):
            control = match["url"]
        elif match := _DASHBOARD.match(line):
            dashboard = match["url"]
        elif line.startswith("Ctrl-C stops it") and endpoint:
            break
    stack = ServedStack(
        process=process,
        endpoint_url=endpoint,
        env={**base_env(), **(env or {}), **exports},
        started_in=time.perf_counter() - started,
        output=output,
        control_url=control,
        dashboard_url=dashboard,
    )
    REPORT.append(f"stack {' '.join(args) or '(default)'} ready in {stack.started_in:.1f} s")
    try:
        yield stack
    finally:
        code = stack.stop()
        assert code == 0, "serve did not stop cleanly:\n" + "\n".join(output[-40:])


@pytest.fixture(scope="session")
def local_stack() -> Iterator[ServedStack]:
    """The repository's own serverless.yml, served for the whole session."""
    yield from serve("--stage", "e2e")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("local stack (e2e)")
        for line in REPORT:
            terminalreporter.write_line(line)
