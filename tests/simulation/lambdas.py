"""Lambda as AWS runs it, for the simulation: execution environments and invocations.

- An environment is one sandbox serving one invocation at a time: its own App (built
  on the cold start from the function's environment variables in the template) and its
  own threads. Invocations of different environments run concurrently.
- A function *error* (the handler raised) keeps the environment; a thread the handler
  left running is frozen with it and resumes during its next invocation.
- A *timeout*, a crash or `os._exit` discards the environment: its threads are killed
  and never act again (tests.simulation.fibers).
- Which idle warm environment serves an invocation, or a new one, is the harness's
  choice (a seed's draw).
"""

from __future__ import annotations

import importlib
import io
import itertools
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from runner import app as app_module
from runner.app import App
from runner.config import Settings
from tasks import build_registry
from tests.simulation.faults import Firing, SimAwsClients
from tests.simulation.fibers import (
    Running,
    Scheduler,
    SimClock,
    SimCrash,
    SimExit,
    SimKilled,
    SimStall,
    SimTimeout,
)
from tests.simulation.processes import Processes
from tests.simulation.topology import Function

SIM_TASK_MODULE = "tests.simulation.sim_tasks"
# A synchronous call (a producer, the CLI) that has not finished after this is stuck.
SYNC_LIMIT_SECONDS = 24 * 3600.0


@dataclass(eq=False)
class Environment:
    id: str
    function: Function
    app: App
    alive: bool = True
    invocations: int = 0
    current: Invocation | None = None

    def __repr__(self) -> str:
        return self.id


@dataclass(eq=False)
class Invocation:
    """One invocation and what became of it."""

    id: str
    function: Function
    env: Environment
    event: Any
    started: float
    ended: float | None = None
    outcome: str = "running"  # ok | error | timeout | crash | exit
    result: Any = None
    error: BaseException | None = None
    faults: list[Firing] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.outcome != "running"

    @property
    def killed(self) -> bool:
        return self.outcome in ("timeout", "crash", "exit")


class SimContext:
    """The Lambda context handlers read, counting down on the virtual clock."""

    def __init__(self, function: Function, deadline: float, clock: SimClock, request: str) -> None:
        self.function_name = function.name
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = 1024
        self.aws_request_id = request
        self._deadline = deadline
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock.t) * 1000))


def resolve_handler(spec: str) -> Callable[[Any, Any], Any]:
    module_name, _, attribute = spec.rpartition(".")
    handler: Callable[[Any, Any], Any] = getattr(importlib.import_module(module_name), attribute)
    return handler


_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (SimTimeout, "timeout"),
    (SimCrash, "crash"),
    (SimExit, "exit"),
    (Exception, "error"),
)


class LambdaService:
    """Environments per function and the invocations they serve."""

    def __init__(
        self,
        scheduler: Scheduler,
        make_settings: Callable[[Function], Settings],
        make_clients: Callable[[Settings], SimAwsClients],
    ) -> None:
        self.scheduler = scheduler
        self.clock = scheduler.clock
        self._make_settings = make_settings
        self._make_clients = make_clients
        self.envs: dict[str, list[Environment]] = {}
        self.finished: list[Invocation] = []
        self._ids = itertools.count(1)
        self._turn = 0
        self._real_get_app = app_module.get_app
        # handler.py builds its App with runner.app.get_app(): the calling environment's.
        app_module.get_app = self.current_app  # type: ignore[assignment]
        # runner.runtime's state per environment; a function's is a Lambda runtime.
        self._processes = Processes(
            scheduler, lambda env: isinstance(env, Environment) and bool(env.function.handler)
        )

    def close(self) -> None:
        app_module.get_app = self._real_get_app
        self._processes.close()

    def current_app(self) -> App:
        fiber = self.scheduler.current()
        if fiber is None or not isinstance(fiber.env, Environment):
            raise RuntimeError("get_app() outside a simulated invocation")
        return fiber.env.app

    def current(self) -> Invocation | None:
        fiber = self.scheduler.current()
        env = fiber.env if fiber is not None else None
        return env.current if isinstance(env, Environment) else None

    def environment(self, function: Function, choice: int | None) -> Environment:
        """An idle warm environment of the function, or a new one: `choice` picks among
        the idle ones, newest first, and one past them means a new one; None takes them
        in turn (a new one only if none is idle)."""
        idle = [e for e in self.envs.get(function.logical_id, []) if e.alive and e.current is None]
        if idle and choice is None:
            self._turn += 1
            return idle[self._turn % len(idle)]
        if idle and choice is not None and choice % (len(idle) + 1) < len(idle):
            return idle[-1 - choice % (len(idle) + 1)]
        settings = self._make_settings(function)
        env = Environment(
            id=f"{function.logical_id.removesuffix('LambdaFunction')}#{next(self._ids)}",
            function=function,
            app=App(settings, self._make_clients(settings), build_registry(settings.task_modules)),
        )
        self.envs.setdefault(function.logical_id, []).append(env)
        return env

    def all_envs(self) -> list[Environment]:
        return [e for envs in self.envs.values() for e in envs]

    def running(self) -> list[Invocation]:
        return [e.current for e in self.all_envs() if e.current is not None]

    def start(
        self,
        function: Function,
        event: Any,
        *,
        choice: int | None,
        call: Callable[[App], Any] | None = None,
        after: Callable[[], None] | None = None,
        on_done: Callable[[Invocation], None] | None = None,
    ) -> Invocation:
        """Begin running the function's handler on `event` (or `call(app)`: code that
        runs outside Lambda, a producer or the CLI); `after()` runs in the invocation once
        the handler returned (a fault that strikes then). Runs until it first waits."""
        env = self.environment(function, choice)
        deadline = self.clock.t + function.timeout if function.timeout > 0 else None
        env.invocations += 1
        invocation = Invocation(
            id=f"{env.id}/{env.invocations}",
            function=function,
            env=env,
            event=event,
            started=self.clock.t,
        )
        env.current = invocation
        request = str(uuid.uuid5(uuid.NAMESPACE_URL, invocation.id))
        context = SimContext(function, deadline or math.inf, self.clock, request)

        def body() -> Any:
            if call is not None:
                result = call(env.app)
            else:
                result = resolve_handler(function.handler)(event, context)
            if after is not None:
                after()
            return result

        def finished(running: Running) -> None:
            invocation.ended = self.clock.t
            invocation.result = running.result
            invocation.error = running.error
            invocation.outcome = "ok"
            for kind, name in _OUTCOMES:
                if isinstance(running.error, kind):
                    invocation.outcome = name
                    break
            env.current = None
            if invocation.killed:
                env.alive = False
                self.scheduler.kill(env, _killer(invocation.outcome), "environment gone")
            self.finished.append(invocation)
            if on_done is not None:
                on_done(invocation)

        self.scheduler.start(env, body, deadline=deadline, on_done=finished)
        if self.scheduler.current() is None:  # the driver: run it until it first waits
            self.scheduler.run_now()
        return invocation

    def invoke(
        self, function: Function, event: Any, *, choice: int | None, call: Callable[[App], Any]
    ) -> Invocation:
        """Run to completion (the clock moves, and other invocations with it)."""
        invocation = self.start(function, event, choice=choice, call=call)
        self.scheduler.run_until(self.clock.t + SYNC_LIMIT_SECONDS, stop=lambda: invocation.done)
        if not invocation.done:
            raise SimStall(f"{invocation.id} never finished")
        return invocation

    def discard(self, env: Environment) -> None:
        """The environment is gone (its frozen threads too)."""
        env.alive = False
        self.scheduler.discard(env)


def _killer(outcome: str) -> type[SimKilled]:
    killers: dict[str, type[SimKilled]] = {"timeout": SimTimeout, "exit": SimExit}
    return killers.get(outcome, SimCrash)


class LambdaClient:
    """What `AwsClients.client("lambda")` hands the runner: Invoke on simulated Lambda
    (RequestResponse waits, on virtual time, for the invocation; Event does not)."""

    class _Meta:
        method_to_api_mapping: ClassVar[dict[str, str]] = {"invoke": "Invoke"}

    def __init__(self, lambdas: LambdaService, topology: Any) -> None:
        self._lambdas = lambdas
        self._topology = topology
        self.meta = self._Meta()

    def invoke(
        self,
        *,
        FunctionName: str,
        Payload: bytes | str = b"{}",
        InvocationType: str = "RequestResponse",
        **_: Any,
    ) -> dict[str, Any]:
        function = self._topology.function_by_name(FunctionName)
        event = json.loads(Payload or "{}")
        invocation = self._lambdas.start(function, event, choice=None)
        if InvocationType == "Event":
            return {"StatusCode": 202, "Payload": io.BytesIO(b"")}
        self._lambdas.scheduler.park(ready=lambda: invocation.done)
        if invocation.outcome == "ok":
            body = json.dumps(invocation.result, default=str).encode()
            return {"StatusCode": 200, "Payload": io.BytesIO(body)}
        error = invocation.error
        body = json.dumps({"errorType": type(error).__name__, "errorMessage": str(error)}).encode()
        return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(body)}
