"""Faults at the AWS client boundary, decided per (call site, task, call count).

A fault is armed for one task (or `*`, the table-wide calls: Query, Scan): "the n-th
AWS call made for this task from now on". Where it lands, the call site, is whatever the
protocol does next, named after the runner's own public method that made the call
(`TaskStore.record_outcome:UpdateItem`, `RetryWorkflow.start:StartExecution`), or after
the state machine's state for calls Step Functions makes (`ASL:MarkRetriesExhausted:
UpdateItem`). Nothing here lists the sites: they are found on the call stack, so a new
store method is a new row of the matrix by itself.

Kinds: a transient error that outlasts the caller's retry budget (with `storm` seconds,
every call of that site for that task fails for that long), a reply lost after the write
was applied, the process crashing just before or just after the call, and the Lambda
timing out while the call hangs. Apart from the kinds, a call can be made slow (`delay`:
it succeeds, seconds late), e.g. a producer's insert that a delayed task's timer beats.
"""

from __future__ import annotations

import contextvars
import functools
import json
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, ReadTimeoutError

from runner.aws import AwsClients, AwsRetryPolicy
from runner.config import Settings

if TYPE_CHECKING:
    from tests.simulation.world import World

# Set by the state machine's interpreter around the calls Step Functions itself makes.
SITE_OVERRIDE: contextvars.ContextVar[str | None] = contextvars.ContextVar("sim_site", default=None)
WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
TABLE_WIDE = "*"
# The throttling error each service answers with.
THROTTLE_CODES = {
    "dynamodb": "ProvisionedThroughputExceededException",
    "stepfunctions": "ThrottlingException",
    # S3 slows a caller down with 503 SlowDown (its "unavailable" answer too).
    "s3": "SlowDown",
}
# The HTTP status of each service's throttling answer (S3's is a 503).
THROTTLE_STATUS = {"s3": 503}


class FaultKind(StrEnum):
    TRANSIENT = "transient"
    LOST_REPLY = "lost-reply"
    CRASH_BEFORE = "crash-before"
    CRASH_AFTER = "crash-after"
    TIMEOUT = "timeout"


def retry_budget() -> int:
    """Tries the runner makes of one call (its tenacity policy), read from the code."""
    return int(getattr(AwsRetryPolicy(), "max_attempts", 10))


@dataclass
class Armed:
    task: str
    kind: FaultKind
    countdown: int
    storm_seconds: float
    site: str | None = None  # only calls at sites containing this count (scripted runs)


@dataclass
class Storm:
    until: float | None
    calls_left: int


@dataclass(frozen=True)
class Firing:
    """A fault that happened: where, what, to which task, when."""

    site: str
    kind: FaultKind
    task: str
    at: float
    invocation: str


@dataclass
class FaultPlan:
    armed: list[Armed] = field(default_factory=list)
    storms: dict[tuple[str, str], Storm] = field(default_factory=dict)
    firings: list[Firing] = field(default_factory=list)
    stopped: bool = False
    armed_total: int = 0
    # Calls that succeed, but only after a wait (a slow network; retries within the
    # budget): (task, site fragment, seconds).
    slow: list[tuple[str, str, float]] = field(default_factory=list)

    def arm(
        self,
        task: str,
        kind: FaultKind,
        nth: int,
        storm_seconds: float = 0.0,
        *,
        site: str | None = None,
    ) -> None:
        self.armed.append(Armed(task, kind, max(1, nth), storm_seconds, site))
        self.armed_total += 1

    def stop(self) -> None:
        """No fault from now on (the quiet period in which I3 and I5 are checked)."""
        self.stopped = True
        self.armed.clear()
        self.storms.clear()
        self.slow.clear()

    def delay(self, task: str, site: str, seconds: float) -> None:
        """The task's next call at a site containing `site` is made `seconds` late."""
        self.slow.append((task, site, seconds))

    def pause(self, site: str, task: str) -> float:
        for entry in self.slow:
            if entry[0] == task and entry[1] in site:
                self.slow.remove(entry)
                return entry[2]
        return 0.0

    def decide(self, site: str, task: str, now: float, budget: int) -> FaultKind | None:
        if self.stopped:
            return None
        storm = self.storms.get((site, task))
        if storm is not None:
            if (storm.until is not None and now < storm.until) or storm.calls_left > 0:
                storm.calls_left -= 1
                return FaultKind.TRANSIENT
            del self.storms[(site, task)]
        for armed in list(self.armed):
            if armed.task != task or (armed.site is not None and armed.site not in site):
                continue
            armed.countdown -= 1
            if armed.countdown > 0:
                continue
            self.armed.remove(armed)
            if armed.kind is FaultKind.TRANSIENT:
                until = now + armed.storm_seconds if armed.storm_seconds else None
                self.storms[(site, task)] = Storm(until, budget - 1)
            return armed.kind
        return None


def site_of(operation: str) -> str:
    """`Class.method:Operation` of the runner's first public method on the call stack."""
    override = SITE_OVERRIDE.get()
    if override:
        return f"{override}:{operation}"
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        own = module == "handler" or (module.startswith("runner.") and module != "runner.aws")
        if own and not module.startswith("runner.local"):
            name = frame.f_code.co_qualname
            leaf = name.rsplit(".", 1)[-1]
            if not leaf.startswith("_") and "<" not in leaf:
                # A method is named after the object's class, not the mixin that defines
                # it (TaskStore.record_outcome, wherever runner/store/ puts it), so a
                # site's name survives a module split.
                owner = frame.f_locals.get("self")
                if owner is not None and "." in name:
                    name = f"{type(owner).__name__}.{leaf}"
                return f"{name}:{operation}"
        frame = frame.f_back
    return f"?:{operation}"


def task_of(service: str, operation: str, kwargs: dict[str, Any], world: World) -> str:
    """The task a call is made for, from its parameters (`*` for table-wide calls)."""
    if service == "dynamodb":
        key = kwargs.get("Key") or kwargs.get("Item") or {}
        value = key.get("id", {}).get("S") if isinstance(key, dict) else None
        return value if isinstance(value, str) else TABLE_WIDE
    if service == "lambda":
        try:
            found = json.loads(kwargs.get("Payload") or "{}").get("task_id")
        except (ValueError, AttributeError):
            found = None
        return found if isinstance(found, str) else TABLE_WIDE
    if service == "stepfunctions":
        if "input" in kwargs:
            try:
                found = json.loads(kwargs["input"]).get("task_id")
            except (ValueError, AttributeError):
                found = None
            return found if isinstance(found, str) else TABLE_WIDE
        arn = kwargs.get("executionArn")
        if isinstance(arn, str):
            execution = world.sfn.executions.get(arn)
            if execution is not None and execution.task_id:
                return execution.task_id
    if service == "sqs" and "MessageBody" in kwargs:
        # A timer (runner.delays.DelayMessage) names its task.
        return _json_task(kwargs["MessageBody"])
    if service == "scheduler":
        # A one-time schedule carries its timer as Input, and is named from its task.
        if "Target" in kwargs:
            return _json_task(kwargs["Target"].get("Input"))
        found = world.eventbridge.schedules.get(
            (str(kwargs.get("GroupName", "default")), str(kwargs.get("Name")))
        )
        task = found.task_id if found is not None else None
        return task or world.task_of_schedule(str(kwargs.get("Name"))) or TABLE_WIDE
    if service == "s3":
        # A payload object's key names its task's prefix (runner.payloads.task_prefix).
        key = kwargs.get("Key") or kwargs.get("Prefix")
        found = world.task_of_key(key) if isinstance(key, str) else None
        return found or TABLE_WIDE
    return TABLE_WIDE


def _json_task(body: Any) -> str:
    try:
        found = json.loads(body or "{}").get("task_id")
    except (ValueError, AttributeError, TypeError):
        found = None
    return found if isinstance(found, str) else TABLE_WIDE


def throttled(service: str, operation: str) -> ClientError:
    code = THROTTLE_CODES.get(service, "ThrottlingException")
    response: Any = {
        "Error": {"Code": code, "Message": "injected by the simulation"},
        "ResponseMetadata": {"HTTPStatusCode": THROTTLE_STATUS.get(service, 400)},
    }
    return ClientError(response, operation)


class FaultyClient:
    """A client whose calls pass through the world's fault plan and write log."""

    def __init__(self, raw: Any, service: str, world: World) -> None:
        self._raw = raw
        self._service = service
        self._world = world
        self._operations: dict[str, str] = dict(raw.meta.method_to_api_mapping)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._raw, name)
        operation = self._operations.get(name)
        if operation is None or not callable(attr):
            return attr
        return functools.partial(self._call, operation, attr)

    def _call(self, operation: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        world = self._world
        world.refuse_if_killed()
        site = site_of(operation)
        task = task_of(self._service, operation, kwargs, world)
        pause = world.faults.pause(site, task)
        if pause and world.scheduler.current() is not None:
            world.scheduler.sleep(pause)
        # Called outside every fiber, the caller is AWS itself (Step Functions' own calls).
        kind = world.fault_for(site, task, process=world.scheduler.current() is not None)
        if kind is FaultKind.CRASH_BEFORE:
            world.crash(f"crash before {site}")
        elif kind is FaultKind.TIMEOUT:
            world.timeout(f"hung in {site}")
        elif kind is FaultKind.TRANSIENT:
            raise throttled(self._service, operation)
        write = self._service == "dynamodb" and operation in WRITE_OPERATIONS
        before = world.snapshot(task) if write else None
        try:
            result = method(**kwargs)
        except ClientError:
            if kind is FaultKind.LOST_REPLY:
                raise ReadTimeoutError(endpoint_url="https://simulated") from None
            if kind is FaultKind.CRASH_AFTER:
                world.crash(f"crash after {site}")
            raise
        if write:
            world.log_write(site, task, before, world.snapshot(task))
        if kind is FaultKind.LOST_REPLY:
            raise ReadTimeoutError(endpoint_url="https://simulated")
        if kind is FaultKind.CRASH_AFTER:
            world.crash(f"crash after {site}")
        return result


class SimAwsClients(AwsClients):
    """AwsClients over the simulation: moto's DynamoDB and the simulated Step Functions,
    each behind the fault plan. Other services go to moto as they are."""

    def __init__(self, settings: Settings, world: World) -> None:
        super().__init__(settings)
        self._world = world

    def client(self, service: str, *, timeout: float | None = None) -> Any:
        # A short-timeout client (runtime's lease cut) meets the same faults.
        found = self._clients.get(service)
        if found is None:
            found = self._clients[service] = FaultyClient(
                self._world.raw_client(service), service, self._world
            )
        return found
