"""Faults: throttling on a share of DynamoDB calls, Step Functions down while routing."""

from __future__ import annotations

import random
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError

import handler
from runner.app import App
from runner.aws import AwsClients
from runner.config import Settings
from runner.local import demo_tasks
from runner.model import TaskStatus
from tasks import build_registry
from tests.helpers import FakeLambdaContext, StreamReader, create_tasks_table, pending, put_raw


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kwargs: Any) -> Any:
        return iter([self._body])

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return self._body


def inject(
    client: Any, service_prefix: str, share: float, error: str, status: int, seed: int = 1
) -> dict[str, int]:
    """Answer a share of a client's calls with an AWS error before they are sent."""
    rng = random.Random(seed)
    counts = {"calls": 0, "injected": 0}

    def before_send(request: Any, **kwargs: Any) -> AWSResponse | None:
        counts["calls"] += 1
        if rng.random() >= share:
            return None
        counts["injected"] += 1
        body = f'{{"__type":"{service_prefix}#{error}","message":"injected"}}'.encode()
        return AWSResponse(request.url, status, {"x-amzn-ErrorType": error}, _Raw(body))

    client.meta.events.register("before-send", before_send)
    return counts


def test_twenty_percent_throttling_loses_no_task(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = "throttled"
    producer = boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1")
    stream_arn = create_tasks_table(producer, table)
    settings = Settings(table_name=table, endpoint_url=moto_server)
    app = App.build(settings, build_registry(["runner.local.demo_tasks"]), AwsClients(settings))
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    for n in range(200):
        put_raw(producer, table, pending(f"t{n:03d}", "NOOP_TASK", {}))
    records = StreamReader(
        boto3.client("dynamodbstreams", endpoint_url=moto_server, region_name="us-east-1"),
        stream_arn,
    ).read()
    counts = inject(
        app.clients.dynamodb,
        "com.amazonaws.dynamodb.v20120810",
        0.2,
        "ProvisionedThroughputExceededException",
        400,
    )
    # As Lambda does: redeliver from each reported failure until the batch succeeds.
    deliveries = 0
    pending_records = records
    while pending_records:
        deliveries += 1
        assert deliveries < 10
        response = handler.process_stream({"Records": pending_records}, FakeLambdaContext())
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        pending_records = [r for r in pending_records if r["dynamodb"]["SequenceNumber"] in failed]
    print(
        f"{counts['injected']} of {counts['calls']} DynamoDB calls throttled; "
        f"{deliveries} deliveries"
    )
    assert counts["injected"] > 50
    app.clients.dynamodb.meta.events.unregister("before-send")
    statuses = [app.store.get(f"t{n:03d}").status for n in range(200)]
    assert statuses == [TaskStatus.DONE] * 200
    assert set(demo_tasks.EFFECTS.values()) == {1} and len(demo_tasks.EFFECTS) == 200


def test_step_functions_down_while_routing_is_retried_not_forgotten(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from moto.core import DEFAULT_ACCOUNT_ID

    from runner.local.statemachine import load_definition

    sfn = app.clients.stepfunctions
    arn = sfn.create_state_machine(
        name="retry",
        roleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/x",
        definition=load_definition(
            {
                "RunTaskFunctionArn": "arn:aws:lambda:us-east-1:"
                f"{DEFAULT_ACCOUNT_ID}:function:runTask",
                "ExportFunctionArn": "arn:aws:lambda:us-east-1:"
                f"{DEFAULT_ACCOUNT_ID}:function:runExport",
            }
        ),
    )["stateMachineArn"]
    routed = App.build(replace(app.settings, state_machine_arn=arn), app.registry, app.clients)
    monkeypatch.setattr("runner.app.get_app", lambda: routed)
    stream = StreamReader(
        app.clients.client("dynamodbstreams"),
        app.clients.dynamodb.describe_table(TableName=app.settings.table_name)["Table"][
            "LatestStreamArn"
        ],
    )
    put_raw(
        app.clients.dynamodb,
        app.settings.table_name,
        pending("flaky", "FLAKY_TASK", {"fail_times": 1}),
    )
    handler.process_stream({"Records": stream.read()}, FakeLambdaContext())
    modify = [r for r in stream.read() if r["eventName"] == "MODIFY"]
    # Given Step Functions unreachable (raised before moto's in-process stub can run)
    monkeypatch.setattr("runner.aws.AwsRetryPolicy.max_elapsed", 0.5)
    counts = {"injected": 0}

    def unreachable(request: Any, **kwargs: Any) -> None:
        counts["injected"] += 1
        raise EndpointConnectionError(endpoint_url=request.url)

    sfn.meta.events.register_first("before-send.sfn", unreachable)
    # When the failure is routed, the record is reported so the stream delivers it again
    response = handler.route_failed({"Records": modify}, FakeLambdaContext())
    assert response == {
        "batchItemFailures": [{"itemIdentifier": modify[-1]["dynamodb"]["SequenceNumber"]}]
    }
    assert counts["injected"] >= 2  # tenacity tried more than once
    # And once Step Functions is back, the redelivery starts the execution
    sfn.meta.events.unregister("before-send.sfn", unreachable)
    assert handler.route_failed({"Records": modify}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    runs = sfn.list_executions(stateMachineArn=arn)["executions"]
    from runner.executions import execution_name

    created = app.store.get("flaky").created_at or ""
    assert [r["name"] for r in runs] == [execution_name("flaky", created, 1)]
