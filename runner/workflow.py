"""The retry workflow's Python side: start one execution per failure episode, read history.

Executions are started by `route_failed` (a retryable failure outside a workflow), by the
stream and the sweeper for a task too long to run there (`runner.dispatch`), by
`retry-task`, and by the sweeper's repairs. Each is named for its (task, episode)
(`runner.executions`), and StartExecution is idempotent by name and input while the
execution runs, so however many times a start is repeated, one execution runs for that
episode. A name already taken by anything else moves the task to a new episode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runner.aws import AwsClients, AwsRetryPolicy
from runner.config import Settings
from runner.errors import ConfigurationError, MalformedTask, TaskConflict, WorkflowError
from runner.executions import ExecutionRef
from runner.items import deserialize_image, task_from_item
from runner.logs import get_logger
from runner.model import Task, TaskStatus
from runner.store import TaskStore

S = TaskStatus
# New episodes opened in one start because the name was taken (never more than one,
# unless names collide by chance).
MAX_NAME_COLLISIONS = 3
RUNNING = "RUNNING"


@dataclass(frozen=True)
class Started:
    """The execution that owns an episode: started now, or found running or finished."""

    arn: str
    ref: ExecutionRef
    new: bool
    status: str = RUNNING


@dataclass(frozen=True)
class RouteResult:
    started: list[str]
    already_started: list[str]
    ignored: int
    failed_sequence_numbers: list[str]

    def response(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": s} for s in self.failed_sequence_numbers]}


class RetryWorkflow:
    """Starts and describes executions of the retry state machine."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        store: TaskStore,
        *,
        retry_policy: AwsRetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.store = store
        self.retry_policy = retry_policy or AwsRetryPolicy()
        self._sleep = sleep
        self.log = get_logger()

    @property
    def state_machine_arn(self) -> str:
        if not self.settings.state_machine_arn:
            raise ConfigurationError("TASK_RUNNER_STATE_MACHINE_ARN is not set")
        return self.settings.state_machine_arn

    def _sfn(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One Step Functions call with tenacity retries; AWS's text never leaves it."""
        method = getattr(self.clients.stepfunctions, operation)
        extra = {"sleep": self._sleep} if self._sleep else {}
        try:
            result: dict[str, Any] = self.retry_policy.call(method, **extra, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise WorkflowError(f"Step Functions {operation} failed: {code}", code=code) from exc
        except BotoCoreError as exc:
            raise WorkflowError(f"Step Functions {operation} failed: {type(exc).__name__}") from exc
        return result

    def execution_arn(self, name: str) -> str:
        # arn:aws:states:region:account:stateMachine:NAME → ...:execution:NAME:EXEC
        prefix = self.state_machine_arn.replace(":stateMachine:", ":execution:", 1)
        return f"{prefix}:{name}"

    # --- starting ----------------------------------------------------------------------

    def start(self, ref: ExecutionRef) -> Started | None:
        """Make sure the execution for `ref` exists: start it, or find it. If its name is
        taken by another execution, the task moves to a new episode, which is started.
        Returns None when the task has meanwhile left that episode (nothing to start)."""
        for _ in range(MAX_NAME_COLLISIONS):
            try:
                arn = self._sfn(
                    "start_execution",
                    stateMachineArn=self.state_machine_arn,
                    name=ref.name,
                    input=ref.input(),
                )["executionArn"]
                started = Started(arn, ref, new=True)
            except WorkflowError as exc:
                if exc.code != "ExecutionAlreadyExists":
                    raise
                arn = self.execution_arn(ref.name)
                info = self._sfn("describe_execution", executionArn=arn)
                if ref.owns(info.get("input")):
                    started = Started(arn, ref, new=False, status=str(info.get("status")))
                else:
                    self.log.warning(
                        "execution name taken by another execution; opening a new episode",
                        extra={"task_id": ref.task_id, "episode": ref.episode},
                    )
                    moved = self.redrive(ref)
                    if moved is None:
                        return None
                    ref = moved
                    continue
            self.store.add_execution(ref.task_id, ref.episode, started.arn, ref.created_at)
            return started
        raise WorkflowError(f"execution names for task {ref.task_id} keep colliding")

    def ensure_running(self, ref: ExecutionRef) -> Started | None:
        """`start`, and if the episode's execution exists but has ended while the task
        still waits for it, move the task to a new episode and start that one."""
        found = self.start(ref)
        if found is None or found.new or found.status == RUNNING:
            return found
        moved = self.redrive(found.ref)
        return found if moved is None else self.start(moved)

    def redrive(self, ref: ExecutionRef) -> ExecutionRef | None:
        """Move the task from `ref`'s episode to a new one (RETRYING); None if it has left
        that episode, or is not waiting for a retry (PENDING for the workflow, RETRYING,
        or FAILED retryable and not exhausted)."""
        task = self.store.find(ref.task_id)
        if (
            task is None
            or task.episode != ref.episode
            or (task.created_at or "") != ref.created_at
            or not waiting_for_workflow(task)
        ):
            return None
        try:
            return ExecutionRef.of(self.store.redrive(task, statuses=(task.status,)))
        except TaskConflict as exc:
            # Our write applied and its reply was lost (the retry's condition then
            # fails), or another redrive won: either way the task waits in the next
            # episode, whose execution is started by name (idempotent).
            found = exc.old if isinstance(exc.old, Task) else self.store.find(ref.task_id)
            if (
                found is not None
                and found.episode == ref.episode + 1
                and (found.created_at or "") == ref.created_at
                and found.status is TaskStatus.RETRYING
            ):
                return ExecutionRef.of(found)
            return None

    def status(self, ref: ExecutionRef) -> str | None:
        """The status of `ref`'s execution (RUNNING, SUCCEEDED, FAILED, ...), "TAKEN" if its
        name belongs to another execution, None if there is none."""
        try:
            info = self._sfn("describe_execution", executionArn=self.execution_arn(ref.name))
        except WorkflowError as exc:
            if exc.code == "ExecutionDoesNotExist":
                return None
            raise
        return str(info.get("status")) if ref.owns(info.get("input")) else "TAKEN"

    def stop(self, ref: ExecutionRef, *, cause: str) -> str | None:
        """Stop `ref`'s execution if it is the task's and runs (ABORTED in the console);
        its ARN if it was stopped. A `runTask` invocation it has started runs on: the
        task's conditions stop that one (`runner.cancel`)."""
        if self.status(ref) != RUNNING:
            return None
        arn = self.execution_arn(ref.name)
        try:
            self._sfn("stop_execution", executionArn=arn, error="TaskCancelled", cause=cause)
        except WorkflowError as exc:
            if exc.code == "ExecutionDoesNotExist":
                return None
            raise
        return arn

    # --- routing (routeFailed) -----------------------------------------------------------

    def route(self, records: Sequence[Any]) -> RouteResult:
        """routeFailed: one execution per PROCESSING → FAILED (retryable) change."""
        started: list[str] = []
        already: list[str] = []
        ignored = 0
        failures: list[str] = []

        def route_one(record: Any) -> tuple[str, str | None]:
            ref = routable(record)
            if ref is None:
                return "ignored", None
            sequence = str(record["dynamodb"].get("SequenceNumber", ""))
            try:
                # An execution of that name that has ended while the task still waits for
                # it (a task put again with the same created_at) runs nothing: a new episode.
                found = self.ensure_running(ref)
            except Exception as exc:
                self.log.error(
                    "retry routing failed; the stream will redeliver",
                    extra={
                        "task_id": ref.task_id,
                        "episode": ref.episode,
                        "error": str(exc) if isinstance(exc, WorkflowError) else type(exc).__name__,
                    },
                )
                return "failed", sequence or None
            if found is None:
                return "ignored", None
            self.log.info(
                "retry execution started" if found.new else "retry execution exists",
                extra={
                    "task_id": ref.task_id,
                    "episode": found.ref.episode,
                    "execution": found.arn,
                },
            )
            return ("started" if found.new else "exists"), found.arn

        with ThreadPoolExecutor(max_workers=max(1, min(len(records), 16))) as pool:
            for kind, value in pool.map(route_one, records):
                if kind == "ignored":
                    ignored += 1
                elif kind == "failed":
                    if value:
                        failures.append(value)
                elif kind == "started" and value:
                    started.append(value)
                elif value:
                    already.append(value)
        return RouteResult(started, already, ignored, failures)

    # --- reading -------------------------------------------------------------------------

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        """An execution's events, reduced to what a person reads: time, type, error."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "executionArn": execution_arn,
                "maxResults": 200,
                "includeExecutionData": False,  # the events' names and errors, not data
            }
            if token:
                kwargs["nextToken"] = token
            page = self._sfn("get_execution_history", **kwargs)
            for event in page.get("events", []):
                entry: dict[str, Any] = {
                    "time": str(event.get("timestamp")),
                    "type": event.get("type"),
                }
                for details in event.values():
                    if isinstance(details, dict) and ("error" in details or "name" in details):
                        entry.update({k: details[k] for k in ("name", "error") if k in details})
                events.append(entry)
            token = page.get("nextToken")
            if not token:
                return events

    def describe(self, execution_arn: str) -> dict[str, Any]:
        info = self._sfn(
            "describe_execution", executionArn=execution_arn, includedData="METADATA_ONLY"
        )
        return {
            "arn": execution_arn,
            "status": info.get("status"),
            "started": str(info.get("startDate")),
            "stopped": str(info.get("stopDate", "")),
        }


def waiting_for_workflow(task: Task) -> bool:
    """True if the task waits for an execution to run it: handed off (PENDING, for the
    workflow), RETRYING, or FAILED retryable with retries left."""
    if task.status in (S.PENDING, S.RETRYING):
        return True
    return task.status is S.FAILED and task.retryable is True and not task.retries_exhausted


def routable(record: Any) -> ExecutionRef | None:
    """The execution to start if the record is the PROCESSING → FAILED (retryable) change.

    The same test as routeFailed's filter pattern, repeated here so a record that slips
    past a filter (or the local stack's) still starts nothing it should not.
    """
    if not isinstance(record, dict) or record.get("eventName") != "MODIFY":
        return None
    body = record.get("dynamodb")
    if not isinstance(body, dict):
        return None
    try:
        new = deserialize_image(body.get("NewImage") or {})
        old = deserialize_image(body.get("OldImage") or {})
    except Exception:
        return None
    if old.get("status") != S.PROCESSING.value:
        return None
    if new.get("status") != S.FAILED.value or new.get("retryable") is not True:
        return None
    try:
        return ExecutionRef.of(task_from_item(new))
    except MalformedTask:
        return None
