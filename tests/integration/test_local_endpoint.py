"""The local stack's endpoint process and its patches to moto."""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import boto3
import pytest
from moto import mock_aws

from runner.local.endpoint import EndpointError, EndpointProcess
from runner.local.motoserver import create_tasks_table, fast_stream_records

REGION = "us-east-1"


def _write_every_kind_of_attribute(dynamodb: Any, table: str) -> None:
    dynamodb.put_item(
        TableName=table,
        Item={
            "id": {"S": "a"},
            "bytes": {"B": b"\x00\xffbinary"},
            "byte_set": {"BS": [b"x", b"y"]},
            "number": {"N": "1.50"},
            "number_set": {"NS": ["1", "2"]},
            "string_set": {"SS": ["p", "q"]},
            "nested": {
                "M": {
                    "list": {"L": [{"NULL": True}, {"BOOL": False}, {"S": "é\u2028\"'\\"}]},
                    "empty": {"M": {}},
                }
            },
        },
    )
    dynamodb.update_item(
        TableName=table,
        Key={"id": {"S": "a"}},
        UpdateExpression="SET #n = :n REMOVE #b",
        ExpressionAttributeNames={"#n": "number", "#b": "bytes"},
        ExpressionAttributeValues={":n": {"N": "2"}},
    )
    dynamodb.delete_item(TableName=table, Key={"id": {"S": "a"}})


def _records_body(streams: Any, stream_arn: str) -> dict[str, Any]:
    """GetRecords from the shard's start, as the raw JSON body moto answered with."""
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    bodies: list[str] = []

    def keep(http_response: Any, **_: Any) -> None:
        assert http_response.headers["Content-Type"] == "application/x-amz-json-1.0"
        bodies.append(http_response.text)

    streams.meta.events.register("after-call.dynamodbstreams.GetRecords", keep)
    try:
        page = streams.get_records(ShardIterator=iterator)
    finally:
        streams.meta.events.unregister("after-call.dynamodbstreams.GetRecords", keep)
    assert len(page["Records"]) == 3
    body: dict[str, Any] = json.loads(bodies[0])
    return body


def test_fast_get_records_answers_what_moto_serialises() -> None:
    # Given a stream holding an INSERT, a MODIFY and a REMOVE of every attribute type
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        streams = boto3.client("dynamodbstreams", region_name=REGION)
        stream_arn = create_tasks_table(dynamodb, "tasks")
        _write_every_kind_of_attribute(dynamodb, "tasks")

        # When the records are read with moto's serializer and with the fast path
        slow = _records_body(streams, stream_arn)
        with fast_stream_records():
            fast = _records_body(streams, stream_arn)
            # And the fast path's NextShardIterator reads on from there
            following = streams.get_records(ShardIterator=fast["NextShardIterator"])

    # Then the records are the same JSON, and nothing follows them
    assert fast["Records"] == slow["Records"]
    assert following["Records"] == []


def test_endpoint_process_serves_reports_and_stops() -> None:
    # Given the endpoint process
    server = EndpointProcess()
    try:
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=server.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        server.stats()  # from here on

        # When a client creates a table and writes to it over HTTP
        table = f"t-{uuid.uuid4().hex[:6]}"
        create_tasks_table(dynamodb, table)
        dynamodb.put_item(TableName=table, Item={"id": {"S": "x"}})
        stats = server.stats()

        # Then the process served it and accounts for each action
        assert stats["DynamoHandler.CreateTable"]["calls"] == 1
        assert stats["DynamoHandler.PutItem"]["calls"] == 1
        assert server.stats() == {}  # taken means reset
    finally:
        server.stop()

    # And closing its stdin stopped it
    assert server.process.returncode == 0


def test_endpoint_process_reports_a_busy_port_at_once() -> None:
    # Given a port something else listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        started = time.monotonic()

        # When the endpoint is asked to listen there, then it says so without waiting
        with pytest.raises(EndpointError, match=r"cannot listen on 127\.0\.0\.1"):
            EndpointProcess(port=taken.getsockname()[1])
    assert time.monotonic() - started < 30


def test_endpoint_process_reports_a_handler_that_does_not_import() -> None:
    server = EndpointProcess()
    try:
        # When a function names a handler module that does not exist
        with pytest.raises(EndpointError, match="registering functions: ModuleNotFoundError"):
            server.register(
                [{"name": "broken", "handler": "no_such_module.run", "timeout": 3}], env={}
            )
        # Then the endpoint says which, and still answers
        assert server.stats() is not None
    finally:
        server.stop()
    assert server.process.returncode == 0
