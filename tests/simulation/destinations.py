"""What a stream mapping's give-up leaves for the sweeper, on the simulation's clock.

- The on-failure destination and the timer queue: SQS standard queues (`SqsService`)
  as AWS documents them. A message sent with DelaySeconds (at most 900) is hidden that
  long; a received message is invisible for the VisibilityTimeout asked for (else the
  queue's, 30 s by default), then visible again; messages older than the queue's
  MessageRetentionPeriod are dropped; DeleteMessage with a receipt handle that is not
  the latest one succeeds without deleting ("you must provide the most recently received
  receipt handle ... otherwise, the request succeeds, but the message might not be
  deleted": SQS Developer Guide). Lambda sends it an invocation record of metadata only:
  `DDBStreamBatchInfo` with the shard and the batch's first and last sequence numbers
  (`failure_message`).
- DynamoDB Streams read back (`StreamsClient`): GetShardIterator and GetRecords over the
  table's one shard, read from moto's backend, each record stamped with the virtual time
  it was written, and trimmed after the stream's 24 hours (TrimmedDataAccessException
  for an iterator at a trimmed record).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from botocore.exceptions import ClientError

from tests.simulation.fibers import SimClock
from tests.simulation.topology import ACCOUNT, REGION

# SQS's defaults (a queue without these properties).
DEFAULT_VISIBILITY_SECONDS = 30
DEFAULT_RETENTION_SECONDS = 4 * 24 * 3600
MAX_RECEIVE = 10
# A message's DelaySeconds: at most 15 minutes (SQS Developer Guide, delay queues).
MAX_DELAY_SECONDS = 900
# DynamoDB Streams keeps records this long.
STREAM_RETENTION_SECONDS = 24 * 3600

Record = dict[str, Any]

# ChangeMessageVisibility: at most 12 hours from the message's receipt.
MAX_VISIBILITY_SECONDS = 12 * 3600


def _error(code: str, message: str, operation: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, operation)


def queue_url(name: str) -> str:
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"


def _iso(moment: float) -> str:
    stamp = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def failure_message(
    *,
    function_arn: str,
    stream_arn: str,
    shard_id: str,
    records: list[Record],
    condition: str,
    retries: int,
    now: float,
) -> Record:
    """The invocation record Lambda sends to a stream mapping's OnFailure destination."""

    def arrival(record: Record) -> str:
        moment = float(record["dynamodb"].get("ApproximateCreationDateTime", 0))
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": retries,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": _iso(now),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": str(records[0]["dynamodb"]["SequenceNumber"]),
            "endSequenceNumber": str(records[-1]["dynamodb"]["SequenceNumber"]),
            "approximateArrivalOfFirstRecord": arrival(records[0]),
            "approximateArrivalOfLastRecord": arrival(records[-1]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


@dataclass
class Message:
    id: str
    body: str
    sent_at: float
    visible_at: float
    receipt: str | None = None
    receives: int = 0
    received_at: float = 0.0


@dataclass
class Queue:
    name: str
    url: str
    visibility_seconds: float = DEFAULT_VISIBILITY_SECONDS
    retention_seconds: float = DEFAULT_RETENTION_SECONDS
    messages: list[Message] = field(default_factory=list)
    deleted: int = 0
    dropped: int = 0  # past the retention period, never deleted


class SqsService:
    """Standard queues on the virtual clock, and the API the runner calls."""

    class _Meta:
        method_to_api_mapping: ClassVar[dict[str, str]] = {
            "send_message": "SendMessage",
            "receive_message": "ReceiveMessage",
            "delete_message": "DeleteMessage",
            "change_message_visibility": "ChangeMessageVisibility",
            "get_queue_url": "GetQueueUrl",
        }

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.queues: dict[str, Queue] = {}
        self.meta = self._Meta()
        self._ids = itertools.count(1)

    def create_queue(self, name: str, properties: dict[str, Any]) -> Queue:
        queue = Queue(
            name,
            queue_url(name),
            float(properties.get("VisibilityTimeout", DEFAULT_VISIBILITY_SECONDS)),
            float(properties.get("MessageRetentionPeriod", DEFAULT_RETENTION_SECONDS)),
        )
        self.queues[queue.url] = queue
        return queue

    def _queue(self, url: str, operation: str) -> Queue:
        queue = self.queues.get(url)
        if queue is None:
            raise _error("AWS.SimpleQueueService.NonExistentQueue", url, operation)
        now = self.clock.t
        expired = [m for m in queue.messages if now - m.sent_at > queue.retention_seconds]
        queue.dropped += len(expired)
        queue.messages = [m for m in queue.messages if m not in expired]
        return queue

    def visible(self) -> int:
        """Messages a receive would return now, in every queue."""
        now = self.clock.t
        return sum(1 for q in self.queues.values() for m in q.messages if m.visible_at <= now)

    def waiting(self) -> int:
        return sum(len(q.messages) for q in self.queues.values())

    def next_visible(self, url: str) -> float | None:
        """When the queue's next message hidden now (delayed, or received and not
        deleted) becomes visible."""
        now = self.clock.t
        times = [m.visible_at for m in self.queues[url].messages if m.visible_at > now]
        return min(times) if times else None

    # --- the API ---------------------------------------------------------------------

    def get_queue_url(self, *, QueueName: str, **_: Any) -> dict[str, Any]:
        url = queue_url(QueueName)
        self._queue(url, "GetQueueUrl")
        return {"QueueUrl": url}

    def send_message(
        self, *, QueueUrl: str, MessageBody: str, DelaySeconds: int = 0, **_: Any
    ) -> dict[str, Any]:
        queue = self._queue(QueueUrl, "SendMessage")
        if not 0 <= DelaySeconds <= MAX_DELAY_SECONDS:
            raise _error("InvalidParameterValue", "DelaySeconds", "SendMessage")
        now = self.clock.t
        message = Message(f"m{next(self._ids)}", MessageBody, now, now + DelaySeconds)
        queue.messages.append(message)
        md5 = hashlib.md5(MessageBody.encode(), usedforsecurity=False).hexdigest()
        return {"MessageId": message.id, "MD5OfMessageBody": md5}

    def receive_message(
        self,
        *,
        QueueUrl: str,
        MaxNumberOfMessages: int = 1,
        VisibilityTimeout: int | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        queue = self._queue(QueueUrl, "ReceiveMessage")
        if not 1 <= MaxNumberOfMessages <= MAX_RECEIVE:
            raise _error("InvalidParameterValue", "MaxNumberOfMessages", "ReceiveMessage")
        now = self.clock.t
        hide = queue.visibility_seconds if VisibilityTimeout is None else float(VisibilityTimeout)
        out: list[dict[str, str]] = []
        for message in queue.messages:
            if len(out) == MaxNumberOfMessages:
                break
            if message.visible_at > now:
                continue
            message.visible_at = now + hide
            message.receipt = f"{message.id}#{next(self._ids)}"
            message.receives += 1
            message.received_at = now
            out.append(
                {
                    "MessageId": message.id,
                    "ReceiptHandle": message.receipt,
                    "Body": message.body,
                    "MD5OfBody": hashlib.md5(
                        message.body.encode(), usedforsecurity=False
                    ).hexdigest(),
                }
            )
        return {"Messages": out} if out else {}

    def delete_message(self, *, QueueUrl: str, ReceiptHandle: str, **_: Any) -> dict[str, Any]:
        queue = self._queue(QueueUrl, "DeleteMessage")
        if "#" not in ReceiptHandle:
            raise _error("ReceiptHandleIsInvalid", ReceiptHandle, "DeleteMessage")
        for message in queue.messages:
            if message.receipt == ReceiptHandle:
                queue.messages.remove(message)
                queue.deleted += 1
                break
        return {}

    def change_message_visibility(
        self, *, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int, **_: Any
    ) -> dict[str, Any]:
        """SQS's rules: the message must be in flight under this receipt, and its
        visibility may reach at most 12 hours from that receipt."""
        queue = self._queue(QueueUrl, "ChangeMessageVisibility")
        if "#" not in ReceiptHandle:
            raise _error("ReceiptHandleIsInvalid", ReceiptHandle, "ChangeMessageVisibility")
        now = self.clock.t
        for message in queue.messages:
            if message.receipt == ReceiptHandle and message.visible_at > now:
                if not 0 <= VisibilityTimeout <= MAX_VISIBILITY_SECONDS or (
                    now + VisibilityTimeout - message.received_at > MAX_VISIBILITY_SECONDS
                ):
                    raise _error(
                        "InvalidParameterValue", "VisibilityTimeout", "ChangeMessageVisibility"
                    )
                message.visible_at = now + VisibilityTimeout
                return {}
        raise _error("MessageNotInflight", ReceiptHandle, "ChangeMessageVisibility")


class StreamsClient:
    """DynamoDB Streams' read API over the simulated table's one shard."""

    class _Meta:
        method_to_api_mapping: ClassVar[dict[str, str]] = {
            "get_shard_iterator": "GetShardIterator",
            "get_records": "GetRecords",
        }

    def __init__(
        self,
        clock: SimClock,
        stream_arn: str,
        shard: Callable[[], Any],
        written_at: Callable[[str], float],
    ) -> None:
        self.clock = clock
        self.stream_arn = stream_arn
        self._shard = shard  # moto's StreamShard of the table
        self._written_at = written_at
        self.meta = self._Meta()

    def shard_id(self) -> str:
        return str(self._shard().id)

    def _records(self) -> list[Record]:
        return [r.to_json() for r in self._shard().items]

    def _trimmed(self, record: Record) -> bool:
        seq = str(record["dynamodb"]["SequenceNumber"])
        return self.clock.t - self._written_at(seq) > STREAM_RETENTION_SECONDS

    def get_shard_iterator(
        self,
        *,
        StreamArn: str,
        ShardId: str,
        ShardIteratorType: str,
        SequenceNumber: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        if StreamArn != self.stream_arn or ShardId != self.shard_id():
            raise _error("ResourceNotFoundException", StreamArn, "GetShardIterator")
        records = self._records()
        if ShardIteratorType == "TRIM_HORIZON":
            index = next((i for i, r in enumerate(records) if not self._trimmed(r)), len(records))
        elif ShardIteratorType == "LATEST":
            index = len(records)
        elif ShardIteratorType in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            if SequenceNumber is None:
                raise _error("ValidationException", "SequenceNumber", "GetShardIterator")
            wanted = int(SequenceNumber)
            index = next(
                (
                    i
                    for i, r in enumerate(records)
                    if int(r["dynamodb"]["SequenceNumber"]) >= wanted
                ),
                len(records),
            )
            if index < len(records) and self._trimmed(records[index]):
                raise _error(
                    "TrimmedDataAccessException",
                    "the sequence number is beyond the trim horizon",
                    "GetShardIterator",
                )
            if ShardIteratorType == "AFTER_SEQUENCE_NUMBER" and index < len(records):
                index += int(records[index]["dynamodb"]["SequenceNumber"]) == wanted
        else:
            raise _error("ValidationException", ShardIteratorType, "GetShardIterator")
        return {"ShardIterator": f"sim-iterator:{index}"}

    def get_records(self, *, ShardIterator: str, Limit: int = 1000, **_: Any) -> dict[str, Any]:
        try:
            index = int(ShardIterator.removeprefix("sim-iterator:"))
        except ValueError as exc:
            raise _error("ValidationException", ShardIterator, "GetRecords") from exc
        records = self._records()
        page = records[index : index + max(1, min(Limit, 1000))]
        if page and self._trimmed(page[0]):
            raise _error("TrimmedDataAccessException", "trimmed", "GetRecords")
        out: list[Record] = []
        for record in page:
            copied = copy.deepcopy(record)
            seq = str(copied["dynamodb"]["SequenceNumber"])
            # boto3 parses the timestamp into a datetime.
            copied["dynamodb"]["ApproximateCreationDateTime"] = datetime.fromtimestamp(
                int(self._written_at(seq)), UTC
            )
            out.append(copied)
        return {"Records": out, "NextShardIterator": f"sim-iterator:{index + len(page)}"}
