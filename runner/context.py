"""What a task handler is given besides its input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.steps import StepRecorder, StepsMixin

if TYPE_CHECKING:  # task modules import this one: `task-runner --help` loads no botocore
    from aws_lambda_powertools import Logger

    from runner.aws import AwsClients
    from runner.config import Settings
    from runner.control import TaskControl


@dataclass(frozen=True)
class TaskContext(StepsMixin):
    """The task's identity and the tools a handler may use.

    `idempotency_key` is the same for every attempt of the task, and not the key of an
    earlier task under the same id (`Task.idempotency_key`); `attempt` counts claims.
    A handler that has side effects uses the key (e.g. as an S3 object name or an SES
    message tag) so a retried attempt does not repeat them.

    A long handler checks `cancel_requested` (it becomes true within about a heartbeat,
    30 s, of `cancel-task`) and raises `runner.errors.TaskCancelled` to stop; an async
    handler is cancelled at its next await instead. `report_progress` stores how far it
    got on the task (the first report at once, later ones at most every 5 s).
    `step`, `astep` and `step_key` (runner.steps) make durable steps, which a retry does
    not repeat.
    """

    task_id: str
    task_type: str
    attempt: int
    episode: int
    idempotency_key: str
    settings: Settings
    clients: AwsClients
    logger: Logger
    control: TaskControl | None = None

    # The attempt's durable steps (runner.steps); None outside a run by the runner.
    step_recorder: StepRecorder | None = None

    @property
    def cancel_requested(self) -> bool:
        """True once `cancel-task` asked this task to stop (or its claim was lost)."""
        return self.control is not None and self.control.cancel_requested

    def report_progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Store `progress` = {done, total, message, updated_at} on the task. A report
        that cannot be written is logged, never raised: it does not fail the task."""
        if self.control is not None and self.control.progress is not None:
            self.control.progress.report(done, total, message)
