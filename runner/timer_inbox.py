"""The timer queue's consumer (the `fireTimers` function): delayed tasks promoted at their
time, early timers kept for the time left, recurring schedules' fires made tasks.

SQS delivers at least once, a batch again whole when its invocation dies (a Lambda
timeout while it waits or promotes under throttling), and EventBridge Scheduler fires at
least once. So nothing here copies a message: a timer that comes early (a one-time
schedule's, 5 minutes before `run_at`) is kept, its visibility set to the time left
(ChangeMessageVisibility) and reported in `batchItemFailures`, and SQS delivers the same
message again then; a batch redelivered after a crash finds one message, never more.

The timer is set before its item (`runner.delays`): a timer that finds no item may have
come before the producer's insert (a delay of a second or two; an insert retried under
throttling), so it is kept a while too (`MISSING_ITEM_GRACE_SECONDS` past `run_at`,
re-received at growing intervals), then dropped as stale: by then a task that was
written is the sweeper's to promote.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner.delays import (
    DELAY_KIND,
    HOLD_SECONDS,
    OVERDUE_GRACE_SECONDS,
    DelayMessage,
    DelayTimers,
    parse_time,
)
from runner.errors import TaskNotFound, TimerError
from runner.items import Clock, utcnow
from runner.logs import get_logger

if TYPE_CHECKING:
    from runner.recurring import RecurringFires
    from runner.store import TaskStore

# A timer that finds no item is kept this long past its `run_at` (the producer's insert
# may be retried for its 20 s budget and a 30 s read), then dropped: the sweeper
# promotes a task written later, OVERDUE_GRACE_SECONDS past its `run_at`.
MISSING_ITEM_GRACE_SECONDS = OVERDUE_GRACE_SECONDS
# ... received again after this many seconds, doubling, at most the last.
MISSING_ITEM_RETRY_SECONDS = (1, 2, 4, 8, 15)


@dataclass(frozen=True)
class InboxReport:
    """What one batch of timer messages did."""

    promoted: int = 0
    requeued: int = 0  # kept in the queue, early, for the time left
    waiting: int = 0  # kept in the queue, their task not written yet
    stale: int = 0  # the task was missing, or no longer that SCHEDULED task
    created: int = 0  # recurring fires that created their task
    duplicates: int = 0  # recurring fires whose task existed (a double fire)
    dropped: int = 0  # messages that are not timers, and fires too late to be made
    failed_message_ids: tuple[str, ...] = ()

    def response(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed_message_ids]}


class TimerInbox:
    """The timer queue's consumer: promotes delayed tasks at their time, keeps early ones
    in the queue, and creates the task of each recurring schedule's fire."""

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
        from runner.recurring import FireDropped

        counts = dict.fromkeys(("promoted", "requeued", "waiting", "stale"), 0)
        counts |= dict.fromkeys(("created", "duplicates", "dropped"), 0)
        failed: list[str] = []
        due: list[tuple[datetime, dict[str, Any], DelayMessage]] = []
        for record in records:
            message_id = _field(record, "messageId")
            try:
                body = json.loads(record["body"])
                kind = body.get("kind")
            except (KeyError, TypeError, ValueError, AttributeError):
                counts["dropped"] += 1
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
                        self._keep(record, left)
                        failed.append(message_id)
                        counts["requeued"] += 1
                    else:
                        due.append((when, record, message))
                elif kind == "recurring" and self.recurring is not None:
                    created = self.recurring.fire(body)
                    counts["created" if created else "duplicates"] += 1
                else:
                    counts["dropped"] += 1
                    self.log.warning(
                        "unknown timer message; dropped", extra={"message_id": message_id}
                    )
            except FireDropped as exc:
                counts["dropped"] += 1
                self.log.error(
                    "recurring fire dropped",
                    extra={"message_id": message_id, "reason": str(exc)},
                )
            except (KeyError, TypeError, ValueError) as exc:
                counts["dropped"] += 1
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
        for when, record, message in sorted(due, key=lambda d: d[0]):
            outcome = self._promote(when, record, message)
            if outcome in {"failed", "waiting"}:
                failed.append(_field(record, "messageId"))
            if outcome != "failed":
                counts[outcome] += 1
        return InboxReport(**counts, failed_message_ids=tuple(failed))

    def _promote(self, when: datetime, record: Any, message: DelayMessage) -> str:
        wait = (when - self.clock()).total_seconds()
        if wait > 0:
            self.sleep(wait)
        try:
            promoted = self.store.promote_timer(message.task_id, message.run_at)
        except TaskNotFound:
            late = (self.clock() - when).total_seconds()
            if late > MISSING_ITEM_GRACE_SECONDS:
                return "stale"  # its create failed after the timer was set
            tries = _receives(record)
            self._keep(record, MISSING_ITEM_RETRY_SECONDS[min(tries, 5) - 1])
            return "waiting"
        except Exception as exc:
            self.log.error(
                "delayed task not promoted; SQS delivers its timer again",
                extra={"task_id": message.task_id, "error_type": type(exc).__name__},
            )
            return "failed"
        return "promoted" if promoted is not None else "stale"

    def _keep(self, record: Any, seconds: float) -> None:
        """Make SQS deliver this very message again in `seconds` (reported failed by the
        caller). Without a receipt handle, or if the change fails, it comes back after
        the rest of the queue's visibility timeout: later, but neither lost nor copied."""
        receipt = _field(record, "receiptHandle")
        if not receipt:
            return
        try:
            self.timers.hold(receipt, seconds)
        except TimerError as exc:
            self.log.warning(
                "could not set a kept timer's visibility; it comes back after the queue's",
                extra={"message_id": _field(record, "messageId"), "error_type": exc.code},
            )


def _field(record: Any, name: str) -> str:
    return str(record.get(name, "")) if isinstance(record, dict) else ""


def _receives(record: Any) -> int:
    """How many times SQS has delivered this message (its ApproximateReceiveCount)."""
    attributes = record.get("attributes") if isinstance(record, dict) else None
    try:
        return max(1, int((attributes or {}).get("ApproximateReceiveCount", 1)))
    except (TypeError, ValueError):
        return 1
