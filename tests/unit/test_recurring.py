"""Recurring schedules declared next to their task type, the names the CLI reserves, and
the one task each fire creates."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, Field

from runner.app import App
from runner.errors import RegistryError
from runner.model import TaskStatus
from runner.recurring import (
    SCHEDULED_TIME,
    Recurring,
    RecurringFires,
    fired_task_id,
    schedule_resources,
)
from runner.registry import RESERVED_FIELDS, TaskDefinition, TaskRegistry


class ReportInput(BaseModel):
    region: str = Field(min_length=1)


def run(data: ReportInput, ctx: object) -> None:
    return None


def definition(*schedules: Recurring, model: type[BaseModel] = ReportInput) -> TaskDefinition:
    return TaskDefinition(
        type="DAILY_REPORT", input_model=model, handler=run, schedules=tuple(schedules)
    )


@pytest.mark.parametrize("name", sorted(RESERVED_FIELDS))
def test_an_input_field_named_like_a_create_task_flag_is_refused(name: str) -> None:
    model = type(name.title(), (BaseModel,), {"__annotations__": {name: int}})
    with pytest.raises(RegistryError, match="reserved"):
        definition(model=model)


def test_an_alias_named_like_a_create_task_flag_is_refused() -> None:
    class Aliased(BaseModel):
        when: str = Field(alias="run-at")

    with pytest.raises(RegistryError, match="run-at"):
        definition(model=Aliased)


def test_a_schedule_whose_input_its_type_refuses_stops_registration() -> None:
    with pytest.raises(RegistryError, match="schedule nightly: invalid input"):
        definition(Recurring("nightly", "cron(0 3 * * ? *)", data={"region": ""}))


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        (lambda: Recurring("bad name!", "rate(1 hour)"), "letters, digits"),
        (lambda: Recurring("once", "at(2027-01-01T00:00:00)"), "one-time"),
        (lambda: Recurring("tz", "rate(1 hour)", timezone="Nowhere/City"), "time zone"),
        (lambda: Recurring("expr", "every hour"), "not a schedule expression"),
    ],
)
def test_malformed_schedules_are_refused(schedule: object, problem: str) -> None:
    with pytest.raises(RegistryError, match=problem):
        schedule()  # type: ignore[operator]


def test_two_schedules_of_one_name_are_refused_when_packaged() -> None:
    twice = Recurring("same", "rate(1 hour)", data={"region": "eu"})
    with pytest.raises(RegistryError, match="unique: same"):
        schedule_resources(TaskRegistry([definition(twice, twice)]))


def test_each_schedule_becomes_a_scheduler_resource_sending_its_fire_to_the_timer_queue() -> None:
    registry = TaskRegistry(
        [
            definition(
                Recurring(
                    "daily-report.eu",
                    "cron(0 9 ? * MON-FRI *)",
                    timezone="Europe/Paris",
                    data={"region": "eu"},
                )
            )
        ]
    )

    [(logical_id, resource)] = schedule_resources(registry).items()

    assert logical_id == "RecurringDailyReportEuSchedule"
    props = resource["Properties"]
    assert resource["Type"] == "AWS::Scheduler::Schedule"
    assert props["Name"] == "daily-report.eu"
    assert props["GroupName"] == {"Ref": "RecurringScheduleGroup"}
    assert props["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert props["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert props["Target"]["Arn"] == {"Fn::GetAtt": ["TimerQueue", "Arn"]}
    assert props["Target"]["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    assert json.loads(props["Target"]["Input"]) == {
        "kind": "recurring",
        "schedule": "daily-report.eu",
        "task_type": "DAILY_REPORT",
        "data": {"region": "eu"},
        "scheduled_time": SCHEDULED_TIME,
    }


def test_a_fires_task_id_comes_from_the_schedule_and_its_scheduled_time_only() -> None:
    assert (
        fired_task_id("nightly", "2026-12-01T03:00:00Z") == "schedule:nightly:2026-12-01T03:00:00Z"
    )
    assert fired_task_id("nightly", "2026-12-01T04:00:00+01:00") == fired_task_id(
        "nightly", "2026-12-01T03:00:00Z"
    )


def test_a_schedule_firing_twice_creates_one_task(app: App) -> None:
    app.store.clock = lambda: datetime(2026, 12, 1, 3, 0, 5, tzinfo=UTC)
    fires = RecurringFires(app.store, app.registry)
    body = {
        "kind": "recurring",
        "schedule": "every-minute",
        "task_type": "NOOP_TASK",
        "data": {},
        "scheduled_time": "2026-12-01T03:00:00Z",
    }

    assert fires.fire(body) is True
    assert fires.fire(dict(body)) is False
    assert fires.fire({**body, "scheduled_time": "2026-12-01T03:01:00Z"}) is True

    first = app.store.get("schedule:every-minute:2026-12-01T03:00:00Z")
    assert first.status is TaskStatus.PENDING
    assert first.created_at == "2026-12-01T03:00:00.000Z"  # the scheduled time, not the clock
    pending, _ = app.store.list(TaskStatus.PENDING, limit=10)
    assert len(pending) == 2
