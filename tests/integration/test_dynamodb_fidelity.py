"""The shared test server's DynamoDB (moto + runner.local.dynamodb_fidelity) refuses and
applies writes as DynamoDB does: atomically, by DynamoDB's size and number rules, and
with one stream record per change. docs/MOTO-GAPS.md has what bare moto does instead."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from runner.item_size import MAX_ITEM_BYTES, wire_item_size
from runner.local.motoserver import StreamReader, create_tasks_table

REGION = "us-east-1"


@pytest.fixture
def table(moto_server: str, request: pytest.FixtureRequest) -> tuple[Any, str, StreamReader]:
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server, region_name=REGION)
    name = f"fidelity-{abs(hash(request.node.nodeid)) % 10**8}"
    stream_arn = create_tasks_table(dynamodb, name)
    streams = boto3.client("dynamodbstreams", endpoint_url=moto_server, region_name=REGION)
    return dynamodb, name, StreamReader(streams, stream_arn)


def _item(message_chars: int) -> dict[str, Any]:
    return {
        "id": {"S": "big"},
        "type": {"S": "NOOP_TASK"},
        "status": {"S": "PROCESSING"},
        "data": {"M": {"message": {"S": "x" * message_chars}}},
    }


def _largest_message_that_fits() -> int:
    overhead = wire_item_size(_item(0))
    return MAX_ITEM_BYTES - overhead


def test_items_are_sized_by_dynamodbs_rules(table: tuple[Any, str, StreamReader]) -> None:
    dynamodb, name, _ = table
    fits = _largest_message_that_fits()
    # Bare moto refuses this item above 404,957 characters; DynamoDB allows 409,551 here.
    assert fits > 409_000
    dynamodb.put_item(TableName=name, Item=_item(fits))
    with pytest.raises(ClientError, match="Item size has exceeded"):
        dynamodb.put_item(TableName=name, Item=_item(fits + 1))


def test_a_refused_update_changes_nothing(table: tuple[Any, str, StreamReader]) -> None:
    dynamodb, name, stream = table
    dynamodb.put_item(TableName=name, Item=_item(_largest_message_that_fits() - 100))
    stream.read()
    with pytest.raises(ClientError, match="Item size to update has exceeded"):
        dynamodb.update_item(
            TableName=name,
            Key={"id": {"S": "big"}},
            UpdateExpression="SET #s = :failed, #e = :error",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},
            ExpressionAttributeValues={":failed": {"S": "FAILED"}, ":error": {"S": "e" * 500}},
        )
    item = dynamodb.get_item(TableName=name, Key={"id": {"S": "big"}}, ConsistentRead=True)["Item"]
    # Bare moto leaves status FAILED here although the write was refused.
    assert item["status"] == {"S": "PROCESSING"} and "error" not in item
    assert stream.read() == []


def test_numbers_dynamodb_cannot_store_are_refused(table: tuple[Any, str, StreamReader]) -> None:
    dynamodb, name, _ = table
    dynamodb.put_item(TableName=name, Item={"id": {"S": "n"}, "status": {"S": "PENDING"}})
    for number in (str(10**200), "1" * 39, "1E-131"):
        with pytest.raises(ClientError, match="ValidationException"):
            dynamodb.update_item(
                TableName=name,
                Key={"id": {"S": "n"}},
                UpdateExpression="SET #r = :r, #s = :done",
                ExpressionAttributeNames={"#r": "result", "#s": "status"},
                ExpressionAttributeValues={
                    ":r": {"M": {"n": {"N": number}}},
                    ":done": {"S": "DONE"},
                },
            )
    item = dynamodb.get_item(TableName=name, Key={"id": {"S": "n"}}, ConsistentRead=True)["Item"]
    assert item == {"id": {"S": "n"}, "status": {"S": "PENDING"}}
    dynamodb.update_item(
        TableName=name,
        Key={"id": {"S": "n"}},
        UpdateExpression="SET #r = :r",
        ExpressionAttributeNames={"#r": "result"},
        ExpressionAttributeValues={":r": {"N": "9.9999999999999999999999999999999999999E+125"}},
    )


def test_one_stream_record_per_change_and_none_for_no_change(
    table: tuple[Any, str, StreamReader],
) -> None:
    dynamodb, name, stream = table
    # An UpdateItem that creates its item: one INSERT (bare moto emits two).
    dynamodb.update_item(
        TableName=name,
        Key={"id": {"S": "u"}},
        UpdateExpression="SET #s = :p",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":p": {"S": "PENDING"}},
    )
    records = stream.read()
    assert [r["eventName"] for r in records] == ["INSERT"]
    assert records[0]["dynamodb"]["NewImage"]["status"] == {"S": "PENDING"}
    # A write that changes nothing: no record (bare moto emits a MODIFY).
    dynamodb.update_item(
        TableName=name,
        Key={"id": {"S": "u"}},
        UpdateExpression="SET #s = :p",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":p": {"S": "PENDING"}},
    )
    dynamodb.put_item(TableName=name, Item={"id": {"S": "u"}, "status": {"S": "PENDING"}})
    assert stream.read() == []
    dynamodb.put_item(TableName=name, Item={"id": {"S": "u"}, "status": {"S": "DONE"}})
    assert [r["eventName"] for r in stream.read()] == ["MODIFY"]


def test_a_failed_condition_changes_nothing(table: tuple[Any, str, StreamReader]) -> None:
    dynamodb, name, stream = table
    dynamodb.put_item(TableName=name, Item={"id": {"S": "c"}, "status": {"S": "DONE"}})
    stream.read()
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        dynamodb.update_item(
            TableName=name,
            Key={"id": {"S": "c"}},
            UpdateExpression="SET #s = :p",
            ConditionExpression="#s = :p",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":p": {"S": "PENDING"}},
        )
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        dynamodb.update_item(
            TableName=name,
            Key={"id": {"S": "absent"}},
            UpdateExpression="SET #s = :p",
            ConditionExpression="attribute_exists(id)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":p": {"S": "PENDING"}},
        )
    assert "Item" not in dynamodb.get_item(TableName=name, Key={"id": {"S": "absent"}})
    assert stream.read() == []
