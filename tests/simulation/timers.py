"""Delayed and recurring tasks' timers on the simulation's clock (issue 13):

- EventBridge Scheduler (`SchedulerService`): the one-time schedules producers create at
  run time (`at(...)`, UTC, `ActionAfterCompletion` DELETE), and the API the runner
  calls (Create/Get/Update/Delete/ListSchedules; ConflictException for a name taken,
  ResourceNotFoundException for one missing). A schedule fires by the `schedule_fire`
  rule, not by itself: on time, late (the rule runs whenever it runs, or after a
  stall), early (within a minute before its time), twice (a second delivery of one
  invocation: Scheduler delivers at least once), or never (lost: deleted by hand, or a
  delivery that failed past Scheduler's retries). A fire sends the target's Input to
  the timer queue.
- The timer queue's event source mapping (`TimerMapping`, read from the template's SQS
  mapping): batches of visible messages to `fireTimers`, as many at once as its
  MaximumConcurrency; a batch's messages are hidden for the queue's VisibilityTimeout
  while it runs; when it returns, the messages it did not report in
  `batchItemFailures` are deleted; on a function error none is, and all come back once
  their visibility ends. `again` hands a copy of a message already delivered to the
  queue once more (standard queues deliver at least once), with the original's send
  time (so it is dropped past the queue's retention, as the original would be).
- Recurring fires (`fire_recurring`): what a recurring schedule's target sends, with
  `<aws.scheduler.scheduled-time>` filled in; a double fire sends the same body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError

from tests.simulation.destinations import Message, SqsService, queue_url
from tests.simulation.fibers import SimClock
from tests.simulation.topology import QueueMapping

if TYPE_CHECKING:
    from tests.simulation.lambdas import Invocation
    from tests.simulation.world import World

# A one-time schedule may be delivered this long before its time ("early").
EARLY_SECONDS = 60.0
# Messages kept for a second delivery (`again`).
KEPT_FOR_AGAIN = 8
# The recurring schedule the simulation fires (its task type and period).
RECURRING_SCHEDULE = "sim-every-5m"
RECURRING_PERIOD = 300.0


def _error(code: str, message: str, operation: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 409 if code == "ConflictException" else 404},
    }
    return ClientError(response, operation)


def _at_seconds(expression: str) -> float:
    """`at(yyyy-mm-ddThh:mm:ss)` in UTC, as a time on the clock."""
    inner = expression.strip().removeprefix("at(").removesuffix(")")
    return datetime.fromisoformat(inner).replace(tzinfo=UTC).timestamp()


def iso_seconds(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class OneTime:
    name: str
    group: str
    at: float
    request: dict[str, Any]
    fired: int = 0

    @property
    def task_id(self) -> str | None:
        try:
            found = json.loads(self.request.get("Target", {}).get("Input") or "{}")
        except ValueError:
            return None
        task = found.get("task_id") if isinstance(found, dict) else None
        return task if isinstance(task, str) else None


@dataclass
class SchedulerService:
    """EventBridge Scheduler's one-time schedules on the virtual clock."""

    clock: SimClock
    sqs: SqsService
    schedules: dict[tuple[str, str], OneTime] = field(default_factory=dict)
    fired: list[tuple[str, str, float]] = field(default_factory=list)  # name, how, when
    lost: list[OneTime] = field(default_factory=list)

    class _Meta:
        method_to_api_mapping: ClassVar[dict[str, str]] = {
            "create_schedule": "CreateSchedule",
            "get_schedule": "GetSchedule",
            "update_schedule": "UpdateSchedule",
            "delete_schedule": "DeleteSchedule",
            "list_schedules": "ListSchedules",
        }

    meta: ClassVar[_Meta] = _Meta()

    # --- the API ---------------------------------------------------------------------

    def create_schedule(self, **request: Any) -> dict[str, Any]:
        key = (str(request.get("GroupName", "default")), str(request["Name"]))
        if key in self.schedules:
            raise _error("ConflictException", f"schedule {key[1]} exists", "CreateSchedule")
        self.schedules[key] = OneTime(
            key[1], key[0], _at_seconds(request["ScheduleExpression"]), dict(request)
        )
        return {"ScheduleArn": f"arn:aws:scheduler:::schedule/{key[0]}/{key[1]}"}

    def _get(self, Name: str, GroupName: str = "default", operation: str = "") -> OneTime:
        found = self.schedules.get((GroupName, Name))
        if found is None:
            raise _error("ResourceNotFoundException", f"schedule {Name} not found", operation)
        return found

    def get_schedule(self, *, Name: str, GroupName: str = "default", **_: Any) -> dict[str, Any]:
        found = self._get(Name, GroupName, "GetSchedule")
        return {**found.request, "State": found.request.get("State", "ENABLED")}

    def update_schedule(self, **request: Any) -> dict[str, Any]:
        found = self._get(request["Name"], request.get("GroupName", "default"), "UpdateSchedule")
        found.request = dict(request)
        found.at = _at_seconds(request["ScheduleExpression"])
        found.fired = 0
        return {"ScheduleArn": f"arn:aws:scheduler:::schedule/{found.group}/{found.name}"}

    def delete_schedule(self, *, Name: str, GroupName: str = "default", **_: Any) -> dict[str, Any]:
        found = self._get(Name, GroupName, "DeleteSchedule")
        del self.schedules[(found.group, found.name)]
        return {}

    def list_schedules(self, *, GroupName: str = "default", **_: Any) -> dict[str, Any]:
        return {
            "Schedules": [{"Name": n, "GroupName": g} for g, n in self.schedules if g == GroupName]
        }

    # --- firing (the `schedule_fire` rule, and the quiet period) -----------------------

    def due(self, *, early: bool = False) -> list[OneTime]:
        now = self.clock.t + (EARLY_SECONDS if early else 0.0)
        return sorted((s for s in self.schedules.values() if s.at <= now), key=lambda s: s.at)

    def next_time(self) -> float | None:
        return min((s.at for s in self.schedules.values()), default=None)

    def for_task(self, task_id: str) -> OneTime | None:
        return next((s for s in self.schedules.values() if s.task_id == task_id), None)

    def fire(self, schedule: OneTime, how: str) -> None:
        """Deliver the schedule's target (`on-time`, `early`, `twice`), or lose it."""
        if how == "lost":
            del self.schedules[(schedule.group, schedule.name)]
            self.lost.append(schedule)
            self.fired.append((schedule.name, how, self.clock.t))
            return
        target = schedule.request["Target"]
        url = queue_url(str(target["Arn"]).rsplit(":", 1)[-1])
        self.sqs.send_message(QueueUrl=url, MessageBody=str(target["Input"]))
        schedule.fired += 1
        self.fired.append((schedule.name, how, self.clock.t))
        # A second delivery of this invocation may come (`twice`): delete it after that.
        done = how != "twice" or schedule.fired >= 2
        if done and schedule.request.get("ActionAfterCompletion") == "DELETE":
            self.schedules.pop((schedule.group, schedule.name), None)


class TimerMapping:
    """The timer queue's SQS event source mapping, delivering batches to fireTimers."""

    def __init__(self, world: World, mapping: QueueMapping, url: str) -> None:
        self.world = world
        self.mapping = mapping
        self.function = world.topology.functions[mapping.function_logical_id]
        self.url = url
        self.concurrency = max(2, mapping.maximum_concurrency)
        self.in_flight = 0
        self.delivered: list[Message] = []
        self.deliveries = 0

    def _queue_messages(self) -> list[Message]:
        return self.world.sqs.queues[self.url].messages

    def visible(self) -> int:
        now = self.world.clock.t
        return sum(1 for m in self._queue_messages() if m.visible_at <= now)

    def deliverable(self) -> bool:
        return self.in_flight < self.concurrency and self.visible() > 0

    def busy(self) -> bool:
        return self.in_flight > 0 or bool(self._queue_messages())

    def next_time(self) -> float | None:
        return self.world.sqs.next_visible(self.url)

    def deliver(self, take: int, choice: int | None) -> Invocation | None:
        if not self.deliverable():
            return None
        size = max(1, min(take, self.mapping.batch_size or 10))
        received = self.world.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=size)
        messages = received.get("Messages", [])
        if not messages:
            return None
        by_id = {m.id: m for m in self._queue_messages()}
        self.delivered = [*self.delivered, *(by_id[m["MessageId"]] for m in messages)][
            -KEPT_FOR_AGAIN:
        ]
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {
                        "ApproximateReceiveCount": str(by_id[m["MessageId"]].receives),
                        "SentTimestamp": str(int(by_id[m["MessageId"]].sent_at * 1000)),
                    },
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": f"arn:aws:sqs:::{self.url.rsplit('/', 1)[-1]}",
                    "awsRegion": "us-east-1",
                }
                for m in messages
            ]
        }
        self.in_flight += 1
        self.deliveries += 1

        def settle(invocation: Invocation) -> None:
            self.in_flight -= 1
            if invocation.outcome != "ok":
                return  # every message comes back once its visibility ends
            result = invocation.result if isinstance(invocation.result, dict) else {}
            failed = {
                str(f.get("itemIdentifier"))
                for f in result.get("batchItemFailures", [])
                if isinstance(f, dict)
            }
            for m in messages:
                if m["MessageId"] not in failed:
                    self.world.sqs.delete_message(
                        QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"]
                    )

        return self.world.lambdas.start(self.function, event, choice=choice, on_done=settle)

    def again(self, index: int) -> bool:
        """A copy of a message already delivered comes once more (at-least-once)."""
        if not self.delivered:
            return False
        original = self.delivered[index % len(self.delivered)]
        queue = self.world.sqs.queues[self.url]
        now = self.world.clock.t
        if now - original.sent_at > queue.retention_seconds:
            return False
        queue.messages.append(
            Message(f"{original.id}+again{now:.0f}", original.body, original.sent_at, now)
        )
        return True


def recurring_body(task_type: str, scheduled: float, nonce: str) -> str:
    """A recurring schedule's fire, as its target's Input becomes once Scheduler fills in
    `<aws.scheduler.scheduled-time>` (runner/recurring.py's schedule_resources)."""
    return json.dumps(
        {
            "kind": "recurring",
            "schedule": RECURRING_SCHEDULE,
            "task_type": task_type,
            "data": {"nonce": nonce},
            "scheduled_time": iso_seconds(scheduled),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def timer_counts(world: World) -> dict[str, int]:
    """What one example did with timers (the quick pass's summary line)."""
    counts: dict[str, int] = {
        "scheduled": sum(
            1
            for w in world.ledger.writes
            if (w.new or {}).get("status") == "SCHEDULED" and (w.old or {}).get("status") is None
        ),
        "promoted": 0,
        "by_sweeper": 0,
        "deliveries": sum(m.deliveries for m in world.timers),
        "recurring": len(world.fires),
    }
    for w in world.ledger.writes:
        if (w.old or {}).get("status") == "SCHEDULED" and (w.new or {}).get("status") == "PENDING":
            counts["promoted"] += 1
            counts["by_sweeper"] += w.actor.startswith("Sweep")
    for _, how, _ in world.eventbridge.fired:
        counts[f"schedule {how}"] = counts.get(f"schedule {how}", 0) + 1
    return counts
