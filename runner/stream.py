"""DynamoDB stream batches: read records, run their tasks concurrently, report failures.

A batch item failure is reported only when a task's outcome could not be recorded
(DynamoDB unreachable): a task that merely failed is FAILED in the table, and a record
that is not a task is logged and dropped, so one bad record never blocks its shard.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.dispatch import Dispatcher
from runner.errors import MalformedTask, StoreError, TaskAlreadyClaimed, WorkflowError
from runner.executor import Outcome
from runner.failures import describe_error
from runner.items import deserialize_image, task_from_item
from runner.logs import get_logger
from runner.model import ClaimSource, TaskStatus

# DynamoDB's refusals of the record's own item (its size, its attributes, left after the
# store's own size handling): redelivery cannot help, so the record is dropped. Any other
# refusal (AccessDenied while an IAM change propagates, a KMS key unavailable, a table
# being replaced) is about the moment, not the record: it is reported as failed, so the
# mapping retries it, then sends it to the on-failure queue, which the sweeper replays.
RECORD_REFUSALS = frozenset({"ValidationException"})


@dataclass(frozen=True)
class BatchResult:
    """What a batch did: per-task outcomes, skipped records, and the failures to report."""

    outcomes: list[Outcome] = field(default_factory=list)
    ignored: int = 0
    malformed: int = 0
    failed_sequence_numbers: list[str] = field(default_factory=list)

    def response(self) -> dict[str, list[dict[str, str]]]:
        """The Lambda response for ReportBatchItemFailures."""
        return {"batchItemFailures": [{"itemIdentifier": s} for s in self.failed_sequence_numbers]}


@dataclass(frozen=True)
class _RecordResult:
    outcome: Outcome | None = None
    ignored: bool = False
    malformed: bool = False
    failed_sequence: str | None = None


def _sequence_number(record: Any) -> str | None:
    if isinstance(record, dict) and isinstance(record.get("dynamodb"), dict):
        value = record["dynamodb"].get("SequenceNumber")
        return str(value) if value is not None else None
    return None


def _old_lease(record: dict[str, Any]) -> int | None:
    """The lease of the item a MODIFY replaced, if it had one (epoch seconds)."""
    old = record["dynamodb"].get("OldImage")
    lease = old.get("lease_expires_at") if isinstance(old, dict) else None
    try:
        return int(lease["N"]) if isinstance(lease, dict) else None
    except (KeyError, TypeError, ValueError):
        return None


def _makes_pending(record: dict[str, Any]) -> bool:
    """An INSERT, or a MODIFY that made a task PENDING again: a task put over an existing
    id (PutItem replaces the item; the stream calls that a MODIFY). Its NewImage status is
    checked after. processStream's filter patterns admit the same two (serverless.yml)."""
    if record.get("eventName") == "INSERT":
        return True
    if record.get("eventName") != "MODIFY":
        return False
    old = record["dynamodb"].get("OldImage")
    status = old.get("status") if isinstance(old, dict) else None
    return isinstance(status, dict) and status.get("S") != TaskStatus.PENDING.value


class StreamProcessor:
    """Runs the new PENDING tasks of a stream batch, all at once up to a concurrency bound."""

    def __init__(self, dispatcher: Dispatcher, *, max_concurrency: int | None = None) -> None:
        # None: as many workers as records, so a batch of one-second tasks takes ~1 s.
        self.dispatcher = dispatcher
        self.runner = dispatcher.runner
        self.max_concurrency = max_concurrency
        self.log = get_logger()

    def process(
        self, records: Sequence[Any], *, remaining_seconds: Callable[[], float] | None = None
    ) -> BatchResult:
        if not records:
            return BatchResult()
        workers = len(records)
        if self.max_concurrency:
            workers = min(workers, self.max_concurrency)
        if workers == 1:
            # Nothing to overlap: no pool, no thread start (a cold start's one-record batch).
            results = [self._process_one(record, remaining_seconds) for record in records]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="record") as pool:
                futures = [
                    pool.submit(
                        contextvars.copy_context().run,
                        self._process_one,
                        record,
                        remaining_seconds,
                    )
                    for record in records
                ]
                results = [f.result() for f in futures]
        return BatchResult(
            outcomes=[r.outcome for r in results if r.outcome is not None],
            ignored=sum(r.ignored for r in results),
            malformed=sum(r.malformed for r in results),
            failed_sequence_numbers=[r.failed_sequence for r in results if r.failed_sequence],
        )

    def _process_one(
        self, record: Any, remaining_seconds: Callable[[], float] | None
    ) -> _RecordResult:
        sequence = _sequence_number(record)
        try:
            return self._process_record(record, remaining_seconds)
        except StoreError as exc:
            if exc.code in RECORD_REFUSALS:
                # Redelivery cannot help: a poison record must not block its shard.
                self.log.error(
                    "record refused by DynamoDB; dropped",
                    extra={"sequence_number": sequence, "error": str(exc)},
                )
                return _RecordResult(malformed=True)
            self.log.error(
                "task outcome not recorded; reporting the record as failed",
                extra={"sequence_number": sequence, "error": str(exc)},
            )
            if sequence is None:
                return _RecordResult(malformed=True)
            return _RecordResult(failed_sequence=sequence)
        except WorkflowError as exc:
            self.log.error(
                "task not handed to the workflow; reporting the record as failed",
                extra={"sequence_number": sequence, "error": str(exc)},
            )
            return _RecordResult(failed_sequence=sequence) if sequence else _RecordResult()
        except Exception as exc:
            # Never let one record break the batch; the sweeper recovers what this leaves.
            # Only the type: an unexpected exception's text may quote the record's data.
            self.log.error(
                "unexpected error processing record",
                extra={"sequence_number": sequence, "error_type": type(exc).__name__},
            )
            return _RecordResult(failed_sequence=sequence) if sequence else _RecordResult()

    def _process_record(
        self, record: Any, remaining_seconds: Callable[[], float] | None
    ) -> _RecordResult:
        if not isinstance(record, dict) or not isinstance(record.get("dynamodb"), dict):
            self.log.warning(
                "malformed stream record: no dynamodb section",
                extra={"record_type": type(record).__name__},
            )
            return _RecordResult(malformed=True)
        if not _makes_pending(record):
            return _RecordResult(ignored=True)
        image = record["dynamodb"].get("NewImage")
        if not isinstance(image, dict):
            self.log.warning(
                "malformed stream record: no NewImage",
                extra={"event_id": record.get("eventID")},
            )
            return _RecordResult(malformed=True)
        try:
            values = deserialize_image(image)
        except MalformedTask as exc:
            self.log.warning(
                "malformed stream record",
                extra={"event_id": record.get("eventID"), "error": str(exc)},
            )
            return _RecordResult(malformed=True)
        if values.get("status") != TaskStatus.PENDING.value:
            return _RecordResult(ignored=True)
        remaining = remaining_seconds() if remaining_seconds else None
        try:
            task = task_from_item(values)
        except MalformedTask as exc:
            return self._fail_unreadable(values, exc)
        outcome = self.dispatcher.dispatch(
            task,
            source=ClaimSource.STREAM,
            remaining_seconds=remaining,
            held_until=_old_lease(record) if record.get("eventName") == "MODIFY" else None,
        )
        return _RecordResult(outcome=outcome)

    def _fail_unreadable(self, values: dict[str, Any], exc: MalformedTask) -> _RecordResult:
        """A PENDING item that is not a valid task: FAILED (non-retryable) if it has an id."""
        task_id = values.get("id")
        self.log.warning(
            "malformed task item",
            extra={"task_id": task_id if isinstance(task_id, str) else None, "error": str(exc)},
        )
        if not isinstance(task_id, str) or not task_id:
            return _RecordResult(malformed=True)
        try:
            self.runner.store.fail_unreadable(task_id, str(exc))
        except TaskAlreadyClaimed:
            return _RecordResult(ignored=True)
        return _RecordResult(outcome=Outcome(task_id, TaskStatus.FAILED, error=describe_error(exc)))
