"""Chaos mode: the faults AWS really has, injected into the running local stack.

A fault spec is a comma-separated list of `SERVICE[.QUALIFIER].KIND=RATE[xLIMIT][@SECONDS]`:
RATE is the share of matching calls that fail (0-1), LIMIT (optional) the most times the
fault fires, SECONDS (a `timeout-after-claim` only) when the timeout comes. For example
`dynamodb.throttle=0.2,states.StartExecution.unavailable=1`,
`lambda.processStream.crash-after-claim=1x1` or `lambda.runTask.timeout-after-claim=1x1@2`.

- `dynamodb[.Action]`, `states[.Action]` (an action such as `UpdateItem` or
  `StartExecution`; none: every action):
  - `throttle`: refused before it runs, HTTP 400 `ProvisionedThroughputExceededException`
    (DynamoDB) or `ThrottlingException` (Step Functions);
  - `unavailable`: refused before it runs, HTTP 503 `ServiceUnavailable`;
  - `lost-reply`: it runs and applies, then the reply is an HTTP 500 (the caller cannot
    know it applied).
- `lambda[.function]` (`processStream` or a full function name; none: every function):
  - `crash-after-claim`: once a claim (a write moving a task to PROCESSING) made by one
    of the function's environments has applied, that environment's process is killed;
    the invocation ends as a crash (`Runtime.ExitError`);
  - `timeout-after-claim`: once such a claim has applied, the invocation's deadline
    moves to SECONDS later (default 0): the handler keeps running until then, as it
    would up to a real timeout, and is killed there; the invocation ends as a timeout
    (`Sandbox.Timedout`). An invocation that answers first is not timed out;
  - `crash-before-final`, `timeout-before-final`: the write that would move a task out
    of PROCESSING is refused, and the environment that made it killed;
  - `throttle`: Invoke is refused, HTTP 429 `TooManyRequestsException`;
  - `service-error`: Invoke fails in Lambda itself, HTTP 500 `ServiceException`
    (`Lambda.ServiceException` to Step Functions); nothing runs.
- `stream[.function]`: `redeliver`, each stream batch is delivered once more after it
  succeeded.

The endpoint process injects the `dynamodb`, `states` and `lambda` faults (it tells a
function's environment by the dummy access key id each has, runner.local.lambda_env);
the stack's process injects `stream` faults in its pollers. Every injected fault is
logged (`chaos: ...`) and counted; `GET /faults` on the control endpoint shows the
counts (runner.local.control).
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

KINDS = {
    "dynamodb": ("throttle", "unavailable", "lost-reply"),
    "states": ("throttle", "unavailable", "lost-reply"),
    "lambda": (
        "crash-after-claim",
        "crash-before-final",
        "timeout-after-claim",
        "timeout-before-final",
        "throttle",
        "service-error",
    ),
    "stream": ("redeliver",),
}
# Where each service's faults are injected.
ENDPOINT_SERVICES = ("dynamodb", "states", "lambda")
STACK_SERVICES = ("stream",)
_FAULT = re.compile(
    r"^(?P<target>[A-Za-z][\w.-]*)=(?P<rate>[0-9]*\.?[0-9]+)(?:x(?P<limit>[0-9]+))?"
    r"(?:@(?P<after>[0-9]*\.?[0-9]+)s?)?$"
)
# The kinds that take `@SECONDS`.
DELAYED_KINDS = ("timeout-after-claim",)


class FaultSpecError(ValueError):
    """A fault spec that cannot be parsed; the message says which part and why."""


@dataclass(frozen=True)
class Fault:
    """One fault of a spec: where, what, how often, at most how many times."""

    service: str
    qualifier: str | None
    kind: str
    rate: float
    limit: int | None = None
    after: float | None = None  # seconds until a timeout-after-claim's deadline

    def __str__(self) -> str:
        target = ".".join(p for p in (self.service, self.qualifier, self.kind) if p)
        return (
            f"{target}={self.rate:g}"
            + (f"x{self.limit}" if self.limit is not None else "")
            + (f"@{self.after:g}s" if self.after is not None else "")
        )

    def matches(self, service: str, qualifier: str, kind: str) -> bool:
        if (service, kind) != (self.service, self.kind):
            return False
        wanted = self.qualifier
        return wanted is None or qualifier == wanted or qualifier.endswith(f"-{wanted}")


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """`dynamodb.UpdateItem.throttle=0.2,...` → faults; raises FaultSpecError."""
    faults = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        match = _FAULT.match(part)
        if not match:
            raise FaultSpecError(
                f"{part!r}: expected SERVICE[.QUALIFIER].KIND=RATE[xLIMIT][@SECONDS]"
            )
        pieces = match["target"].split(".")
        service, kind = pieces[0], pieces[-1]
        if service not in KINDS:
            known = ", ".join(KINDS)
            raise FaultSpecError(f"{part!r}: unknown service {service!r} (one of {known})")
        if len(pieces) not in (2, 3):
            raise FaultSpecError(f"{part!r}: expected SERVICE[.QUALIFIER].KIND")
        if kind not in KINDS[service]:
            raise FaultSpecError(
                f"{part!r}: {service} has no fault {kind!r} (one of {', '.join(KINDS[service])})"
            )
        rate = float(match["rate"])
        if not 0 <= rate <= 1:
            raise FaultSpecError(f"{part!r}: the rate must be between 0 and 1")
        limit = int(match["limit"]) if match["limit"] else None
        if limit == 0:
            raise FaultSpecError(f"{part!r}: a limit must be at least 1")
        after = float(match["after"]) if match["after"] else None
        if after is not None and kind not in DELAYED_KINDS:
            raise FaultSpecError(f"{part!r}: only {', '.join(DELAYED_KINDS)} takes @SECONDS")
        qualifier = pieces[1] if len(pieces) == 3 else None
        faults.append(Fault(service, qualifier, kind, rate, limit, after))
    return tuple(faults)


def describe_kinds() -> list[str]:
    """One line per service: the faults `--faults` accepts (printed by `serve`)."""
    qualifiers = {
        "dynamodb": "Action",
        "states": "Action",
        "lambda": "function",
        "stream": "function",
    }
    return [
        f"{service}[.{qualifiers[service]}].{{{','.join(kinds)}}}=RATE[xLIMIT]"
        for service, kinds in KINDS.items()
    ] + [f"  ({', '.join(DELAYED_KINDS)}: =RATE[xLIMIT][@SECONDS], the timeout that much later)"]


class FaultPlan:
    """The active faults of one process, a seeded random source and the counts."""

    def __init__(
        self,
        faults: Sequence[Fault] = (),
        *,
        seed: int | None = None,
        services: Sequence[str] = tuple(KINDS),
    ) -> None:
        self.seed = seed
        self.services = tuple(services)
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._faults: tuple[Fault, ...] = ()
        self._fired: dict[str, int] = {}  # by fault, since it was set
        self.injected: dict[str, int] = {}  # by fault, since the process started
        self.replace(faults)

    @property
    def faults(self) -> tuple[Fault, ...]:
        return self._faults

    def replace(self, faults: Sequence[Fault], seed: int | None = None) -> None:
        """Make `faults` the active ones (those of this process's services); a seed
        restarts the draws from it (the same seed, the same sequence of draws: which call
        meets which draw still depends on timing)."""
        mine = tuple(f for f in faults if f.service in self.services)
        with self._lock:
            self._faults = mine
            self._fired = {str(f): 0 for f in mine}
            if seed is not None:
                self.seed = seed
                self._random.seed(seed)
        if mine:
            log.warning("chaos: active faults %s", ", ".join(map(str, mine)))

    def decide(self, service: str, qualifier: str, kind: str, detail: str = "") -> Fault | None:
        """The fault to inject into this call, if one fires (logged and counted)."""
        faults = self._faults
        if not faults:
            return None
        for fault in faults:
            if not fault.matches(service, qualifier, kind):
                continue
            name = str(fault)
            with self._lock:
                fired = self._fired.get(name)
                if fired is None or (fault.limit is not None and fired >= fault.limit):
                    continue
                if fault.rate < 1 and self._random.random() >= fault.rate:
                    continue
                self._fired[name] = fired + 1
                self.injected[name] = self.injected.get(name, 0) + 1
            log.warning(
                "chaos: %s %s on %s%s", kind, service, qualifier, f" ({detail})" if detail else ""
            )
            return fault
        return None

    def snapshot(self) -> dict[str, Any]:
        """The active faults, those whose limit is spent (no longer active), the seed and
        the counts."""
        with self._lock:
            spent = [
                f for f in self._faults if f.limit is not None and self._fired[str(f)] >= f.limit
            ]
            return {
                "faults": [str(f) for f in self._faults if f not in spent],
                "spent": [str(f) for f in spent],
                "seed": self.seed,
                "injected": dict(self.injected),
            }
