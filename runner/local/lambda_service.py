"""The local Lambda service: which execution environment serves an invocation.

Shaped after LocalStack's `assignment.py`. Each function has a pool of
`ExecutionEnvironment`s (runner.local.lambda_env); an invocation takes a warm, free
environment or starts a new one (a cold start) while there is room:

- a function with a reserved concurrency (`ReservedConcurrentExecutions` in the template)
  has at most that many; beyond it the invocation is refused as Lambda refuses it (HTTP
  429 `TooManyRequestsException`, which Step Functions reports as
  `Lambda.TooManyRequestsException` and an event source mapping retries);
- the others share the account's unreserved pool, as on AWS, where it is 1,000 and a
  burst this stack can make never reaches it. Locally the pool is `account_concurrency`
  environments (16; `TASK_RUNNER_LOCAL_CONCURRENCY`), so the machine is not flooded with
  processes: when it is full, a warm idle environment of another function is retired to
  make room, and otherwise the invocation **waits** for one to be free (back-pressure,
  counted as `queued`) rather than being refused, since AWS would have run it.

Environments idle for `keep_alive_s` are retired; timed-out and crashed ones are
discarded.

`installed()` makes moto's Docker-less Lambda backend answer Invoke through this
service, so Step Functions' `lambda:invoke`, the stack's stream pollers and schedules
(which call Invoke on the endpoint) and any boto3 client all reach the same pools.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from runner.local.lambda_config import FunctionConfig, reserved_in
from runner.local.lambda_env import ExecutionEnvironment, RuntimeStatus
from runner.local.lambda_invoke import (
    FunctionNotFound,
    FunctionThrottled,
    LambdaServiceError,
    answering_moto,
    response_too_large,
    validate,
)
from runner.local.lambda_protocol import InvocationResult, Runtime
from runner.local.lambda_reaper import children_by_parent
from runner.local.lambda_runtime import Code, module_files, runtime_python, system_path
from runner.local.lambdas import MAX_PAYLOAD_BYTES, function_name_of

log = logging.getLogger(__name__)

# The local stand-in for the account's unreserved concurrency (AWS: 1,000): environments
# of the functions without a reserved concurrency, all together.
ACCOUNT_CONCURRENCY = 16
ACCOUNT_CONCURRENCY_ENV = "TASK_RUNNER_LOCAL_CONCURRENCY"
# How often running environments' memory is compared with their function's.
MEMORY_CHECK_SECONDS = 0.2
# How long an invocation waits for room in the account's pool before it is refused
# (Lambda's longest timeout; nothing here waits that long unless the stack is stuck).
QUEUE_WAIT_SECONDS = 900.0
# Idle environments are retired after this long (AWS does not say; LocalStack: 10 min).
KEEP_ALIVE_SECONDS = 600.0


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
    queued: int = 0  # invocations that waited for room in the account's pool
    service_errors: int = 0
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
            "queued": self.queued,
            "service_errors": self.service_errors,
            "peak_concurrency": self.peak_concurrency,
        }


class LambdaService:
    """Function name → pool of execution environments; see the module docstring."""

    def __init__(
        self,
        *,
        overlay: Mapping[str, str] | None = None,
        account_concurrency: int = ACCOUNT_CONCURRENCY,
        keep_alive_s: float = KEEP_ALIVE_SECONDS,
        python: str | None = None,
    ) -> None:
        self.overlay = dict(overlay or {})
        self.account_concurrency = account_concurrency
        self.keep_alive_s = keep_alive_s
        # What the zip holds, on the runtime's Python (runner.local.lambda_runtime).
        self.code = Code()
        python = python or runtime_python()
        self._runtime = Runtime(
            python=python,
            task_root=str(self.code.task_root),
            runtime_dir=str(self.code.runtime_dir),
            path=system_path(python),
        )
        self._functions: dict[str, FunctionConfig] = {}
        self._pools: dict[str, list[ExecutionEnvironment]] = {}
        self._stats: dict[str, FunctionStats] = {}
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # an environment freed or discarded
        self._numbers = iter(range(1, 10**8))
        # Workers are spawned from this one long-lived thread: each asks Linux to kill it
        # when the thread that started it ends (a frozen worker cannot see its pipe close).
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="lambda-spawner")
        self._stop = threading.Event()
        # Called with the function's name before each invocation; may raise
        # FunctionThrottled or LambdaServiceError (runner.local.chaos_endpoint's
        # `lambda.*.throttle` and `lambda.*.service-error`).
        self.before_invoke: Callable[[str], None] | None = None
        threading.Thread(target=self._retire_idle, name="lambda-keep-alive", daemon=True).start()
        threading.Thread(target=self._watch_memory, name="lambda-memory", daemon=True).start()

    # --- functions -----------------------------------------------------------------

    def load(self, files: Sequence[tuple[str, str]]) -> None:
        """Copy modules the zip does not hold into the task root (the demo's and the
        user's task modules: `lambda_runtime.module_files`, found by the stack)."""
        self.code.add(files)

    def register(self, configs: Sequence[FunctionConfig]) -> None:
        """Add (or replace) functions; refuses what Lambda would refuse to deploy. A
        handler's module the zip does not hold (a test's) is copied in, found as this
        process imports it."""
        for config in configs:
            reserved = reserved_in(config.environment)
            if reserved:
                raise ValueError(
                    f"function {config.name} sets reserved environment variables: "
                    + ", ".join(reserved)
                )
            module = config.handler.rpartition(".")[0]
            if module and not self.code.holds(module):
                with contextlib.suppress(Exception):
                    self.code.add(module_files([module]))
            if not module or not self.code.holds(module):
                raise ModuleNotFoundError(
                    f"function {config.name}: no module named {module!r} for {config.handler}"
                )
        with self._lock:
            for config in configs:
                self._functions[config.name] = config
                self._pools.setdefault(config.name, [])
                self._stats.setdefault(config.name, FunctionStats())

    def concurrency(self, name: str) -> int:
        """The function's reserved concurrency; without one, the account's pool."""
        config = self._functions[name]
        if config.reserved_concurrency is not None:
            return config.reserved_concurrency
        return self.account_concurrency

    def _unreserved(self) -> list[ExecutionEnvironment]:
        return [
            e
            for name, pool in self._pools.items()
            if self._functions[name].reserved_concurrency is None
            for e in pool
        ]

    # --- invoking ------------------------------------------------------------------

    def invoke(self, name_or_arn: str, payload: bytes) -> InvocationResult:
        """A synchronous invocation (RequestResponse), as Lambda's Invoke runs it."""
        name = function_name_of(name_or_arn)
        validate(payload)
        if self.before_invoke is not None and name in self._functions:
            try:
                self.before_invoke(name)
            except FunctionThrottled:
                with self._lock:
                    self._stats[name].throttles += 1
                raise
            except LambdaServiceError:
                with self._lock:
                    self._stats[name].service_errors += 1
                raise
        environment = self._assign(name)
        stats = self._stats[name]
        try:
            result = environment.invoke(payload)
        except BaseException:
            environment.stop()  # never left warm but not frozen
            raise
        finally:
            with self._lock:
                if environment.status is RuntimeStatus.STOPPED:
                    self._pools[name].remove(environment)
                else:
                    environment.release()
                self._room.notify_all()
        if not result.function_error and len(result.payload) > MAX_PAYLOAD_BYTES:
            result = response_too_large(result)
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
        deadline = time.monotonic() + QUEUE_WAIT_SECONDS
        queued = False
        with self._lock:
            if name not in self._functions:
                raise FunctionNotFound(name)
            while True:
                pool = self._pools[name]
                for environment in pool:
                    if environment.status is RuntimeStatus.READY:
                        environment.reserve()
                        return environment
                if self._functions[name].reserved_concurrency is not None:
                    if len(pool) < self.concurrency(name):
                        return self._new_environment(name)
                    self._stats[name].throttles += 1
                    raise FunctionThrottled(name)  # as Lambda refuses past a reserve
                shared = self._unreserved()
                if len(shared) < self.account_concurrency:
                    return self._new_environment(name)
                idle = [e for e in shared if e.status is RuntimeStatus.READY]
                if idle:  # another function's warm environment makes room
                    oldest = min(idle, key=lambda e: e.last_used)
                    self._pools[oldest.config.name].remove(oldest)
                    oldest.stop()
                    return self._new_environment(name)
                if not queued:
                    queued = True
                    self._stats[name].queued += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    self._stats[name].throttles += 1
                    raise FunctionThrottled(name)
                self._room.wait(left)

    def _new_environment(self, name: str) -> ExecutionEnvironment:
        """A new (cold) environment of `name`, reserved; the caller holds the lock."""
        pool = self._pools[name]
        environment = ExecutionEnvironment(
            self._functions[name],
            number=next(self._numbers),
            overlay=self.overlay,
            spawn=self._spawn,
            runtime=self._runtime,
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
                self._room.notify_all()
            for environment in idle:
                log.info("retiring idle environment %s", environment.id)
                environment.stop()

    def _watch_memory(self) -> None:
        """End an invocation whose environment holds more than its function's memory, as
        Lambda does (`Runtime.OutOfMemory`): its processes' resident memory, sampled
        every MEMORY_CHECK_SECONDS while it runs."""
        while not self._stop.wait(MEMORY_CHECK_SECONDS):
            running = [e for e in self.environments() if e.status is RuntimeStatus.INVOKING]
            if not running:
                continue
            children = functools.cache(children_by_parent)  # one /proc scan a round, if any
            for environment in running:
                limit = environment.config.memory_mb * 1024 * 1024
                if environment.memory_bytes(children) > limit and environment.force("oom"):
                    log.warning(
                        "%s: past its %d MB; Runtime.OutOfMemory",
                        environment.id,
                        environment.config.memory_mb,
                    )

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._room.notify_all()  # waiting invocations are refused
        for environment in self.environments():
            environment.stop()
        self._spawner.shutdown(wait=True)
        self.code.close()

    @contextlib.contextmanager
    def installed(self) -> Iterator[LambdaService]:
        """Answer moto's Lambda Invoke with this service for the duration of the block."""
        with answering_moto(self.invoke):
            yield self
