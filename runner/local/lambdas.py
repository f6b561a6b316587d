"""Run the Lambda invocations moto receives as Python calls in this process.

Moto cannot run Python Lambdas without Docker; its "simple" Lambda backend only echoes
payloads. `LambdaDispatcher.installed()` replaces that backend's invoke with a call to
the registered handler and answers in Lambda's own shape (`x-amz-function-error` plus
`{"errorType", "errorMessage"}` on an exception), so Step Functions' Retry and Catch
match on the exception's class name exactly as they do on AWS.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

LambdaHandler = Callable[[Any, Any], Any]
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
