"""Invoking Lambda functions: through the endpoint, or as Python calls in this process.

- `LambdaInvoker` is how the local stack's pollers and schedules invoke a function: the
  Lambda Invoke API on the stack's endpoint, whose Lambda service runs it in one of the
  function's execution environments (runner.local.lambda_service), as Lambda's event
  source mappings and EventBridge do on AWS.
- `LambdaDispatcher` is for tests and benchmarks that run moto in-process: moto cannot
  run Python Lambdas without Docker (its "simple" backend only echoes payloads), so
  `installed()` replaces that backend's invoke with a call to the registered handler and
  answers in Lambda's own shape (`x-amz-function-error` plus `{"errorType",
  "errorMessage"}` on an exception), so Step Functions' Retry and Catch match on the
  exception's class name exactly as they do on AWS.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

LambdaHandler = Callable[[Any, Any], Any]
# Invoke's synchronous payload limit (request and response), 6 MB.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# What a Lambda's context reports when the function's timeout is unknown.
DEFAULT_TIMEOUT_SECONDS = 900.0


class LocalLambdaContext:
    """The parts of a Lambda context handlers read, with a real countdown."""

    def __init__(self, function_name: str, timeout_seconds: float) -> None:
        self.function_name = function_name
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = (
            f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.memory_limit_in_mb = 1024
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def function_name_of(name_or_arn: str) -> str:
    """`runTask`, `arn:...:function:runTask` and `arn:...:function:runTask:$LATEST` → runTask."""
    if ":function:" in name_or_arn:
        return name_or_arn.split(":function:", 1)[1].split(":", 1)[0]
    return name_or_arn.split(":", 1)[0]


@dataclass(frozen=True)
class Invocation:
    """What a synchronous Invoke answered: the payload, and `Unhandled` if it failed."""

    payload: Any
    function_error: str | None = None

    @property
    def error_type(self) -> str | None:
        if self.function_error and isinstance(self.payload, dict):
            value = self.payload.get("errorType")
            return str(value) if value is not None else None
        return None


class InvokeThrottled(Exception):
    """Lambda refused the invocation (429 TooManyRequestsException): nothing ran."""


Invoker = Callable[[dict[str, Any]], Invocation]


def event_json(value: Any) -> Any:
    """JSON for what boto3 parsed out of a stream record: binary values travel base64,
    as in Lambda's events."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"{type(value).__name__} in a Lambda event")


class LambdaInvoker:
    """Invokes one function through the Lambda API of an endpoint (the local stack's)."""

    def __init__(
        self, function_name: str, *, endpoint_url: str, region: str, timeout_seconds: float
    ) -> None:
        import boto3
        from botocore.config import Config

        self.function_name = function_name
        # No retries here (the caller decides), and a read timeout past the function's.
        self._lambda = boto3.client(
            "lambda",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                read_timeout=timeout_seconds + 60,
                connect_timeout=5,
            ),
        )

    def __call__(self, event: dict[str, Any]) -> Invocation:
        from botocore.exceptions import ClientError

        try:
            response = self._lambda.invoke(
                FunctionName=self.function_name,
                Payload=json.dumps(event, default=event_json).encode(),
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TooManyRequestsException":
                raise InvokeThrottled(self.function_name) from exc
            raise
        body = response["Payload"].read()
        return Invocation(json.loads(body) if body else None, response.get("FunctionError"))


class LambdaDispatcher:
    """Function name → Python handler, for invocations made through moto."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[LambdaHandler, float]] = {}
        self._lock = threading.Lock()
        self.invocations: list[tuple[str, Any, str | None]] = []

    def register(
        self,
        function_name: str,
        handler: LambdaHandler,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._handlers[function_name] = (handler, timeout_seconds)

    def invoke(self, function_name: str, payload: Any) -> tuple[bytes, str | None]:
        """Run the handler; returns (response body, function error or None)."""
        name = function_name_of(function_name)
        if name not in self._handlers:
            body = {
                "errorType": "ResourceNotFoundException",
                "errorMessage": f"no local handler for function {name}",
            }
            return json.dumps(body).encode(), "Unhandled"
        handler, timeout = self._handlers[name]
        error: str | None = None
        try:
            result = handler(payload, LocalLambdaContext(name, timeout))
            body_bytes = json.dumps(result, default=str).encode()
        except Exception as exc:
            error = "Unhandled"
            body_bytes = json.dumps(
                {
                    "errorType": type(exc).__name__,
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_exception(exc)[-3:],
                }
            ).encode()
        with self._lock:
            self.invocations.append((name, payload, error))
        return body_bytes, error

    @contextlib.contextmanager
    def installed(self) -> Iterator[LambdaDispatcher]:
        """Route moto's Lambda invocations here for the duration of the block."""
        from moto.awslambda_simple.models import LambdaSimpleBackend

        dispatcher = self

        def invoke(
            backend: Any,
            function_name: str,
            qualifier: str | None,
            body: Any,
            headers: Any,
            response_headers: Any,
        ) -> bytes:
            payload = json.loads(body) if body else {}
            result, error = dispatcher.invoke(function_name, payload)
            if error:
                response_headers["x-amz-function-error"] = error
            return result

        original = LambdaSimpleBackend.invoke
        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]
