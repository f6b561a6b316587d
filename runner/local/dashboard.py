"""The operator dashboard beside the local stack (`serve`, so `make dev`): served from the
stack's own process, in a thread, against the stack's endpoint."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from runner.errors import TaskRunnerError

NOT_INSTALLED = (
    "Dashboard: not installed (its dependencies are the [dashboard] extra:"
    " pip install '.[dashboard]' in this repository, or -r requirements-dashboard.txt;"
    " the name task-runner on PyPI is someone else's)"
)


def installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("starlette", "jinja2", "uvicorn"))


@contextlib.contextmanager
def dashboard(port: int = 0, *, read_only: bool = False) -> Iterator[list[str]]:
    """Serve the dashboard for the block; yields the lines to print (its URL first).

    The stack has set this process's environment to its endpoint, table and state
    machine, so the dashboard reads them as it would a shell's.
    """
    if not installed():
        yield [NOT_INSTALLED]
        return
    from runner.app import App
    from runner.aws import AwsClients
    from runner.cli_setup import load_registry
    from runner.client import TaskRunnerClient
    from runner.config import Settings
    from runner.dashboard.serve import running
    from runner.dashboard.settings import DashboardSettings

    settings = Settings.from_env()
    client = TaskRunnerClient(App(settings, AwsClients(settings), load_registry()))
    exits = contextlib.ExitStack()
    try:
        live = exits.enter_context(
            running(DashboardSettings.from_env(port=port, read_only=read_only), client)
        )
    except TaskRunnerError as exc:  # the port is taken: the stack still runs without it
        yield [f"Dashboard: not started: {exc}"]
        return
    with exits:
        yield [f"Dashboard: {live.login_url()}"]
