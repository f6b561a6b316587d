"""The local Lambda service: which execution environment serves an invocation.

Shaped after LocalStack's `assignment.py`. Each function has a pool of
`ExecutionEnvironment`s (runner.local.lambda_env), at most its reserved concurrency
(`ReservedConcurrentExecutions` in the template; locally 2 when the template sets none,
where AWS would share the account's 1,000): an invocation takes a warm, free environment,
or starts a new one (a cold start) while the pool has room, or is refused as Lambda
refuses it (HTTP 429 `TooManyRequestsException`, which Step Functions reports as
`Lambda.TooManyRequestsException` and an event source mapping retries). Environments
idle for `keep_alive_s` are retired; timed-out and crashed ones are discarded.

`installed()` makes moto's Docker-less Lambda backend answer Invoke through this
service, so Step Functions' `lambda:invoke`, the stack's stream pollers and schedules
(which call Invoke on the endpoint) and any boto3 client all reach the same pools.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.local.lambda_config import FunctionConfig, reserved_in
from runner.local.lambda_env import ExecutionEnvironment, InvocationResult, RuntimeStatus
from runner.local.lambdas import function_name_of
from runner.local.template import ROOT

log = logging.getLogger(__name__)

# Environments per function when the template reserves none (AWS: the account's pool).
DEFAULT_CONCURRENCY = 2
# Idle environments are retired after this long (AWS does not say; LocalStack: 10 min).
KEEP_ALIVE_SECONDS = 600.0


class FunctionNotFound(Exception):
    """No function of that name is registered."""


class FunctionThrottled(Exception):
    """Every environment the function may have is busy (its concurrency is reached)."""


@dataclass
class FunctionStats:
    """What one function's environments have done, for the control endpoint and bench/."""

    invocations: int = 0
    cold_starts: int = 0
    init_s: list[float] = field(default_factory=list)
    # Whole invocations that began with a cold start (init included), and all of them.
    cold_invocation_s: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    function_errors: int = 0
    timeouts: int = 0
    crashes: int = 0
    throttles: int = 0
    peak_concurrency: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "invocations": self.invocations,
            "cold_starts": self.cold_starts,
            "init_s": [round(s, 3) for s in self.init_s[-20:]],
            "cold_invocation_s": [round(s, 3) for s in self.cold_invocation_s[-20:]],
            "duration_s": round(self.duration_s, 3),
            "function_errors": self.function_errors,
            "timeouts": self.timeouts,
            "crashes": self.crashes,
            "throttles": self.throttles,
            "peak_concurrency": self.peak_concurrency,
        }


class LambdaService:
    """Function name → pool of execution environments; see the module docstring."""

    def __init__(
        self,
        *,
        overlay: Mapping[str, str] | None = None,
        default_concurrency: int = DEFAULT_CONCURRENCY,
        keep_alive_s: float = KEEP_ALIVE_SECONDS,
        python: str = sys.executable,
    ) -> None:
        self.overlay = dict(overlay or {})
        self.default_concurrency = default_concurrency
        self.keep_alive_s = keep_alive_s
        self._python = python
        self._functions: dict[str, FunctionConfig] = {}
        self._pools: dict[str, list[ExecutionEnvironment]] = {}
        self._stats: dict[str, FunctionStats] = {}
        self._lock = threading.Lock()
        self._numbers = iter(range(1, 10**8))
        # Workers are spawned from this one long-lived thread: each asks Linux to kill it
        # when the thread that started it ends (a frozen worker cannot see its pipe close).
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="lambda-spawner")
        self._stop = threading.Event()
        # Called with the function's name before each invocation; may raise
        # FunctionThrottled (runner.local.chaos_endpoint's `lambda.*.throttle`).
        self.before_invoke: Callable[[str], None] | None = None
        threading.Thread(target=self._retire_idle, name="lambda-keep-alive", daemon=True).start()

    # --- functions -----------------------------------------------------------------

    def register(self, configs: Sequence[FunctionConfig]) -> None:
        """Add (or replace) functions; refuses what Lambda would refuse to deploy."""
        for config in configs:
            reserved = reserved_in(config.environment)
            if reserved:
                raise ValueError(
                    f"function {config.name} sets reserved environment variables: "
                    + ", ".join(reserved)
                )
            module = config.handler.rpartition(".")[0]
            if str(ROOT) not in sys.path:
                sys.path.insert(0, str(ROOT))
            if not module or importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError(
                    f"function {config.name}: no module named {module!r} for {config.handler}"
                )
        with self._lock:
            for config in configs:
                self._functions[config.name] = config
                self._pools.setdefault(config.name, [])
                self._stats.setdefault(config.name, FunctionStats())

    def concurrency(self, name: str) -> int:
        """The function's reserved concurrency; without one, the stack's stand-in for the
        account's unreserved pool: the default, or what its stream mappings can use."""
        config = self._functions[name]
        if config.reserved_concurrency is not None:
            return config.reserved_concurrency
        return max(self.default_concurrency, config.unreserved_concurrency or 0)

    # --- invoking ------------------------------------------------------------------

    def invoke(self, name_or_arn: str, payload: bytes) -> InvocationResult:
        """A synchronous invocation (RequestResponse), as Lambda's Invoke runs it."""
        name = function_name_of(name_or_arn)
        if self.before_invoke is not None and name in self._functions:
            try:
                self.before_invoke(name)
            except FunctionThrottled:
                with self._lock:
                    self._stats[name].throttles += 1
                raise
        environment = self._assign(name)
        stats = self._stats[name]
        try:
            result = environment.invoke(payload)
        finally:
            with self._lock:
                if environment.status is RuntimeStatus.STOPPED:
                    self._pools[name].remove(environment)
                else:
                    environment.release()
        with self._lock:
            stats.invocations += 1
            stats.duration_s += result.duration_s
            if result.init_s is not None:
                stats.cold_starts += 1
                stats.init_s.append(result.init_s)
                stats.cold_invocation_s.append(result.duration_s)
            if result.error_type == "Sandbox.Timedout":
                stats.timeouts += 1
            elif result.discarded:
                stats.crashes += 1
            elif result.function_error:
                stats.function_errors += 1
        log.debug(
            "REPORT %s Duration: %.0f ms%s%s",
            result.environment_id,
            result.duration_s * 1000,
            f" Init Duration: {result.init_s * 1000:.0f} ms" if result.init_s else "",
            f" {result.error_type}" if result.error_type else "",
        )
        return result

    def _assign(self, name: str) -> ExecutionEnvironment:
        with self._lock:
            if name not in self._functions:
                raise FunctionNotFound(name)
            pool = self._pools[name]
            for environment in pool:
                if environment.status is RuntimeStatus.READY:
                    environment.reserve()
                    return environment
            if len(pool) >= self.concurrency(name):
                self._stats[name].throttles += 1
                raise FunctionThrottled(name)
            environment = ExecutionEnvironment(
                self._functions[name],
                number=next(self._numbers),
                overlay=self.overlay,
                spawn=self._spawn,
                python=self._python,
            )
            environment.reserve()
            pool.append(environment)
            stats = self._stats[name]
            stats.peak_concurrency = max(stats.peak_concurrency, len(pool))
            return environment

    def _spawn(self, popen: Callable[[], Any]) -> Any:
        return self._spawner.submit(popen).result()

    # --- looking environments up -------------------------------------------------------

    def environments(self) -> list[ExecutionEnvironment]:
        with self._lock:
            return [e for pool in self._pools.values() for e in pool]

    def by_access_key(self, access_key_id: str) -> ExecutionEnvironment | None:
        """The environment whose credentials signed a request (None: not a Lambda's)."""
        if not access_key_id.startswith("ASIALOCALENV"):
            return None
        return next((e for e in self.environments() if e.access_key_id == access_key_id), None)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                name: {
                    **self._stats[name].as_dict(),
                    "concurrency": self.concurrency(name),
                    "environments": [
                        {"id": e.id, "pid": e.pid, "status": e.status.value}
                        for e in self._pools[name]
                    ],
                }
                for name in sorted(self._functions)
            }

    # --- lifecycle -------------------------------------------------------------------

    def _retire_idle(self) -> None:
        while not self._stop.wait(min(30.0, self.keep_alive_s)):
            cutoff = time.monotonic() - self.keep_alive_s
            with self._lock:
                idle = [
                    e
                    for pool in self._pools.values()
                    for e in pool
                    if e.status is RuntimeStatus.READY and e.last_used < cutoff
                ]
                for environment in idle:
                    self._pools[environment.config.name].remove(environment)
            for environment in idle:
                log.info("retiring idle environment %s", environment.id)
                environment.stop()

    def stop(self) -> None:
        self._stop.set()
        for environment in self.environments():
            environment.stop()
        self._spawner.shutdown(wait=True)

    @contextlib.contextmanager
    def installed(self) -> Iterator[LambdaService]:
        """Answer moto's Lambda Invoke with this service for the duration of the block."""
        from moto.awslambda.exceptions import LambdaClientError, UnknownFunctionException
        from moto.awslambda_simple.models import LambdaSimpleBackend

        service = self

        class TooManyRequestsException(LambdaClientError):
            code = 429

            def __init__(self) -> None:
                super().__init__("TooManyRequestsException", "Rate Exceeded.")

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
                result = service.invoke(function_name, payload)
            except FunctionNotFound as exc:
                raise UnknownFunctionException(function_name) from exc
            except FunctionThrottled as exc:
                raise TooManyRequestsException() from exc
            response_headers["x-amz-executed-version"] = "$LATEST"
            if result.function_error:
                response_headers["x-amz-function-error"] = result.function_error
            return result.payload

        original = LambdaSimpleBackend.invoke
        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]
