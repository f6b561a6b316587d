"""A scheduled rule of the template (the sweeper's `rate(5 minutes)`), run locally.

EventBridge invokes its target asynchronously; here the rule's thread invokes the
function through the endpoint's Lambda service (runner.local.lambdas.LambdaInvoker) and
waits, so the sweep runs in one of the function's own execution environments. Lambda's
two retries of a failed asynchronous invocation are not made: the next run comes at the
next period (the stricter reading).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from runner.local.lambdas import Invocation, Invoker

log = logging.getLogger(__name__)

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float:
    """Seconds between runs of an EventBridge `rate(...)` expression; cron is refused."""
    match = _RATE.match(expression.strip())
    if not match:
        raise ValueError(f"only rate(...) schedules run locally, not {expression!r}")
    value, unit = int(match.group(1)), match.group(2).rstrip("s")
    return float(value * _UNIT_SECONDS[unit])


def scheduled_event(rule_name: str, region: str, account: str) -> dict[str, Any]:
    """The event EventBridge sends a function on schedule."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule_name}"],
        "detail": {},
    }


class ScheduledFunction:
    """Invokes a handler every `interval` seconds on its own thread (first run after one)."""

    def __init__(
        self,
        invoke: Invoker,
        *,
        function_name: str,
        rule_name: str,
        interval: float,
        region: str,
        account: str,
    ) -> None:
        self.invoke = invoke
        self.function_name = function_name
        self.rule_name = rule_name
        self.interval = interval
        self.region = region
        self.account = account
        self.runs = 0
        self.last_result: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"schedule-{self.function_name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> Invocation:
        invocation = self.invoke(scheduled_event(self.rule_name, self.region, self.account))
        self.last_result = invocation.payload
        self.runs += 1
        if invocation.function_error:
            log.error("scheduled %s failed: %s", self.function_name, invocation.payload)
        return invocation

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                log.exception("scheduled %s could not be invoked", self.function_name)
