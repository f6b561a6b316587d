"""A local Lambda execution environment: one worker process, living as Lambda's do.

Shaped after LocalStack's `execution_environment.py` (without Docker): an environment is
a small state machine (`RuntimeStatus`) behind one lock, whose process is started on the
first invocation it serves (a cold start, timed and reported), reused while warm, and:

- **frozen between invocations**: SIGSTOP once the reply is read, SIGCONT before the next
  request, so a thread the handler left behind runs only while an invocation does;
- **killed at the function's timeout**: the invocation answers what Lambda's Invoke
  answers (`FunctionError: Unhandled`, `{"errorType": "Sandbox.Timedout", "errorMessage":
  "RequestId: ... Error: Task timed out after 3.00 seconds"}`) and the environment is
  discarded;
- **discarded after a crash** (the process died: `Runtime.ExitError`); a function error
  (the handler raised) keeps it, as on Lambda.

Each environment has its own dummy access key id, so the endpoint can tell which
environment made a call (runner.local.chaos uses it to crash "the worker that claimed").
The variables it runs with are built by runner.local.lambda_config: the template's, then
the stack's overlay, then Lambda's reserved ones, which nothing may override.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runner.local.lambda_config import FunctionConfig, environment_variables
from runner.local.lambda_protocol import (
    EnvironmentInitError,
    InvocationResult,
    Lines,
    Runtime,
    error_payload,
)
from runner.local.lambda_reaper import descendants, group_of, kill_below, rss_bytes, signal_all

log = logging.getLogger(__name__)

# Lambda limits a function's Init phase to 10 s (then retries it within the invocation).
INIT_TIMEOUT_SECONDS = 10.0
# How long `invoke` waits for a frozen process to have stopped (SIGSTOP is asynchronous).
FREEZE_WAIT_SECONDS = 0.5


REAPER = str(Path(__file__).with_name("lambda_reaper.py"))
# Stops the processes that left an environment's group once it froze (a /proc scan).
_SCANS = ThreadPoolExecutor(1, thread_name_prefix="lambda-freeze")


class RuntimeStatus(enum.Enum):
    INACTIVE = "inactive"  # no process yet
    READY = "ready"  # warm and frozen, free to serve
    INVOKING = "invoking"  # reserved for, or running, one invocation
    STOPPED = "stopped"  # discarded; never used again


class InvalidStatus(Exception):
    """The environment is not in a state that allows this."""


class ExecutionEnvironment:
    """One worker process of one function; see the module docstring for its life."""

    def __init__(
        self,
        config: FunctionConfig,
        *,
        number: int,
        overlay: Mapping[str, str],
        spawn: Callable[[Callable[[], subprocess.Popen[bytes]]], subprocess.Popen[bytes]],
        runtime: Runtime,
    ) -> None:
        self.config = config
        self.number = number
        self.id = f"{config.name}-{number}-{uuid.uuid4().hex[:8]}"
        # 20 characters, as AWS's are (moto reads the key id from the signature).
        self.access_key_id = f"ASIALOCALENV{number:08d}"
        self.status = RuntimeStatus.INACTIVE
        self.invocations = 0
        self.last_used = time.monotonic()
        self.init_s: float | None = None
        self._overlay = dict(overlay)
        self._spawn = spawn
        self._runtime = runtime
        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None  # the reaper
        self._worker = 0  # the worker's pid, which leads its process group
        self._lifeline = -1
        self._frozen = False
        self._escaped: list[int] = []  # processes below the worker outside its group
        self._had_children = False  # the worker said so (else no /proc scan is needed)
        self._invoke_fd = -1
        self._replies: Lines | None = None
        self._forced: str | None = None  # "timeout" or "crash", set by the chaos layer
        self._deadline = 0.0  # the running invocation's (monotonic); the chaos layer moves it
        self._request_id = ""

    # --- status --------------------------------------------------------------------

    def reserve(self) -> None:
        with self._lock:
            if self.status not in (RuntimeStatus.INACTIVE, RuntimeStatus.READY):
                raise InvalidStatus(f"{self.id} is {self.status.value}")
            self.status = RuntimeStatus.INVOKING

    def release(self) -> None:
        with self._lock:
            if self.status is RuntimeStatus.INVOKING:
                self.status = RuntimeStatus.READY
            self.last_used = time.monotonic()

    @property
    def pid(self) -> int | None:
        """The worker's (the process running the handler)."""
        return self._worker if self._process is not None and self._worker else None

    # --- life ----------------------------------------------------------------------

    def _start(self) -> float:
        """Spawn the worker and wait for its Init; returns the init duration."""
        invoke_read, invoke_write = os.pipe()
        reply_read, reply_write = os.pipe()
        lifeline_read, lifeline_write = os.pipe()  # the write end: only ours
        variables = environment_variables(
            self.config,
            overlay=self._overlay,
            access_key_id=self.access_key_id,
            environment_id=self.id,
            task_root=self._runtime.task_root,
            runtime_dir=self._runtime.runtime_dir,
            path=self._runtime.path,
        )
        spawned_at = time.time()

        def popen() -> subprocess.Popen[bytes]:
            # The reaper (runner.local.lambda_reaper) starts the worker and ends what
            # is left of the environment after it; its own session: Ctrl-C in a
            # terminal, or a kill of the stack's process group, is not for it.
            return subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    REAPER,
                    f"--lifeline-fd={lifeline_read}",
                    f"--pass-fd={invoke_read}",
                    f"--pass-fd={reply_write}",
                    "--",
                    self._runtime.python,
                    os.path.join(self._runtime.runtime_dir, "lambda_worker.py"),
                    f"--invoke-fd={invoke_read}",
                    f"--reply-fd={reply_write}",
                    f"--spawned-at={spawned_at}",
                ],
                cwd=variables["LAMBDA_TASK_ROOT"],
                env=variables,
                pass_fds=(invoke_read, reply_write, lifeline_read),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        try:
            self._process = self._spawn(popen)
        finally:
            os.close(invoke_read)
            os.close(reply_write)
            os.close(lifeline_read)
        self._lifeline = lifeline_write
        self._invoke_fd = invoke_write
        process = self._process
        self._replies = Lines(reply_read, lambda: process.poll() is None)
        deadline = time.monotonic() + max(INIT_TIMEOUT_SECONDS, self.config.timeout)
        try:
            ready = self._replies.next(lambda: deadline)
        except TimeoutError:
            ready = {"init_error": {"errorType": "Sandbox.Timedout", "errorMessage": "init"}}
        if ready is None or "init_error" in ready:
            problem = (ready or {}).get("init_error") or {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"Runtime exited during init ({self._exit_reason()})",
            }
            self.stop()
            raise EnvironmentInitError(problem)
        self.init_s = float(ready["ready"])
        self._worker = int(ready["pid"])
        log.info("cold start: %s ready in %.2f s (pid %s)", self.id, self.init_s, self.pid)
        return self.init_s

    def invoke(self, payload: bytes) -> InvocationResult:
        """Run one invocation; the environment must be reserved (`reserve`)."""
        with self._lock:
            if self.status is not RuntimeStatus.INVOKING:
                raise InvalidStatus(f"{self.id} is {self.status.value}, not reserved")
            self._forced = None
            self._request_id = request_id = str(uuid.uuid4())
        started = time.monotonic()
        init_s = None
        if self._process is not None and self._process.poll() is not None:
            # Killed while frozen (a fault that came after its last reply): start afresh.
            self._close()
        if self._process is None:
            try:
                init_s = self._start()
            except EnvironmentInitError as exc:
                return InvocationResult(
                    json.dumps(exc.error).encode(),
                    "Unhandled",
                    exc.error.get("errorType"),
                    self.id,
                    discarded=True,
                )
        assert self._process is not None and self._replies is not None
        self.invocations += 1
        with self._lock:
            self._deadline = time.monotonic() + self.config.timeout
        message = {
            "request_id": request_id,
            "payload": json.loads(payload) if payload else {},
            "deadline": time.time() + self.config.timeout,
        }
        self._thaw()
        try:
            os.write(self._invoke_fd, (json.dumps(message) + "\n").encode())
            reply = self._replies.next(lambda: self._deadline)
        except TimeoutError:
            self._forced = self._forced or "timeout"
            reply = None
        except OSError:  # the pipe broke: the process is gone
            reply = None
        duration = time.monotonic() - started
        if reply is None:
            return self._discard(request_id, duration, init_s)
        self._had_children = self._had_children or bool(reply.get("children"))
        self._freeze()
        if "error" in reply:
            body = json.dumps(reply["error"]).encode()
            error_type = reply["error"].get("errorType")
            return InvocationResult(body, "Unhandled", error_type, self.id, duration, init_s)
        return InvocationResult(
            json.dumps(reply.get("result")).encode(), None, None, self.id, duration, init_s
        )

    def _discard(self, request_id: str, duration: float, init_s: float | None) -> InvocationResult:
        """A timed-out or crashed invocation: kill the process, report as Lambda does."""
        forced = self._forced
        reason = self._exit_reason() if forced != "timeout" else ""
        self.stop()
        if forced == "timeout":
            error_type = "Sandbox.Timedout"
            payload = error_payload(
                request_id, error_type, f"Task timed out after {self.config.timeout:.2f} seconds"
            )
        elif forced == "oom":  # past the function's memory (runner.local.lambda_service)
            error_type = "Runtime.OutOfMemory"
            payload = error_payload(request_id, error_type, f"Runtime exited with error: {reason}")
        else:
            error_type = "Runtime.ExitError"
            payload = error_payload(request_id, error_type, f"Runtime exited with error: {reason}")
        log.warning("%s: %s after %.2f s; environment discarded", self.id, error_type, duration)
        return InvocationResult(payload, "Unhandled", error_type, self.id, duration, init_s, True)

    def _exit_reason(self) -> str:
        process = self._process
        if process is None:
            return "not started"
        try:
            code = process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "unknown"
        if code < 0:
            name = signal.Signals(-code).name.removeprefix("SIG").lower()
            return f"signal: {'killed' if name == 'kill' else name}"
        return f"exit status {code}"

    def force(self, how: str, after: float = 0.0) -> bool:
        """End the running invocation now, as a crash, a timeout (the chaos layer's
        faults) or "oom" (past its memory), or, for a timeout `after` seconds from now,
        move its deadline there: it
        runs on until then, and is timed out there unless it answers first. True if there
        was an invocation to end."""
        with self._lock:
            if self.status is not RuntimeStatus.INVOKING or self._process is None:
                return False
            if how == "timeout" and after > 0:
                self._deadline = min(self._deadline, time.monotonic() + after)
                return True
            self._forced = how
            self._signal(signal.SIGKILL)
            return True

    def _freeze(self) -> None:
        """SIGSTOP, and wait (briefly) until the process is stopped: frozen until the next
        invocation, as Lambda freezes an environment once its invocation has returned.
        Processes below it that left its group are stopped just after, off this thread."""
        with self._lock:
            self._frozen = True
            self._signal(signal.SIGSTOP)
        if self._had_children:
            _SCANS.submit(self._freeze_escaped)
        pid = self.pid
        if pid is None:
            return
        deadline = time.monotonic() + FREEZE_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return  # gone, or no /proc: nothing to wait for
            if state in ("T", "t", "Z", "X"):
                return
            time.sleep(0.0005)

    def memory_bytes(self, children: Callable[[], dict[int, list[int]]]) -> int:
        """What the environment's processes hold in memory (the reaper's excepted);
        `children`: the /proc process tree, read only if the worker has had children."""
        process = self._process
        if process is None or not self.pid:
            return 0
        if not self._had_children:
            return rss_bytes([self.pid])
        return rss_bytes(descendants(process.pid, children()))

    def _freeze_escaped(self) -> None:
        with self._lock:
            if not self._frozen or not self.pid:
                return
            process = self._process
            if process is None:
                return
            # Below the reaper: orphans come to it (a subreaper), not to the worker.
            self._escaped = [p for p in descendants(process.pid) if group_of(p) != self.pid]
            signal_all(self._escaped, signal.SIGSTOP)

    def _thaw(self) -> None:
        with self._lock:
            self._frozen = False
            self._signal(signal.SIGCONT)
            signal_all(self._escaped, signal.SIGCONT)
            self._escaped = []

    def _signal(self, signum: int) -> None:
        """Signal the worker's whole process group (it leads its own), as Lambda freezes
        or ends everything in the sandbox, processes a handler started too (those that
        left the group: `_freeze_escaped`, and the reaper at the end)."""
        if self.pid and self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)

    def stop(self) -> None:
        """Discard the environment: kill its process (frozen or not) and close its pipes."""
        with self._lock:
            self.status = RuntimeStatus.STOPPED
            self._close()

    def _close(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                kill_below(self._process.pid)  # the worker and all it started, any group
            process, self._process = self._process, None
            self._worker, self._escaped, self._frozen = 0, [], False
            self._had_children = False
            for fd in (self._invoke_fd, self._lifeline):
                if fd >= 0:
                    os.close(fd)  # the lifeline's end: the reaper ends what is left
            self._invoke_fd = self._lifeline = -1
            if self._replies is not None:
                os.close(self._replies.fd)
                self._replies = None
        if process is not None:
            process.wait()
