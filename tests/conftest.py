"""Fixtures: dummy credentials always, moto in-process or as a real HTTP server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from moto import mock_aws

from runner import runtime
from runner.app import App, get_app
from runner.aws import AwsClients
from runner.config import Settings
from runner.local import demo_tasks
from runner.local.dynamodb_fidelity import dynamodb_fidelity
from runner.local.motoserver import serialised_dynamodb
from runner.local.sqs_fidelity import sqs_visibility_fidelity
from tasks import build_registry
from tests.helpers import create_tasks_table

TABLE = "tasks-test"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never reach real AWS: dummy credentials, no endpoint override, no Lambda env."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    get_app.cache_clear()
    demo_tasks.EFFECTS.clear()
    runtime.forget_abandoned()  # threads an earlier test's handlers left running
    yield
    get_app.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def _serialised_moto_dynamodb() -> Iterator[None]:
    """Moto is not thread-safe: unserialised, two racing conditional claims can both win.

    Its DynamoDB request handling is serialised for every test (in-process and server),
    and its writes are refused and applied as DynamoDB's are (`dynamodb_fidelity`); SQS
    changes a message's visibility as SQS does (`sqs_visibility_fidelity`).
    """
    with serialised_dynamodb(), dynamodb_fidelity(), sqs_visibility_fidelity():
        yield


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def settings() -> Settings:
    return Settings(
        table_name=TABLE,
        region="us-east-1",
        export_bucket="exports-test",
        sender_email="noreply@example.com",
        export_recipients=("@example.com",),
        state_machine_arn=None,
    )


@pytest.fixture
def app(aws: None, settings: Settings) -> App:
    """An App over a fresh moto table, with the demo task types registered."""
    clients = AwsClients(settings)
    create_tasks_table(clients.dynamodb, settings.table_name)
    return App.build(settings, build_registry(["runner.local.demo_tasks"]), clients)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real HTTP moto server on loopback (DynamoDB serialised, as above)."""
    from runner.local.motoserver import moto_server as bare_moto_server

    with bare_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def server_env(moto_server: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Environment for a subprocess (CLI) talking to the moto server, with a fresh table."""
    import boto3

    table = f"tasks-{abs(hash(request.node.nodeid)) % 10**8}"
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1")
    create_tasks_table(dynamodb, table)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "AWS_ENDPOINT_URL": moto_server,
            "AWS_DYNAMO_DB_TABLE_NAME": table,
            "TASK_RUNNER_TASK_MODULES": "runner.local.demo_tasks",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    return env
