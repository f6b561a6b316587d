"""The moto server as the local stack needs it: serialised DynamoDB, config, quiet logs."""

from __future__ import annotations

import base64
import calendar
import contextlib
import datetime
import json
import logging
import threading
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from typing import Any

# What the moto server must do for the stack: run state machines, and no Docker Lambdas.
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@contextlib.contextmanager
def serialised_dynamodb() -> Iterator[threading.RLock]:
    """One lock around moto's DynamoDB (and Streams) request handling; yields the lock
    (the TTL deleter takes it too).

    Unserialised, two racing conditional claims can both win. Only these handlers are
    locked: a lock around the whole server deadlocks when a Lambda handler running
    inside a request calls back into the server.
    """
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    lock = threading.RLock()
    originals = [(cls, cls.call_action) for cls in (DynamoHandler, DynamoDBStreamsHandler)]

    def locked(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def call_action(self: Any) -> Any:
            with lock:
                return original(self)

        return call_action

    for cls, original in originals:
        setattr(cls, "call_action", locked(original))  # noqa: B010 (mypy: method assign)
    try:
        yield lock
    finally:
        for cls, original in originals:
            setattr(cls, "call_action", original)  # noqa: B010


# What moto's serializer answers a DynamoDB Streams call with.
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"


def _stream_json(value: Any) -> Any:
    """What moto's serializer makes of the non-JSON values in a stream record."""
    if isinstance(value, datetime.datetime):  # epoch seconds, truncated to milliseconds
        seconds = calendar.timegm(value.utctimetuple())
        return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds
    if isinstance(value, bytes):  # a B or BS value
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} in a stream record")


@contextlib.contextmanager
def fast_stream_records() -> Iterator[None]:
    """GetRecords answered with json.dumps instead of moto's response serializer.

    Moto 5.2 serialises every attribute value of every record by walking botocore's
    shape model: about 1.5 ms per record with both images, so the local stack's two
    pollers made GetRecords a quarter of the endpoint's CPU. Its records are already in
    DynamoDB's wire format but for a datetime and binary values, converted here as moto
    does; tests/integration/test_local_endpoint.py compares the two bodies.
    """
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    def get_records(self: Any) -> tuple[str, dict[str, str]]:
        limit = self._get_param("Limit")
        result = self.backend.get_records(
            self._get_param("ShardIterator"), 1000 if limit is None else limit
        )
        return json.dumps(result, default=_stream_json), {"Content-Type": JSON_CONTENT_TYPE}

    original = DynamoDBStreamsHandler.get_records
    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        DynamoDBStreamsHandler.get_records = original  # type: ignore[method-assign]


def moto_api(endpoint_url: str, path: str, body: dict[str, Any] | None = None) -> None:
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/{path}",
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@contextlib.contextmanager
def quiet_moto() -> Iterator[None]:
    """No per-request access log, no warnings for the resource types moto skips."""
    # Moto's Step Functions logs every failed execution as an error: routine here.
    quiet = {
        "werkzeug": logging.ERROR,
        "moto": logging.ERROR,
        "moto.stepfunctions": logging.CRITICAL,
    }
    loggers = [logging.getLogger(name) for name in quiet]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, quiet.values(), strict=True):
        logger.setLevel(level)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No Moto CloudFormation support")
        warnings.filterwarnings("ignore", message="Tried to parse")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def create_tasks_table(dynamodb: Any, name: str) -> str:
    """The tasks table as serverless.yml declares it, for a bare moto (tests, benchmarks).

    The local stack itself creates the table from the packaged template; this copy of its
    schema is checked against the template by tests/deploy. Returns the stream ARN.
    """
    from runner.config import RUN_AT_INDEX, STATUS_INDEX

    response = dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "status_shard", "AttributeType": "S"},
            {"AttributeName": "updated_at", "AttributeType": "S"},
            {"AttributeName": "scheduled_shard", "AttributeType": "S"},
            {"AttributeName": "run_at", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": STATUS_INDEX,
                "KeySchema": [
                    {"AttributeName": "status_shard", "KeyType": "HASH"},
                    {"AttributeName": "updated_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": RUN_AT_INDEX,
                "KeySchema": [
                    {"AttributeName": "scheduled_shard", "KeyType": "HASH"},
                    {"AttributeName": "run_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return str(response["TableDescription"]["LatestStreamArn"])


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A bare ThreadedMotoServer on loopback (tests, benchmarks), DynamoDB serialised and
    made atomic (`dynamodb_fidelity`), GetRecords answered by `fast_stream_records`, SQS
    visibility changes by SQS's rules (`sqs_visibility_fidelity`).

    Yields its endpoint URL. The local stack (runner.local.server) adds the service to it.
    """
    import logging

    from moto.server import ThreadedMotoServer

    from runner.local.dynamodb_fidelity import dynamodb_fidelity
    from runner.local.sqs_fidelity import sqs_visibility_fidelity

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with (
        serialised_dynamodb(),
        fast_stream_records(),
        dynamodb_fidelity(),
        sqs_visibility_fidelity(),
    ):
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


class StreamReader:
    """Reads a table's only shard (moto has one) from where it last stopped."""

    def __init__(self, streams: Any, stream_arn: str) -> None:
        self.streams = streams
        self.stream_arn = stream_arn
        shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]
        self.iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]

    def read(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Every new record, with the eventSourceARN Lambda's event source mapping adds."""
        records: list[dict[str, Any]] = []
        while True:
            page = self.streams.get_records(ShardIterator=self.iterator, Limit=limit)
            self.iterator = page["NextShardIterator"]
            batch = page.get("Records", [])
            for record in batch:
                record["eventSourceARN"] = self.stream_arn
                created = record["dynamodb"].get("ApproximateCreationDateTime")
                if hasattr(created, "timestamp"):  # boto3 parses it; Lambda sends epoch seconds
                    record["dynamodb"]["ApproximateCreationDateTime"] = created.timestamp()
            records += batch
            if not batch:
                return records

    def inserts(self) -> list[dict[str, Any]]:
        return [r for r in self.read() if r["eventName"] == "INSERT"]
