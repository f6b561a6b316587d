"""TaskRunnerClient: create, read and list tasks; redrive failed ones."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from runner.app import App
from runner.errors import (
    InvalidTaskInput,
    ItemTooLarge,
    PayloadCorrupt,
    PayloadTooLarge,
    PayloadUnavailable,
    TaskConflict,
    UnknownTaskType,
)
from runner.executor import Outcome
from runner.items import iso, task_to_item
from runner.limits import insert_problem, utf8_text
from runner.model import ClaimSource, Task, TaskStatus
from runner.payloads import INLINE_MAX_BYTES, MAX_PAYLOAD_BYTES, encoded_size
from runner.registry import TaskDefinition, is_type_name, stored_name

# Looks at a task that changes under a redrive before giving up.
MAX_REDRIVE_TRIES = 3


class TaskRunnerClient:
    """What an application (or the CLI) uses to talk to the runner's table."""

    def __init__(self, app: App | None = None) -> None:
        if app is None:
            from runner.app import producer_app

            app = producer_app()
        self.app = app

    def create_task(
        self,
        task_type: str,
        data: dict[str, Any] | BaseModel,
        *,
        task_id: str | None = None,
        idempotency_key: str | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
    ) -> Task:
        """Insert a PENDING task; its input validated here when this process has the type.

        With the deployment's `tasks/` (the repository, the CLI, the dashboard) the input
        is validated against the type's model and an unknown type is refused. A producer
        with the installed package has no `tasks/`: a type it does not register is sent
        as it is (a pydantic model instance as its JSON), and the runner validates it when
        the task runs: invalid input or an unknown type ends FAILED, permanently.

        With `run_at` (aware) or `delay` (seconds) in the future, the task is SCHEDULED
        until then (runner.delays: its timer is set first). A time that has passed is now.

        With `idempotency_key`, the id is made from the key (`runner.idempotency`): a
        second create with the same key returns the task it made, whatever its status;
        other input raises IdempotencyConflict.

        An input over `runner.payloads.INLINE_MAX_BYTES` (or too large for its item) is
        put in the payload bucket first and the item holds its reference; one over
        `MAX_PAYLOAD_BYTES` is refused (PayloadTooLarge) before anything is written.
        """
        if idempotency_key is not None and task_id is not None:
            raise ValueError("give a task_id or an idempotency_key, not both")
        if task_id is not None and utf8_text(task_id) != task_id:
            raise ValueError("a task id must be valid UTF-8 text (it holds a lone surrogate)")
        registry = self.app.registry
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json", by_alias=True)
        if task_type in registry or registry.complete:
            definition = registry.get(task_type)
            stored_type, stored = definition.type, _validated(definition, data)
        else:
            stored_type, stored = _unvalidated(task_type, data)
        try:
            size = encoded_size(stored)
        except UnicodeEncodeError:
            raise InvalidTaskInput(
                "the task's input is not valid UTF-8 text: a string holds a lone surrogate"
                " (text decoded with errors='surrogateescape'?)"
            ) from None
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"the task's input is {size} bytes as JSON; the cap is {MAX_PAYLOAD_BYTES} bytes"
                " (pass a reference to large data, e.g. an S3 key, instead)"
            )
        from runner.delays import DelayMessage, resolve_run_at

        moment = self.app.store.clock()
        due = resolve_run_at(moment, run_at=run_at, delay=delay)
        now = iso(moment)
        if idempotency_key is not None:
            from runner.idempotency import put_idempotent, task_id_for

            task_id = task_id_for(idempotency_key)
        task = Task(
            id=task_id or str(uuid.uuid4()),
            type=stored_type,
            status=TaskStatus.PENDING if due is None else TaskStatus.SCHEDULED,
            data=stored,
            created_at=now,
            updated_at=now,
            run_at=None if due is None else iso(due),
            enqueue_key=idempotency_key,
        )
        payloads = self.app.store.payloads
        inline = not payloads.enabled or (
            size <= INLINE_MAX_BYTES and insert_problem(task_to_item(task)) is None
        )
        if not inline and idempotency_key is not None:
            # The stored reference names a staging object of each create: two creates
            # with one key could never be told to be the same input.
            raise InvalidTaskInput(
                f"an idempotency key with an input past {INLINE_MAX_BYTES} bytes as JSON is"
                " not supported: pass a reference to the large data instead"
            )
        armed: str | None = None
        if due is not None:
            try:
                # First: a timer without its task does nothing
                armed = self.app.delays.arm(task.id, due)
            except TaskConflict:
                if idempotency_key is None:
                    raise
                # The key's schedule is taken (its task scheduled, or its first create's
                # insert on its way): put_idempotent returns that task, or inserts this
                # one, whose timer is then set from the item.
        if idempotency_key is not None:
            found = put_idempotent(self.app.store, task)
            if due is not None and found == task and armed is None:
                self.app.delays.ensure(found)
            elif due is not None and found != task:
                self.app.delays.settle(armed, DelayMessage(task.id, str(task.run_at)), found)
            return found
        ref = None if inline else payloads.stage_input(task.id, now, stored)
        try:
            created = self.app.store.put_new(
                task if ref is None else task.model_copy(update={"data": ref, "payloads": True})
            )
        except (TaskConflict, ItemTooLarge) as exc:
            if due is not None:
                # The timer as the id's task needs it (not this refused create's)
                existing = exc.old if isinstance(exc, TaskConflict) else None
                self.app.delays.settle(
                    armed,
                    DelayMessage(task.id, str(task.run_at)),
                    existing if isinstance(existing, Task) else None,
                )
            if ref is not None:
                # Refused, so never referenced (a lost reply keeps it: the item may exist).
                with contextlib.suppress(PayloadUnavailable):
                    payloads.delete_staged(ref)
            raise
        if ref is not None:
            # If this fails, the sweeper moves it (runner.staged_inputs), or a reader
            # that finds the object missing first; PayloadCorrupt: a reader just did.
            with contextlib.suppress(PayloadUnavailable, PayloadCorrupt):
                payloads.commit_input(ref)
        return created

    def get_task(self, task_id: str, *, payloads: bool = False) -> Task:
        """The task; with `payloads`, its offloaded input, result and step results loaded
        from the payload bucket in place of their references."""
        task = self.app.store.get(task_id)
        return self._loaded(task) if payloads else task

    def _loaded(self, task: Task) -> Task:
        """The task with its offloaded input, result and step results in full."""
        store = self.app.store.payloads
        steps = task.steps
        if steps is not None:
            steps = {
                name: record.model_copy(update={"result": store.load(record.result)})
                for name, record in steps.items()
            }
        loaded = {"data": store.load(task.data), "result": store.load(task.result)}
        return task.model_copy(update={**loaded, "steps": steps})

    def cancel_task(self, task_id: str) -> dict[str, Any]:
        """Cancel a task (`runner.cancel`): CANCELLED at once if it waits, its cancel
        requested if it runs; TaskConflict (one line) if it has finished."""
        from runner.cancel import Cancellation

        workflow = self.app.workflow if self.app.settings.state_machine_arn else None
        delays = self.app.delays
        return Cancellation(self.app.store, workflow, delays.forget).cancel(task_id).as_dict()

    def wait(
        self,
        task_id: str,
        *,
        timeout: float,
        on_change: Callable[[Task], None] | None = None,
        payloads: bool = True,
    ) -> Task:
        """The task once it is final (DONE, CANCELLED, FAILED for good), with its offloaded
        payloads loaded in full unless `payloads` is false (waiting is how a producer gets
        a result); WaitTimedOut (naming its status) after `timeout` seconds, TaskNotFound
        if there is none."""
        from runner.waiting import wait_for

        task = wait_for(self.app.store, task_id, timeout, on_change=on_change)
        return self._loaded(task) if payloads else task

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


def _validated(definition: TaskDefinition, data: Any) -> dict[str, Any]:
    model = definition.parse_input(data)
    # By alias: the stored data is validated again when the task runs. Validated here
    # too, so what cannot come back from its JSON form is refused now, not then.
    stored = model.model_dump(mode="json", by_alias=True)
    try:
        definition.parse_input(stored)
    except InvalidTaskInput as exc:
        raise InvalidTaskInput(f"{exc} (the input as it would be stored: {stored})") from exc
    return stored


def _unvalidated(task_type: str, data: Any) -> tuple[str, dict[str, Any]]:
    """A type this process does not know: its name checked, its input only for being a
    JSON object DynamoDB can store; the runner checks the rest when the task runs."""
    name = stored_name(task_type)
    if not is_type_name(name):
        raise UnknownTaskType(f"{task_type!r} is not a task type name (UPPER_SNAKE_CASE)")
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise InvalidTaskInput(f"the input of a task must be a JSON object, not {kind}")
    try:
        # As a model's JSON mode would turn them (datetime, Decimal, UUID: strings), so a
        # known and an unknown type take the same values; then NaN and Infinity refused.
        stored: dict[str, Any] = json.loads(json.dumps(to_jsonable_python(data), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidTaskInput(f"the input of a {name} task is not JSON: {exc}") from exc
    return name, stored


def _whose(task: Task) -> str:
    """`PROCESSING (claimed by stream)`: a task's status and, past PENDING, who took it."""
    status = task.status.value
    if task.status is TaskStatus.FAILED:
        return f"{status} (use retry-task to run it again)"
    if task.claimed_by is not None:
        return f"{status} (claimed by {task.claimed_by.value})"
    return status
