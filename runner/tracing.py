"""X-Ray tracing behind one small interface, so OpenTelemetry can replace it later.

Cold start matters here (bench/README.md, figure 3), hence three choices:
- Tracing is on only in a Lambda execution environment (LAMBDA_TASK_ROOT set), the signal
  the X-Ray SDK and Powertools both use. Elsewhere the SDK's import alone builds a botocore
  client for centralised sampling (~0.12 s) and Powertools then disables itself, so a
  process that merely names a function (AWS_LAMBDA_FUNCTION_NAME) would pay for nothing.
  In Lambda the SDK uses the trace header's sampling decision and builds no such client.
- The SDK is imported at the first traced call, never at import time.
- Only botocore is patched (AWS calls become subsegments); Powertools' default patches
  every supported library, importing `requests`, `sqlite3` and more just to wrap them.

Task subsegments run in the stream's worker threads; the SDK keeps its current entity per
thread, so each task span adopts the handler's subsegment as its parent explicitly.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

SERVICE_NAME = "task-runner"
# Libraries whose calls become subsegments: the runner's own I/O is all botocore.
PATCHED_MODULES = ("botocore",)

# The handler's subsegment and its thread, for task spans opened in worker threads.
_handler_entity: contextvars.ContextVar[tuple[Any, int] | None] = contextvars.ContextVar(
    "xray_handler_entity", default=None
)
_tracer_lock = threading.Lock()


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
    """On in Lambda (LAMBDA_TASK_ROOT set) unless POWERTOOLS_TRACE_DISABLED says otherwise."""
    flag = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return False
    return bool(os.environ.get("LAMBDA_TASK_ROOT"))


@functools.cache
def _build_tracer() -> Any:
    from aws_lambda_powertools import Tracer

    return Tracer(
        service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME),
        patch_modules=PATCHED_MODULES,
    )


def _tracer() -> Any:
    # Built once even when the first traced call comes from several threads at once.
    with _tracer_lock:
        return _build_tracer()


@contextlib.contextmanager
def _parent_adopted(recorder: Any) -> Iterator[None]:
    """In a worker thread, make the handler's subsegment the current entity for a while."""
    found = _handler_entity.get()
    if found is None or found[1] == threading.get_ident():
        yield
        return
    recorder.context.set_trace_entity(found[0])
    try:
        yield
    finally:
        recorder.context.clear_trace_entities()  # pooled threads must not keep it


@contextlib.contextmanager
def task_span(name: str, **annotations: str | int) -> Iterator[Span]:
    """A subsegment for one task, annotated (id, type, then outcome) for X-Ray search."""
    if not tracing_enabled():
        yield _NullSpan()
        return
    recorder = _tracer().provider
    with _parent_adopted(recorder), recorder.in_subsegment(name) as subsegment:
        span = _XRaySpan(subsegment)
        for key, value in annotations.items():
            span.annotate(key, value)
        yield span


def lambda_handler(fn: F) -> F:
    """Trace a Lambda handler (cold start annotation, errors) when tracing is on; print
    the invocation's metrics at its end (`runner.metrics`)."""

    def in_handler_subsegment(event: Any, context: Any) -> Any:
        entity = _tracer().provider.get_trace_entity()
        token = _handler_entity.set((entity, threading.get_ident()))
        try:
            return fn(event, context)
        finally:
            _handler_entity.reset(token)

    in_handler_subsegment.__name__ = fn.__name__

    @functools.wraps(fn)
    def wrapper(event: Any, context: Any) -> Any:
        from runner import metrics

        try:
            if not tracing_enabled():
                return fn(event, context)
            return _tracer().capture_lambda_handler(in_handler_subsegment, capture_response=False)(
                event, context
            )
        finally:
            metrics.flush()  # what the invocation measured, as EMF log lines

    return wrapper  # type: ignore[return-value]
