"""X-Ray tracing behind one small interface, so OpenTelemetry can replace it later.

The X-Ray SDK is imported only when tracing is on (in Lambda, unless
POWERTOOLS_TRACE_DISABLED is set): importing it costs cold-start time.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Span(Protocol):
    def annotate(self, key: str, value: str | int | float | bool) -> None: ...


class _NullSpan:
    def annotate(self, key: str, value: str | int | float | bool) -> None:
        return None


class _XRaySpan:
    def __init__(self, subsegment: Any) -> None:
        self._subsegment = subsegment

    def annotate(self, key: str, value: str | int | float | bool) -> None:
        self._subsegment.put_annotation(key, value)


def tracing_enabled() -> bool:
    """On in Lambda unless POWERTOOLS_TRACE_DISABLED says otherwise."""
    flag = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return False
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) or flag in ("0", "false", "no")


@functools.cache
def _tracer() -> Any:
    from aws_lambda_powertools import Tracer

    return Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "task-runner"))


@contextlib.contextmanager
def task_span(name: str, **annotations: str | int) -> Iterator[Span]:
    """A subsegment for one task, annotated (id, type, then outcome) for X-Ray search."""
    if not tracing_enabled():
        yield _NullSpan()
        return
    with _tracer().provider.in_subsegment(name) as subsegment:
        span = _XRaySpan(subsegment)
        for key, value in annotations.items():
            span.annotate(key, value)
        yield span


def lambda_handler(fn: F) -> F:
    """Trace a Lambda handler (cold start annotation, errors) when tracing is on."""

    @functools.wraps(fn)
    def wrapper(event: Any, context: Any) -> Any:
        if not tracing_enabled():
            return fn(event, context)
        return _tracer().capture_lambda_handler(fn, capture_response=False)(event, context)

    return wrapper  # type: ignore[return-value]
