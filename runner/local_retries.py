"""In-process retries: a handler's tries within one attempt (one claim), before the
attempt fails and the stream or the retry workflow takes over.

A type's `local_retries` re-invoke its handler after a `RetryableTaskError`, with a
doubling delay, all within one deadline (the claim's lease covers one timeout, not one
per try: I1). No try starts beside work an earlier one left running, nor once a cancel
was requested (the outcome would be CANCELLED anyway; the effects must not run again).

Each try is a fresh run of the handler for its durable steps: a step name may be used
once per try (`StepRecorder.new_try`), a step an earlier try recorded returns its result,
one it did not record runs again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from runner.context import TaskContext
from runner.errors import RetryableTaskError, TaskTimedOut
from runner.invoke import invoke_handler
from runner.registry import TaskDefinition


def run_tries(
    definition: TaskDefinition,
    data: BaseModel,
    context: TaskContext,
    timeout: float,
    *,
    left_running: list[threading.Thread],
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Any:
    """The handler's result (a model as its JSON value), after up to `local_retries`
    retries within `timeout` seconds in all; the last try's error otherwise."""
    deadline = monotonic() + timeout
    tries = definition.local_retries + 1
    for number in range(1, tries + 1):
        left = deadline - monotonic()
        if left <= 0:
            raise TaskTimedOut(f"{definition.type} exceeded its {timeout:.1f} s timeout")
        if context.step_recorder is not None:
            context.step_recorder.new_try()
        try:
            result = invoke_handler(definition, data, context, left, left_running=left_running)
            break
        except TaskTimedOut:
            raise
        except RetryableTaskError:
            if number == tries or left_running or context.cancel_requested:
                raise  # the last try, one whose work still runs, or a cancel: no other
            delay = definition.local_retry_delay_seconds * 2 ** (number - 1)
            sleep(max(0.0, min(delay, deadline - monotonic())))
            if context.cancel_requested:
                raise  # asked to stop while it waited
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    return result
