"""Stream batches a mapping gave up on, read again from the stream and run.

When a stream mapping runs out of retries (or a batch grows older than its maximum
record age), Lambda sends only the batch's metadata to the on-failure queue: the shard
and the first and last sequence numbers. The stream keeps its records for 24 hours, so
the sweeper reads that range again and hands it to the same code the two mappings run:
PENDING INSERTs are dispatched, retryable failures routed. Both are idempotent, so a
record that was in fact processed does nothing. Recovery then costs in proportion to
what was lost, not to the size of the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from runner.aws import AwsClients, AwsRetryPolicy
from runner.config import Settings
from runner.errors import MalformedTask
from runner.items import deserialize_image, task_from_item
from runner.logs import get_logger
from runner.model import Task, TaskStatus
from runner.payload_cleanup import delete_removed

if TYPE_CHECKING:
    from runner.payloads import PayloadStore
    from runner.stream import StreamProcessor
    from runner.workflow import RetryWorkflow

# Messages asked for per ReceiveMessage (SQS's maximum).
RECEIVE_BATCH = 10
# While one sweep replays a message, no other sees it (about a sweep's timeout).
VISIBILITY_SECONDS = 300
# GetRecords pages without records before a range is taken as read to its end (an open
# shard can answer empty pages before the records it still holds).
MAX_EMPTY_PAGES = 5
# Codes that mean the records are no longer in the stream (older than 24 hours).
GONE_CODES = frozenset({"TrimmedDataAccessException", "ResourceNotFoundException"})
# Time kept back for the replay's own writes and the queue's bookkeeping.
REPLAY_MARGIN_SECONDS = 10.0


class ReplayError(Exception):
    """SQS or DynamoDB Streams failed for a reason other than lost records."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ReplayReport:
    messages: int = 0  # on-failure messages handled (and deleted)
    records: int = 0  # stream records read again
    lost: int = 0  # messages whose records the stream no longer holds
    kept: int = 0  # messages left for the next sweep (something failed again)
    failed: int = 0  # of those, messages whose replay raised (counted in `kept` too)


class FailedBatchReplay:
    """Reads the on-failure queue and replays each batch's records."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        stream: StreamProcessor,
        workflow: RetryWorkflow | None,
        *,
        payloads: PayloadStore | None = None,
        retry_policy: AwsRetryPolicy | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.stream = stream
        self.workflow = workflow
        self.payloads = payloads
        self.retry_policy = retry_policy or AwsRetryPolicy()
        self._sleep = sleep
        self.log = get_logger()

    def _aws(self, client: Any, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One SQS or Streams call with tenacity retries; only AWS's code leaves it."""
        extra = {"sleep": self._sleep} if self._sleep else {}
        try:
            result: dict[str, Any] = self.retry_policy.call(
                getattr(client, operation), **extra, **kwargs
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise ReplayError(f"{operation} failed: {code}", code) from exc
        except BotoCoreError as exc:
            raise ReplayError(f"{operation} failed: {type(exc).__name__}") from exc
        return result

    def run(
        self,
        remaining_seconds: Callable[[], float],
        runnable: Callable[[Task], bool] | None = None,
    ) -> ReplayReport:
        """Replay what the queue holds, while time is left. A batch holding a task that
        `runnable` refuses (a type this process does not register) is left in the queue,
        unreplayed, for a sweep that can run it (the deployment's)."""
        report = ReplayReport()
        queue = self.settings.failed_batch_queue_url
        if not queue:
            return report
        while remaining_seconds() > REPLAY_MARGIN_SECONDS:
            page = self._aws(
                self.clients.sqs,
                "receive_message",
                QueueUrl=queue,
                MaxNumberOfMessages=RECEIVE_BATCH,
                VisibilityTimeout=VISIBILITY_SECONDS,
                WaitTimeSeconds=0,
            )
            messages = page.get("Messages", [])
            if not messages:
                break
            for message in messages:
                if remaining_seconds() <= REPLAY_MARGIN_SECONDS:
                    break
                try:
                    done = self._replay_message(message, remaining_seconds, report, runnable)
                    if done:
                        self._aws(
                            self.clients.sqs,
                            "delete_message",
                            QueueUrl=queue,
                            ReceiptHandle=message["ReceiptHandle"],
                        )
                except Exception as exc:
                    # One message never stops the others (I6): it stays in the queue and
                    # comes back after its visibility timeout; the queue's redrive
                    # policy moves it to the dead-letter queue once it keeps failing.
                    done = False
                    report.failed += 1
                    self.log.error(
                        "failed stream batch not replayed; left in the queue",
                        extra={
                            "error_type": type(exc).__name__,
                            "error": str(exc) if isinstance(exc, ReplayError) else "",
                        },
                    )
                if done:
                    report.messages += 1
                else:
                    report.kept += 1
        return report

    def _replay_message(
        self,
        message: dict[str, Any],
        remaining: Callable[[], float],
        report: ReplayReport,
        runnable: Callable[[Task], bool] | None = None,
    ) -> bool:
        """True when the message is done with (replayed, or beyond replaying)."""
        info = _batch_info(message.get("Body"))
        if info is None:
            self.log.error("on-failure message without stream batch metadata; dropped")
            return True
        try:
            records = self.read_range(info)
        except ReplayError as exc:
            if exc.code not in GONE_CODES:
                raise
            report.lost += 1
            self.log.error(
                "failed stream batch no longer in the stream; `sweep` from the CLI "
                "(a full Scan) finds its PENDING tasks",
                extra={
                    "shard_id": info["shardId"],
                    "first_sequence": info["startSequenceNumber"],
                    "last_sequence": info["endSequenceNumber"],
                },
            )
            return True
        if runnable is not None and not all(runnable(t) for t in _tasks(records)):
            self.log.info(
                "failed stream batch left for a sweep that registers its task types",
                extra={"shard_id": info["shardId"], "records": len(records)},
            )
            return False
        report.records += len(records)
        done = not self.stream.process(records, remaining_seconds=remaining).failed_sequence_numbers
        if self.workflow is not None and self.settings.state_machine_arn:
            done = not self.workflow.route(records).failed_sequence_numbers and done
        removed = [r for r in records if r.get("eventName") == "REMOVE"]
        if removed and self.payloads is not None:
            # routeFailed's mapping deletes a removed task's objects; replayed, the sweep
            # does (no lifecycle rule covers tasks/, and the item naming them is gone)
            done = not delete_removed(self.payloads, removed) and done
        self.log.warning(
            "replayed a failed stream batch",
            extra={"shard_id": info["shardId"], "records": len(records), "complete": done},
        )
        return done

    def read_range(self, info: dict[str, str]) -> list[dict[str, Any]]:
        """The records of one shard from `startSequenceNumber` to `endSequenceNumber`."""
        streams = self.clients.dynamodbstreams
        iterator: str | None = self._aws(
            streams,
            "get_shard_iterator",
            StreamArn=info["streamArn"],
            ShardId=info["shardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=info["startSequenceNumber"],
        )["ShardIterator"]
        end = int(info["endSequenceNumber"])
        records: list[dict[str, Any]] = []
        empty = 0
        while iterator and empty < MAX_EMPTY_PAGES:
            page = self._aws(streams, "get_records", ShardIterator=iterator, Limit=1000)
            batch = page.get("Records", [])
            empty = 0 if batch else empty + 1
            for record in batch:
                if int(record["dynamodb"]["SequenceNumber"]) > end:
                    return records
                records.append(record)
            if records and int(records[-1]["dynamodb"]["SequenceNumber"]) >= end:
                return records
            iterator = page.get("NextShardIterator")
        return records


def _tasks(records: list[dict[str, Any]]) -> list[Task]:
    """The PENDING tasks the records' new images hold, which a replay would run here
    (routing runs nothing here; the stream fails unreadable items whatever their type)."""
    tasks = []
    for record in records:
        image = record.get("dynamodb", {}).get("NewImage")
        if isinstance(image, dict):
            try:
                task = task_from_item(deserialize_image(image))
            except MalformedTask:
                continue
            if task.status is TaskStatus.PENDING:
                tasks.append(task)
    return tasks


def _batch_info(body: Any) -> dict[str, str] | None:
    """The DDBStreamBatchInfo of an on-failure message, or None if it has none."""
    try:
        info = json.loads(body).get("DDBStreamBatchInfo")
        keys = ("streamArn", "shardId", "startSequenceNumber", "endSequenceNumber")
        if isinstance(info, dict) and all(isinstance(info.get(k), str) for k in keys):
            int(info["startSequenceNumber"]), int(info["endSequenceNumber"])
            return {k: info[k] for k in keys}
    except (TypeError, ValueError, AttributeError):
        pass
    return None
