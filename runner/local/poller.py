"""A DynamoDB stream event source mapping, run locally: GetRecords loop → Lambda Invoke.

Moto's own event source mappings need Docker and ignore filters and batch settings, so
the local stack replaces each mapping of the template with a `StreamPoller` that applies
the mapping's settings as Lambda's poller does for one shard (records in order, one
batch in flight per ParallelizationFactor lane), and invokes the function synchronously
through the endpoint's Lambda service (runner.local.lambdas.LambdaInvoker), so the
batch runs in one of the function's execution environments with its timeout, and a
timeout or crash is a function error:

- FilterCriteria: a record is delivered if any pattern matches the record as Lambda
  shapes it; records matching none are dropped (and count as processed), as on AWS.
- BatchSize: up to that many matching records per invocation, and at most Invoke's 6 MB.
- StartingPosition: TRIM_HORIZON or LATEST, taken when the poller starts.
- ReportBatchItemFailures: the batch is retried from the lowest reported SequenceNumber;
  an identifier that is empty or not in the batch fails the whole batch, as on AWS.
- BisectBatchOnFunctionError: a batch whose invocation raised is split in two halves,
  each retried on its own (the halves keep the batch's retry count).
- MaximumRetryAttempts / MaximumRecordAgeInSeconds: once exceeded, the batch is skipped
  and, with an OnFailure SQS destination, its metadata (never the records) is sent there.
  A throttled invocation (the function's concurrency is reached) is retried without
  counting against MaximumRetryAttempts: the batch never reached the function.
- ParallelizationFactor: N > 1 batches of the shard in flight at once, records spread
  over them by partition key, each key's in order (runner.local.stream_lanes).

Chaos (runner.local.chaos): with `stream[.function].redeliver`, a batch that succeeded is
delivered once more, as a stream may do on AWS (at least once).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runner.local.chaos import FaultPlan
from runner.local.lambdas import Invoker, InvokeThrottled
from runner.local.stack import StreamMapping
from runner.local.stream_lanes import Lanes
from runner.local.stream_records import (
    Record,
    RecordFilter,
    batches,
    first_failed_index,
    lambda_record,
    sequence_number,
)

log = logging.getLogger(__name__)

# Records asked for per GetRecords call (AWS's maximum).
GET_RECORDS_LIMIT = 1000
# Pause after an empty GetRecords: AWS polls a shard about four times a second.
DEFAULT_POLL_INTERVAL = 0.05
# Lambda's pause between retries of a failed stream batch grows to about this.
MAX_RETRY_DELAY = 2.0
# A throttled invocation's pause grows this many steps of `retry_delay` (to 0.4 s).
THROTTLED_BACKOFF_STEPS = 3


def retry_delay(attempt: int) -> float:
    """Backoff before retry number `attempt` (1-based) of a failed batch."""
    return float(min(MAX_RETRY_DELAY, 0.1 * 2 ** (attempt - 1)))


@dataclass
class PollerStats:
    """What a poller has done, for `wait_until_settled`, the demo and tests."""

    invocations: int = 0
    delivered: int = 0  # records handed to the function (retries counted again)
    filtered_out: int = 0
    retries: int = 0
    throttled: int = 0  # invocations Lambda refused (concurrency reached)
    redelivered: int = 0  # batches delivered again by a chaos fault
    discarded: int = 0  # records given up on (retries or age exhausted)
    on_failure_messages: int = 0


@dataclass(frozen=True)
class _Attempt:
    failed_from: int | None  # index of the first record to retry; None: batch done
    function_error: bool  # the invocation raised (as opposed to reporting items)


class StreamPoller:
    """Delivers one shard of a table's stream to one function, as its mapping says."""

    def __init__(
        self,
        mapping: StreamMapping,
        invoke: Invoker,
        *,
        streams: Any,
        sqs: Any | None,
        stream_arn: str,
        shard_id: str,
        function_arn: str,
        region: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        backoff: Callable[[int], float] = retry_delay,
        faults: FaultPlan | None = None,
    ) -> None:
        self.mapping = mapping
        self.invoke = invoke
        self.streams = streams
        self.sqs = sqs
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        self.function_arn = function_arn
        self.faults = faults
        self.region = region
        self.poll_interval = poll_interval
        self.backoff = backoff
        self.filter = RecordFilter(mapping.filter_patterns)
        self.stats = PollerStats()
        self._stats_lock = threading.Lock()  # lanes deliver from threads of their own
        self._lanes = (
            Lanes(
                mapping.parallelization_factor,
                batch_size=mapping.batch_size,
                deliver=self._deliver_batch,
                name=f"poller-{mapping.function_logical_id}",
                max_queued=2 * GET_RECORDS_LIMIT,
            )
            if mapping.parallelization_factor > 1
            else None
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iterator: str | None = None
        self._last_read: str | None = None
        self._caught_up = threading.Event()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Take the starting position now (as creating the mapping does), then poll."""
        self._iterator = self._new_iterator()
        if self._lanes is not None:
            self._lanes.start()
        self._thread = threading.Thread(
            target=self._run, name=f"poller-{self.mapping.function_logical_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._lanes is not None:
            self._lanes.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def caught_up(self) -> bool:
        """True when the last read found nothing new and every batch was delivered."""
        return self._caught_up.is_set() and (self._lanes is None or self._lanes.idle)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + amount)

    # --- reading ---------------------------------------------------------------------

    def _new_iterator(self) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": self.shard_id}
        if self._last_read is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self._last_read)
        else:
            kwargs["ShardIteratorType"] = self.mapping.starting_position
        return str(self.streams.get_shard_iterator(**kwargs)["ShardIterator"])

    def _read(self) -> list[Record]:
        """The next page of the shard, Lambda-shaped; a broken iterator is re-acquired."""
        try:
            page = self.streams.get_records(ShardIterator=self._iterator, Limit=GET_RECORDS_LIMIT)
        except Exception as exc:
            # Moto answers a bad or expired iterator with HTTP 500: start again after the
            # last record read.
            log.warning("GetRecords failed (%s); re-acquiring the shard iterator", exc)
            self._iterator = self._new_iterator()
            return []
        self._iterator = page.get("NextShardIterator")
        raw = page.get("Records", [])
        if raw:
            self._last_read = str(raw[-1]["dynamodb"]["SequenceNumber"])
        return [lambda_record(r, stream_arn=self.stream_arn, region=self.region) for r in raw]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("stream poller for %s failed; continuing", self.mapping.function_name)
                self._stop.wait(self.poll_interval)

    def poll_once(self) -> int:
        """One GetRecords page: filter it and deliver it in batches; returns records read."""
        if self._iterator is None:  # the shard was closed (never happens in moto)
            self._stop.wait(self.poll_interval)
            return 0
        records = self._read()
        if not records:
            self._caught_up.set()
            self._stop.wait(self.poll_interval)
            return 0
        self._caught_up.clear()
        matching = [r for r in records if self.filter.matches(r)]
        self._count("filtered_out", len(records) - len(matching))
        if self._lanes is not None:
            self._lanes.put(matching)
            return len(records)
        for batch in batches(matching, max(1, self.mapping.batch_size)):
            if self._stop.is_set():
                break
            self._deliver_batch(batch)
        return len(records)

    def _deliver_batch(self, batch: list[Record]) -> None:
        """One batch, to success or its limits; again if a chaos fault redelivers it."""
        self._deliver(batch, retries=0)
        if self.faults is not None and self.faults.decide(
            "stream", self.mapping.function_name, "redeliver", f"{len(batch)} records"
        ):
            self._count("redelivered")
            self._deliver(batch, retries=0)

    # --- delivering ------------------------------------------------------------------

    def _deliver(self, batch: list[Record], *, retries: int) -> None:
        """Invoke until the batch succeeds, or its retries or age run out.

        Stricter than what AWS documents (it says nothing on either): a record older than
        MaximumRecordAgeInSeconds is not sent, not even once, and a split of the batch counts
        as a retry of both halves, so no record is sent more than 1 + MaximumRetryAttempts
        times, bisected or not.
        """
        while batch and not self._stop.is_set():
            expired = self._expired_prefix(batch)
            if expired:
                self._give_up(batch[:expired], "RecordAgeExceeded", retries)
                batch = batch[expired:]
                continue
            attempt = self._invoke(batch)
            if attempt.failed_from is None or self._stop.is_set():
                return
            if (
                attempt.function_error
                and self.mapping.bisect_batch_on_function_error
                and len(batch) > 1
            ):
                condition = self._exhausted(batch, retries + 1)
                if condition:
                    self._give_up(batch, condition, retries + 1)
                    return
                half = len(batch) // 2
                self._count("retries")
                self._deliver(batch[:half], retries=retries + 1)
                self._deliver(batch[half:], retries=retries + 1)
                return
            batch = batch[attempt.failed_from :]
            retries += 1
            condition = self._exhausted(batch, retries)
            if condition:
                self._give_up(batch, condition, retries)
                return
            self._count("retries")
            self._stop.wait(self.backoff(retries))

    def _exhausted(self, batch: list[Record], retries: int) -> str | None:
        limit = self.mapping.maximum_retry_attempts
        if limit is not None and retries > limit:
            return "RetryAttemptsExhausted"
        return self._too_old(batch)

    def _too_old(self, batch: list[Record]) -> str | None:
        return "RecordAgeExceeded" if self._expired_prefix(batch[:1]) else None

    def _expired_prefix(self, batch: list[Record]) -> int:
        """How many leading records of the batch are older than MaximumRecordAgeInSeconds
        (a shard's records are in order, oldest first)."""
        max_age = self.mapping.maximum_record_age_seconds
        if max_age is None:
            return 0
        cutoff = time.time() - max_age
        for index, record in enumerate(batch):
            created = record["dynamodb"].get("ApproximateCreationDateTime")
            if not (isinstance(created, int | float) and created < cutoff):
                return index
        return len(batch)

    def _invoke(self, batch: list[Record]) -> _Attempt:
        attempt = 0
        while True:
            try:
                invocation = self.invoke({"Records": batch})
                break
            except InvokeThrottled:
                # Not a retry of the batch: it never reached the function. Tried again
                # soon (at most 0.4 s apart): with ParallelizationFactor several batches
                # of a shard wait for the function's few local environments.
                self._count("throttled")
                attempt += 1
                if self._stop.wait(self.backoff(min(attempt, THROTTLED_BACKOFF_STEPS))):
                    return _Attempt(failed_from=0, function_error=False)
            except Exception:
                log.exception("invoking %s failed; retrying the batch", self.mapping.function_name)
                return _Attempt(failed_from=0, function_error=True)
        self._count("invocations")
        self._count("delivered", len(batch))
        if invocation.function_error:
            payload = invocation.payload if isinstance(invocation.payload, dict) else {}
            log.warning(
                "%s failed (%s: %s); the batch will be retried",
                self.mapping.function_name,
                payload.get("errorType"),
                str(payload.get("errorMessage", ""))[:300],
            )
            return _Attempt(failed_from=0, function_error=True)
        if not self.mapping.report_batch_item_failures:
            return _Attempt(failed_from=None, function_error=False)
        response = invocation.payload
        return _Attempt(failed_from=first_failed_index(batch, response), function_error=False)

    def _give_up(self, batch: list[Record], condition: str, retries: int) -> None:
        self._count("discarded", len(batch))
        log.error("%s: skipping %d records (%s)", self.mapping.function_name, len(batch), condition)
        if self.sqs is None or not self.mapping.on_failure_physical_id:
            return
        self.sqs.send_message(
            QueueUrl=self.mapping.on_failure_physical_id,
            MessageBody=json.dumps(self.failure_message(batch, condition, retries)),
        )
        self._count("on_failure_messages")

    def failure_message(self, batch: list[Record], condition: str, retries: int) -> Record:
        """The invocation record Lambda sends to an OnFailure destination: metadata only."""

        def arrival(record: Record) -> str:
            created = record["dynamodb"].get("ApproximateCreationDateTime", 0)
            return datetime.fromtimestamp(float(created), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        return {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function_arn,
                "condition": condition,
                "approximateInvokeCount": retries,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": sequence_number(batch[0]),
                "endSequenceNumber": sequence_number(batch[-1]),
                "approximateArrivalOfFirstRecord": arrival(batch[0]),
                "approximateArrivalOfLastRecord": arrival(batch[-1]),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
