"""SQS event source mappings of the template, run locally (moto stores messages, and
honours `DelaySeconds`, but never delivers them to a function).

As Lambda's SQS pollers do: receive up to the mapping's batch size, invoke the function
with the `aws:sqs` event, delete what it handled (with `ReportBatchItemFailures`, all
but the message ids it lists; on a function error, none), and leave the rest to
reappear after the queue's visibility timeout. Up to the mapping's
`ScalingConfig.MaximumConcurrency` batches are in flight at once (AWS's default when
unset: 5 pollers to start with). Receives are short polls every `poll_interval`
(0.1 s): moto's long poll notices a delayed message becoming visible only once a
second, which would make a delayed task up to a second late.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.local.lambdas import Invoker, InvokeThrottled

log = logging.getLogger(__name__)

_ESM_TYPE = "AWS::Lambda::EventSourceMapping"
DEFAULT_POLL_INTERVAL = 0.1
# Lambda's SQS pollers: five to start with, when MaximumConcurrency is not set.
DEFAULT_CONCURRENCY = 5


@dataclass(frozen=True)
class QueueMapping:
    """One SQS event source mapping of the template."""

    logical_id: str
    function_logical_id: str
    queue_logical_id: str
    batch_size: int = 10
    maximum_concurrency: int = DEFAULT_CONCURRENCY
    report_batch_item_failures: bool = False


def queue_mappings(template: dict[str, Any]) -> tuple[QueueMapping, ...]:
    """The template's event source mappings whose source is a queue's `Arn`."""
    found = []
    for logical_id, resource in sorted(template.get("Resources", {}).items()):
        if resource.get("Type") != _ESM_TYPE:
            continue
        props = resource["Properties"]
        source = props.get("EventSourceArn", {}).get("Fn::GetAtt")
        if not (isinstance(source, list) and source[1:] == ["Arn"]):
            continue
        if template["Resources"].get(source[0], {}).get("Type") != "AWS::SQS::Queue":
            continue
        function = props["FunctionName"]
        target = function.get("Fn::GetAtt", [function.get("Ref")])[0]
        found.append(
            QueueMapping(
                logical_id=logical_id,
                function_logical_id=str(target),
                queue_logical_id=str(source[0]),
                batch_size=int(props.get("BatchSize", 10)),
                maximum_concurrency=int(
                    props.get("ScalingConfig", {}).get("MaximumConcurrency", DEFAULT_CONCURRENCY)
                ),
                report_batch_item_failures="ReportBatchItemFailures"
                in props.get("FunctionResponseTypes", []),
            )
        )
    return tuple(found)


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS message as Lambda's event carries it."""
    body = message["Body"]
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


@dataclass
class QueueStats:
    batches: int = 0
    messages: int = 0
    deleted: int = 0
    failed: int = 0
    throttled: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class QueuePoller:
    """Delivers one queue's messages to one function, as its mapping says."""

    def __init__(
        self,
        mapping: QueueMapping,
        invoke: Invoker,
        *,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        region: str,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.mapping = mapping
        self.invoke = invoke
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.region = region
        self.poll_interval = poll_interval
        self.stats = QueueStats()
        self._slots = threading.BoundedSemaphore(max(1, mapping.maximum_concurrency))
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, mapping.maximum_concurrency),
            thread_name_prefix=f"queue-{mapping.function_logical_id}",
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"queue-{self.mapping.function_logical_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=self.poll_interval):
                continue  # every batch slot is busy
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=min(10, self.mapping.batch_size),
                    AttributeNames=["All"],
                    WaitTimeSeconds=0,
                ).get("Messages", [])
            except Exception:
                self._slots.release()
                if not self._stop.is_set():
                    log.exception("receive from %s failed", self.queue_url)
                self._stop.wait(1.0)
                continue
            if not messages:
                self._slots.release()
                self._stop.wait(self.poll_interval)
                continue
            future: Future[None] = self._pool.submit(self._deliver, messages)
            future.add_done_callback(lambda _: self._slots.release())

    def _deliver(self, messages: list[dict[str, Any]]) -> None:
        records = [sqs_record(m, self.queue_arn, self.region) for m in messages]
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.messages += len(records)
        try:
            invocation = self.invoke({"Records": records})
        except InvokeThrottled:
            with self.stats.lock:
                self.stats.throttled += 1
            return  # they reappear after the visibility timeout, as on AWS
        except Exception:
            log.exception("invoking %s failed", self.mapping.function_logical_id)
            return
        failed: set[str] = set()
        if invocation.function_error:
            log.warning("%s failed: %s", self.mapping.function_logical_id, invocation.payload)
            failed = {r["messageId"] for r in records}
        elif self.mapping.report_batch_item_failures and isinstance(invocation.payload, dict):
            for item in invocation.payload.get("batchItemFailures") or []:
                if isinstance(item, dict):
                    failed.add(str(item.get("itemIdentifier")))
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        with self.stats.lock:
            self.stats.deleted += len(done)
            self.stats.failed += len(messages) - len(done)
