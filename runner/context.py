"""What a task handler is given besides its input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.steps import StepRecorder, StepsMixin

if TYPE_CHECKING:  # task modules import this one: `task-runner --help` loads no botocore
    from aws_lambda_powertools import Logger

    from runner.aws import AwsClients
    from runner.config import Settings


@dataclass(frozen=True)
class TaskContext(StepsMixin):
    """The task's identity and the tools a handler may use.

    `idempotency_key` is the same for every attempt of the task; `attempt` counts claims.
    A handler that has side effects uses the key (e.g. as an S3 object name or an SES
    message tag) so a retried attempt does not repeat them. `step`, `astep` and
    `step_key` (runner.steps) make durable steps, which a retry does not repeat.
    """

    task_id: str
    task_type: str
    attempt: int
    episode: int
    idempotency_key: str
    settings: Settings
    clients: AwsClients
    logger: Logger
    # The attempt's durable steps (runner.steps); None outside a run by the runner.
    step_recorder: StepRecorder | None = None
