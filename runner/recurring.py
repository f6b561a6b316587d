"""Recurring tasks: schedules declared next to their task type, one task per fire.

A type declares them in its `TaskDefinition(schedules=(Recurring(...), ...))`: the input
each run gets is checked against the type's model when the registry loads (a bad one
stops start-up, not a 3 a.m. run), and the schedule moves, is reviewed and is deleted
with the code it runs. `sls package` turns each into an `AWS::Scheduler::Schedule`
(`infra/recurring-schedules.js` calls `python -m runner.recurring`, which prints
`schedule_resources`), in the recurring schedule group, sending to the timer queue:

    {"kind": "recurring", "schedule": NAME, "task_type": TYPE, "data": {...},
     "scheduled_time": "<aws.scheduler.scheduled-time>"}

Each fire creates exactly one task, whose id comes from the schedule's name and the
*scheduled* time EventBridge Scheduler puts in the message (never the clock):
`schedule:<name>:<time>`. Schedulers deliver at least once; a second delivery of the
same fire finds the task and creates nothing (`RecurringFires.fire`).

That holds while the task can be found: a finished task is deleted by TTL
`TASK_RUNNER_RESULT_TTL_DAYS` after its last write, so never sooner than that after its
scheduled time. A fire delivered later than `fire_age_limit` (that, less an hour) is
dropped with an error log, not made again: a message kept failing for days (the timer
queue keeps one 14 days) cannot run a fire twice. A fire of a type this code does not
know, or whose input it refuses, is retried while it is younger than FIRE_RETRY_SECONDS
(a deploy that adds the type may not have reached `fireTimers` when its schedule first
fires), then dropped likewise: SQS would otherwise retry it for the queue's retention.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from runner.cron import ExpressionError, parse, zone
from runner.errors import InvalidTaskInput, RegistryError, TaskConflict, UnknownTaskType
from runner.items import iso
from runner.logs import get_logger
from runner.model import Task, TaskStatus

if TYPE_CHECKING:
    from runner.registry import TaskDefinition, TaskRegistry
    from runner.store import TaskStore

RECURRING_KIND = "recurring"
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
# A fire is dropped once this much less than the finished-task TTL has passed since its
# scheduled time: its task, had it been made, could be deleted by then.
FIRE_AGE_MARGIN = timedelta(hours=1)
# A fire of an unknown type, or with input its type refuses, is retried (SQS delivers it
# again after the queue's visibility timeout) for this long after its scheduled time.
FIRE_RETRY_SECONDS = 3600
# A recurring schedule's name: EventBridge Scheduler allows 64 of [0-9a-zA-Z-_.].
_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,63}$")


@dataclass(frozen=True)
class Recurring:
    """A recurring schedule of a task type: every fire creates one task with `data`.

    `expression`: `rate(N minutes|hours|days)` or six-field `cron(...)`; `timezone`: an
    IANA name, the zone the cron is read in (daylight saving included)."""

    name: str
    expression: str
    timezone: str = "UTC"
    data: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise RegistryError(
                f"schedule name {self.name!r}: 1-64 letters, digits, '-', '_' or '.'"
            )
        try:
            expression = parse(self.expression)
            zone(self.timezone)
        except ExpressionError as exc:
            raise RegistryError(f"schedule {self.name}: {exc}") from exc
        if not expression.recurring:
            raise RegistryError(f"schedule {self.name}: at() is one-time; use rate() or cron()")

    def message(self, task_type: str, stored_data: dict[str, Any]) -> dict[str, Any]:
        """The message body the schedule sends (with Scheduler's placeholder)."""
        return {
            "kind": RECURRING_KIND,
            "schedule": self.name,
            "task_type": task_type,
            "data": stored_data,
            "scheduled_time": SCHEDULED_TIME,
        }


def check_schedules(definition: TaskDefinition) -> None:
    """Each schedule's input must be valid for its type (called at registration)."""
    for schedule in definition.schedules:
        if not isinstance(schedule, Recurring):
            raise RegistryError(f"{definition.type}: schedules must be Recurring(...) values")
        try:
            definition.parse_input(dict(schedule.data))
        except InvalidTaskInput as exc:
            raise RegistryError(f"schedule {schedule.name}: {exc}") from exc


def fired_task_id(schedule: str, scheduled_time: str) -> str:
    """The task of a schedule's fire: from its name and the time it was scheduled for
    (normalised to seconds and Z), so a second delivery names the same task."""
    moment = datetime.fromisoformat(scheduled_time.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("scheduled_time has no time zone")
    return f"schedule:{schedule}:{iso(moment)[:19]}Z"


def stored_data(definition: TaskDefinition, data: Mapping[str, Any]) -> dict[str, Any]:
    """The input as a task stores it (by alias, JSON values)."""
    return dict(definition.parse_input(dict(data)).model_dump(mode="json", by_alias=True))


def all_schedules(registry: TaskRegistry) -> list[tuple[TaskDefinition, Recurring]]:
    found = [(d, s) for d in registry for s in d.schedules]
    names = [s.name for _, s in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RegistryError(f"schedule names must be unique: {', '.join(duplicates)}")
    # Their CloudFormation logical ids too: two names that differ only in punctuation or a
    # first letter's case would be one resource, the other schedule silently never made.
    # Refused rather than disambiguated: a changed logical id replaces a deployed schedule.
    by_id: dict[str, list[str]] = {}
    for name in names:
        by_id.setdefault(logical_id(name), []).append(name)
    clashes = ["/".join(sorted(group)) for group in by_id.values() if len(group) > 1]
    if clashes:
        raise RegistryError(
            "schedule names must differ in more than punctuation or a first letter's case"
            f" (one CloudFormation resource each): {', '.join(sorted(clashes))}"
        )
    return found


def logical_id(name: str) -> str:
    """`nightly-report` → `RecurringNightlyReportSchedule` (CloudFormation: alphanumeric)."""
    words = re.split(r"[^0-9A-Za-z]+", name)
    return "Recurring" + "".join(w[:1].upper() + w[1:] for w in words if w) + "Schedule"


def schedule_resources(registry: TaskRegistry) -> dict[str, Any]:
    """The CloudFormation resources of the registry's recurring schedules."""
    resources: dict[str, Any] = {}
    for definition, schedule in all_schedules(registry):
        body = schedule.message(definition.type, stored_data(definition, schedule.data))
        resources[logical_id(schedule.name)] = {
            "Type": "AWS::Scheduler::Schedule",
            "Properties": {
                "Name": schedule.name,
                "GroupName": {"Ref": "RecurringScheduleGroup"},
                "Description": schedule.description or f"creates a {definition.type} task",
                "ScheduleExpression": schedule.expression,
                "ScheduleExpressionTimezone": schedule.timezone,
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "State": "ENABLED",
                "Target": {
                    "Arn": {"Fn::GetAtt": ["TimerQueue", "Arn"]},
                    "RoleArn": {"Fn::GetAtt": ["SchedulerRole", "Arn"]},
                    "Input": json.dumps(body, sort_keys=True, separators=(",", ":")),
                },
            },
        }
    return resources


class FireDropped(Exception):
    """A recurring fire that must not create its task: too late, or of a type (or with
    input) this code has refused for longer than FIRE_RETRY_SECONDS."""


def fire_age_limit(result_ttl_days: int) -> timedelta:
    """How late a fire may be delivered and still create its task."""
    return timedelta(days=result_ttl_days) - FIRE_AGE_MARGIN


class RecurringFires:
    """Creates the task of a recurring schedule's fire, exactly once per scheduled time."""

    def __init__(self, store: TaskStore, registry: TaskRegistry) -> None:
        self.store = store
        self.registry = registry

    def fire(self, body: Mapping[str, Any]) -> bool:
        """True if this delivery created the task; False if an earlier one had (a double
        fire). Raises ValueError/KeyError for a message that is not a fire (dropped),
        FireDropped for one too late to be made (dropped, logged as an error), and the
        store's errors for a write that failed (SQS delivers it again)."""
        schedule, scheduled_time = str(body["schedule"]), str(body["scheduled_time"])
        task_id = fired_task_id(schedule, scheduled_time)
        scheduled = datetime.fromisoformat(scheduled_time.strip().replace("Z", "+00:00"))
        now = self.store.clock()
        age = now - scheduled
        limit = fire_age_limit(self.store.settings.result_ttl_days)
        if age > limit:
            raise FireDropped(
                f"fire {task_id} delivered {age} after its scheduled time, past {limit}: its"
                " task may have run and been deleted since"
            )
        data = body.get("data") or {}
        if not isinstance(data, dict):
            raise ValueError("a recurring fire's data must be an object")
        try:
            definition = self.registry.get(str(body["task_type"]))
            stored = stored_data(definition, data)
        except (UnknownTaskType, InvalidTaskInput) as exc:
            if age.total_seconds() <= FIRE_RETRY_SECONDS:
                raise  # retried: the deploy that knows it may still be on its way
            raise FireDropped(f"fire {task_id}: {exc}") from exc
        task = Task(
            id=task_id,
            type=definition.type,
            status=TaskStatus.PENDING,
            data=stored,
            created_at=iso(scheduled),
            updated_at=iso(now),
        )
        if self.store.find(task_id) is not None:
            return False
        try:
            self.store.put_new(task)
        except TaskConflict:
            return False  # another delivery of the same fire, at the same moment
        get_logger().info(
            "recurring schedule fired",
            extra={"schedule": schedule, "task_id": task_id, "task_type": definition.type},
        )
        return True


def describe_schedules(scheduler: Any, group: str, now: datetime) -> list[dict[str, Any]]:
    """The recurring schedules deployed in `group`, each with its next fire time (from
    its expression and time zone; Scheduler's API does not say)."""
    names: list[str] = []
    token: str | None = None
    while True:
        page = scheduler.list_schedules(GroupName=group, **({"NextToken": token} if token else {}))
        names += [s["Name"] for s in page.get("Schedules", [])]
        token = page.get("NextToken")
        if not token:
            break
    described = []
    for name in sorted(names):
        found = scheduler.get_schedule(GroupName=group, Name=name)
        try:
            body = json.loads(found.get("Target", {}).get("Input") or "{}")
        except ValueError:
            body = {}
        timezone = found.get("ScheduleExpressionTimezone") or "UTC"
        start = found.get("StartDate") or found.get("CreationDate")
        next_fire = None
        if found.get("State", "ENABLED") == "ENABLED":
            try:
                moment = parse(found["ScheduleExpression"]).next_after(
                    now, timezone=timezone, start=start if isinstance(start, datetime) else None
                )
            except ExpressionError:
                moment = None
            next_fire = iso(moment) if moment is not None else None
        described.append(
            {
                "name": name,
                "expression": found["ScheduleExpression"],
                "timezone": timezone,
                "state": found.get("State", "ENABLED"),
                "task_type": body.get("task_type"),
                "data": body.get("data"),
                "next_fire_time": next_fire,
            }
        )
    return described


def main(argv: Iterable[str] = ()) -> int:
    """`python -m runner.recurring`: the deployment's recurring schedules as CloudFormation
    resources (JSON on stdout), for `sls package` (infra/recurring-schedules.js)."""
    from tasks import build_registry

    del argv
    json.dump(schedule_resources(build_registry(())), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
