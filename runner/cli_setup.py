"""What the command line runs with: the deployment's task types and a client configured for
this process (runner.cli builds on them; the dashboard's server loads the task types too).

A failure to load the task types is reported in one line naming where a task module raised.
"""

from __future__ import annotations

import os
import traceback
from typing import TYPE_CHECKING

from pydantic import ValidationError

from runner.errors import TaskRunnerError

if TYPE_CHECKING:
    from runner.client import TaskRunnerClient
    from runner.registry import TaskRegistry


def default_client(registry: TaskRegistry) -> TaskRunnerClient:
    """The client for this process's configuration, built on first use (`--help` needs no
    botocore), once the configuration is known to send the calls where they should go."""
    import botocore.session

    from runner.app import App
    from runner.aws import AwsClients
    from runner.cli_checks import check_configuration
    from runner.client import TaskRunnerClient
    from runner.config import Settings

    settings = Settings.from_env()
    session = botocore.session.get_session()
    clients = AwsClients(settings, session)
    check_configuration(settings, session, clients.dynamodb.meta.endpoint_url)
    return TaskRunnerClient(App(settings, clients, registry))


def load_registry() -> TaskRegistry:
    """The deployment's task types plus TASK_RUNNER_TASK_MODULES'; one line if that fails."""
    from runner.app import default_registry
    from runner.config import Settings

    modules = Settings.from_env().task_modules
    try:
        return default_registry(modules, required=False)
    except Exception as exc:  # a malformed definition, a module that does not import
        named = f" (TASK_RUNNER_TASK_MODULES={','.join(modules)})" if modules else ""
        raise TaskRunnerError(
            f"cannot load the task types{named}: {_reason(exc)}{_where(exc)}"
        ) from exc


def _reason(exc: Exception) -> str:
    """The error in one line: pydantic's several-line report as `field: problem; ...`."""
    if isinstance(exc, TaskRunnerError):
        return str(exc)
    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "input"
            given = error.get("input")
            shown = ""
            if isinstance(given, str | int | float):
                text = repr(given)
                shown = f" (got {text if len(text) <= 60 else text[:57] + '...'})"
            problems.append(f"{where}: {error['msg']}{shown}")
        return f"ValidationError for {exc.title}: {'; '.join(problems)}"
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _where(exc: BaseException) -> str:
    """` (tasks/resize_image.py, line 3)`: where a task module raised, outside the runner,
    the registration in tasks/__init__.py, the standard library and installed packages
    (a pydantic model validated at import fails inside pydantic; a missing module, in
    importlib: neither is where to look)."""
    import importlib.util
    import sysconfig

    spec = importlib.util.find_spec("tasks")  # not imported: its import may be what failed
    registration = os.path.abspath(spec.origin) if spec and spec.origin else "<"
    libraries = {
        os.path.join(sysconfig.get_path(name), "")
        for name in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    plumbing = (os.path.dirname(os.path.abspath(__file__)), registration, "<", *libraries)
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(plumbing)
    ]
    if not frames or isinstance(exc, SyntaxError):  # a SyntaxError names its own line
        return ""
    path = os.path.abspath(frames[-1].filename)
    shown = os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else path
    return f" ({shown}, line {frames[-1].lineno})"
