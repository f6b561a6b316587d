"""TaskRunnerClient: create, read and list tasks; redrive failed ones."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from runner.app import App
from runner.errors import (
    InvalidTaskInput,
    ItemTooLarge,
    PayloadTooLarge,
    PayloadUnavailable,
    TaskConflict,
    UnknownTaskType,
)
from runner.executor import Outcome
from runner.items import iso, task_to_item
from runner.limits import insert_problem
from runner.model import ClaimSource, Task, TaskStatus
from runner.payloads import INLINE_MAX_BYTES, MAX_PAYLOAD_BYTES, encoded_size

# Looks at a task that changes under a redrive before giving up.
MAX_REDRIVE_TRIES = 3


class TaskRunnerClient:
    """What an application (or the CLI) uses to talk to the runner's table."""

    def __init__(self, app: App | None = None) -> None:
        if app is None:
            from runner.app import get_app

            app = get_app()
        self.app = app

    def create_task(
        self, task_type: str, data: dict[str, Any], *, task_id: str | None = None
    ) -> Task:
        """Validate data against the type's model, then insert the task as PENDING.

        An input over `runner.payloads.INLINE_MAX_BYTES` (or too large for its item) is
        put in the payload bucket first and the item holds its reference; one over
        `MAX_PAYLOAD_BYTES` is refused (PayloadTooLarge) before anything is written."""
        definition = self.app.registry.get(task_type)
        model = definition.parse_input(data)
        # By alias: the stored data is validated again when the task runs. Validated here
        # too, so what cannot come back from its JSON form is refused now, not then.
        stored = model.model_dump(mode="json", by_alias=True)
        try:
            definition.parse_input(stored)
        except InvalidTaskInput as exc:
            raise InvalidTaskInput(f"{exc} (the input as it would be stored: {stored})") from exc
        size = encoded_size(stored)
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"the task's input is {size} bytes as JSON; the cap is {MAX_PAYLOAD_BYTES} bytes"
                " (pass a reference to large data, e.g. an S3 key, instead)"
            )
        now = iso(self.app.store.clock())
        task = Task(
            id=task_id or str(uuid.uuid4()),
            type=definition.type,
            status=TaskStatus.PENDING,
            data=stored,
            created_at=now,
            updated_at=now,
        )
        payloads = self.app.store.payloads
        if not payloads.enabled or (
            size <= INLINE_MAX_BYTES and insert_problem(task_to_item(task)) is None
        ):
            return self.app.store.put_new(task)
        ref = payloads.stage_input(task.id, now, stored)
        try:
            created = self.app.store.put_new(
                task.model_copy(update={"data": ref, "payloads": True})
            )
        except (TaskConflict, ItemTooLarge):
            # Refused, so never referenced (a lost reply keeps it: the item may exist).
            with contextlib.suppress(PayloadUnavailable):
                payloads.delete_staged(ref)
            raise
        # A reader that finds the object missing copies it from staging itself.
        with contextlib.suppress(PayloadUnavailable):
            payloads.commit_input(ref)
        return created

    def get_task(self, task_id: str, *, payloads: bool = False) -> Task:
        """The task; with `payloads`, its offloaded input, result and step results loaded
        from the payload bucket in place of their references."""
        task = self.app.store.get(task_id)
        if not payloads:
            return task
        store = self.app.store.payloads
        steps = task.steps
        if steps is not None:
            steps = {
                name: record.model_copy(update={"result": store.load(record.result)})
                for name, record in steps.items()
            }
        loaded = {"data": store.load(task.data), "result": store.load(task.result)}
        return task.model_copy(update={**loaded, "steps": steps})

    def list_tasks(
        self, status: TaskStatus | str | None = None, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        wanted = TaskStatus(str(status).upper()) if status else None
        return self.app.store.list(wanted, limit=limit, cursor=cursor)

    def run_task(self, task_id: str) -> Outcome:
        """Claim a PENDING task and run it here, now (for a task no stream will run).

        A task of a type this process does not register is refused, not claimed: run here
        it would fail for good (UnknownTaskType), though the deployment may know the type.
        """
        task = self.app.store.get(task_id)
        if task.status is TaskStatus.PENDING:
            if task.type not in self.app.registry:
                known = ", ".join(d.type for d in self.app.registry) or "none"
                raise UnknownTaskType(
                    f"task {task_id} is of type {task.type}, which this process does not"
                    f" register (known: {known}): nothing ran"
                )
            outcome = self.app.runner.run_claimable(task, source=ClaimSource.CLI)
            if outcome.status is not None:
                return outcome
            task = self.app.store.get(task_id)
            if outcome.attempt:  # it ran, then found its claim gone
                raise TaskConflict(
                    f"task {task_id} ran here (attempt {outcome.attempt}), but its outcome was"
                    f" not recorded ({outcome.note}: the task changed while it ran); it is now"
                    f" {_whose(task)}"
                )
            # Another worker claimed it first.
        raise TaskConflict(f"task {task_id} is {_whose(task)}; run-task runs only PENDING tasks")

    def retry_task(self, task_id: str, *, reset_steps: bool = False) -> dict[str, Any]:
        """Manual redrive: a FAILED task (also one that failed permanently, to run it again
        on purpose, e.g. after a fix) → RETRYING in a new episode, and its execution;
        `reset_steps` clears its recorded steps, so every step runs again.

        Safe to repeat: a RETRYING task whose execution is not running (StartExecution
        failed after the status write, or that write's reply was lost) gets it now; one
        whose execution runs is refused. The execution ends FAILED if the task does.
        """
        from runner.executions import ExecutionRef
        from runner.workflow import RUNNING

        workflow = self.app.workflow
        arn = workflow.state_machine_arn  # fail before touching the task
        store = self.app.store
        task = store.get(task_id)
        for _ in range(MAX_REDRIVE_TRIES):
            if task.status is TaskStatus.FAILED:
                try:
                    task = store.redrive(
                        task, statuses=(TaskStatus.FAILED,), reset_steps=reset_steps
                    )
                except TaskConflict:
                    task = store.get(task_id)  # changed meanwhile: look again
                    continue
            elif task.status is TaskStatus.RETRYING:
                ref = ExecutionRef.of(task)
                if workflow.status(ref) == RUNNING:
                    raise TaskConflict(
                        f"task {task_id} is already being retried by execution "
                        f"{workflow.execution_arn(ref.name)}"
                    )
            else:
                raise TaskConflict(
                    f"task {task_id} is {_whose(task)}, not FAILED; only a FAILED task"
                    " can be retried"
                )
            started = workflow.ensure_running(ExecutionRef.of(task))
            if started is None:
                task = store.get(task_id)
                continue
            return {
                "task_id": task.id,
                "episode": started.ref.episode,
                "execution_arn": started.arn,
                "state_machine_arn": arn,
            }
        raise TaskConflict(f"task {task_id} kept changing; try again")


def _whose(task: Task) -> str:
    """`PROCESSING (claimed by stream)`: a task's status and, past PENDING, who took it."""
    status = task.status.value
    if task.status is TaskStatus.FAILED:
        return f"{status} (use retry-task to run it again)"
    if task.claimed_by is not None:
        return f"{status} (claimed by {task.claimed_by.value})"
    return status
