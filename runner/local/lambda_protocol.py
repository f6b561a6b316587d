"""What passes between the Lambda service and a worker: the runtime it runs on, the JSON
lines on its pipes, and what an invocation answers (runner.local.lambda_env uses them)."""

from __future__ import annotations

import json
import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How often a wait for a reply checks that the worker is still alive (a process it started
# may hold the reply pipe open after it died) and whether its deadline moved.
LIVENESS_CHECK_SECONDS = 0.1


@dataclass(frozen=True)
class InvocationResult:
    """What Invoke answers: the payload, and `Unhandled` if the invocation failed."""

    payload: bytes
    function_error: str | None = None
    error_type: str | None = None
    environment_id: str = ""
    duration_s: float = 0.0
    init_s: float | None = None  # set on a cold start
    discarded: bool = False  # the environment was reset (timeout, crash)


def error_payload(request_id: str, error_type: str, message: str) -> bytes:
    body = {"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {message}"}
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Runtime:
    """What every environment of a service runs (runner.local.lambda_runtime): the
    runtime's interpreter, the task root, the runtime directory, PATH."""

    python: str
    task_root: str
    runtime_dir: str
    path: str


class Lines:
    """JSON lines from a pipe's file descriptor, each waited for with a deadline."""

    def __init__(self, fd: int, alive: Callable[[], bool]) -> None:
        self.fd = fd
        self.alive = alive  # a process that died answers nothing more, whoever holds its pipe
        self._buffer = b""

    def next(self, deadline: Callable[[], float]) -> dict[str, Any] | None:
        """The next message; None at end of file or once the writer died. Raises
        TimeoutError past `deadline()` (monotonic; it may move while waiting)."""
        while b"\n" not in self._buffer:
            left = deadline() - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.fd], [], [], min(left, LIVENESS_CHECK_SECONDS))
            if not ready:
                if not self.alive():
                    return None
                continue
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message


class EnvironmentInitError(Exception):
    """The worker failed its Init phase (its handler would not import, or it died)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("errorMessage", "init failed"))
        self.error = error
