"""The table's stream as each event source mapping of the template delivers it.

Settings come from the template's mapping (runner.local.stack.StreamMapping): the filter
patterns (runner.local.stream_records.RecordFilter), batch size, ReportBatchItemFailures (retry
from the lowest reported record, runner.local.stream_records.first_failed_index), bisection on
a function error, MaximumRetryAttempts and MaximumRecordAgeInSeconds (the batch is then
skipped and only its metadata goes to the on-failure destination, `on_failure`), and the
stream's 24 h retention. What AWS allows and the harness chooses: which records of different items a
batch takes first (reordering, bounded by `skip`; one item's records stay in order), how
many, and which delivered records come again (at-least-once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner.local.stack import StreamMapping
from runner.local.stream_records import RecordFilter, first_failed_index
from tests.simulation.topology import Function

Record = dict[str, Any]
# DynamoDB Streams keeps records this long.
RETENTION_SECONDS = 24 * 3600


def record_key(record: Record) -> str:
    keys = record.get("dynamodb", {}).get("Keys", {})
    return str(keys.get("id", {}).get("S", "?"))


def record_task(record: Record) -> str:
    return record_key(record)


def sequence(record: Record) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


def created(record: Record) -> float:
    return float(record["dynamodb"].get("ApproximateCreationDateTime", 0))


@dataclass(eq=False)
class Batch:
    records: list[Record]
    retries: int = 0
    running: bool = False  # an invocation has it now


@dataclass
class Discard:
    """A batch the mapping gave up on (what the on-failure destination is told)."""

    condition: str
    first_sequence: str
    last_sequence: str
    size: int
    at: float
    tasks: tuple[str, ...]


@dataclass
class MappingQueue:
    """One event source mapping: what it still has to deliver, and what it gave up."""

    mapping: StreamMapping
    function: Function
    pending: list[Record] = field(default_factory=list)
    inflight: list[Batch] = field(default_factory=list)
    delivered: list[Record] = field(default_factory=list)
    discarded: list[Discard] = field(default_factory=list)
    filtered_out: int = 0
    # Told of each batch given up on (records, condition, invocations): the mapping's
    # OnFailure destination (tests.simulation.destinations). Not for trimmed records.
    on_failure: Callable[[list[Record], str, int], None] | None = None

    def __post_init__(self) -> None:
        self._filter = RecordFilter(self.mapping.filter_patterns)

    @property
    def name(self) -> str:
        return self.mapping.function_logical_id

    def offer(self, record: Record) -> None:
        if self._filter.matches(record):
            self.pending.append(record)
        else:
            self.filtered_out += 1

    def busy(self) -> bool:
        return bool(self.pending or self.inflight)

    @property
    def lanes(self) -> int:
        """Batches of the shard in flight at once (ParallelizationFactor)."""
        return max(1, self.mapping.parallelization_factor)

    def running(self) -> int:
        return sum(1 for b in self.inflight if b.running)

    def _busy_keys(self, *, running_only: bool = False) -> set[str]:
        """Items with a record in a batch in flight: their later records wait (Lambda
        keeps one partition key's records in order across the shard's batches)."""
        return {
            record_key(r) for b in self.inflight if b.running or not running_only for r in b.records
        }

    def _startable(self) -> Batch | None:
        """A batch waiting for its retry whose items no running batch holds."""
        running = self._busy_keys(running_only=True)
        for waiting in self.inflight:
            if not waiting.running and not {record_key(r) for r in waiting.records} & running:
                return waiting
        return None

    def deliverable(self) -> bool:
        if not self.busy() or self.running() >= self.lanes:
            return False
        if self._startable() is not None:
            return True
        busy = self._busy_keys()
        return any(record_key(r) not in busy for r in self.pending)

    def next_batch(self, now: float, *, skip: int, take: int) -> Batch | None:
        """The batch to invoke with: a retried one first, else new records of items
        that have none in flight; at most `lanes` at once.

        Records older than the mapping's maximum age (or the stream's retention) are
        skipped first, as the mapping does.
        """
        self._expire(now)
        if self.running() >= self.lanes:
            return None
        waiting = self._startable()
        if waiting is not None:
            waiting.running = True
            return waiting
        busy = self._busy_keys()
        candidates = [i for i, r in enumerate(self.pending) if record_key(r) not in busy]
        if not candidates:
            return None
        size = max(1, min(take, self.mapping.batch_size))
        skipped_keys: set[str] = set()
        chosen: list[int] = []
        for index in candidates:
            record = self.pending[index]
            key = record_key(record)
            if len(skipped_keys) < skip and key not in skipped_keys and not chosen:
                skipped_keys.add(key)
                continue
            if key in skipped_keys:
                continue  # an item's records keep their order
            chosen.append(index)
            if len(chosen) == size:
                break
        if not chosen:  # everything belonged to skipped items: take the head after all
            chosen = candidates[:size]
        batch = Batch([self.pending[i] for i in chosen], running=True)
        self.pending = [r for i, r in enumerate(self.pending) if i not in set(chosen)]
        self.inflight.insert(0, batch)
        return batch

    def settle(self, batch: Batch, now: float, *, function_error: bool, response: Any) -> None:
        """Apply an invocation's outcome as the mapping does."""
        self.inflight.remove(batch)
        if function_error:
            failed_from: int | None = 0
        elif self.mapping.report_batch_item_failures:
            failed_from = first_failed_index(batch.records, response)
        else:
            failed_from = None
        done = batch.records if failed_from is None else batch.records[:failed_from]
        self.delivered += done
        if failed_from is None:
            return
        rest = batch.records[failed_from:]
        retries = batch.retries + 1
        if function_error and self.mapping.bisect_batch_on_function_error and len(rest) > 1:
            half = len(rest) // 2
            self.inflight[0:0] = [Batch(rest[:half], retries), Batch(rest[half:], retries)]
            return
        limit = self.mapping.maximum_retry_attempts
        if limit is not None and retries > limit:
            self._give_up(rest, "RetryAttemptsExhausted", now, retries)
            return
        self.inflight.insert(0, Batch(rest, retries))

    def duplicate(self, index: int) -> bool:
        """Deliver an already delivered record again (at-least-once)."""
        if not self.delivered:
            return False
        self.pending.insert(0, self.delivered[index % len(self.delivered)])
        return True

    def _expire(self, now: float) -> None:
        age = self.mapping.maximum_record_age_seconds
        for batch in list(self.inflight):
            if batch.running:
                continue  # given up on, if at all, once its invocation has ended
            oldest = created(batch.records[0])
            if age is not None and now - oldest > age:
                self.inflight.remove(batch)
                self._give_up(batch.records, "RecordAgeExceeded", now, batch.retries + 1)
        keep = []
        for record in self.pending:
            if now - created(record) > RETENTION_SECONDS:
                self.discarded.append(
                    Discard(
                        "TrimmedFromStream",
                        sequence(record),
                        sequence(record),
                        1,
                        now,
                        (record_task(record),),
                    )
                )
            elif age is not None and now - created(record) > age:
                self._give_up([record], "RecordAgeExceeded", now, 0)
            else:
                keep.append(record)
        self.pending = keep

    def _give_up(self, records: list[Record], condition: str, now: float, tries: int) -> None:
        if self.on_failure is not None:
            self.on_failure(records, condition, tries)
        self.discarded.append(
            Discard(
                condition,
                sequence(records[0]),
                sequence(records[-1]),
                len(records),
                now,
                tuple(record_task(r) for r in records),
            )
        )
