"""Task data never reaches the logs or a stored error, on the error paths too (defect 16):
not through an exception's text, AWS's error messages, or a malformed item's values."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

import handler
from runner.app import App
from runner.logs import get_logger
from tests.helpers import FakeLambdaContext, pending, put_raw, stream_record

SECRET = "s3cret-4242@example.com"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs(app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every line the runner logs, formatted as Powertools writes it (JSON, extras in)."""
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    logger = get_logger()
    collect = _Collect()
    collect.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(collect)
    previous = logger._logger.level
    logger._logger.setLevel(logging.DEBUG)
    yield collect.lines
    logger._logger.setLevel(previous)
    logger._logger.removeHandler(collect)


def _stored(app: App, task_id: str) -> str:
    """What the runner stored about the failure: the error and the attempt log."""
    item = app.clients.dynamodb.get_item(
        TableName=app.settings.table_name, Key={"id": {"S": task_id}}
    )["Item"]
    return json.dumps({k: item.get(k) for k in ("error", "attempt_log")})


def _override(app: App, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    definition = dataclasses.replace(app.registry.get("NOOP_TASK"), **changes)
    monkeypatch.setitem(app.registry._by_type, "NOOP_TASK", definition)


def test_an_unclassified_exception_quoting_data_is_stored_by_type_and_place(
    app: App, logs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def leaky(data: Any, ctx: Any) -> None:
        raise KeyError(SECRET)

    _override(app, monkeypatch, handler=leaky)
    values = put_raw(
        app.clients.dynamodb,
        app.settings.table_name,
        pending("leaky", "NOOP_TASK", {"note": SECRET}),
    )
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    stored = _stored(app, "leaky")
    assert "KeyError" in stored and "test_no_data_in_logs.py" in stored
    assert SECRET not in stored
    assert logs and not [line for line in logs if SECRET in line]


def test_aws_error_text_from_a_handler_is_not_stored(
    app: App, logs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def rejected(data: Any, ctx: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "MessageRejected", "Message": f"not verified: {SECRET}"}},
            "SendEmail",
        )

    _override(app, monkeypatch, handler=rejected)
    values = put_raw(app.clients.dynamodb, app.settings.table_name, pending("ses", "NOOP_TASK", {}))
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    stored = _stored(app, "ses")
    assert "MessageRejected" in stored and SECRET not in stored
    assert not [line for line in logs if SECRET in line]


def test_a_malformed_items_values_are_neither_logged_nor_stored(app: App, logs: list[str]) -> None:
    # An item that is not a valid task (attempts a string), and a record that is not
    # even a valid image (a number attribute holding text)
    values = {**pending("odd", "NOOP_TASK", {}), "attempts": SECRET}
    put_raw(app.clients.dynamodb, app.settings.table_name, values)
    unreadable = stream_record(pending("odder", "NOOP_TASK", {}))
    unreadable["dynamodb"]["NewImage"]["attempts"] = {"N": SECRET}
    handler.process_stream({"Records": [stream_record(values), unreadable]}, FakeLambdaContext())
    assert "MalformedTask" in _stored(app, "odd") and SECRET not in _stored(app, "odd")
    assert len(logs) >= 2 and not [line for line in logs if SECRET in line]


def test_dynamodbs_error_text_about_a_request_is_not_logged(app: App, logs: list[str]) -> None:
    values = put_raw(
        app.clients.dynamodb, app.settings.table_name, pending("refused", "NOOP_TASK", {})
    )

    def refuse(request: Any, **kwargs: Any) -> AWSResponse:
        body = json.dumps(
            {
                "__type": "com.amazon.coral.validate#ValidationException",
                "message": f"One or more parameter values were invalid: {SECRET}",
            }
        ).encode()
        raw = type("Raw", (), {"stream": lambda self, **k: iter([body]), "read": lambda *a: body})
        return AWSResponse(request.url, 400, {}, raw())

    app.clients.dynamodb.meta.events.register("before-send.dynamodb.UpdateItem", refuse)
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    app.clients.dynamodb.meta.events.unregister("before-send.dynamodb.UpdateItem", refuse)
    assert [line for line in logs if "ValidationException" in line]
    assert not [line for line in logs if SECRET in line]
