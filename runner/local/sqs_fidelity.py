"""Moto's SQS made to change a message's visibility as SQS documents it.

ChangeMessageVisibility (SQS API Reference): the new timeout counts from the call; "you
can't extend the timeout of a message ... to more than a total visibility timeout of 12
hours", counted from the message's receipt; a message that is not in flight (received
and not deleted, its visibility not passed) is refused with `MessageNotInflight`. Moto
5.2.5 counts the 12 hours from when the message was *sent* (so a message received 12 hours
after it was sent can never be held, and one delayed or kept in the queue a while gets
less than AWS gives), and changes a visible message's visibility as if it were in flight.
The timer queue's consumer (`runner.timer_inbox`) holds early timers this way; the local
stack and the tests get these rules. docs/MOTO-GAPS.md has the gap.

`sqs_visibility_fidelity()` patches moto's SQS backend for the duration of the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

# SQS: the longest visibility timeout, in all, from a message's receipt.
MAX_VISIBILITY_SECONDS = 12 * 3600


@contextlib.contextmanager
def sqs_visibility_fidelity() -> Iterator[None]:
    from moto.core.utils import unix_time_millis
    from moto.sqs import models
    from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid, SQSException

    class MessageNotInflight(SQSException):
        def __init__(self) -> None:
            super().__init__(
                "AWS.SimpleQueueService.MessageNotInflight", "The message is not in flight."
            )

    message_class, backend_class = models.Message, models.SQSBackend
    original_received = message_class.mark_received
    original_change = backend_class.change_message_visibility

    def mark_received(self: Any, visibility_timeout: int | None = None) -> None:
        original_received(self, visibility_timeout)
        self.received_timestamp = int(unix_time_millis())  # the latest receipt

    def change_message_visibility(
        self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int
    ) -> None:
        queue = self.get_queue(queue_name)
        for message in queue._messages:
            if not message.had_receipt_handle(receipt_handle):
                continue
            if message.visible:
                raise MessageNotInflight()
            received = getattr(message, "received_timestamp", None) or message.sent_timestamp
            total = unix_time_millis() + int(visibility_timeout) * 1000 - received
            if total > MAX_VISIBILITY_SECONDS * 1000:
                raise InvalidParameterValue(
                    f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid."
                    f" Reason: Total VisibilityTimeout for the message is beyond the limit"
                    f" [{MAX_VISIBILITY_SECONDS} seconds]"
                )
            message.change_visibility(visibility_timeout)
            if message.visible and message in queue.pending_messages:
                queue.pending_messages.remove(message)
            return
        raise ReceiptHandleIsInvalid()

    message_class.mark_received = mark_received  # type: ignore[method-assign]
    backend_class.change_message_visibility = change_message_visibility  # type: ignore[method-assign]
    try:
        yield
    finally:
        message_class.mark_received = original_received  # type: ignore[method-assign]
        backend_class.change_message_visibility = original_change  # type: ignore[method-assign]
