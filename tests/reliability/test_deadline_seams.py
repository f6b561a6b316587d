"""Seams between the fixes to the control verbs and payloads, as AWS would run them.

Time is the store's injected clock; real waits are fractions of a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from runner import runtime
from runner.app import App
from runner.client import TaskRunnerClient
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskDefinition

S = TaskStatus
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


class _Empty(BaseModel):
    pass


@pytest.fixture
def ended() -> Iterator[list[str]]:
    """The runtime can be ended (as in Lambda): each end is recorded, and returns."""
    calls: list[str] = []
    runtime.set_ender(lambda: calls.append("ended"))
    yield calls
    runtime.set_ender(None)


def test_an_input_slow_to_load_is_time_the_handler_no_longer_has(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lease's cap is the claim's time + timeout + 30 s (LEASE_GRACE_SECONDS), and the
    # heartbeat's watchdog ends the runtime 15 s before it. A load that takes 20 s (a
    # 10 MiB input, S3 throttled and retried) must come off the handler's own timeout, or
    # a handler within it runs past the watchdog: the runtime ended, no outcome written,
    # the effect run again by the retry.
    now = {"at": T0}
    app.store.clock = lambda: now["at"]
    app.registry.register(
        TaskDefinition(
            type="SLOWLOAD", input_model=_Empty, handler=lambda d, c: "ok", timeout_seconds=600
        )
    )
    task = TaskRunnerClient(app).create_task("SLOWLOAD", {})
    load = app.store.payloads.load

    def slow_load(value: Any) -> Any:
        now["at"] = now["at"] + timedelta(seconds=20)
        return load(value)

    given: list[float] = []
    from runner import local_retries

    invoke = local_retries.invoke_handler

    def spy(definition: Any, data: Any, context: Any, left: float, **kw: Any) -> Any:
        given.append(left)
        return invoke(definition, data, context, left, **kw)

    monkeypatch.setattr(app.store.payloads, "load", slow_load)
    monkeypatch.setattr(local_retries, "invoke_handler", spy)
    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)

    # The handler was given what was left of its 600 s: it is timed out by claim + 600 s,
    # 15 s before the watchdog would end the runtime
    assert outcome.status is S.DONE
    assert len(given) == 1 and given[0] <= 580.0, given


def test_a_wait_answers_within_its_timeout_when_a_read_stalls(settings: Any) -> None:
    # A DynamoDB endpoint that takes the request and never answers (a stalled socket,
    # a connection to a node that went away): waiting.py says the wait's timeout bounds
    # each read, so `--wait 1` answers (124) within about a second. aws_deadline bounds
    # the retries only; the one read in flight waits out the client's 30 s read timeout.
    import dataclasses
    import socket
    import threading

    from runner.aws import AwsClients
    from runner.errors import WaitTimedOut
    from runner.registry import TaskRegistry
    from runner.waiting import wait_for

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stalled = dataclasses.replace(
        settings, endpoint_url=f"http://127.0.0.1:{listener.getsockname()[1]}"
    )
    store = App(stalled, AwsClients(stalled), TaskRegistry()).store
    answered: list[BaseException | None] = []

    def wait() -> None:
        try:
            wait_for(store, "t-1", 1.0)
        except BaseException as exc:  # the answer, whatever it is
            answered.append(exc)
        else:
            answered.append(None)

    waiter = threading.Thread(target=wait, daemon=True)
    started = time.monotonic()
    waiter.start()
    waiter.join(6.0)
    took = time.monotonic() - started
    listener.settimeout(1.0)
    request, _ = listener.accept()  # it did reach the stalled endpoint (no moto in between)
    request.close()
    listener.close()
    assert answered, f"no answer after {took:.1f} s: the read outlived the wait's 1 s timeout"
    assert isinstance(answered[0], WaitTimedOut)
