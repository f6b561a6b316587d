"""The command line: `python -m runner.cli COMMAND ...` (or `npm run -s cli -- ...`).

The whole command line is checked first, against the commands' signatures below and the
task types' input models (runner.cli_args); python-fire then dispatches it. stdout carries
the command's one JSON document (`--help`: its text; after an error, nothing); logs,
whatever tasks write, and errors go to stderr, an error as one line (runner.cli_output).

Exit status: 0 done (run-task: the task ran, whatever its outcome); 1 the command failed;
64 the command line was refused and nothing ran (EX_USAGE); 130 Ctrl-C (the process ends by SIGINT);
141 (as for a Unix tool killed by SIGPIPE) the reader closed stdout early, e.g. `| head`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import fire
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from runner.cli_args import CommandTable
from runner.cli_commands import HelpRequest, Invocation
from runner.cli_control import WaitSeconds, error_exit_code
from runner.cli_output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Output,
    exit_with,
    fail,
)
from runner.cli_setup import default_client, load_registry
from runner.errors import TaskRunnerError, UsageError
from runner.model import TaskStatus
from runner.registry import TaskDefinition, TaskRegistry

if TYPE_CHECKING:
    from runner.client import TaskRunnerClient
    from runner.model import Task


def _status(value: str) -> str:
    try:
        return TaskStatus(value.strip().upper()).value
    except ValueError:
        raise ValueError(f"{value!r} is not a status; use one of {', '.join(TaskStatus)}") from None


def _cursor(value: str) -> str:
    from runner.items import decode_cursor

    decode_cursor(value)  # raises ValueError: pass back the cursor list-tasks printed
    return value


TaskId = Annotated[str, Field(min_length=1, description="the task's id")]
# The longest a presigned link can be valid (SigV4: 7 days; tasks.export_db checks it too).
_MAX_LINK_HOURS = 7 * 24


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


class _Commands:
    """Methods become subcommands; fire accepts `run-task` for `run_task`."""

    def __init__(self, client_factory: Callable[[], TaskRunnerClient]) -> None:
        self._client_factory = client_factory
        self._client: TaskRunnerClient | None = None

    def _get_client(self) -> TaskRunnerClient:
        # Private (underscore) so fire neither lists it nor builds it.
        if self._client is None:
            self._client = self._client_factory()
        return self._client


class CreateTask(_Commands):
    """Create a PENDING task of a given type (one subcommand per task type); with --delay
    or --run-at, SCHEDULED until then."""


def _create_command(definition: TaskDefinition, group: CreateTask) -> Callable[..., Any]:
    from runner.cli_control import split_create_options, wait_document

    aliases = {name: f.alias or name for name, f in definition.input_model.model_fields.items()}

    def command(**values: Any) -> dict[str, Any]:
        from runner.delays import parse_time

        options, values = split_create_options(values)
        delay, run_at = values.pop("delay", None), values.pop("run_at", None)
        data = {aliases[name]: value for name, value in values.items()}
        client = group._get_client()
        task = client.create_task(
            definition.type,
            data,
            idempotency_key=options.idempotency_key,
            delay=None if delay is None else float(delay),
            run_at=None if run_at is None else parse_time(str(run_at)),
        )
        if options.wait is not None:
            return wait_document(client, task.id, options.wait, follow=False)
        return _dump(task)

    command.__doc__ = definition.description or definition.type
    command.__name__ = definition.cli_name.replace("-", "_")
    return command


class Cli(_Commands):
    """Serverless task runner: create, run, inspect and retry tasks."""

    def __init__(
        self,
        registry: TaskRegistry,
        client_factory: Callable[[], TaskRunnerClient] | None = None,
    ) -> None:
        super().__init__(client_factory or (lambda: default_client(registry)))
        # The group shares this Cli's client.
        group = CreateTask(self._get_client)
        for definition in registry:
            setattr(
                group, definition.cli_name.replace("-", "_"), _create_command(definition, group)
            )
        self.create_task = group

    def run_task(self, task_id: TaskId) -> dict[str, Any]:
        """Claim a PENDING task and run it in this process now (when no stream will)."""
        return self._get_client().run_task(task_id).as_dict()

    def get_task(
        self,
        task_id: TaskId,
        wait: WaitSeconds = None,
        follow: Annotated[
            bool, Field(description="print each change of status or progress on stderr")
        ] = False,
        payloads: Annotated[
            bool,
            Field(description="load offloaded payloads from the payload bucket in full"),
        ] = False,
    ) -> dict[str, Any]:
        """Show a task: status, data, result or error, progress, attempts, attempt log,
        steps, executions; --wait SECONDS for it to be final (exit 0 DONE, 2 FAILED, 3
        CANCELLED, 4 not found, 124 timed out), --follow to print its progress,
        --payloads to load offloaded payloads in full, not their references."""
        if wait is not None or follow:
            from runner.cli_control import wait_document

            client = self._get_client()
            return wait_document(client, task_id, wait, follow=follow, payloads=payloads)
        return _dump(self._get_client().get_task(task_id, payloads=payloads))

    def cancel_task(self, task_id: TaskId) -> dict[str, Any]:
        """Cancel a task: PENDING, SCHEDULED, FAILED awaiting retry or RETRYING end
        CANCELLED now (its execution stopped); a PROCESSING one is asked to stop."""
        return self._get_client().cancel_task(task_id)

    def list_tasks(
        self,
        status: Annotated[
            str | None,
            AfterValidator(lambda v: v if v is None else _status(v)),
            Field(description="only tasks with this status: " + ", ".join(TaskStatus)),
        ] = None,
        limit: Annotated[int, Field(ge=1, description="tasks per page")] = 20,
        cursor: Annotated[
            str | None,
            AfterValidator(lambda v: v if v is None else _cursor(v)),
            Field(description="the next_cursor of the page before"),
        ] = None,
    ) -> dict[str, Any]:
        """List tasks, most recently updated first, optionally of one status; --cursor pages."""
        tasks, next_cursor = self._get_client().list_tasks(status, limit=limit, cursor=cursor)
        return {"tasks": [_dump(t) for t in tasks], "next_cursor": next_cursor}

    def retry_task(
        self,
        task_id: TaskId,
        reset_steps: Annotated[
            bool, Field(description="clear the task's recorded steps, so every step runs again")
        ] = False,
    ) -> dict[str, Any]:
        """Redrive a FAILED task (retries exhausted or not) through the retry workflow."""
        return self._get_client().retry_task(task_id, reset_steps=reset_steps)

    def export_link(
        self,
        task_id: TaskId,
        hours: Annotated[
            int, Field(ge=1, le=_MAX_LINK_HOURS, description="hours the link may be valid")
        ] = 1,
    ) -> dict[str, Any]:
        """Sign a fresh download link for a finished EXPORT_DB task with your own
        credentials (valid for up to --hours, at most 168; sooner if they expire)."""
        from tasks.export_db import presigned_link

        client = self._get_client()
        task = client.get_task(task_id)
        result = task.result if isinstance(task.result, dict) else {}
        if task.type != "EXPORT_DB" or task.status.value != "DONE" or "key" not in result:
            raise ValueError(f"task {task_id} is not a finished EXPORT_DB task")
        url = presigned_link(
            client.app.clients.s3, str(result["bucket"]), str(result["key"]), hours * 3600
        )
        return {"task_id": task.id, "url": url, "valid_for_up_to_hours": hours}

    def history(self, task_id: TaskId) -> dict[str, Any]:
        """A task's attempts and its workflow executions with their events."""
        task = self._get_client().get_task(task_id)
        workflow = self._get_client().app.workflow
        executions = []
        for arn in task.executions:
            entry = workflow.describe(arn)
            entry["events"] = workflow.history(arn)
            executions.append(entry)
        return {
            "task_id": task.id,
            "type": task.type,
            "status": task.status.value,
            "attempts": [a.model_dump(mode="json", exclude_none=True) for a in task.attempt_log],
            "steps": step_summary(task),
            "retries_exhausted": task.retries_exhausted,
            "executions": executions,
        }

    def list_schedules(self) -> dict[str, Any]:
        """The recurring schedules deployed (TASK_RUNNER_RECURRING_SCHEDULE_GROUP), each
        with its expression, time zone, task type, input and next fire time."""
        from runner.errors import ConfigurationError
        from runner.recurring import describe_schedules

        app = self._get_client().app
        group = app.settings.recurring_schedule_group
        if not group:
            raise ConfigurationError(
                "list-schedules needs TASK_RUNNER_RECURRING_SCHEDULE_GROUP (the recurring"
                " schedule group, task-runner-recurring-<stage>)"
            )
        scheduler = app.clients.client("scheduler")
        return {"schedules": describe_schedules(scheduler, group, app.store.clock())}

    def sweep(self) -> dict[str, Any]:
        """Run the sweeper once: failed stream batches replayed, expired leases → FAILED
        for retry, missed PENDING → run, stranded retries restarted (this also Scans the
        whole table, which the scheduled sweep does not by default). Tasks of types this
        shell does not register are left for the deployment's sweep."""
        import threading

        from runner.cli_args import TASK_MODULES_HINT

        app = self._get_client().app
        skipped: dict[str, str] = {}  # task id → type (a phase may meet a task again)
        lock = threading.Lock()  # the sweeper runs PENDING tasks 32 at a time

        def runnable(task: Task) -> bool:
            if task.type in app.registry:
                return True
            with lock:
                skipped[task.id] = task.type
            return False

        report: dict[str, Any] = {**app.sweeper.sweep(full_scan=True, runnable=runnable).as_dict()}
        if skipped:
            count = len(skipped)
            report["orphans_skipped"] = count
            report["note"] = (
                f"left {count} PENDING task(s) of types not registered here"
                f" ({', '.join(sorted(set(skipped.values())))}) for the deployment to run;"
                f" {TASK_MODULES_HINT}"
            )
        return report


def step_summary(task: Task) -> list[dict[str, Any]]:
    """A task's recorded steps, oldest first: name, when, on which attempt, result size."""
    from runner.payloads import is_reference

    steps = sorted((task.steps or {}).items(), key=lambda item: item[1].completed_at)
    return [
        {
            "name": name,
            "completed_at": record.completed_at,
            "attempt": record.attempt,
            "bytes": record.bytes,
            "offloaded": is_reference(record.result),
        }
        for name, record in steps
    ]


# What Ctrl-C leaves behind, by command (a read leaves nothing).
_INTERRUPTED = {
    "run-task": "task {task_id}, if this run had claimed it, stays PROCESSING until its lease"
    " expires; the sweeper then marks it FAILED for a retry",
    "sweep": "a task this sweep had claimed stays PROCESSING until its lease expires; the"
    " next sweep then marks it FAILED for a retry",
    "create-task": "the task may have been created (list-tasks shows it)",
    "retry-task": "the task may have moved to RETRYING (get-task shows it)",
}


def _interrupted(parsed: Invocation | None) -> str:
    if parsed is None:
        return "interrupted: nothing ran"
    left = _INTERRUPTED.get(parsed.command.words[0], "")
    return f"interrupted{': ' + left.format(**parsed.values) if left else ''}"


def main(
    argv: Sequence[str] | None = None,
    registry: TaskRegistry | None = None,
    client_factory: Callable[[], TaskRunnerClient] | None = None,
) -> int:
    """The CLI's entry point. It takes stdout's descriptor for the whole process (fd 1
    names stderr from here on; runner.cli_output says why)."""
    output = Output.take()
    if output is None:
        return fail(
            "stdout is closed (`>&-`), so the output would be lost: nothing ran"
            " (`> /dev/null` discards it)",
            EXIT_FAILED,
        )
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        registry = registry or load_registry()
        table = CommandTable(Cli, registry)
        parsed = table.parse(args)
    except UsageError as exc:
        return fail(f"{exc} (see --help)", EXIT_USAGE)
    except TaskRunnerError as exc:
        return fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return fail(_interrupted(None), EXIT_INTERRUPTED)
    if isinstance(parsed, HelpRequest):
        from runner.cli_help import help_text

        return output.write(help_text(table, parsed), ran=False)
    from runner import logs

    # Lambda collects a function's stdout; here stdout is the command's output.
    logs.log_to(sys.stderr)
    cli = Cli(registry, client_factory)
    try:
        # Python's own prints keep their order with the log lines. fire prints nothing
        # (serialize) and returns the command's result.
        with contextlib.redirect_stdout(sys.stderr):
            result = fire.Fire(
                cli, command=parsed.fire_args(), name="task-runner", serialize=lambda _: None
            )
    except KeyboardInterrupt:
        return fail(_interrupted(parsed), EXIT_INTERRUPTED)
    except fire.core.FireExit:  # the line was checked: fire refusing it is a bug here
        return fail(f"python-fire could not dispatch {parsed.fire_args()} (a bug)", EXIT_FAILED)
    except (TaskRunnerError, ValidationError, ValueError) as exc:
        from runner.cli_checks import explain
        from runner.config import Settings

        if isinstance(exc, ValidationError):
            return fail(str(exc.errors()[0]["msg"]), EXIT_FAILED)
        return fail(explain(exc, Settings.from_env()), error_exit_code(exc) or EXIT_FAILED)
    document = json.dumps(result, indent=2, sort_keys=True, default=str) + "\n"
    written = output.write(document, ran=True)
    return getattr(result, "exit_code", EXIT_OK) if written == EXIT_OK else written


if __name__ == "__main__":
    exit_with(main())
