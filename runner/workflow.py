"""The retry workflow's Python side: start one execution per failure episode, read history.

Only `route_failed` (and `retry-task`, by hand) starts executions. An execution is named
`<task id>-<episode>`, and StartExecution is idempotent by name and input, so however many
times the stream delivers a FAILED record, one execution runs for that failure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runner.aws import AwsClients, AwsRetryPolicy
from runner.config import Settings
from runner.errors import ConfigurationError, WorkflowError
from runner.items import deserialize_image
from runner.logs import get_logger
from runner.model import TaskStatus, status_shard
from runner.store import TaskStore

_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")
MAX_EXECUTION_NAME = 80


def execution_name(task_id: str, episode: int) -> str:
    """`<task id>-<episode>`, made safe for Step Functions (80 chars of [A-Za-z0-9_-])."""
    safe = _NAME_OK.sub("_", task_id)
    suffix = f"-{episode}"
    if safe != task_id or len(safe) + len(suffix) > MAX_EXECUTION_NAME:
        digest = hashlib.sha256(task_id.encode()).hexdigest()[:12]
        safe = f"{safe[: MAX_EXECUTION_NAME - len(suffix) - 13]}_{digest}"
    return f"{safe}{suffix}"


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
        method = getattr(self.clients.stepfunctions, operation)
        extra = {"sleep": self._sleep} if self._sleep else {}
        result: dict[str, Any] = self.retry_policy.call(method, **extra, **kwargs)
        return result

    def start(self, task_id: str, episode: int) -> tuple[str, bool]:
        """Start the execution for one failure episode; returns (arn, started_now)."""
        name = execution_name(task_id, episode)
        # Deterministic input: StartExecution is idempotent only for the same name and input.
        payload = json.dumps(
            {
                "task_id": task_id,
                "episode": episode,
                "failed_shard": status_shard(task_id, TaskStatus.FAILED),
            },
            sort_keys=True,
        )
        try:
            arn = self._sfn(
                "start_execution", stateMachineArn=self.state_machine_arn, name=name, input=payload
            )["executionArn"]
            started = True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise WorkflowError(f"cannot start retry execution {name}: {exc}") from exc
            arn = self._execution_arn(name)
            started = False
        except BotoCoreError as exc:
            raise WorkflowError(f"cannot start retry execution {name}: {exc}") from exc
        self.store.add_execution(task_id, episode, arn)
        return arn, started

    def _execution_arn(self, name: str) -> str:
        # arn:aws:states:region:account:stateMachine:NAME → ...:execution:NAME:EXEC
        prefix = self.state_machine_arn.replace(":stateMachine:", ":execution:", 1)
        return f"{prefix}:{name}"

    def route(self, records: Sequence[Any]) -> RouteResult:
        """routeFailed: one execution per PROCESSING → FAILED (retryable) change."""
        started: list[str] = []
        already: list[str] = []
        ignored = 0
        failures: list[str] = []

        def route_one(record: Any) -> tuple[str, str | None]:
            target = routable(record)
            if target is None:
                return "ignored", None
            task_id, episode = target
            sequence = str(record["dynamodb"].get("SequenceNumber", ""))
            try:
                arn, new = self.start(task_id, episode)
            except Exception as exc:
                self.log.error(
                    "retry routing failed; the stream will redeliver",
                    extra={"task_id": task_id, "episode": episode, "error": str(exc)},
                )
                return "failed", sequence or None
            self.log.info(
                "retry execution started" if new else "retry execution exists",
                extra={"task_id": task_id, "episode": episode, "execution": arn},
            )
            return ("started" if new else "exists"), arn

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

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        """An execution's events, reduced to what a person reads: time, type, error."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 200}
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
        info = self._sfn("describe_execution", executionArn=execution_arn)
        return {
            "arn": execution_arn,
            "status": info.get("status"),
            "started": str(info.get("startDate")),
            "stopped": str(info.get("stopDate", "")),
        }


def routable(record: Any) -> tuple[str, int] | None:
    """(task id, episode) if the record is the PROCESSING → FAILED (retryable) change.

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
    if old.get("status") != TaskStatus.PROCESSING.value:
        return None
    if new.get("status") != TaskStatus.FAILED.value or new.get("retryable") is not True:
        return None
    task_id, episode = new.get("id"), new.get("episode", 0)
    if not isinstance(task_id, str) or not isinstance(episode, int):
        return None
    return task_id, episode
