"""A DynamoDB stream event source mapping, run locally: GetRecords loop → Lambda Invoke.

Moto's own event source mappings need Docker and ignore filters and batch settings, so
the local stack replaces each mapping of the template with a `StreamPoller` that applies
the mapping's settings as Lambda's poller does for one shard (records in order, one
batch in flight), and invokes the function synchronously through the endpoint's Lambda
service (runner.local.lambdas.LambdaInvoker), so the batch runs in one of the function's
execution environments with its timeout, and a timeout or crash is a function error:

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

Chaos (runner.local.chaos): with `stream[.function].redeliver`, a batch that succeeded is
delivered once more, as a stream may do on AWS (at least once).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from runner.local.chaos import FaultPlan
from runner.local.lambdas import MAX_PAYLOAD_BYTES, Invoker, InvokeThrottled, event_json
from runner.local.stack import StreamMapping

log = logging.getLogger(__name__)

# Records asked for per GetRecords call (AWS's maximum).
GET_RECORDS_LIMIT = 1000
# Pause after an empty GetRecords: AWS polls a shard about four times a second.
DEFAULT_POLL_INTERVAL = 0.05
# Lambda's pause between retries of a failed stream batch grows to about this.
MAX_RETRY_DELAY = 2.0

Record = dict[str, Any]


def retry_delay(attempt: int) -> float:
    """Backoff before retry number `attempt` (1-based) of a failed batch."""
    return float(min(MAX_RETRY_DELAY, 0.1 * 2 ** (attempt - 1)))


def lambda_record(raw: Record, *, stream_arn: str, region: str) -> Record:
    """A GetRecords record in the shape Lambda delivers it (eventSourceARN added)."""
    body = dict(raw.get("dynamodb", {}))
    created = body.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        # Lambda's event carries epoch seconds; boto3 parses the wire number into a datetime.
        body["ApproximateCreationDateTime"] = int(created.timestamp())
    record = {key: value for key, value in raw.items() if key != "dynamodb"}
    identity = raw.get("userIdentity")
    if isinstance(identity, dict):  # GetRecords' {Type, PrincipalId}; Lambda's lower case
        record["userIdentity"] = {
            "type": identity.get("Type", identity.get("type")),
            "principalId": identity.get("PrincipalId", identity.get("principalId")),
        }
    record.update(
        eventSource="aws:dynamodb",
        awsRegion=region,  # moto always says us-east-1
        dynamodb=body,
        eventSourceARN=stream_arn,
    )
    record.setdefault("eventVersion", "1.1")
    return record


def sequence_number(record: Record) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


class RecordFilter:
    """A mapping's FilterCriteria: a record passes if any pattern matches (none: all pass)."""

    def __init__(self, patterns: Sequence[dict[str, Any]]) -> None:
        from moto.events.models import EventPattern

        self._patterns = [EventPattern.load(json.dumps(p)) for p in patterns]

    def matches(self, record: Record) -> bool:
        return not self._patterns or any(p.matches_event(cast(Any, record)) for p in self._patterns)


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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iterator: str | None = None
        self._last_read: str | None = None
        self._caught_up = threading.Event()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Take the starting position now (as creating the mapping does), then poll."""
        self._iterator = self._new_iterator()
        self._thread = threading.Thread(
            target=self._run, name=f"poller-{self.mapping.function_logical_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def caught_up(self) -> bool:
        """True when the last read found nothing new and every batch was delivered."""
        return self._caught_up.is_set()

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
        self.stats.filtered_out += len(records) - len(matching)
        for batch in batches(matching, max(1, self.mapping.batch_size)):
            if self._stop.is_set():
                break
            self._deliver(batch, retries=0)
            if self.faults is not None and self.faults.decide(
                "stream", self.mapping.function_name, "redeliver", f"{len(batch)} records"
            ):
                self.stats.redelivered += 1
                self._deliver(batch, retries=0)
        return len(records)

    # --- delivering ------------------------------------------------------------------

    def _deliver(self, batch: list[Record], *, retries: int) -> None:
        """Invoke until the batch succeeds, or its retries or age run out."""
        while batch and not self._stop.is_set():
            attempt = self._invoke(batch)
            if attempt.failed_from is None or self._stop.is_set():
                return
            if (
                attempt.function_error
                and self.mapping.bisect_batch_on_function_error
                and len(batch) > 1
            ):
                half = len(batch) // 2
                self.stats.retries += 1
                self._deliver(batch[:half], retries=retries + 1)
                self._deliver(batch[half:], retries=retries + 1)
                return
            batch = batch[attempt.failed_from :]
            retries += 1
            condition = self._exhausted(batch, retries)
            if condition:
                self._give_up(batch, condition, retries)
                return
            self.stats.retries += 1
            self._stop.wait(self.backoff(retries))

    def _exhausted(self, batch: list[Record], retries: int) -> str | None:
        limit = self.mapping.maximum_retry_attempts
        if limit is not None and retries > limit:
            return "RetryAttemptsExhausted"
        max_age = self.mapping.maximum_record_age_seconds
        created = batch[0]["dynamodb"].get("ApproximateCreationDateTime")
        too_old = isinstance(created, int | float) and time.time() - created > (max_age or 0)
        if max_age is not None and too_old:
            return "RecordAgeExceeded"
        return None

    def _invoke(self, batch: list[Record]) -> _Attempt:
        attempt = 0
        while True:
            try:
                invocation = self.invoke({"Records": batch})
                break
            except InvokeThrottled:
                # Not a retry of the batch: it never reached the function.
                self.stats.throttled += 1
                attempt += 1
                if self._stop.wait(self.backoff(min(attempt, 5))):
                    return _Attempt(failed_from=0, function_error=False)
            except Exception:
                log.exception("invoking %s failed; retrying the batch", self.mapping.function_name)
                return _Attempt(failed_from=0, function_error=True)
        self.stats.invocations += 1
        self.stats.delivered += len(batch)
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
        self.stats.discarded += len(batch)
        log.error("%s: skipping %d records (%s)", self.mapping.function_name, len(batch), condition)
        if self.sqs is None or not self.mapping.on_failure_physical_id:
            return
        self.sqs.send_message(
            QueueUrl=self.mapping.on_failure_physical_id,
            MessageBody=json.dumps(self.failure_message(batch, condition, retries)),
        )
        self.stats.on_failure_messages += 1

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


def batches(records: Sequence[Record], size: int) -> Iterator[list[Record]]:
    """Consecutive batches of at most `size` records and Invoke's 6 MB payload."""
    batch: list[Record] = []
    payload = len('{"Records": []}')
    for record in records:
        record_bytes = len(json.dumps(record, default=event_json)) + 2
        if batch and (len(batch) >= size or payload + record_bytes > MAX_PAYLOAD_BYTES):
            yield batch
            batch, payload = [], len('{"Records": []}')
        batch.append(record)
        payload += record_bytes
    if batch:
        yield batch


def first_failed_index(batch: Sequence[Record], response: Any) -> int | None:
    """Where to retry from, given a ReportBatchItemFailures response; None: all succeeded.

    As on AWS: an unreadable response or an identifier that is empty or not a
    SequenceNumber of the batch fails the whole batch.
    """
    if response is None:
        return None
    if not isinstance(response, dict):
        return 0
    failures = response.get("batchItemFailures")
    if failures is None:
        return None
    if not isinstance(failures, list):
        return 0
    if not failures:
        return None
    positions = {sequence_number(r): i for i, r in enumerate(batch)}
    indexes = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or str(identifier) not in positions:
            return 0
        indexes.append(positions[str(identifier)])
    return min(indexes)
