"""`make dev` as a user runs it: on its fixed (overridable) port, its suggested lines working
as printed, and stopped, the whole stack with it, by a SIGTERM to make's own process or
by make's death."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, START_TIMEOUT_SECONDS, base_env, user_path

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, set[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, set()).add(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), set()):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def dashboard_status(url: str) -> int:
    """The status of a GET, redirects not followed."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    connection.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path)
    status = connection.getresponse().status
    connection.close()
    return status


def start_make_dev(
    port: int, dashboard_port: int | None = None
) -> tuple[subprocess.Popen[str], list[str]]:
    """`make dev` on `port`, and what it printed up to its last line before serving."""
    make = subprocess.Popen(
        [
            "make",
            "--no-print-directory",
            "dev",
            f"DEV_PORT={port}",
            f"DASHBOARD_PORT={dashboard_port or free_port()}",
        ],
        cwd=ROOT,
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert make.stdout is not None
    lines = []
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    for line in make.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops it") or time.monotonic() > deadline:
            break
    return make, lines


def test_make_dev_serves_its_port_and_a_signal_to_make_stops_everything() -> None:
    # Given `make dev` on a chosen port
    port, dashboard_port = free_port(), free_port()
    make, lines = start_make_dev(port, dashboard_port)
    output = "\n".join(lines)
    stack: set[int] = set()
    try:
        # Then it serves that port, and its export lines say so
        assert "Local stack ready in" in output and f"http://127.0.0.1:{port}" in output, output
        assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in output
        assert "The data is in memory: a restart begins with an empty table." in output
        assert listening(port)
        # And the dashboard's URL, with its token, which it answers (and only with it)
        (login,) = [line for line in lines if line.startswith("Dashboard: ")]
        url = login.removeprefix("Dashboard: ")
        assert re.fullmatch(rf"http://127\.0\.0\.1:{dashboard_port}/d/[\w-]+/\?token=[\w-]+", url)
        assert dashboard_status(url) == 303
        assert dashboard_status(url.split("?", 1)[0]) == 401
        stack = descendants(make.pid)
        assert stack, "no stack processes under make"

        # And the lines it suggests work as printed, in a shell of a user's PATH
        exports = [line.strip() for line in lines if line.strip().startswith("export ")]
        examples = lines[lines.index("Then e.g.:") + 1 : -1]
        tried = subprocess.run(
            ["bash", "-e", "-c", "\n".join(exports + [line.strip() for line in examples])],
            cwd=ROOT,
            env={**base_env(), "PATH": user_path()},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert tried.returncode == 0, f"{examples}\n{tried.stderr}"
        assert '"type": "EXAMPLE_TASK"' in tried.stdout and '"executions"' in tried.stdout

        # When make itself is sent SIGTERM, as `kill <pid of make dev>` does
        make.send_signal(signal.SIGTERM)
        make.wait(timeout=30)

        # Then the stack and its endpoint process stop too, and the port is free
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in stack) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in stack if alive(pid)], "the stack outlived make"
        assert not listening(port)
    finally:  # what outlived make is an orphan now: kill what was found under it
        for pid in stack | descendants(make.pid) | {make.pid}:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_make_dev_killed_outright_takes_the_stack_with_it() -> None:
    # Given `make dev` serving
    port = free_port()
    make, lines = start_make_dev(port)
    stack = descendants(make.pid)
    try:
        assert listening(port) and stack, "\n".join(lines)

        # When make is killed outright, which lets it pass nothing on
        make.kill()
        make.wait(timeout=30)

        # Then the stack notices its parent is gone and stops, endpoint process and all
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in stack) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in stack if alive(pid)], "the stack outlived make"
        assert not listening(port)
    finally:
        for pid in stack:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_make_dev_has_a_fixed_default_port() -> None:
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "dev"],
        cwd=ROOT,
        env={k: v for k, v in base_env().items() if k != "DEV_PORT"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "exec .venv/bin/python -m runner.local serve --port 4599" in dry_run
