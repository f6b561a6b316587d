"""Handler work the runner could not stop, and ending the runtime so it can never act.

Python cannot kill a thread. A sync handler that outlives its timeout (or an async one
whose `asyncio.to_thread` work does) keeps running, and AWS Lambda does not stop it
when the invocation returns: it freezes the execution environment, and the thread
resumes at the environment's next invocation, perhaps after the task's retry has run.
Only a timeout or the runtime's exit resets the environment. So:

- the attempt's outcome is recorded with a lease that lasts past the invocation's hard
  deadline (`abandoned_lease`), and every claim waits for a lease to end;
- before the invocation returns, `end_if_abandoned()` ends the runtime (`os._exit`) when
  such work is still alive, so it is gone long before that lease ends. Lambda then
  reports the invocation as failed: a stream batch is delivered again (its tasks are all
  recorded by then, so it does nothing), a workflow attempt is retried by the state
  machine (and waits out the lease);
- the lease then holds a retry back only as long as the work could still act (`hold`):
  cut to `EXIT_LEASE_SECONDS` just before the exit, removed once the work has ended by
  itself. A cut that fails leaves the long lease: a later retry, never an overlap.

Outside Lambda (tests, the CLI, the in-process local stack) the default ender does not
exit, and a lease of work still running stays whole; set an ender with `set_ender`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

# Kept back from a Lambda's remaining time so outcomes are recorded before it ends.
DEADLINE_MARGIN_SECONDS = 10.0
# Added to an abandoned attempt's lease past the invocation's hard deadline (clock skew
# between the Lambdas that compare it, and the exit itself).
ABANDONED_LEASE_PAD_SECONDS = 30.0
# Exit status of an ended runtime (Lambda reports Runtime.ExitError).
EXIT_STATUS = 86
# The lease an abandoned attempt keeps once the runtime is about to end, from the start
# of the write that cuts it: that write takes at most `CUT_CALL_SECONDS` (one try, short
# socket timeouts), the exit follows it within milliseconds, and this also covers clock
# skew between the Lambdas that compare the lease and the epoch seconds' rounding.
EXIT_LEASE_SECONDS = 5
# The cut's one DynamoDB call: connect and read timeouts each (runner.store).
CUT_CALL_SECONDS = 1.0
# All cuts are made at once and waited for this long at most (connect + read, and the
# client's creation): the runtime ends well within every cut lease's
# `EXIT_LEASE_SECONDS`, however many there are. A cut unanswered by then keeps its
# long lease, or the short one if it applied: either outlasts the exit.
CUT_PHASE_SECONDS = 2 * CUT_CALL_SECONDS + 0.5
# An abandoned attempt's outcome write is given up, and the runtime ended, this long
# before the claim's own lease ends (`ending_if_late`): the cut phase of other held
# leases, and clock skew between the Lambdas that compare the lease.
LATE_WRITE_MARGIN_SECONDS = 10.0


@dataclass(frozen=True)
class HeldLease:
    """The lease an abandoned attempt's outcome holds, and how to shorten it.

    `release(exiting)`: cut the lease to `EXIT_LEASE_SECONDS` from now (`exiting`: the
    runtime ends next), or remove it (the work has ended by itself).
    """

    threads: tuple[threading.Thread, ...]
    release: Callable[[bool], None]


_lock = threading.Lock()
_abandoned: list[threading.Thread] = []
_held: list[HeldLease] = []
_ender: Callable[[], None] | None = None


def abandon(thread: threading.Thread) -> None:
    """Remember work that outlived its timeout and could not be stopped."""
    with _lock:
        _abandoned.append(thread)


def abandoned() -> list[threading.Thread]:
    """The abandoned work still alive (finished work is forgotten)."""
    with _lock:
        _abandoned[:] = [t for t in _abandoned if t.is_alive()]
        return list(_abandoned)


def forget_abandoned() -> None:
    """Forget all abandoned work (a process that starts over: tests, the local stack)."""
    with _lock:
        _abandoned.clear()
        _held.clear()


def hold(threads: Sequence[threading.Thread], release: Callable[[bool], None]) -> None:
    """Remember the lease recorded for abandoned `threads`, to be released at the end of
    the invocation once they can no longer act (`end_if_abandoned`)."""
    with _lock:
        _held.append(HeldLease(tuple(threads), release))


def in_lambda() -> bool:
    """True inside an AWS Lambda runtime (its Runtime API is set for the process)."""
    return bool(os.environ.get("AWS_LAMBDA_RUNTIME_API"))


def _exit_runtime() -> None:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_STATUS)


def set_ender(ender: Callable[[], None] | None) -> None:
    """Replace how the runtime is ended (None: the default, `os._exit` in Lambda only)."""
    global _ender
    _ender = ender


def can_end() -> bool:
    """True if `end_now` would end the runtime (in Lambda, or an ender is set)."""
    return _ender is not None or in_lambda()


def end_now(reason: str) -> bool:
    """End the runtime at once, whatever still runs (in Lambda, or with the ender set):
    a claim that can no longer hold its lease must not act past it. False if it cannot."""
    if not can_end():
        return False
    from runner.logs import get_logger

    get_logger().warning("ending the runtime", extra={"reason": reason})
    if _ender is not None:
        _ender()
    else:
        _exit_runtime()
    return True


def end_if_abandoned() -> bool:
    """End the runtime if abandoned work is alive; returns True if it asked to (in Lambda
    this does not return). First releases the leases of work that can no longer act."""
    alive = abandoned()
    ending = bool(alive) and (_ender is not None or in_lambda())
    _release_held(ending)
    if not alive:
        return False
    from runner.logs import get_logger

    get_logger().warning(
        "ending the runtime: handler work outlived its timeout and cannot be stopped",
        extra={"abandoned": [t.name for t in alive]},
    )
    if _ender is not None:
        _ender()
    elif in_lambda():
        _exit_runtime()
    return True


def _release_held(ending: bool) -> None:
    """Release each held lease whose work has ended, and, if the runtime ends next, cut
    those of work still running; keep the others whole. The releases run at once, and
    are waited for `CUT_PHASE_SECONDS` at most (one after another, each cut's lease
    would start its own `EXIT_LEASE_SECONDS` and the first would end before the exit)."""
    with _lock:
        due = [h for h in _held if ending or not any(t.is_alive() for t in h.threads)]
        _held[:] = [h for h in _held if all(h is not d for d in due)]
    if not due:
        return
    releasers = [
        threading.Thread(
            target=_release_one,
            args=(held, any(t.is_alive() for t in held.threads)),
            daemon=True,
            name="lease-cut",
        )
        for held in due
    ]
    for releaser in releasers:
        releaser.start()
    ends_at = time.monotonic() + CUT_PHASE_SECONDS
    for releaser in releasers:
        releaser.join(max(0.0, ends_at - time.monotonic()))


def _release_one(held: HeldLease, running: bool) -> None:
    try:
        held.release(running)
    except Exception as exc:  # the long lease stays: the retry only waits longer
        from runner.logs import get_logger

        get_logger().warning(
            "could not release an abandoned attempt's lease; it runs its course",
            extra={"error_type": type(exc).__name__},
        )


@contextlib.contextmanager
def ending_if_late(seconds: float) -> Iterator[None]:
    """End the runtime (`end_if_abandoned`) if the block still runs after `seconds`: an
    abandoned attempt's outcome write that would outlast the claim's own lease must not
    let the work outlive that lease (a throttled or slow DynamoDB)."""
    timer = threading.Timer(max(0.0, seconds), end_if_abandoned)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def abandoned_lease(now_epoch: float, remaining_seconds: float | None, fallback: float) -> int:
    """The lease an abandoned attempt's outcome keeps: past the invocation's hard deadline
    (`remaining_seconds` is what is left of it after `DEADLINE_MARGIN_SECONDS`), or
    `fallback` seconds when there is no deadline (outside Lambda)."""
    if remaining_seconds is None:
        left = fallback
    else:
        left = max(0.0, remaining_seconds) + DEADLINE_MARGIN_SECONDS
    return int(now_epoch + left + ABANDONED_LEASE_PAD_SECONDS)
