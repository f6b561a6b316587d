"""The command line (python-fire): `python -m runner.cli COMMAND ...` or `npm run cli -- ...`.

Output is JSON on stdout. An error is one line on stderr and exit status 1 (2 for a
command line fire cannot parse).

python-fire parses values as Python literals (`--message 42` would arrive as an int,
`--message "a, b"` as a tuple). Values of string parameters are quoted before fire sees
them, so they reach the task's model exactly as typed; the model then validates them.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import fire
from pydantic import BaseModel, ValidationError

from runner.errors import TaskRunnerError
from runner.registry import TaskDefinition, TaskRegistry

if TYPE_CHECKING:
    from runner.client import TaskRunnerClient

# Parameters of the fixed commands that are always strings.
STRING_FLAGS = frozenset({"task_id", "status", "cursor"})
_NON_STRING = (int, float, bool)


def _emit(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def _string_fields(definition: TaskDefinition) -> set[str]:
    return {
        name
        for name, field in definition.input_model.model_fields.items()
        if field.annotation not in _NON_STRING
    }


class _Commands:
    """Methods become subcommands; fire accepts `run-task` for `run_task`."""

    def __init__(self, client_factory: Callable[[], TaskRunnerClient]) -> None:
        self._client_factory = client_factory
        self._client: TaskRunnerClient | None = None

    def _get_client(self) -> TaskRunnerClient:
        # Private (underscore) so fire neither lists it nor builds it for --help.
        if self._client is None:
            self._client = self._client_factory()
        return self._client


class CreateTask(_Commands):
    """Create a PENDING task of a given type (one subcommand per task type)."""


def _create_command(definition: TaskDefinition, group: CreateTask) -> Callable[..., None]:
    fields = definition.input_model.model_fields

    def command(**kwargs: Any) -> None:
        task = group._get_client().create_task(definition.type, kwargs)
        _emit(_dump(task))

    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if field.is_required() else field.default,
            annotation=field.annotation,
        )
        for name, field in fields.items()
    ]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    flags = "\n".join(
        f"    --{name.replace('_', '-')}: {field.description or field.annotation}"
        for name, field in fields.items()
    )
    command.__doc__ = f"{definition.description or definition.type}\n\nFlags:\n{flags}\n"
    command.__name__ = definition.cli_name.replace("-", "_")
    return command


class Cli(_Commands):
    """Serverless task runner: create, run, inspect and retry tasks."""

    def __init__(
        self,
        registry: TaskRegistry,
        client_factory: Callable[[], TaskRunnerClient] | None = None,
    ) -> None:
        super().__init__(client_factory or default_client)
        # The group shares this Cli's client.
        group = CreateTask(self._get_client)
        for definition in registry:
            setattr(
                group, definition.cli_name.replace("-", "_"), _create_command(definition, group)
            )
        self.create_task = group

    def run_task(self, task_id: str) -> None:
        """Claim a PENDING task and run it in this process now."""
        _emit(self._get_client().run_task(task_id).as_dict())

    def get_task(self, task_id: str) -> None:
        """Show a task: status, result or error, attempts and retry executions."""
        _emit(_dump(self._get_client().get_task(task_id)))

    def list_tasks(
        self, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> None:
        """List tasks newest first, optionally of one status; pass --cursor to page."""
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise ValueError(f"--limit must be a whole number, not {limit!r}")
        tasks, next_cursor = self._get_client().list_tasks(status, limit=limit, cursor=cursor)
        _emit({"tasks": [_dump(t) for t in tasks], "next_cursor": next_cursor})

    def retry_task(self, task_id: str) -> None:
        """Redrive a FAILED task (retries exhausted or not) through the retry workflow."""
        _emit(self._get_client().retry_task(task_id))

    def export_link(self, task_id: str, hours: int = 1) -> None:
        """Sign a fresh download link for a finished EXPORT_DB task, with your own
        credentials (valid for up to --hours, at most 168; sooner if they expire)."""
        if isinstance(hours, bool) or not isinstance(hours, int):
            raise ValueError(f"--hours must be a whole number, not {hours!r}")
        from tasks.export_db import MAX_LINK_SECONDS, presigned_link

        if not 1 <= hours <= MAX_LINK_SECONDS // 3600:
            raise ValueError(f"--hours must be 1 to {MAX_LINK_SECONDS // 3600}")
        client = self._get_client()
        task = client.get_task(task_id)
        result = task.result if isinstance(task.result, dict) else {}
        if task.type != "EXPORT_DB" or task.status.value != "DONE" or "key" not in result:
            raise ValueError(f"task {task_id} is not a finished EXPORT_DB task")
        url = presigned_link(
            client.app.clients.s3, str(result["bucket"]), str(result["key"]), hours * 3600
        )
        _emit({"task_id": task.id, "url": url, "valid_for_up_to_hours": hours})

    def history(self, task_id: str) -> None:
        """A task's attempts and its workflow executions with their events."""
        task = self._get_client().get_task(task_id)
        workflow = self._get_client().app.workflow
        executions = []
        for arn in task.executions:
            entry = workflow.describe(arn)
            entry["events"] = workflow.history(arn)
            executions.append(entry)
        _emit(
            {
                "task_id": task.id,
                "type": task.type,
                "status": task.status.value,
                "attempts": [
                    a.model_dump(mode="json", exclude_none=True) for a in task.attempt_log
                ],
                "retries_exhausted": task.retries_exhausted,
                "executions": executions,
            }
        )

    def sweep(self) -> None:
        """Run the sweeper once: expired leases → FAILED for retry, missed PENDING → run
        (this Scans the whole table; the scheduled sweep reads one segment a run)."""
        _emit(self._get_client().app.sweeper.sweep(full_scan=True).as_dict())


def quote_string_flags(argv: Sequence[str], registry: TaskRegistry) -> list[str]:
    """Quote values of string parameters so fire passes them through unparsed."""
    strings = set(STRING_FLAGS)
    if len(argv) >= 2 and argv[0].replace("_", "-") == "create-task" and argv[1] in registry:
        strings |= _string_fields(registry.get(argv[1]))
    out: list[str] = []
    pending = False
    for token in argv:
        if pending:
            out.append(repr(token))
            pending = False
            continue
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            if name.replace("-", "_") in strings:
                if eq:
                    out.append(f"--{name}={value!r}")
                    continue
                pending = True
        out.append(token)
    return out


def default_client() -> TaskRunnerClient:
    """The client of this process's App, imported on first use: `--help` needs neither
    (botocore alone is about 0.1 s)."""
    from runner.app import get_app
    from runner.client import TaskRunnerClient

    return TaskRunnerClient(get_app())


def main(argv: Sequence[str] | None = None, registry: TaskRegistry | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if registry is None:
        from runner.config import Settings
        from tasks import build_registry

        registry = build_registry(Settings.from_env().task_modules)
    os.environ.setdefault("PAGER", "cat")
    cli = Cli(registry, client_factory=default_client)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            fire.Fire(cli, command=quote_string_flags(args, registry), name="task-runner")
    except fire.core.FireExit as exc:
        code = int(exc.code or 0)
        text = captured.getvalue()
        if code:
            lines = [ln for ln in text.splitlines() if ln.startswith("ERROR:")]
            reason = lines[0][len("ERROR:") :].strip() if lines else "invalid command line"
            print(f"error: {reason} (see --help)", file=sys.stderr)
        else:
            sys.stdout.write(
                "".join(ln for ln in text.splitlines(True) if not ln.startswith("INFO:"))
            )
        return code
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 1
    except (TaskRunnerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
