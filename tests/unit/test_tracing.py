"""Tracing on (as in Lambda): a processed task leaves a real X-Ray subsegment, annotated.

The segments are caught on a local UDP socket standing in for the X-Ray daemon.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

import handler
from runner import tracing
from runner.app import App
from tests.helpers import FakeLambdaContext, pending, put_raw, stream_record


class Daemon:
    """A UDP socket in the X-Ray daemon's place; documents are `header\\nsegment-json`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def documents(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return found
            header, _, body = data.decode().partition("\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            found.append(json.loads(body))


@pytest.fixture
def xray(app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """The Lambda environment with Active tracing, the daemon on a local socket."""
    trace_id = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "task-runner-test-processStream")
    monkeypatch.setenv(
        "_X_AMZN_TRACE_ID", f"Root={trace_id};Parent={secrets.token_hex(8)};Sampled=1"
    )
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    # Patching botocore would outlive this test (the SDK cannot unpatch).
    monkeypatch.setattr(tracing, "PATCHED_MODULES", ())
    from aws_xray_sdk.core import xray_recorder
    from aws_xray_sdk.core.lambda_launcher import LambdaContext

    daemon = Daemon()
    saved = (xray_recorder.context, xray_recorder.emitter.ip, xray_recorder.emitter.port)
    # As the SDK configures itself when imported in Lambda, whatever imported it first.
    xray_recorder.configure(
        context=LambdaContext(), daemon_address=daemon.address, streaming_threshold=0
    )
    tracing._build_tracer.cache_clear()
    try:
        yield daemon
    finally:
        tracing._build_tracer.cache_clear()
        xray_recorder.configure(context=saved[0], daemon_address=f"{saved[1]}:{saved[2]}")
        daemon.sock.close()


def test_processed_task_emits_an_annotated_subsegment_under_the_handler(
    app: App, xray: Daemon
) -> None:
    # Given tracing is on, as in Lambda
    assert tracing.tracing_enabled()
    values = put_raw(app.clients.dynamodb, app.settings.table_name, pending("t-1", "NOOP_TASK", {}))
    # When the stream delivers the task
    response = handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    assert response == {"batchItemFailures": []}
    # Then the daemon receives the task's subsegment with its annotations
    documents = xray.documents()
    by_name = {d["name"]: d for d in documents}
    task = by_name["task NOOP_TASK"]
    assert task["annotations"] == {"task_id": "t-1", "task_type": "NOOP_TASK", "outcome": "DONE"}
    assert task["type"] == "subsegment" and task["end_time"] >= task["start_time"]
    # And it hangs under the handler's subsegment, though it ran in a worker thread
    lambda_handler = by_name["## process_stream"]
    assert task["parent_id"] == lambda_handler["id"]
    assert task["trace_id"] == lambda_handler["trace_id"]
    assert lambda_handler["annotations"]["ColdStart"] in (True, False)


def test_tracing_is_off_outside_lambda_and_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    # A process that only names a function is not a Lambda environment
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "f")
    monkeypatch.delenv("LAMBDA_TASK_ROOT", raising=False)
    assert not tracing.tracing_enabled()
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    assert tracing.tracing_enabled()
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    assert not tracing.tracing_enabled()
