"""Faults on the timers of delayed and recurring tasks, forced at their worst interleaving:

- a create refused because its id is taken must leave that task's timer as it was;
- a timer that arrives before its item (the producer's insert slow, throttled) is kept
  until the item can have been written, not dropped as stale;
- an idempotent create repeated while the first one's insert is in flight never moves
  the first one's schedule;
- a recurring fire redelivered after its task was finished and TTL-deleted creates
  nothing, and one of a type the code no longer has stops being retried;
- an early timer is kept in the queue (its visibility set to the time left), never
  copied, so a batch redelivered after its invocation died does not multiply it.

On moto (SQS, EventBridge Scheduler, DynamoDB) with an injected clock."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from runner.app import App
from runner.config import Settings
from runner.delays import (
    HOLD_SECONDS,
    OVERDUE_GRACE_SECONDS,
    SCHEDULE_LEAD_SECONDS,
    DelayMessage,
    schedule_name,
)
from runner.errors import TaskConflict
from runner.model import Task, TaskStatus
from runner.recurring import FIRE_RETRY_SECONDS
from tests.integration.test_delays import GROUP, T0, Delayed, make_delayed

S = TaskStatus


@pytest.fixture
def delayed(app: App, settings: Settings) -> Iterator[Delayed]:
    yield from make_delayed(app, settings)


def _schedule_input(delayed: Delayed, task_id: str) -> str | None:
    scheduler = delayed.scheduler()
    try:
        found = scheduler.get_schedule(Name=schedule_name(task_id), GroupName=GROUP)
    except scheduler.exceptions.ResourceNotFoundException:
        return None
    return str(found["Target"]["Input"])


def _queued(delayed: Delayed) -> int:
    """Every message in the timer queue: visible, in flight and delayed."""
    attributes = delayed.app.clients.sqs.get_queue_attributes(
        QueueUrl=delayed.queue_url, AttributeNames=["All"]
    )["Attributes"]
    return sum(
        int(attributes[name])
        for name in (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
    )


def _received(delayed: Delayed) -> list[dict[str, Any]]:
    """What the mapping hands fireTimers now: records with their receipt handles."""
    found = delayed.app.clients.sqs.receive_message(
        QueueUrl=delayed.queue_url, MaxNumberOfMessages=10
    ).get("Messages", [])
    return [
        {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"]}
        for m in found
    ]


# --- a create refused for an id that is taken -----------------------------------------


def test_a_short_delay_create_refused_for_a_taken_id_leaves_that_tasks_schedule(
    delayed: Delayed,
) -> None:
    first = delayed.client.create_task("NOOP_TASK", {}, task_id="order-7", delay=7200)
    mine = DelayMessage("order-7", str(first.run_at)).body()
    delayed.clock.advance(1)

    with pytest.raises(TaskConflict):
        delayed.client.create_task("NOOP_TASK", {}, task_id="order-7", delay=60)

    assert _schedule_input(delayed, "order-7") == mine
    assert delayed.app.store.get("order-7").run_at == first.run_at


def test_a_create_that_took_the_schedule_over_then_lost_the_insert_gives_it_back(
    delayed: Delayed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second create read no item (the first's insert was in flight), took the
    schedule over, then its insert met the first's item."""
    first = delayed.client.create_task("NOOP_TASK", {}, task_id="order-8", delay=7200)
    monkeypatch.setattr(delayed.app.delays, "_is_scheduled", lambda task_id, run_at: False)
    delayed.clock.advance(5)

    with pytest.raises(TaskConflict):
        delayed.client.create_task("NOOP_TASK", {}, task_id="order-8", delay=9000)

    assert _schedule_input(delayed, "order-8") == DelayMessage("order-8", str(first.run_at)).body()


def test_of_two_creates_racing_for_an_id_the_winner_keeps_its_schedule(
    delayed: Delayed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first create's schedule is set, then the second create (same id, later time)
    takes it over and inserts first; the first's insert then loses."""
    store = delayed.app.store
    put_new = store.put_new
    won: list[Task] = []
    racing: list[bool] = []

    def slow_put(task: Task) -> Task:
        if not racing:
            racing.append(True)
            delayed.clock.advance(5)
            won.append(delayed.client.create_task("NOOP_TASK", {}, task_id="order-9", delay=9000))
        return put_new(task)

    monkeypatch.setattr(store, "put_new", slow_put)
    with pytest.raises(TaskConflict):
        delayed.client.create_task("NOOP_TASK", {}, task_id="order-9", delay=7200)

    [winner] = won
    assert store.get("order-9").run_at == winner.run_at
    assert _schedule_input(delayed, "order-9") == DelayMessage("order-9", str(winner.run_at)).body()


def test_a_create_at_the_same_moment_for_another_time_is_not_taken_for_a_lost_reply(
    delayed: Delayed,
) -> None:
    first = delayed.client.create_task("NOOP_TASK", {}, task_id="order-6", delay=7200)

    with pytest.raises(TaskConflict):
        delayed.client.create_task("NOOP_TASK", {}, task_id="order-6", delay=60)

    assert _schedule_input(delayed, "order-6") == DelayMessage("order-6", str(first.run_at)).body()


# --- a timer before its item --------------------------------------------------------------


def test_a_timer_that_arrives_before_its_item_is_kept_until_the_item_is_there(
    delayed: Delayed, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = delayed.app.store
    put_new = store.put_new
    early: list[Any] = []

    def throttled_put(task: Task) -> Task:
        # The insert is retried past run_at; the timer comes meanwhile
        delayed.clock.advance(4)
        [request] = delayed.sent
        early.append(delayed.app.timer_inbox.handle([delayed.record_of(request)]))
        return put_new(task)

    monkeypatch.setattr(store, "put_new", throttled_put)
    task = delayed.client.create_task("NOOP_TASK", {}, delay=2)
    monkeypatch.undo()

    [first] = early
    assert (first.stale, first.failed_message_ids) == (0, ("m-1",))  # kept: delivered again
    [request] = delayed.sent
    again = delayed.app.timer_inbox.handle([delayed.record_of(request)])
    assert again.promoted == 1
    assert store.get(task.id).status is S.PENDING


def test_a_timer_whose_item_never_came_is_dropped_once_the_insert_cannot_be_in_flight(
    delayed: Delayed,
) -> None:
    body = DelayMessage("never-written", "2026-12-01T12:00:02.000Z").body()
    delayed.clock.advance(2 + OVERDUE_GRACE_SECONDS + 1)

    report = delayed.app.timer_inbox.handle([{"messageId": "m-1", "body": body}])

    assert (report.stale, report.failed_message_ids) == (1, ())


def test_a_run_at_less_than_a_second_away_is_now(delayed: Delayed) -> None:
    task = delayed.client.create_task("NOOP_TASK", {}, delay=0.6)

    assert task.status is S.PENDING
    assert task.run_at is None
    assert delayed.sent == []


def test_an_idempotent_create_repeated_while_the_first_insert_is_in_flight_keeps_its_schedule(
    delayed: Delayed, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = delayed.client.create_task("NOOP_TASK", {}, idempotency_key="k-1", delay=7200)
    # The second create reads the item before the first's insert shows
    monkeypatch.setattr(delayed.app.delays, "_is_scheduled", lambda task_id, run_at: False)
    delayed.clock.advance(10)

    again = delayed.client.create_task("NOOP_TASK", {}, idempotency_key="k-1", delay=7200)

    assert again.run_at == first.run_at
    assert _schedule_input(delayed, first.id) == DelayMessage(first.id, str(first.run_at)).body()


def test_an_idempotency_key_reused_after_its_task_was_deleted_gets_a_schedule(
    delayed: Delayed,
) -> None:
    old = delayed.client.create_task("NOOP_TASK", {}, idempotency_key="k-2", delay=7200)
    delayed.app.clients.dynamodb.delete_item(
        TableName=delayed.app.settings.table_name, Key={"id": {"S": old.id}}
    )  # TTL, after the task was cancelled and its schedule could not be deleted
    delayed.clock.advance(60)

    new = delayed.client.create_task("NOOP_TASK", {}, idempotency_key="k-2", delay=9000)

    assert new.run_at != old.run_at
    assert _schedule_input(delayed, new.id) == DelayMessage(new.id, str(new.run_at)).body()


# --- recurring fires, late ----------------------------------------------------------------


def _fire(task_type: str, scheduled: timedelta) -> dict[str, str]:
    body = {
        "kind": "recurring",
        "schedule": "nightly",
        "task_type": task_type,
        "data": {},
        "scheduled_time": (T0 - scheduled).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {"messageId": "f-1", "body": json.dumps(body)}


def test_a_fire_redelivered_after_its_task_could_be_ttl_deleted_creates_nothing(
    delayed: Delayed,
) -> None:
    app = delayed.app
    app.store.settings = dataclasses.replace(app.store.settings, result_ttl_days=1)

    report = app.timer_inbox.handle([_fire("NOOP_TASK", timedelta(hours=25))])

    assert (report.created, report.dropped, report.failed_message_ids) == (0, 1, ())
    assert app.store.find("schedule:nightly:2026-11-30T11:00:00Z") is None
    # One within the bound is created as ever
    assert app.timer_inbox.handle([_fire("NOOP_TASK", timedelta(hours=20))]).created == 1


def test_a_fire_of_a_type_the_code_no_longer_has_is_retried_a_while_then_dropped(
    delayed: Delayed,
) -> None:
    inbox = delayed.app.timer_inbox
    # Just fired: the deploy that adds the type may not have reached this function yet
    soon = inbox.handle([_fire("GONE_TYPE", timedelta(seconds=60))])
    assert soon.failed_message_ids == ("f-1",)

    late = inbox.handle([_fire("GONE_TYPE", timedelta(seconds=FIRE_RETRY_SECONDS + 1))])

    assert (late.dropped, late.failed_message_ids) == (1, ())


# --- an early timer, and an invocation that dies --------------------------------------------


def test_an_early_timer_is_kept_with_its_visibility_set_and_a_crash_does_not_multiply_it(
    delayed: Delayed,
) -> None:
    app = delayed.app
    sqs = app.clients.sqs
    changes: list[dict[str, Any]] = []
    sqs.meta.events.register(
        "provide-client-params.sqs.ChangeMessageVisibility",
        lambda params, **_: changes.append(dict(params)),
    )
    task = delayed.client.create_task("NOOP_TASK", {}, delay=3600)
    body = DelayMessage(task.id, str(task.run_at)).body()
    sqs.send_message(QueueUrl=delayed.queue_url, MessageBody=body)  # the schedule fires
    delayed.clock.advance(3600 - SCHEDULE_LEAD_SECONDS + 40.3)

    for _ in range(3):
        [record] = _received(delayed)
        report = app.timer_inbox.handle([record])
        assert (report.requeued, report.failed_message_ids) == (1, (record["messageId"],))
        # The invocation dies before it returns: nothing is deleted. SQS delivers the
        # batch again (here at once: the visibility the test cannot wait for, passed)
        assert _queued(delayed) == 1
        sqs.change_message_visibility(
            QueueUrl=delayed.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
        )

    assert changes[0]["VisibilityTimeout"] == SCHEDULE_LEAD_SECONDS - 41
    assert changes[0]["QueueUrl"] == delayed.queue_url
    assert app.store.get(task.id).status is S.SCHEDULED
    # Due now: promoted, and the mapping deletes it
    delayed.clock.advance(SCHEDULE_LEAD_SECONDS - 40.3 - HOLD_SECONDS / 2)
    [record] = _received(delayed)
    done = app.timer_inbox.handle([record])
    assert (done.promoted, done.failed_message_ids) == (1, ())
