"""The CLI's control verbs beyond one call: `--wait` (get-task, create-task), `--follow`,
`--idempotency-key`, and the exit statuses a waiting command ends with, so a shell script
can branch on the outcome:

0 DONE, 2 FAILED (for good), 3 CANCELLED, 4 not found, 124 timed out (as `timeout(1)`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, create_model

from runner.errors import TaskNotFound, WaitTimedOut
from runner.model import TaskStatus

if TYPE_CHECKING:
    from runner.client import TaskRunnerClient
    from runner.model import Task

EXIT_TASK_FAILED = 2
EXIT_CANCELLED = 3
EXIT_NOT_FOUND = 4
EXIT_TIMED_OUT = 124
# `--follow` without `--wait` follows for at most this long.
FOLLOW_SECONDS = 24 * 3600.0

WaitSeconds = Annotated[
    float | None,
    Field(
        ge=0,
        allow_inf_nan=False,
        description="wait up to this many seconds for the task to be final; exit status"
        " 0 DONE, 2 FAILED, 3 CANCELLED, 4 not found, 124 timed out",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=512,
        description="a second create with this key returns the task it made (same input)",
    ),
]
# create-task's own flags, beside the task type's input fields (which may not use
# these names: the registry reserves them).
CREATE_OPTIONS = ("wait", "idempotency_key")


class CreateOptions(BaseModel):
    wait: WaitSeconds = None
    idempotency_key: IdempotencyKey = None


def with_create_options(input_model: type[BaseModel]) -> type[BaseModel]:
    """The task type's input model plus create-task's own flags (the command's grammar)."""
    model: type[BaseModel] = create_model(
        f"{input_model.__name__}_create",
        __base__=input_model,
        wait=(WaitSeconds, None),
        idempotency_key=(IdempotencyKey, None),
    )
    return model


def split_create_options(values: dict[str, Any]) -> tuple[CreateOptions, dict[str, Any]]:
    """(create-task's own flags, the task's input) from one command's values."""
    options = {name: values.pop(name) for name in CREATE_OPTIONS if name in values}
    return CreateOptions.model_validate(options), values


class Exited(dict[str, Any]):
    """A command's JSON document, and the exit status it ends with."""

    def __init__(self, document: dict[str, Any], exit_code: int) -> None:
        super().__init__(document)
        self.exit_code = exit_code


def final_status_code(task: Task) -> int:
    if task.status is TaskStatus.DONE:
        return 0
    if task.status is TaskStatus.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_TASK_FAILED


def error_exit_code(exc: BaseException) -> int | None:
    """The exit status an error ends the CLI with, where it is not 1."""
    if isinstance(exc, TaskNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, WaitTimedOut):
        return EXIT_TIMED_OUT
    return None


def _print_change(task: Task) -> None:
    progress = task.progress
    line = f"{task.id}: {task.status.value}"
    if progress is not None:
        total = f"/{progress.total:g}" if progress.total is not None else ""
        line += f" {progress.done:g}{total}"
        if progress.message:
            line += f" {progress.message}"
    print(line, file=sys.stderr, flush=True)


def wait_document(
    client: TaskRunnerClient,
    task_id: str,
    seconds: float | None,
    *,
    follow: bool,
    payloads: bool = False,
) -> Exited:
    """Wait for the task to be final (printing each change on stderr if `follow`); its
    document (offloaded payloads in full with `payloads`, else their references, as
    get-task shows them), with the exit status of its outcome."""
    timeout = seconds if seconds is not None else FOLLOW_SECONDS
    on_change = _print_change if follow else None
    task = client.wait(task_id, timeout=timeout, on_change=on_change, payloads=payloads)
    return Exited(task.model_dump(mode="json", exclude_none=True), final_status_code(task))
