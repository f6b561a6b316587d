"""A scheduled rule of the template (the sweeper's `rate(5 minutes)`), run locally.

EventBridge invokes its target asynchronously, every period, whether the last run has
ended or not. Here the rule's thread dispatches each period's invocation on a thread of
its own, through the endpoint's Lambda service (runner.local.lambdas.LambdaInvoker), so
a sweep runs in one of the function's own execution environments and sweeps overlap
when one outlasts the period, bounded only by the function's concurrency (the service
makes an invocation wait for room, as Lambda's asynchronous queue does). As Lambda does
for an asynchronous invocation, a run that fails (a function error, or Invoke failing)
is retried twice, after `retry_delays` (about a minute, then two: the pace is not
measured); a throttled one is retried until it runs.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from runner.local.lambdas import Invocation, Invoker, InvokeThrottled

log = logging.getLogger(__name__)

# Lambda's retries of a failed asynchronous invocation: two, about 1 and 2 minutes later.
ASYNC_RETRY_DELAYS = (60.0, 120.0)
THROTTLE_RETRY_SECONDS = 1.0

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
    """Invokes a function every `interval` seconds (first run after one), each run on a
    thread of its own, retried as an asynchronous invocation is."""

    def __init__(
        self,
        invoke: Invoker,
        *,
        function_name: str,
        rule_name: str,
        interval: float,
        region: str,
        account: str,
        retry_delays: tuple[float, ...] = ASYNC_RETRY_DELAYS,
    ) -> None:
        self.invoke = invoke
        self.retry_delays = retry_delays
        self.function_name = function_name
        self.rule_name = rule_name
        self.interval = interval
        self.region = region
        self.account = account
        self.runs = 0
        self.retries = 0
        self.running = 0  # runs in flight now
        self.peak_running = 0
        self.last_result: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runs: list[threading.Thread] = []

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"schedule-{self.function_name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for run in list(self._runs):
            run.join(timeout)

    def run_once(self) -> Invocation:
        invocation = self.invoke(scheduled_event(self.rule_name, self.region, self.account))
        with self._lock:
            self.last_result = invocation.payload
            self.runs += 1
        if invocation.function_error:
            log.error("scheduled %s failed: %s", self.function_name, invocation.payload)
        return invocation

    def dispatch(self) -> threading.Thread:
        """Start one period's run (with its retries) without waiting for it."""
        run = threading.Thread(
            target=self._run_with_retries, name=f"run-{self.function_name}", daemon=True
        )
        with self._lock:
            self._runs = [r for r in self._runs if r.is_alive()] + [run]
        run.start()
        return run

    def _run_with_retries(self) -> None:
        with self._lock:
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            delays = list(self.retry_delays)
            while not self._stop.is_set():
                try:
                    failed = self.run_once().function_error is not None
                except InvokeThrottled:
                    self._stop.wait(THROTTLE_RETRY_SECONDS)  # queued until it runs
                    continue
                except Exception:
                    log.exception("scheduled %s could not be invoked", self.function_name)
                    failed = True
                if not failed or not delays or self._stop.wait(delays.pop(0)):
                    return
                with self._lock:
                    self.retries += 1
        finally:
            with self._lock:
                self.running -= 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.dispatch()
