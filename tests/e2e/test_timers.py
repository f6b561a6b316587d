"""Delayed and recurring tasks on the served local stack: the timer queue's SQS mapping
and EventBridge Scheduler, which moto stores but never fires, fired as AWS would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runner.app import App
from runner.client import TaskRunnerClient
from runner.config import Settings
from runner.delays import schedule_name
from tests.e2e.conftest import ServedStack

pytestmark = pytest.mark.slow


@pytest.fixture
def client(local_stack: ServedStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[TaskRunnerClient]:
    """A producer in this process, configured by the stack's exports."""
    for name, value in local_stack.env.items():
        monkeypatch.setenv(name, value)
    from tasks import build_registry

    settings = Settings.from_env(local_stack.env)
    yield TaskRunnerClient(App.build(settings, build_registry(settings.task_modules)))


# Precision is figure 9's (bench/delays.py), measured, not asserted here: this only
# tells the timer's start (never early, within seconds) from the sweeper's (60 s past).
TIMER_NOT_SWEEPER_SECONDS = 20.0


def lateness(task: dict[str, Any]) -> float:
    started = datetime.fromisoformat(str(task["started_at"]))
    return (started - datetime.fromisoformat(str(task["run_at"]))).total_seconds()


def warm(local_stack: ServedStack, client: TaskRunnerClient) -> None:
    """Environments of fireTimers and of processStream's lanes, so what is measured is the
    timers' precision, not a cold start."""
    ids = [client.create_task("NOOP_TASK", {}).id for _ in range(30)]
    ids += [client.create_task("NOOP_TASK", {}, delay=1.2).id for _ in range(4)]
    for task_id in ids:
        local_stack.wait_for(task_id, {"DONE"}, timeout=60)


def test_a_delayed_task_is_started_by_its_timer_never_before_its_run_at(
    local_stack: ServedStack, client: TaskRunnerClient
) -> None:
    warm(local_stack, client)
    delays = (1.3, 2.0, 2.7, 3.4, 4.1)
    created = [client.create_task("NOOP_TASK", {}, delay=d) for d in delays]
    assert {t.status.value for t in created} == {"SCHEDULED"}

    done = [local_stack.wait_for(t.id, {"DONE"}, timeout=30) for t in created]

    late = [lateness(t) for t in done]
    assert all(0 <= s < TIMER_NOT_SWEEPER_SECONDS for s in late), late


def test_a_task_delayed_past_sqs_reach_goes_through_a_one_time_schedule(
    local_stack: ServedStack, client: TaskRunnerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shrink "15 minutes" and "5 minutes early" for the producer only: the task gets a
    # one-time schedule at run_at - 4 s; fireTimers (real constants) hands the rest to SQS
    monkeypatch.setattr("runner.delays.SQS_MAX_DELAY_SECONDS", 2)
    monkeypatch.setattr("runner.delays.SCHEDULE_LEAD_SECONDS", 4)
    warm(local_stack, client)
    task = client.create_task("NOOP_TASK", {}, delay=8)
    scheduler = local_stack.client("scheduler")
    group = local_stack.env["TASK_RUNNER_DELAY_SCHEDULE_GROUP"]
    found = scheduler.get_schedule(Name=schedule_name(task.id), GroupName=group)
    assert found["ActionAfterCompletion"] == "DELETE"

    done = local_stack.wait_for(task.id, {"DONE"}, timeout=30)

    assert 0 <= lateness(done) < TIMER_NOT_SWEEPER_SECONDS, lateness(done)
    # It fired, and was deleted as ActionAfterCompletion DELETE says
    names = [s["Name"] for s in scheduler.list_schedules(GroupName=group)["Schedules"]]
    assert schedule_name(task.id) not in names


def test_a_recurring_schedule_firing_twice_creates_one_task(local_stack: ServedStack) -> None:
    scheduler = local_stack.client("scheduler")
    group = local_stack.env["TASK_RUNNER_RECURRING_SCHEDULE_GROUP"]
    queue_url = local_stack.env["TASK_RUNNER_TIMER_QUEUE_URL"]
    queue_arn = "arn:aws:sqs:us-east-1:123456789012:" + queue_url.rsplit("/", 1)[1]
    body = {
        "kind": "recurring",
        "schedule": "e2e-every-minute",
        "task_type": "NOOP_TASK",
        "data": {},
        "scheduled_time": "<aws.scheduler.scheduled-time>",
    }
    # A rate schedule fires when it is created, then every minute
    before = datetime.now(UTC).replace(microsecond=0)
    scheduler.create_schedule(
        Name="e2e-every-minute",
        GroupName=group,
        ScheduleExpression="rate(1 minute)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={
            "Arn": queue_arn,
            "RoleArn": local_stack.env["TASK_RUNNER_SCHEDULER_ROLE_ARN"],
            "Input": json.dumps(body),
        },
    )
    deadline = time.monotonic() + 20
    fired = []
    while not fired and time.monotonic() < deadline:
        table = local_stack.client("dynamodb").scan(TableName=local_stack.table_name)
        fired = [i["id"]["S"] for i in table["Items"] if "e2e-every-minute" in i["id"]["S"]]
        time.sleep(0.1)
    [task_id] = fired
    scheduled_time = task_id.split(":", 2)[2]  # schedule:<name>:<scheduled time>
    scheduled = datetime.fromisoformat(scheduled_time)
    assert before - timedelta(seconds=1) <= scheduled <= before + timedelta(seconds=5)
    first = local_stack.wait_for(task_id, {"DONE"})

    # The same fire delivered again (schedulers deliver at least once), twice over
    sqs = local_stack.client("sqs")
    again = json.dumps({**body, "scheduled_time": scheduled_time})
    for _ in range(2):
        sqs.send_message(QueueUrl=queue_url, MessageBody=again)
    time.sleep(1.5)

    task = local_stack.get_task(task_id)
    assert task["attempts"] == 1 and task["finished_at"] == first["finished_at"]
    table = local_stack.client("dynamodb").scan(TableName=local_stack.table_name)
    assert [i["id"]["S"] for i in table["Items"] if "e2e-every-minute" in i["id"]["S"]] == [task_id]
    # list-schedules shows it, with its next fire time a minute after the first
    listed = local_stack.run("python", "-m", "runner.cli", "list-schedules")
    assert listed.returncode == 0, listed.stderr
    [shown] = [s for s in json.loads(listed.stdout)["schedules"] if s["name"] == "e2e-every-minute"]
    assert shown["task_type"] == "NOOP_TASK"
    assert datetime.fromisoformat(shown["next_fire_time"]) > scheduled
    scheduler.delete_schedule(Name="e2e-every-minute", GroupName=group)
