"""The local schedule fires as EventBridge does: every period, asynchronously, and a
failed run is retried as Lambda retries an asynchronous invocation (runner.local.scheduler)."""

from __future__ import annotations

import threading
import time
from typing import Any

import runner.local.scheduler as module
from runner.local.lambdas import Invocation, InvokeThrottled
from runner.local.scheduler import ScheduledFunction


class Sweep:
    """An invoker whose runs take `seconds`, answering from a script (then succeeding)."""

    def __init__(self, seconds: float, *answers: Any) -> None:
        self.seconds = seconds
        self.answers = list(answers)
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> Invocation:
        with self._lock:
            self.calls += 1
            answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        time.sleep(self.seconds)
        if answer == "error":
            return Invocation({"errorType": "ValueError"}, "Unhandled")
        return Invocation({"ok": True})


def schedule(invoke: Sweep, interval: float, **kwargs: Any) -> ScheduledFunction:
    return ScheduledFunction(
        invoke,
        function_name="sweep",
        rule_name="rule",
        interval=interval,
        region="us-east-1",
        account="123456789012",
        **kwargs,
    )


def test_a_run_longer_than_the_period_does_not_hold_the_next_one_back() -> None:
    # Given sweeps that take 0.5 s, scheduled every 0.2 s
    sweeps = Sweep(0.5)
    scheduled = schedule(sweeps, 0.2)

    # When it runs for a second
    scheduled.start()
    time.sleep(1.1)
    scheduled.stop()

    # Then a run started every period (~5), overlapping as EventBridge's would
    assert sweeps.calls >= 4
    assert scheduled.peak_running >= 2


def test_a_failed_run_is_retried_twice_and_a_throttled_one_until_it_runs() -> None:
    failing = Sweep(0.0, "error", "error", "error", "error")
    scheduled = schedule(failing, 60, retry_delays=(0.05, 0.05))
    scheduled.dispatch().join(5)
    assert (failing.calls, scheduled.retries) == (3, 2)  # the first run and two retries

    throttled = Sweep(0.0, InvokeThrottled("sweep"), InvokeThrottled("sweep"))
    scheduled = schedule(throttled, 60)
    module.THROTTLE_RETRY_SECONDS, saved = 0.01, module.THROTTLE_RETRY_SECONDS
    try:
        scheduled.dispatch().join(5)
    finally:
        module.THROTTLE_RETRY_SECONDS = saved
    assert (throttled.calls, scheduled.runs, scheduled.retries) == (3, 1, 0)
