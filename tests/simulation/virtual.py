"""What the runner's code sees instead of real time and real threads, while it is simulated.

`virtualized(scheduler, rng)` patches, for the runner's own modules (`runner.*` but
`runner.local`, `handler`, `tasks.*`), by looking at what each module imported rather
than at names written here:

- a module that imported `time` gets a proxy whose `monotonic`, `time`, `perf_counter`
  and `sleep` are the virtual clock's; `threading` a proxy whose `Thread` is a fiber;
  `ThreadPoolExecutor` a pool of fibers, and so does a pool class a module defines on it
  (runner.invoke's tracking executor);
- every default argument that is `time.sleep`, `time.monotonic`, `time.perf_counter`,
  `time.time` or `runner.items.utcnow` (the store's `clock=`, `AwsRetryPolicy.call`'s
  `sleep=`, `TaskRunner`'s `monotonic=`) becomes the virtual one;
- tenacity reads the virtual clock (its `stop_after_delay`) and a seeded random source
  (its jitter); `asyncio.run` gets an event loop on virtual time whose default executor
  is a pool of fibers; `os._exit` ends the simulated process, not this one.

Everything is put back when the block ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import inspect
import os
import random
import selectors
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

from tests.simulation.fibers import Fiber, Scheduler, SimExit

_ACTIVE: list[Scheduler] = []


def scheduler() -> Scheduler:
    if not _ACTIVE:
        raise RuntimeError("no simulation is running")
    return _ACTIVE[-1]


class SimThread:
    """`threading.Thread` for simulated code: a fiber, joined on virtual time."""

    def __init__(
        self,
        group: None = None,
        target: Callable[..., Any] | None = None,
        name: str | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        self._target = target
        self._args = args
        self._kwargs = kwargs or {}
        self.name = name or "thread"
        self.daemon = bool(daemon)
        self._fiber: Fiber | None = None

    def start(self) -> None:
        target, args, kwargs = self._target, self._args, self._kwargs
        self._fiber = scheduler().spawn(
            lambda: target(*args, **kwargs) if target else None, self.name
        )

    def run(self) -> None:  # pragma: no cover - threading.Thread API completeness
        if self._target:
            self._target(*self._args, **self._kwargs)

    def join(self, timeout: float | None = None) -> None:
        fiber = self._fiber
        if fiber is None or fiber.done:
            return
        sched = scheduler()
        wake = None if timeout is None else sched.clock.t + max(0.0, timeout)
        sched.park(wake_at=wake, ready=lambda: fiber.done)

    def is_alive(self) -> bool:
        return self._fiber is not None and not self._fiber.done

    @property
    def ident(self) -> int | None:
        return self._fiber.id if self._fiber else None


class _WorkerThread:
    """What a pool's `_threads` holds for a fiber worker: a name and `is_alive`."""

    def __init__(self, fiber: Fiber) -> None:
        self._fiber = fiber
        self.name = fiber.name

    def is_alive(self) -> bool:
        return not self._fiber.done


class SimFuture(concurrent.futures.Future[Any]):
    """A future whose waits are virtual (the baton passes while it is not done)."""

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        return super().result(timeout=0)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return super().exception(timeout=0)

    def _wait(self, timeout: float | None) -> None:
        if self.done():
            return
        sched = scheduler()
        wake = None if timeout is None else sched.clock.t + timeout
        sched.park(wake_at=wake, ready=self.done)


class SimExecutor(concurrent.futures.ThreadPoolExecutor):
    """`ThreadPoolExecutor` whose workers are fibers (up to max_workers at once)."""

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(max_workers=1)  # starts no thread until submit, which is ours
        self._limit = max_workers or 32
        self._prefix = thread_name_prefix or "pool"
        self._queue: list[tuple[Callable[[], Any], SimFuture]] = []
        self._workers = 0
        self._futures: list[SimFuture] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> SimFuture:
        future = SimFuture()
        self._futures.append(future)
        self._queue.append((lambda: fn(*args, **kwargs), future))
        if self._workers < self._limit:
            self._workers += 1
            fiber = scheduler().spawn(self._work, f"{self._prefix}-{self._workers}")
            # As ThreadPoolExecutor keeps its workers (runner.invoke reads them).
            self._threads.add(_WorkerThread(fiber))  # type: ignore[attr-defined]
        return future

    def _work(self) -> None:
        try:
            while self._queue:
                call, future = self._queue.pop(0)
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(call())
                except BaseException as exc:
                    future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            self._workers -= 1

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Any,
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        futures = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]

        def results() -> Iterator[Any]:
            for future in futures:
                yield future.result()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
        if wait:
            pending = [f for f in self._futures if not f.done()]
            if pending:
                scheduler().park(ready=lambda: all(f.done() for f in pending))


# The shortest wait a selector parks for (see `_VirtualSelector.select`).
MIN_SELECT_SECONDS = 1e-6


class _VirtualSelector(selectors.BaseSelector):
    """A selector that waits on virtual time, letting other fibers run meanwhile."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        if events or (timeout is not None and timeout <= 0):
            return events
        sched = scheduler()
        # At least a microsecond: a timer due in less would round to now on the clock's
        # epoch seconds, and the loop would spin without time passing.
        wake = None if timeout is None else sched.clock.t + max(timeout, MIN_SELECT_SECONDS)
        sched.park(wake_at=wake, ready=lambda: bool(self._real.select(0)))
        return self._real.select(0)


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """asyncio on virtual time: timers fire when the clock gets there, not before."""

    def __init__(self) -> None:
        super().__init__(selector=_VirtualSelector())
        self.set_default_executor(SimExecutor(thread_name_prefix="asyncio"))

    def time(self) -> float:
        return scheduler().clock.monotonic()

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        executor = self._default_executor  # type: ignore[attr-defined]
        if executor is not None:
            executor.shutdown(wait=True)


class _VirtualPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return VirtualEventLoop()


class _ModuleProxy(types.ModuleType):
    """A module as one simulated module sees it: some names replaced, the rest real."""

    def __init__(self, real: types.ModuleType, overrides: dict[str, Any]) -> None:
        super().__init__(real.__name__)
        self.__dict__.update(overrides)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def simulated_modules() -> list[types.ModuleType]:
    """The project's own modules the simulation runs (never runner.local, never tests),
    imported first: the runner imports some on first use, after the patching."""
    import pkgutil

    import runner
    import tasks

    importlib.import_module("handler")
    for package in (runner, tasks):
        prefix = f"{package.__name__}."
        for info in pkgutil.walk_packages(package.__path__, prefix, onerror=lambda _: None):
            if not info.name.startswith("runner.local"):
                importlib.import_module(info.name)
    found = []
    for name, module in sorted(sys.modules.items()):
        if module is None:
            continue
        own = name in {"handler", "tasks"} or name.startswith(("runner.", "tasks."))
        if own and not name.startswith("runner.local"):
            found.append(module)
    return found


def _callables_of(module: types.ModuleType) -> list[Any]:
    found = []
    for value in list(vars(module).values()):
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            found.append(value)
        elif inspect.isclass(value) and value.__module__ == module.__name__:
            for member in list(vars(value).values()):
                func = getattr(member, "__func__", member)
                if inspect.isfunction(func):
                    found.append(func)
    return found


class _Patches:
    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        old = getattr(obj, name)
        setattr(obj, name, value)
        self._undo.append(lambda: setattr(obj, name, old))

    def add(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


@contextlib.contextmanager
def virtualized(sched: Scheduler, rng: random.Random) -> Iterator[None]:
    """Patch the simulated modules onto virtual time and fibers for the block."""
    import tenacity
    import tenacity.wait

    from runner import items

    clock = sched.clock
    real_sleep, real_utcnow = time.sleep, items.utcnow
    time_proxy = _ModuleProxy(
        time,
        {
            "monotonic": clock.monotonic,
            "perf_counter": clock.monotonic,
            "time": clock.time,
            "sleep": sched.sleep,
        },
    )
    threading_proxy = _ModuleProxy(threading, {"Thread": SimThread})
    replacements: dict[int, Any] = {
        id(time): time_proxy,
        id(threading): threading_proxy,
        id(concurrent.futures.ThreadPoolExecutor): SimExecutor,
        id(real_utcnow): clock.now,
    }
    default_replacements = {
        id(real_sleep): sched.sleep,
        id(real_utcnow): clock.now,
        id(time.monotonic): clock.monotonic,
        id(time.perf_counter): clock.monotonic,
        id(time.time): clock.time,
    }
    patches = _Patches()
    _ACTIVE.append(sched)
    try:
        for module in simulated_modules():
            for name, value in list(vars(module).items()):
                if id(value) in replacements and not name.startswith("__"):
                    patches.setattr(module, name, replacements[id(value)])
            for func in _callables_of(module):
                _patch_defaults(func, default_replacements, patches)
            for cls in _pool_subclasses(module):
                # A pool class of the runner's own (runner.invoke's tracking executor):
                # its workers become fibers too.
                patches.setattr(cls, "__bases__", (SimExecutor,))
        patches.setattr(tenacity, "time", time_proxy)
        patches.setattr(tenacity.wait, "random", rng)

        def exit_process(status: int = 0) -> None:
            raise SimExit(f"os._exit({status})")

        patches.setattr(os, "_exit", exit_process)
        policy = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(_VirtualPolicy())
        patches.add(lambda: asyncio.set_event_loop_policy(policy))
        yield
    finally:
        patches.undo()
        _ACTIVE.remove(sched)


def _pool_subclasses(module: types.ModuleType) -> list[type]:
    """Classes the module defines directly on `concurrent.futures.ThreadPoolExecutor`."""
    real = concurrent.futures.ThreadPoolExecutor
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and value.__module__ == module.__name__
        and value.__bases__ == (real,)
    ]


def _patch_defaults(func: Any, replacements: dict[int, Any], patches: _Patches) -> None:
    kw = func.__kwdefaults__
    if kw:
        for key, value in list(kw.items()):
            if id(value) in replacements:
                kw[key] = replacements[id(value)]
                patches.add(functools.partial(kw.__setitem__, key, value))
    defaults = func.__defaults__
    if defaults and any(id(v) in replacements for v in defaults):
        func.__defaults__ = tuple(replacements.get(id(v), v) for v in defaults)
        patches.add(functools.partial(setattr, func, "__defaults__", defaults))
