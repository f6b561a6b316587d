"""Calling a task's handler, sync or async, bounded by a timeout.

A handler that outlives its timeout raises `TaskTimedOut` here; an async one whose
cancel was requested is cancelled at its next await and raises `TaskCancelled`. Async
handlers are cancelled at their timeout; work they handed to a thread
(`asyncio.to_thread`, `run_in_executor`) and a sync handler itself cannot be, so that
thread is left running, reported to
`runner.runtime` (which ends the Lambda runtime before it can act again), and marked on
the error so its outcome is recorded under a lease that outlasts it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from runner import runtime
from runner.context import TaskContext
from runner.errors import TaskCancelled, TaskTimedOut
from runner.registry import TaskDefinition


class _TrackingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The event loop's default executor for one async handler: knows what still runs."""

    def __init__(self, name: str) -> None:
        super().__init__(thread_name_prefix=name)
        self._running = 0
        self._count_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        def counted() -> Any:
            with self._count_lock:
                self._running += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._count_lock:
                    self._running -= 1

        return super().submit(counted)

    def busy_threads(self) -> list[threading.Thread]:
        with self._count_lock:
            running = self._running
        # Which worker runs what is private to the pool: all of them, then; the idle ones
        # end as soon as the pool shuts down, and `runtime.abandoned()` forgets them.
        return list(self._threads) if running else []


def _timed_out(
    definition: TaskDefinition, timeout: float, *, abandoned: list[threading.Thread]
) -> TaskTimedOut:
    return TaskTimedOut(
        f"{definition.type} exceeded its {timeout:.1f} s timeout", abandoned=abandoned
    )


def invoke_handler(
    definition: TaskDefinition, data: BaseModel, context: TaskContext, timeout: float
) -> Any:
    """Run the handler once; TaskTimedOut past `timeout` seconds."""
    if definition.is_async:
        return _invoke_async(definition, data, context, timeout)
    return _invoke_sync(definition, data, context, timeout)


def _invoke_async(
    definition: TaskDefinition, data: BaseModel, context: TaskContext, timeout: float
) -> Any:
    # Not asyncio.run(): at its end it waits for the default executor's threads, so a
    # handler whose to_thread work hangs would hold the task far past its timeout.
    executor = _TrackingExecutor(f"task-{context.task_id}")
    loop = asyncio.new_event_loop()
    loop.set_default_executor(executor)
    timed_out = cancelled = False
    result: Any = None
    main: asyncio.Future[Any] = asyncio.ensure_future(definition.handler(data, context), loop=loop)
    remove = _cancel_at_next_await(loop, main, context)
    try:
        result = loop.run_until_complete(asyncio.wait_for(main, timeout))
    except TimeoutError:
        timed_out = True
    except asyncio.CancelledError:
        if not context.cancel_requested:
            raise
        cancelled = True
    finally:
        remove()
        busy = _close(loop, executor)
    if timed_out:
        raise _timed_out(definition, timeout, abandoned=busy)
    if cancelled:
        reason = context.control.reason if context.control else "cancel requested"
        raise TaskCancelled(f"{definition.type} was cancelled at an await ({reason})")
    return result


def _cancel_at_next_await(
    loop: asyncio.AbstractEventLoop, main: asyncio.Future[Any], context: TaskContext
) -> Callable[[], None]:
    """Cancel the handler's task (from any thread) once a cancel is requested; returns
    the hook's remover."""
    if context.control is None:
        return lambda: None

    def cancel() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the handler ended
            loop.call_soon_threadsafe(main.cancel)

    return context.control.on_cancel(cancel)


def _close(loop: asyncio.AbstractEventLoop, executor: _TrackingExecutor) -> list[threading.Thread]:
    """Cancel what is left on the loop, close it without waiting for the executor's
    threads, and hand those still busy to `runtime.abandon`; returns them."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        busy = executor.busy_threads()
        executor.shutdown(wait=False, cancel_futures=True)
        loop.close()
        for thread in busy:
            runtime.abandon(thread)
    return busy


def _invoke_sync(
    definition: TaskDefinition, data: BaseModel, context: TaskContext, timeout: float
) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = definition.handler(data, context)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(target,),
        daemon=True,
        name=f"task-{context.task_id}",
    )
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        runtime.abandon(thread)
        raise _timed_out(definition, timeout, abandoned=[thread])
    if "error" in box:
        raise box["error"]
    return box.get("result")
