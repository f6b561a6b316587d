"""Calling a task's handler, sync or async, bounded by a timeout.

A handler that outlives its timeout raises `TaskTimedOut` here (a `TimeoutError` of the
handler's own is its own error); an async one whose cancel was requested is cancelled at
its next await and raises `TaskCancelled`. Async handlers are cancelled at their timeout;
work they handed to a thread (`asyncio.to_thread`, `run_in_executor`), an event loop they
block, and a sync handler itself cannot be, so that thread is left running, reported to
`runner.runtime` (which ends the Lambda runtime before it can act again), and handed back
to the caller (whatever the outcome) so its outcome is recorded under a lease that
outlasts it.
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

# Time a cancelled async handler is given to unwind (its `finally`, an `except
# CancelledError`) before its loop's thread is abandoned like a sync handler past its
# timeout.
CANCEL_GRACE_SECONDS = 1.0


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
    definition: TaskDefinition,
    data: BaseModel,
    context: TaskContext,
    timeout: float,
    *,
    left_running: list[threading.Thread] | None = None,
) -> Any:
    """Run the handler once; TaskTimedOut past `timeout` seconds.

    Work the call left running, whatever its outcome (a sync handler past its timeout,
    an async handler's `to_thread` work that outlived it), is handed to
    `runtime.abandon` and appended to `left_running`: it may still act, so the caller
    must neither run the handler again nor let a retry claim the task while it lives.
    """
    left = left_running if left_running is not None else []
    if definition.is_async:
        return _invoke_async(definition, data, context, timeout, left)
    return _invoke_sync(definition, data, context, timeout, left)


class _DeadlinePassed(Exception):
    """The runner's own timeout fired (not a TimeoutError the handler raised)."""


async def _within(awaitable: Any, timeout: float) -> Any:
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise _DeadlinePassed from None
        raise  # the handler's own (an upstream call's socket or asyncio timeout)


def _invoke_async(
    definition: TaskDefinition,
    data: BaseModel,
    context: TaskContext,
    timeout: float,
    left_running: list[threading.Thread],
) -> Any:
    # Not asyncio.run(): at its end it waits for the default executor's threads, so a
    # handler whose to_thread work hangs would hold the task far past its timeout.
    # The loop runs in a thread of its own, joined like a sync handler's: a handler that
    # blocks its loop (a sync call in async code), or does not unwind when cancelled,
    # cannot hold the runner past its timeout; it is abandoned instead.
    executor = _TrackingExecutor(f"task-{context.task_id}")
    box: dict[str, Any] = {}

    def target() -> None:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(executor)
        main: asyncio.Future[Any] = asyncio.ensure_future(
            definition.handler(data, context), loop=loop
        )
        remove = _cancel_at_next_await(loop, main, context)
        try:
            box["result"] = loop.run_until_complete(_within(main, timeout))
        except _DeadlinePassed:
            box["timed_out"] = True
        except asyncio.CancelledError as exc:
            if context.cancel_requested:
                box["cancelled"] = True
            else:
                box["error"] = exc
        except BaseException as exc:
            box["error"] = exc
        finally:
            remove()
            box["busy"] = _close(loop, executor)

    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(target,),
        daemon=True,
        name=f"task-{context.task_id}",
    )
    thread.start()
    thread.join(timeout + CANCEL_GRACE_SECONDS)
    if thread.is_alive():
        busy = executor.busy_threads()
        for worker in (thread, *busy):
            runtime.abandon(worker)
        left_running.extend((thread, *busy))
        raise _timed_out(definition, timeout, abandoned=[thread, *busy])
    busy = box.get("busy", [])
    left_running.extend(busy)
    if box.get("timed_out"):
        raise _timed_out(definition, timeout, abandoned=busy)
    if box.get("cancelled"):
        reason = context.control.reason if context.control else "cancel requested"
        raise TaskCancelled(f"{definition.type} was cancelled at an await ({reason})")
    if "error" in box:
        raise box["error"]
    return box.get("result")


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
    definition: TaskDefinition,
    data: BaseModel,
    context: TaskContext,
    timeout: float,
    left_running: list[threading.Thread],
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
        left_running.append(thread)
        raise _timed_out(definition, timeout, abandoned=[thread])
    if "error" in box:
        raise box["error"]
    return box.get("result")
