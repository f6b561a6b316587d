"""Delayed tasks against moto (DynamoDB, its stream, SQS, EventBridge Scheduler), with an
injected clock: SCHEDULED until run_at, one timer each, set before the item; promoted
at run_at by the timer queue's consumer, or by the sweeper when the timer was lost."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runner.app import App
from runner.client import TaskRunnerClient
from runner.config import Settings
from runner.delays import (
    HOLD_SECONDS,
    OVERDUE_GRACE_SECONDS,
    SCHEDULE_LEAD_SECONDS,
    DelayMessage,
    schedule_name,
)
from runner.errors import StoreError, TaskConflict
from runner.model import TaskStatus
from runner.store.scheduling import SCHEDULED_SHARD
from tests.helpers import StreamReader

GROUP = "task-runner-delays-test"
ROLE = "arn:aws:iam::123456789012:role/scheduler"
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """Time that moves only when told (or when the code under test sleeps)."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclasses.dataclass
class Delayed:
    app: App
    client: TaskRunnerClient
    clock: Clock
    sent: list[dict[str, Any]]  # SendMessage requests
    queue_url: str

    def scheduler(self) -> Any:
        return self.app.clients.client("scheduler")

    def messages(self) -> list[dict[str, Any]]:
        """What a consumer receives now (moto honours DelaySeconds on the real clock)."""
        sqs = self.app.clients.sqs
        found = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [{"messageId": m["MessageId"], "body": m["Body"]} for m in found.get("Messages", [])]

    def record_of(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"messageId": "m-1", "body": request["MessageBody"]}


@pytest.fixture
def delayed(app: App, settings: Settings) -> Iterator[Delayed]:
    yield from make_delayed(app, settings)


def make_delayed(app: App, settings: Settings) -> Iterator[Delayed]:
    """The `delayed` fixture's body (other modules' fixtures use it too)."""
    sqs = app.clients.sqs
    url = sqs.create_queue(QueueName="task-runner-timers-test")["QueueUrl"]
    app.clients.client("scheduler").create_schedule_group(Name=GROUP)
    app.settings = dataclasses.replace(
        settings, timer_queue_url=url, scheduler_role_arn=ROLE, delay_schedule_group=GROUP
    )
    app.store.settings = app.settings
    clock = Clock(T0)
    app.store.clock = clock
    sent: list[dict[str, Any]] = []
    sqs.meta.events.register(
        "provide-client-params.sqs.SendMessage", lambda params, **_: sent.append(dict(params))
    )
    app.timer_inbox.sleep = clock.sleep
    yield Delayed(app, TaskRunnerClient(app), clock, sent, url)


def test_a_task_due_within_15_minutes_is_scheduled_with_one_sqs_message(
    delayed: Delayed,
) -> None:
    task = delayed.client.create_task("NOOP_TASK", {}, delay=120.4)

    assert task.status is TaskStatus.SCHEDULED
    assert task.run_at == "2026-12-01T12:02:00.400Z"
    values = delayed.app.store.get_values(task.id) or {}
    assert values["status"] == "SCHEDULED"
    assert values[SCHEDULED_SHARD] == values["status_shard"]
    assert values["status_shard"].startswith("SCHEDULED#")
    # One message, due in the whole seconds left (the consumer waits out the rest)
    [request] = delayed.sent
    assert request["DelaySeconds"] == 120
    assert json.loads(request["MessageBody"]) == {
        "kind": "delay",
        "task_id": task.id,
        "run_at": task.run_at,
    }
    assert delayed.scheduler().list_schedules()["Schedules"] == []


def test_a_task_due_later_gets_a_one_time_schedule_five_minutes_early(delayed: Delayed) -> None:
    run_at = T0 + timedelta(days=200, seconds=7)
    task = delayed.client.create_task("NOOP_TASK", {}, run_at=run_at)

    found = delayed.scheduler().get_schedule(Name=schedule_name(task.id), GroupName=GROUP)
    fire = run_at - timedelta(seconds=SCHEDULE_LEAD_SECONDS)
    assert found["ScheduleExpression"] == f"at({fire.strftime('%Y-%m-%dT%H:%M:%S')})"
    assert found["ScheduleExpressionTimezone"] == "UTC"
    assert found["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert found["ActionAfterCompletion"] == "DELETE"
    assert found["Target"]["Arn"] == "arn:aws:sqs:us-east-1:123456789012:task-runner-timers-test"
    assert found["Target"]["RoleArn"] == ROLE
    assert found["Target"]["Input"] == DelayMessage(task.id, str(task.run_at)).body()
    assert delayed.sent == []


def test_a_run_at_that_has_passed_is_now(delayed: Delayed) -> None:
    task = delayed.client.create_task("NOOP_TASK", {}, run_at=T0 - timedelta(hours=1))

    assert task.status is TaskStatus.PENDING
    assert task.run_at is None
    assert delayed.sent == []


def test_the_timer_is_set_before_the_item_and_fires_into_nothing_without_it(
    delayed: Delayed, monkeypatch: pytest.MonkeyPatch
) -> None:
    def put_fails(task: Any) -> Any:
        raise StoreError("DynamoDB put_item failed: InternalServerError")

    monkeypatch.setattr(delayed.app.store, "put_new", put_fails)
    with pytest.raises(StoreError):
        delayed.client.create_task("NOOP_TASK", {}, task_id="never-written", delay=2)
    monkeypatch.undo()
    # The timer exists; its task does not. When it fires, nothing is created or changed:
    # it is kept while the insert could still be on its way, then dropped.
    [request] = delayed.sent
    delayed.clock.advance(2)
    report = delayed.app.timer_inbox.handle([delayed.record_of(request)])
    assert (report.promoted, report.waiting, report.failed_message_ids) == (0, 1, ("m-1",))
    delayed.clock.advance(OVERDUE_GRACE_SECONDS + 1)
    report = delayed.app.timer_inbox.handle([delayed.record_of(request)])

    assert (report.promoted, report.stale, report.failed_message_ids) == (0, 1, ())
    assert delayed.app.store.find("never-written") is None


def test_the_consumer_waits_out_the_last_seconds_then_promotes(delayed: Delayed) -> None:
    task = delayed.client.create_task("NOOP_TASK", {}, delay=2.5)
    [request] = delayed.sent
    delayed.clock.advance(1.0)  # the message arrives 1.5 s early

    report = delayed.app.timer_inbox.handle([delayed.record_of(request)])

    assert report.promoted == 1
    assert delayed.clock.slept == [pytest.approx(1.5)]
    promoted = delayed.app.store.get(task.id)
    assert promoted.status is TaskStatus.PENDING
    assert promoted.run_at == task.run_at  # kept: when it was due
    assert SCHEDULED_SHARD not in (delayed.app.store.get_values(task.id) or {})


def test_a_message_that_comes_early_is_kept_for_the_delay_left(delayed: Delayed) -> None:
    # A one-time schedule's message: 5 minutes (less Scheduler's lateness) before run_at
    task = delayed.client.create_task("NOOP_TASK", {}, delay=3600)
    body = DelayMessage(task.id, str(task.run_at)).body()
    sqs = delayed.app.clients.sqs
    sqs.send_message(QueueUrl=delayed.queue_url, MessageBody=body)
    [received] = sqs.receive_message(QueueUrl=delayed.queue_url)["Messages"]
    record = {"messageId": "m-1", "receiptHandle": received["ReceiptHandle"], "body": body}
    changes: list[dict[str, Any]] = []
    sqs.meta.events.register(
        "provide-client-params.sqs.ChangeMessageVisibility",
        lambda params, **_: changes.append(dict(params)),
    )
    delayed.clock.advance(3600 - SCHEDULE_LEAD_SECONDS + 40.3)

    report = delayed.app.timer_inbox.handle([record])

    # The same message, invisible for the whole seconds left; no copy sent
    assert (report.requeued, report.promoted, report.failed_message_ids) == (1, 0, ("m-1",))
    [change] = changes
    assert change["VisibilityTimeout"] == SCHEDULE_LEAD_SECONDS - 41
    assert [r["MessageBody"] for r in delayed.sent] == [body]  # the test's own send
    assert delayed.app.store.get(task.id).status is TaskStatus.SCHEDULED
    assert delayed.clock.slept == []


def test_a_timer_for_another_incarnation_or_state_changes_nothing(delayed: Delayed) -> None:
    task = delayed.client.create_task("NOOP_TASK", {}, delay=1)
    delayed.clock.advance(1)
    stale = DelayMessage(task.id, "2026-12-01T11:00:00.000Z").body()  # another run_at
    report = delayed.app.timer_inbox.handle([{"messageId": "a", "body": stale}])
    assert (report.promoted, report.stale) == (0, 1)
    # Promoted once; a second delivery of its timer finds it PENDING and does nothing
    [request] = delayed.sent
    first = delayed.app.timer_inbox.handle([delayed.record_of(request)])
    second = delayed.app.timer_inbox.handle([delayed.record_of(request)])
    assert (first.promoted, second.promoted, second.stale) == (1, 0, 1)


def test_a_malformed_timer_message_is_dropped_not_retried(delayed: Delayed) -> None:
    report = delayed.app.timer_inbox.handle(
        [{"messageId": "a", "body": "not json"}, {"messageId": "b", "body": '{"kind": "x"}'}]
    )
    assert (report.dropped, report.failed_message_ids) == (2, ())


def test_a_promotion_that_cannot_be_written_is_reported_for_redelivery(
    delayed: Delayed, monkeypatch: pytest.MonkeyPatch
) -> None:
    delayed.client.create_task("NOOP_TASK", {}, delay=1)
    [request] = delayed.sent

    def throttled(task_id: str, run_at: str) -> None:
        raise StoreError("DynamoDB update_item failed: ThrottlingException")

    monkeypatch.setattr(delayed.app.store, "promote_timer", throttled)
    report = delayed.app.timer_inbox.handle([delayed.record_of(request)])

    assert report.failed_message_ids == ("m-1",)
    assert report.response() == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


def test_the_promotion_is_what_runs_the_task_through_the_stream(delayed: Delayed) -> None:
    app = delayed.app
    arn = app.clients.dynamodb.describe_table(TableName=app.settings.table_name)["Table"][
        "LatestStreamArn"
    ]
    reader = StreamReader(app.clients.client("dynamodbstreams"), arn)
    task = delayed.client.create_task("NOOP_TASK", {}, delay=HOLD_SECONDS)
    inserted = reader.read()
    # The SCHEDULED insert runs nothing
    assert app.stream.process(inserted).outcomes == []
    assert app.store.get(task.id).status is TaskStatus.SCHEDULED

    [request] = delayed.sent
    app.timer_inbox.handle([delayed.record_of(request)])
    [promotion] = reader.read()
    assert promotion["eventName"] == "MODIFY"
    assert promotion["dynamodb"]["OldImage"]["status"] == {"S": "SCHEDULED"}
    app.stream.process([promotion])

    assert app.store.get(task.id).status is TaskStatus.DONE


def test_the_sweeper_promotes_tasks_whose_timer_was_lost_from_the_index_without_a_scan(
    delayed: Delayed,
) -> None:
    app = delayed.app
    lost = [delayed.client.create_task("NOOP_TASK", {}, delay=60) for _ in range(3)]
    later = delayed.client.create_task("NOOP_TASK", {}, delay=600)
    scans: list[str] = []
    app.clients.dynamodb.meta.events.register(
        "provide-client-params.dynamodb.Scan", lambda params, **_: scans.append("scan")
    )

    # Before the grace period, the timers may still fire: the sweeper leaves them
    delayed.clock.advance(60 + OVERDUE_GRACE_SECONDS - 1)
    assert app.sweeper.sweep().promoted == 0
    delayed.clock.advance(2)
    report = app.sweeper.sweep()

    assert report.promoted == 3
    assert {app.store.get(t.id).status for t in lost} == {TaskStatus.PENDING}
    assert app.store.get(later.id).status is TaskStatus.SCHEDULED
    assert scans == []
    # The promoted ones left the sparse index; a second sweep finds nothing
    assert app.sweeper.sweep().promoted == 0


def test_forgetting_a_tasks_one_time_schedule_deletes_it(delayed: Delayed) -> None:
    far = delayed.client.create_task("NOOP_TASK", {}, delay=7200)
    near = delayed.client.create_task("NOOP_TASK", {}, delay=60)

    assert delayed.app.delays.forget(far.id) is True
    assert delayed.scheduler().list_schedules()["Schedules"] == []
    assert delayed.app.delays.forget(far.id) is False  # gone already
    assert delayed.app.delays.forget(near.id) is False  # an SQS message, not a schedule


def test_a_schedule_name_held_by_a_live_task_is_not_taken_over(delayed: Delayed) -> None:
    first = delayed.client.create_task("NOOP_TASK", {}, task_id="order-1", delay=7200)
    with pytest.raises(TaskConflict, match="already exists"):
        delayed.client.create_task("NOOP_TASK", {}, task_id="order-1", delay=9000)

    found = delayed.scheduler().get_schedule(Name=schedule_name("order-1"), GroupName=GROUP)
    assert found["Target"]["Input"] == DelayMessage("order-1", str(first.run_at)).body()


def test_a_schedule_that_outlived_its_task_is_taken_over(delayed: Delayed) -> None:
    delayed.client.create_task("NOOP_TASK", {}, task_id="order-2", delay=7200)
    delayed.app.clients.dynamodb.delete_item(
        TableName=delayed.app.settings.table_name, Key={"id": {"S": "order-2"}}
    )
    second = delayed.client.create_task("NOOP_TASK", {}, task_id="order-2", delay=9000)

    found = delayed.scheduler().get_schedule(Name=schedule_name("order-2"), GroupName=GROUP)
    assert found["Target"]["Input"] == DelayMessage("order-2", str(second.run_at)).body()
    assert found["ActionAfterCompletion"] == "DELETE"


def test_schedule_names_fit_eventbridge_and_never_collide() -> None:
    names = {schedule_name(i) for i in ("order:42", "order_42", "x" * 1024, "é/ü")}
    assert len(names) == 4
    for name in names:
        assert len(name) <= 64
        assert all(c.isalnum() or c in "-_." for c in name)
