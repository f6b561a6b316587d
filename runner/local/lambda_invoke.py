"""Lambda's Invoke API as the local Lambda service answers it through moto.

What Invoke refuses before an environment is used (a payload that is not JSON: 400
`InvalidRequestContentException`; over 6 MB: 413 `RequestTooLargeException`), what it
answers for a response over 6 MB (`Function.ResponseSizeTooLarge`), the service's
refusals as Lambda's errors (404 for an unknown function, 429 `TooManyRequestsException`,
500 `ServiceException`), and `answering_moto`, which makes moto's Docker-less Lambda
backend answer Invoke with the service (runner.local.lambda_service).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from runner.local.lambda_protocol import InvocationResult
from runner.local.lambdas import MAX_PAYLOAD_BYTES


class FunctionNotFound(Exception):
    """No function of that name is registered."""


class FunctionThrottled(Exception):
    """Every environment the function may have is busy (its concurrency is reached)."""


class LambdaServiceError(Exception):
    """Lambda failed to run the invocation (HTTP 500 `ServiceException`); nothing ran."""


class InvalidRequestContent(Exception):
    """The payload is not JSON (Invoke's 400 `InvalidRequestContentException`)."""


class RequestTooLarge(Exception):
    """The payload is over Invoke's 6 MB (413 `RequestTooLargeException`)."""


def validate(payload: bytes) -> None:
    """Refuse what Invoke refuses before it uses an environment."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RequestTooLarge(
            f"{len(payload)} byte payload is too large for the RequestResponse invocation "
            f"type (limit {MAX_PAYLOAD_BYTES} bytes)"
        )
    if payload:
        try:
            json.loads(payload)
        except ValueError as exc:
            raise InvalidRequestContent(f"Could not parse request body into json: {exc}") from exc


def response_too_large(result: InvocationResult) -> InvocationResult:
    """What Invoke answers for a response over 6 MB: a function error, the environment kept."""
    body = {
        "errorMessage": "Response payload size exceeded maximum allowed payload size "
        f"({MAX_PAYLOAD_BYTES} bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
    return dataclasses.replace(
        result,
        payload=json.dumps(body).encode(),
        function_error="Unhandled",
        error_type="Function.ResponseSizeTooLarge",
    )


@contextlib.contextmanager
def answering_moto(invoke_function: Callable[[str, bytes], InvocationResult]) -> Iterator[None]:
    """Answer moto's Lambda Invoke with `invoke_function` for the duration of the block."""
    from moto.awslambda.exceptions import LambdaClientError, UnknownFunctionException
    from moto.awslambda_simple.models import LambdaSimpleBackend

    class TooManyRequestsException(LambdaClientError):
        code = 429

        def __init__(self) -> None:
            super().__init__("TooManyRequestsException", "Rate Exceeded.")

    class ServiceException(LambdaClientError):
        code = 500

        def __init__(self) -> None:
            super().__init__("ServiceException", "Lambda could not run the invocation.")

    class RequestTooLargeException(LambdaClientError):
        code = 413

        def __init__(self, message: str) -> None:
            super().__init__("RequestTooLargeException", message)

    def invoke(
        backend: Any,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> bytes:
        payload = body.encode() if isinstance(body, str) else bytes(body or b"")
        try:
            result = invoke_function(function_name, payload)
        except FunctionNotFound as exc:
            raise UnknownFunctionException(function_name) from exc
        except FunctionThrottled as exc:
            raise TooManyRequestsException() from exc
        except LambdaServiceError as exc:
            raise ServiceException() from exc
        except InvalidRequestContent as exc:
            raise LambdaClientError("InvalidRequestContentException", str(exc)) from exc
        except RequestTooLarge as exc:
            raise RequestTooLargeException(str(exc)) from exc
        response_headers["x-amz-executed-version"] = "$LATEST"
        if result.function_error:
            response_headers["x-amz-function-error"] = result.function_error
        return result.payload

    original = LambdaSimpleBackend.invoke
    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]
