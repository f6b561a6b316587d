"""Moto's SQS (with runner.local.sqs_fidelity, on in every test and in the local stack)
changes a message's visibility as SQS documents it: from the call, up to 12 hours in all
from the message's receipt, and only for a message in flight. The second and third tests
fail against bare moto 5.2.5 (docs/MOTO-GAPS.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.sqs.models import sqs_backends

HOURS = 3600


@pytest.fixture
def queue(aws: None) -> Iterator[tuple[Any, str]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="fidelity", Attributes={"VisibilityTimeout": "30"})
    yield sqs, url["QueueUrl"]


def _receive(sqs: Any, url: str) -> list[dict[str, Any]]:
    return list(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []))


def test_a_held_message_comes_back_when_its_new_visibility_ends(queue: tuple[Any, str]) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody="timer")
    [message] = _receive(sqs, url)

    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=1
    )

    assert _receive(sqs, url) == []
    time.sleep(1.2)
    [again] = _receive(sqs, url)
    assert again["MessageId"] == message["MessageId"]


def test_the_12_hours_count_from_the_receipt_not_from_the_send(queue: tuple[Any, str]) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody="kept a while")
    [stored] = sqs_backends["123456789012"]["us-east-1"].get_queue("fidelity")._messages
    stored.sent_timestamp -= 13 * HOURS * 1000  # sent 13 hours ago, received now
    [message] = _receive(sqs, url)

    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=11 * HOURS
    )
    with pytest.raises(ClientError, match="beyond the limit"):
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=12 * HOURS
        )


def test_a_message_not_in_flight_is_refused(queue: tuple[Any, str]) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody="timer")
    [message] = _receive(sqs, url)
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    time.sleep(0.01)

    with pytest.raises(ClientError) as refused:
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=60
        )

    assert "MessageNotInflight" in refused.value.response["Error"]["Code"]
    assert len(_receive(sqs, url)) == 1  # still visible: the refused call hid nothing
