"""Virtual time and a deterministic scheduler for everything the simulated code runs.

Each Lambda invocation runs in a *fiber* (a real thread that runs only while it holds the
baton), and so does every thread it starts (a sync handler's thread, a pool worker, an
`asyncio.to_thread` call). Exactly one fiber runs at a time; control changes hands only
where a fiber waits (`park`: a join, a future, a sleep, an idle event loop), to the
first due fiber in creation order, so a seed always interleaves the same way.

Only the driver (the harness's main thread) moves the clock: `run_until(t)` runs every
due fiber, then jumps to the earliest wake-up (or deadline) and repeats. Invocations run
concurrently on virtual time, as on AWS: a sweep can run while a stream batch still
works. An invocation still running at its deadline times out: every fiber of its
environment is killed (raises `SimTimeout` where it waits) and never acts again.

Fibers left waiting when an invocation returns belong to its environment and are frozen
with it, as Lambda freezes a sandbox: they run again only while that environment serves
its next invocation, which is what lets an abandoned handler act after its retry began.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Virtual time starts here (any fixed moment works; this one reads well in logs).
EPOCH = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
# time.monotonic() of the simulation at EPOCH.
MONOTONIC_AT_EPOCH = 1000.0
# A fiber or the driver that does not get the baton back within this long is stuck.
STALL_SECONDS = 120.0


class SimKilled(BaseException):
    """The Lambda environment this code ran in is gone (not an Exception: nothing in the
    runner may catch it, as nothing survives a killed sandbox)."""


class SimCrash(SimKilled):
    """The process crashed (the runtime died)."""


class SimTimeout(SimKilled):
    """The invocation reached its function's timeout."""


class SimExit(SimKilled):
    """The code ended its own process (os._exit)."""


class SimStall(BaseException):
    """The simulation cannot go on: a fiber blocked for real, outside the scheduler."""


class SimClock:
    """One virtual time for datetimes, epoch seconds and the monotonic clock."""

    def __init__(self, start: float = EPOCH) -> None:
        self.t = start

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - EPOCH + MONOTONIC_AT_EPOCH

    def advance_to(self, moment: float) -> None:
        self.t = max(self.t, moment)


class Fiber:
    """One thread of simulated code, in one environment."""

    def __init__(self, fid: int, env: object, name: str) -> None:
        self.id = fid
        self.env = env
        self.name = name
        self.event = threading.Event()
        self.done = False
        self.parked = False
        self.wake_at: float | None = None
        self.ready: Callable[[], bool] | None = None
        # Raised where the fiber next runs: its environment was killed.
        self.pending: SimKilled | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def due(self, now: float) -> bool:
        if self.pending is not None or not self.parked:
            return True
        if self.wake_at is not None and self.wake_at <= now:
            return True
        return self.ready is not None and self.ready()

    def __repr__(self) -> str:
        return f"<fiber {self.id} {self.name} env={self.env}>"


@dataclass
class Running:
    """An invocation in progress: its environment's root fiber and its deadline."""

    env: object
    root: Fiber
    deadline: float | None
    on_done: Callable[[Running], None]
    result: Any = None
    error: BaseException | None = None
    finished_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    """Hands the baton between the driver and the fibers; owns the clock's progress."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._fibers: list[Fiber] = []
        self._by_thread: dict[int, Fiber] = {}
        self._ids = itertools.count(1)
        self.running: dict[object, Running] = {}  # env -> its invocation in progress
        self._dying: set[object] = set()  # killed environments whose fibers still unwind
        self._driver = threading.Event()
        self._finished: list[Running] = []

    # --- queries -----------------------------------------------------------------------

    def current(self) -> Fiber | None:
        return self._by_thread.get(threading.get_ident())

    def fibers_of(self, env: object) -> list[Fiber]:
        return [f for f in self._fibers if f.env is env and not f.done]

    def _eligible(self) -> list[Fiber]:
        """Fibers of environments serving an invocation (frozen ones wait), and of killed
        environments (so they unwind)."""
        live = {env for env, r in self.running.items() if not r.root.done} | self._dying
        return [f for f in self._fibers if not f.done and f.env in live]

    def next_wake(self) -> float | None:
        """The earliest moment something scheduled happens (a wake-up or a deadline)."""
        times = [f.wake_at for f in self._eligible() if f.wake_at is not None and f.parked]
        times += [r.deadline for r in self.running.values() if r.deadline is not None]
        return min(times) if times else None

    # --- starting work ---------------------------------------------------------------------

    def start(
        self,
        env: object,
        fn: Callable[[], Any],
        *,
        deadline: float | None,
        on_done: Callable[[Running], None],
    ) -> Running:
        """Begin an invocation of `env`: `fn` runs in a new root fiber when its turn comes."""
        if env in self.running:
            raise RuntimeError(f"{env} is already serving an invocation")
        box: dict[str, Running] = {}

        def root() -> None:
            running = box["running"]
            try:
                running.result = fn()
            except BaseException as exc:
                running.error = exc
                if not isinstance(exc, Exception | SimKilled):
                    raise

        fiber = self._new_fiber(env, "root", root, start=False)
        running = box["running"] = Running(env, fiber, deadline, on_done)
        self.running[env] = running
        assert fiber.thread is not None
        fiber.thread.start()
        return running

    def spawn(self, fn: Callable[[], Any], name: str) -> Fiber:
        """A new fiber in the calling fiber's environment."""
        me = self.current()
        if me is None:
            raise RuntimeError("spawn outside any invocation")
        return self._new_fiber(me.env, name, fn, start=True)

    def _new_fiber(self, env: object, name: str, fn: Callable[[], Any], *, start: bool) -> Fiber:
        fiber = Fiber(next(self._ids), env, name)

        def run() -> None:
            self._by_thread[threading.get_ident()] = fiber
            if not fiber.event.wait(STALL_SECONDS * 50):
                fiber.done = True
                return
            try:
                self._raise_pending(fiber)
                fn()
            except SimKilled:
                pass
            except BaseException as exc:  # a harness bug: the driver re-raises it
                fiber.error = exc
            finally:
                self._finish(fiber)

        fiber.thread = threading.Thread(target=run, name=f"sim-{name}-{fiber.id}", daemon=True)
        self._fibers.append(fiber)
        if start:
            fiber.thread.start()
        return fiber

    # --- the driver ------------------------------------------------------------------------

    def run_until(self, moment: float, *, stop: Callable[[], bool] | None = None) -> None:
        """Run everything due, moving the clock up to `moment`; return early when `stop()`."""
        while True:
            self._expire_deadlines()  # a deadline kills before anything due at that moment
            self._run_due()
            if stop is not None and stop():
                return
            nxt = self.next_wake()
            if nxt is None or nxt > moment:
                self.clock.advance_to(moment)
                self._expire_deadlines()
                self._run_due()
                return
            self.clock.advance_to(nxt)

    def run_now(self) -> None:
        self.run_until(self.clock.t)

    def finished(self) -> list[Running]:
        done, self._finished = self._finished, []
        return done

    def _run_due(self) -> None:
        while True:
            nxt = self._pick()
            if nxt is None:
                return
            self._driver.clear()
            nxt.event.set()
            if not self._driver.wait(STALL_SECONDS):
                raise SimStall(f"{nxt} kept the baton (a real blocking call?)")
            self._deliver_finished()
            for fiber in self._fibers:
                if fiber.error is not None:
                    error, fiber.error = fiber.error, None
                    raise error

    def _expire_deadlines(self) -> None:
        now = self.clock.t
        for running in list(self.running.values()):
            if running.deadline is not None and running.deadline <= now and not running.root.done:
                self.kill(running.env, SimTimeout, "the invocation reached its function's timeout")

    def _pick(self) -> Fiber | None:
        now = self.clock.t
        for fiber in self._eligible():
            if fiber.due(now):
                return fiber
        return None

    def _deliver_finished(self) -> None:
        for env, running in list(self.running.items()):
            if running.root.done:
                del self.running[env]
                running.finished_at = self.clock.t
                self._finished.append(running)
                running.on_done(running)
        for env in list(self._dying):
            if not self.fibers_of(env):
                self._dying.discard(env)
        self._fibers = [f for f in self._fibers if not f.done]

    # --- fibers giving up the baton ----------------------------------------------------------

    def park(
        self, *, wake_at: float | None = None, ready: Callable[[], bool] | None = None
    ) -> None:
        """Wait (virtually) until `ready()` or the clock reaches `wake_at`."""
        me = self.current()
        if me is None:
            raise RuntimeError("park outside any fiber")
        self._raise_pending(me)
        me.parked, me.wake_at, me.ready = True, wake_at, ready
        try:
            self._yield(me)
        finally:
            me.parked, me.wake_at, me.ready = False, None, None
        self._raise_pending(me)

    def sleep(self, seconds: float) -> None:
        self.park(wake_at=self.clock.t + max(0.0, seconds))

    def _yield(self, me: Fiber) -> None:
        nxt = self._pick()
        if nxt is me:
            return
        me.event.clear()
        if nxt is None:
            self._driver.set()
        else:
            nxt.event.set()
        if not me.event.wait(STALL_SECONDS * 50):
            raise SimStall(f"{me} never got the baton back")

    def _finish(self, fiber: Fiber) -> None:
        fiber.done = True
        self._by_thread.pop(threading.get_ident(), None)
        nxt = self._pick()
        if nxt is None:
            self._driver.set()
        else:
            nxt.event.set()

    # --- killing -------------------------------------------------------------------------------

    def kill(self, env: object, error: type[SimKilled], why: str) -> None:
        """Every fiber of `env` raises `error` where it next runs (and unwinds, now)."""
        fibers = self.fibers_of(env)
        for fiber in fibers:
            if fiber.pending is None:
                fiber.pending = error(why)
        if fibers:
            self._dying.add(env)

    def kill_current(self, error: type[SimKilled], why: str) -> None:
        me = self.current()
        if me is None:
            raise error(why)
        self.kill(me.env, error, why)
        self._raise_pending(me)

    def hang_current(self) -> None:
        """The calling invocation hangs here until its deadline kills it."""
        me = self.current()
        running = self.running.get(me.env) if me is not None else None
        if running is None or running.deadline is None:
            self.kill_current(SimTimeout, "hung with no deadline")
            return
        self.park(wake_at=running.deadline, ready=lambda: False)

    @staticmethod
    def _raise_pending(fiber: Fiber) -> None:
        """A killed fiber raises at every wait (a fresh instance each time)."""
        if fiber.pending is not None:
            raise type(fiber.pending)(*fiber.pending.args)

    # --- teardown ----------------------------------------------------------------------------

    def discard(self, env: object, error: type[SimKilled] = SimKilled) -> None:
        """Kill an environment's fibers (frozen ones too) and let them unwind now."""
        self.kill(env, error, "environment discarded")
        self._run_due()
        self._deliver_finished()

    def shutdown(self, envs: list[object]) -> None:
        for env in envs:
            if self.fibers_of(env):
                self.discard(env)
