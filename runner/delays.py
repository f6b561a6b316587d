"""Delayed tasks: SCHEDULED until `run_at`, then PENDING, with no timer that scans.

Each delayed task gets one timer, set *before* its item is written (a timer whose task
never appears, or is no longer that SCHEDULED task, changes nothing):

- `run_at` within SQS's 900 s: a message to the timer queue with `DelaySeconds`, the
  whole seconds left, so it arrives less than a second early;
- further off: a one-time EventBridge Scheduler schedule, named from the task id
  (`FlexibleTimeWindow` OFF, `ActionAfterCompletion` DELETE), at `run_at` less 5
  minutes; it sends the same message to the queue (Scheduler fires within its minute,
  and retries a failed delivery), and the consumer hands what is left to SQS.

The consumer (`runner.timer_inbox.TimerInbox`, the `fireTimers` function) waits out the
last fraction of a second in its invocation and promotes the task SCHEDULED → PENDING with
one conditional write at `run_at`; the stream then runs it as any other. A message that
comes early is kept in the queue, its visibility set to the time left; one that comes
before its item (the producer's insert still on its way) is kept for a while too. A timer
that is lost (a schedule deleted by hand, a message past its retention) does not lose its
task: the sweeper finds SCHEDULED tasks well past their `run_at` in the sparse
`by-run-at` index (bounded Queries) and promotes them (`promote_overdue`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from runner.aws import AwsClients, AwsRetryPolicy
from runner.config import Settings
from runner.cron import utc_at
from runner.errors import ConfigurationError, TaskConflict, TimerError
from runner.idempotency import KEY_ID_PREFIX
from runner.items import Clock, iso, utcnow
from runner.logs import get_logger
from runner.model import Task, TaskStatus

if TYPE_CHECKING:
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
# kept in the queue for the time left (`runner.timer_inbox`).
HOLD_SECONDS = 3.0
# The sweeper promotes a SCHEDULED task this long past its `run_at`: its timer is lost.
OVERDUE_GRACE_SECONDS = 60
# A `run_at` less than this ahead is now: DelaySeconds cannot say less than a second, so
# its timer would arrive at once, racing its own item's insert.
IMMEDIATE_WITHIN_SECONDS = 1.0
# ChangeMessageVisibility: at most 12 hours in all from a message's receipt; a minute
# less, for the time the invocation has taken since.
MAX_HOLD_SECONDS = 12 * 3600 - 60
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
    None for now: no delay, a time that has passed ("past `run_at` = now"), or one less
    than IMMEDIATE_WITHIN_SECONDS ahead."""
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
    return moment if (moment - now).total_seconds() >= IMMEDIATE_WITHIN_SECONDS else None


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
        was lost), or by an earlier task under the id whose schedule outlived it.

        An id made from an idempotency key is never taken over here: the schedule may be
        that of the key's first create, whose insert is still on its way (the item not
        there yet); `ensure` sets it once the item says whose it is."""
        found = self._aws(
            "scheduler", "get_schedule", Name=request["Name"], GroupName=request["GroupName"]
        )
        if found.get("Target", {}).get("Input") == message.body():
            return
        try:
            other = json.loads(found.get("Target", {}).get("Input") or "{}")
        except ValueError:
            other = {}
        if other.get("task_id") == message.task_id and (
            message.task_id.startswith(KEY_ID_PREFIX)
            or self._is_scheduled(message.task_id, str(other.get("run_at")))
        ):
            raise TaskConflict(f"a task with id {message.task_id} already exists")
        self._put_schedule(request)

    def _put_schedule(self, request: dict[str, Any]) -> None:
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

    def settle(self, armed: str | None, mine: DelayMessage, existing: Task | None) -> None:
        """A create that set its timer (`armed`, what `arm` returned) was refused: its id
        is `existing`'s (or, with None, nothing was written). Leave the timer as the task
        that holds the id needs it, whichever create set it last.

        Only a schedule can hold another task's timer (an SQS message of this create
        finds the task at another `run_at` and does nothing); it is given back to
        `existing` if that one waits for its time, else deleted if it is still this
        create's. Best effort, as `forget`: a timer left wrong is the sweeper's to mend."""
        if armed is None or armed == "sqs":
            return
        try:
            if existing is not None and existing.status is TaskStatus.SCHEDULED:
                self.ensure(existing)
            elif self._schedule_input(mine.task_id) == mine.body():
                self.forget(mine.task_id)
        except (TimerError, TaskConflict, ConfigurationError) as exc:
            get_logger().warning(
                "could not set a delayed task's timer back after a refused create;"
                " the sweeper promotes it late",
                extra={"task_id": mine.task_id, "error_type": type(exc).__name__},
            )

    def ensure(self, task: Task) -> None:
        """Set the timer of SCHEDULED `task` (the item as stored) if its schedule does not
        already send its message: after a create met the id's item, the item is what
        the schedule must serve. One GetSchedule when it does."""
        if task.status is not TaskStatus.SCHEDULED or task.run_at is None:
            return
        message = DelayMessage(task.id, task.run_at)
        run_at = parse_time(task.run_at)
        if self._schedule_input(task.id) == message.body():
            return
        if (run_at - self.clock()).total_seconds() <= SQS_MAX_DELAY_SECONDS:
            self.send(message, self.delay_for((run_at - self.clock()).total_seconds()))
            self.forget(task.id)  # another create's, due at another time
            return
        request = self._schedule_request(message, run_at)
        try:
            self._aws("scheduler", "create_schedule", **request)
        except TimerError as exc:
            if exc.code != "ConflictException":
                raise
            self._put_schedule(request)

    def _schedule_input(self, task_id: str) -> str | None:
        """The message the task's one-time schedule sends, or None if it has none."""
        group = self.settings.delay_schedule_group
        if not group:
            return None
        try:
            found = self._aws(
                "scheduler", "get_schedule", Name=schedule_name(task_id), GroupName=group
            )
        except TimerError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            raise
        value = found.get("Target", {}).get("Input")
        return str(value) if value is not None else None

    def hold(self, receipt_handle: str, seconds: float) -> int:
        """Keep a received timer message in the queue, invisible for `seconds` (whole,
        at most SQS's 12 hours from its receipt): the consumer then reports it failed,
        and SQS delivers the same message again, no copy made. Returns the seconds set."""
        visibility = max(0, min(MAX_HOLD_SECONDS, math.floor(seconds)))
        self._aws(
            "sqs",
            "change_message_visibility",
            QueueUrl=self._queue_url(),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=visibility,
        )
        return visibility

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
