"""Delayed tasks: SCHEDULED until `run_at`, then PENDING, with no timer that scans.

Each delayed task gets one timer, set *before* its item is written (a timer whose task
never appears, or is no longer that SCHEDULED task, changes nothing):

- `run_at` within SQS's 900 s: a message to the timer queue with `DelaySeconds`, the
  whole seconds left, so it arrives less than a second early;
- further off: a one-time EventBridge Scheduler schedule, named from the task id
  (`FlexibleTimeWindow` OFF, `ActionAfterCompletion` DELETE), at `run_at` less 5
  minutes; it sends the same message to the queue (Scheduler fires within its minute,
  and retries a failed delivery), and the consumer hands what is left to SQS.

The consumer (`TimerInbox`, the `fireTimers` function) waits out the last fraction of a
second in its invocation and promotes the task SCHEDULED → PENDING with one conditional write
at `run_at`; the stream then runs it as any other. A timer that is lost (a schedule
deleted by hand, a message past its retention) does not lose its task: the sweeper finds
SCHEDULED tasks well past their `run_at` in the sparse `by-run-at` index (bounded
Queries) and promotes them (`promote_overdue`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from runner.aws import AwsClients, AwsRetryPolicy
from runner.config import Settings
from runner.cron import utc_at
from runner.errors import ConfigurationError, TaskConflict, TimerError
from runner.items import Clock, iso, utcnow
from runner.logs import get_logger

if TYPE_CHECKING:
    from runner.recurring import RecurringFires
    from runner.store import TaskStore

# SQS's longest DelaySeconds.
SQS_MAX_DELAY_SECONDS = 900
# A one-time schedule fires this long before `run_at`: EventBridge Scheduler invokes
# within the minute it is set for, and retries a failed delivery; SQS takes the rest.
SCHEDULE_LEAD_SECONDS = 300
# A message is sent to arrive this much before `run_at`, plus the fraction of a second
# DelaySeconds (whole seconds) cannot say: the consumer's own wait absorbs the queue's
# and the poller's latency. More would hold each invocation longer: at 200 timers a
# minute, 1 s more kept all five of fireTimers' concurrent invocations waiting, and
# later timers queued behind them (bench/delays.py: p99 3 s instead of 0.6 s).
ARRIVE_EARLY_SECONDS = 0
# The consumer waits in its invocation for a task due within this; one due later is
# handed back to the queue with the delay left.
HOLD_SECONDS = 3.0
# The sweeper promotes a SCHEDULED task this long past its `run_at`: its timer is lost.
OVERDUE_GRACE_SECONDS = 60
# EventBridge Scheduler: a schedule name is at most 64 of [0-9a-zA-Z-_.].
_NAME_UNSAFE = re.compile(r"[^0-9A-Za-z_.-]")
_NAME_DIGEST = 16
_NAME_PREFIX = "task-"
DELAY_KIND = "delay"


def parse_time(text: str) -> datetime:
    """An ISO-8601 time with a Z or an offset, as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone: add Z (UTC) or an offset")
    return moment.astimezone(UTC)


def resolve_run_at(
    now: datetime, *, run_at: datetime | None = None, delay: float | None = None
) -> datetime | None:
    """When a task asked to run later should run (to the millisecond a task stores), or
    None for now: no delay, or a time that has passed ("past `run_at` = now")."""
    if run_at is not None and delay is not None:
        raise ValueError("give run_at or delay, not both")
    if delay is not None:
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"delay must be a number of seconds, 0 or more, not {delay!r}")
        run_at = now + timedelta(seconds=delay)
    if run_at is None:
        return None
    if run_at.tzinfo is None:
        raise ValueError("run_at needs a time zone (UTC, or an offset)")
    moment = parse_time(iso(run_at))  # the stored precision
    return moment if moment > now else None


def schedule_name(task_id: str) -> str:
    """The one-time schedule of a task: `task-<id, made safe>-<16 hex of sha256(id)>`."""
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:_NAME_DIGEST]
    room = 64 - len(_NAME_PREFIX) - 1 - _NAME_DIGEST
    return f"{_NAME_PREFIX}{_NAME_UNSAFE.sub('_', task_id)[:room]}-{digest}"


def queue_arn(queue_url: str, region: str) -> str:
    """`https://sqs.<region>.amazonaws.com/<account>/<name>` → the queue's ARN."""
    parts = queue_url.rstrip("/").split("/")
    if len(parts) < 2 or not parts[-2].isdigit():
        raise ConfigurationError(f"{queue_url!r} is not an SQS queue URL")
    partition = "aws-cn" if region.startswith("cn-") else "aws"
    if region.startswith("us-gov-"):
        partition = "aws-us-gov"
    return f"arn:{partition}:sqs:{region}:{parts[-2]}:{parts[-1]}"


@dataclass(frozen=True)
class DelayMessage:
    """What a timer delivers: promote this task, the incarnation due at `run_at`."""

    task_id: str
    run_at: str  # ISO, exactly as stored on the task

    def body(self) -> str:
        return json.dumps(
            {"kind": DELAY_KIND, "task_id": self.task_id, "run_at": self.run_at},
            sort_keys=True,
            separators=(",", ":"),
        )


def _aws_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


class DelayTimers:
    """Sets and removes delayed tasks' timers (the producer's side)."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        *,
        clock: Clock = utcnow,
        retry_policy: AwsRetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.clock = clock
        self.retry_policy = retry_policy or AwsRetryPolicy()

    def _queue_url(self) -> str:
        if not self.settings.timer_queue_url:
            raise ConfigurationError(
                "a delayed task needs TASK_RUNNER_TIMER_QUEUE_URL (the timer queue)"
            )
        return self.settings.timer_queue_url

    def _aws(self, service: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(self.clients.client(service), operation)
        try:
            response: dict[str, Any] = self.retry_policy.call(method, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            code = _aws_code(exc)
            raise TimerError(f"{service} {operation} failed: {code}", code=code) from exc
        return response

    @staticmethod
    def delay_for(seconds_left: float) -> int:
        """DelaySeconds for a message due in `seconds_left`: whole seconds, at most 900."""
        return max(0, min(SQS_MAX_DELAY_SECONDS, math.floor(seconds_left) - ARRIVE_EARLY_SECONDS))

    def send(self, message: DelayMessage, delay_seconds: int) -> None:
        self._aws(
            "sqs",
            "send_message",
            QueueUrl=self._queue_url(),
            MessageBody=message.body(),
            DelaySeconds=delay_seconds,
        )

    def arm(self, task_id: str, run_at: datetime) -> str:
        """Set the timer of a task due at `run_at`; returns `sqs` or the schedule's name.
        Raises TimerError (nothing was set, or a schedule that names another live task)."""
        message = DelayMessage(task_id, iso(run_at))
        left = (run_at - self.clock()).total_seconds()
        if left <= SQS_MAX_DELAY_SECONDS:
            self.send(message, self.delay_for(left))
            return "sqs"
        return self._create_schedule(message, run_at)

    def _schedule_request(self, message: DelayMessage, run_at: datetime) -> dict[str, Any]:
        group, role = self.settings.delay_schedule_group, self.settings.scheduler_role_arn
        if not group or not role:
            raise ConfigurationError(
                "a task delayed past 15 minutes needs TASK_RUNNER_DELAY_SCHEDULE_GROUP and"
                " TASK_RUNNER_SCHEDULER_ROLE_ARN (EventBridge Scheduler)"
            )
        return {
            "Name": schedule_name(message.task_id),
            "GroupName": group,
            "ScheduleExpression": utc_at(run_at - timedelta(seconds=SCHEDULE_LEAD_SECONDS)),
            "ScheduleExpressionTimezone": "UTC",
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "Target": {
                "Arn": queue_arn(self._queue_url(), self.settings.region),
                "RoleArn": role,
                "Input": message.body(),
            },
        }

    def _create_schedule(self, message: DelayMessage, run_at: datetime) -> str:
        request = self._schedule_request(message, run_at)
        try:
            self._aws("scheduler", "create_schedule", **request)
        except TimerError as exc:
            if exc.code != "ConflictException":
                raise
            self._take_over(request, message)
        return str(request["Name"])

    def _take_over(self, request: dict[str, Any], message: DelayMessage) -> None:
        """The schedule's name is taken: by this very request (a retry whose first reply
        was lost), or by an earlier task under the id whose schedule outlived it."""
        found = self._aws(
            "scheduler", "get_schedule", Name=request["Name"], GroupName=request["GroupName"]
        )
        if found.get("Target", {}).get("Input") == message.body():
            return
        try:
            other = json.loads(found.get("Target", {}).get("Input") or "{}")
        except ValueError:
            other = {}
        if other.get("task_id") == message.task_id and self._is_scheduled(
            message.task_id, str(other.get("run_at"))
        ):
            raise TaskConflict(f"a task with id {message.task_id} already exists")
        request = {k: v for k, v in request.items() if k != "ActionAfterCompletion"}
        self._aws("scheduler", "update_schedule", **request, ActionAfterCompletion="DELETE")

    def _is_scheduled(self, task_id: str, run_at: str) -> bool:
        """Whether the task the schedule was set for still waits for it."""
        response = self._aws(
            "dynamodb",
            "get_item",
            TableName=self.settings.table_name,
            Key={"id": {"S": task_id}},
            ConsistentRead=True,
        )
        item = response.get("Item") or {}
        status, due = item.get("status", {}).get("S"), item.get("run_at", {}).get("S")
        return bool(status == "SCHEDULED" and due == run_at)

    def forget(self, task_id: str) -> bool:
        """Best effort: delete the one-time schedule of task `task_id`, if it has one.
        True if one was deleted; False if there was none (a task due within 15 minutes
        has an SQS message instead, which finds the task no longer SCHEDULED and does
        nothing) or it could not be deleted (its firing then does nothing either)."""
        group = self.settings.delay_schedule_group
        if not group:
            return False
        try:
            self._aws("scheduler", "delete_schedule", Name=schedule_name(task_id), GroupName=group)
        except TimerError as exc:
            if exc.code != "ResourceNotFoundException":
                get_logger().warning(
                    "could not delete a delayed task's schedule; its firing will do nothing",
                    extra={"task_id": task_id, "error_type": exc.code},
                )
            return False
        return True


# --- the consumer -----------------------------------------------------------------------


@dataclass(frozen=True)
class InboxReport:
    """What one batch of timer messages did."""

    promoted: int = 0
    requeued: int = 0
    stale: int = 0  # the task was missing, or no longer that SCHEDULED task
    created: int = 0  # recurring fires that created their task
    duplicates: int = 0  # recurring fires whose task existed (a double fire)
    dropped: int = 0  # messages that are not timers
    failed_message_ids: tuple[str, ...] = ()

    def response(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed_message_ids]}


class TimerInbox:
    """The timer queue's consumer: promotes delayed tasks at their time, hands early ones
    back to SQS, and creates the task of each recurring schedule's fire."""

    def __init__(
        self,
        store: TaskStore,
        timers: DelayTimers,
        recurring: RecurringFires | None = None,
        *,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.timers = timers
        self.recurring = recurring
        self.clock = clock
        self.sleep = sleep
        self.log = get_logger()

    def handle(self, records: Sequence[Any]) -> InboxReport:
        counts = {"promoted": 0, "requeued": 0, "stale": 0, "created": 0, "duplicates": 0}
        dropped = 0
        failed: list[str] = []
        due: list[tuple[datetime, str, DelayMessage]] = []
        for record in records:
            message_id = str(record.get("messageId", "")) if isinstance(record, dict) else ""
            try:
                body = json.loads(record["body"])
                kind = body.get("kind")
            except (KeyError, TypeError, ValueError, AttributeError):
                dropped += 1
                self.log.warning(
                    "timer message is not JSON; dropped", extra={"message_id": message_id}
                )
                continue
            try:
                if kind == DELAY_KIND:
                    message = DelayMessage(str(body["task_id"]), str(body["run_at"]))
                    when = parse_time(message.run_at)
                    left = (when - self.clock()).total_seconds()
                    if left > HOLD_SECONDS:
                        self.timers.send(message, self.timers.delay_for(left))
                        counts["requeued"] += 1
                    else:
                        due.append((when, message_id, message))
                elif kind == "recurring" and self.recurring is not None:
                    created = self.recurring.fire(body)
                    counts["created" if created else "duplicates"] += 1
                else:
                    dropped += 1
                    self.log.warning(
                        "unknown timer message; dropped", extra={"message_id": message_id}
                    )
            except (KeyError, TypeError, ValueError) as exc:
                dropped += 1
                self.log.warning(
                    "malformed timer message; dropped",
                    extra={"message_id": message_id, "error_type": type(exc).__name__},
                )
            except Exception as exc:
                failed.append(message_id)
                self.log.error(
                    "timer message not handled; SQS delivers it again",
                    extra={"message_id": message_id, "error_type": type(exc).__name__},
                )
        for when, message_id, message in sorted(due, key=lambda d: d[0]):
            wait = (when - self.clock()).total_seconds()
            if wait > 0:
                self.sleep(wait)
            try:
                promoted = self.store.promote(message.task_id, message.run_at)
            except Exception as exc:
                failed.append(message_id)
                self.log.error(
                    "delayed task not promoted; SQS delivers its timer again",
                    extra={"task_id": message.task_id, "error_type": type(exc).__name__},
                )
                continue
            counts["promoted" if promoted is not None else "stale"] += 1
        return InboxReport(**counts, dropped=dropped, failed_message_ids=tuple(failed))


def promote_overdue(
    store: TaskStore,
    *,
    grace_seconds: float = OVERDUE_GRACE_SECONDS,
    left: Callable[[], float] = lambda: math.inf,
) -> int:
    """The sweeper's phase: SCHEDULED tasks `grace_seconds` past their `run_at` (their
    timer was lost) → PENDING, found by bounded Queries of the sparse index."""
    cutoff = iso(store.clock() - timedelta(seconds=grace_seconds))
    promoted = 0
    for task_id, run_at in store.iter_overdue(cutoff):
        if left() <= 0:
            break
        if store.promote(task_id, run_at) is not None:
            promoted += 1
            get_logger().warning(
                "delayed task promoted by the sweeper (its timer was lost)",
                extra={"task_id": task_id},
            )
    return promoted
