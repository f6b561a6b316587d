"""TaskRunnerClient: create, read and list tasks; redrive failed ones."""

from __future__ import annotations

import uuid
from typing import Any

from runner.app import App
from runner.errors import TaskConflict
from runner.executor import Outcome
from runner.items import iso
from runner.model import ClaimSource, Task, TaskStatus

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
        """Validate data against the type's model, then insert the task as PENDING."""
        definition = self.app.registry.get(task_type)
        model = definition.parse_input(data)
        now = iso(self.app.store.clock())
        task = Task(
            id=task_id or str(uuid.uuid4()),
            type=definition.type,
            status=TaskStatus.PENDING,
            data=model.model_dump(mode="json"),
            created_at=now,
            updated_at=now,
        )
        return self.app.store.put_new(task)

    def get_task(self, task_id: str) -> Task:
        return self.app.store.get(task_id)

    def list_tasks(
        self, status: TaskStatus | str | None = None, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        wanted = TaskStatus(str(status).upper()) if status else None
        return self.app.store.list(wanted, limit=limit, cursor=cursor)

    def run_task(self, task_id: str) -> Outcome:
        """Claim a PENDING task and run it here, now."""
        task = self.app.store.get(task_id)
        if task.status is not TaskStatus.PENDING:
            raise TaskConflict(
                f"task {task_id} is {task.status.value}; run-task runs PENDING tasks"
                + (" (use retry-task for a FAILED one)" if task.status is TaskStatus.FAILED else "")
            )
        return self.app.runner.run_claimable(task, source=ClaimSource.CLI)

    def retry_task(self, task_id: str) -> dict[str, Any]:
        """Manual redrive: a FAILED task (also one that failed permanently, to run it again
        on purpose, e.g. after a fix) → RETRYING in a new episode, and its execution.

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
                    task = store.redrive(task, statuses=(TaskStatus.FAILED,))
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
                    f"task {task_id} is {task.status.value}; only a FAILED task can be retried"
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
