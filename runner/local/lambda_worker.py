"""The runtime inside one local Lambda execution environment: a worker process.

Started by `runner.local.lambda_env.ExecutionEnvironment` with the function's own
environment variables (`_HANDLER`, the reserved `AWS_LAMBDA_*` ones, the template's, the
stack's overlay). It does what Lambda's Python runtime does, over two pipes instead of
the Runtime API:

- **Init**: import the handler named by `_HANDLER`, then report `{"ready": init_s}` (or
  `{"init_error": {...}}`, after which it exits: Lambda reports Runtime.ImportModuleError
  and starts the next invocation on a fresh environment).
- **Invoke**: read one `{"request_id", "payload", "deadline"}` line, call
  `handler(event, context)` with a context that counts down to `deadline` (epoch
  seconds), answer `{"result": ...}` or `{"error": {errorMessage, errorType, requestId,
  stackTrace}}`, the shape the Python runtime gives an unhandled exception. A function
  error keeps the environment (the process goes on to the next invocation).
- End of the invocation pipe: exit.

Between invocations the environment freezes this process (SIGSTOP) and thaws it for the
next one (SIGCONT), so a thread a handler left running stops with it, as on Lambda.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from typing import IO, Any

# prctl(2) option: the signal this process gets when the thread that started it ends.
PR_SET_PDEATHSIG = 1


class WorkerContext:
    """The Lambda context object, as the Python runtime builds it for each invocation."""

    def __init__(self, request_id: str, deadline: float) -> None:
        env = os.environ
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        region = env.get("AWS_REGION", "us-east-1")
        account = env.get("TASK_RUNNER_LOCAL_ACCOUNT", "123456789012")
        self.invoked_function_arn = (
            f"arn:aws:lambda:{region}:{account}:function:{self.function_name}"
        )
        self.aws_request_id = request_id
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def error_body(exc: BaseException, request_id: str) -> dict[str, Any]:
    """What the Python runtime answers for an exception the handler did not handle."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        # From the handler down, as the runtime reports it (not the runtime's own frame).
        "stackTrace": traceback.format_tb(exc.__traceback__.tb_next if exc.__traceback__ else None),
    }


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when its parent (the environment's reaper,
    runner.local.lambda_reaper) ends: a frozen (SIGSTOPped) worker cannot notice its
    pipe closing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent went away before prctl took effect
        os._exit(1)


_HAD_CHILDREN = False


def had_children() -> bool:
    """Whether this process has had a child process at the end of any invocation (one
    waitid call, not a /proc scan): the environment looks for processes that left its
    group, and counts their memory, only then."""
    global _HAD_CHILDREN
    if not _HAD_CHILDREN:
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            _HAD_CHILDREN = True  # one exists (None: none has exited yet)
        except ChildProcessError:
            pass
    return _HAD_CHILDREN


def _send(reply: IO[str], message: dict[str, Any]) -> None:
    reply.write(json.dumps({**message, "children": had_children()}, default=str) + "\n")
    reply.flush()


def _load_handler(spec: str) -> Callable[[Any, Any], Any]:
    module_name, _, attribute = spec.rpartition(".")
    handler: Callable[[Any, Any], Any] = getattr(importlib.import_module(module_name), attribute)
    return handler


def serve(invocations: IO[str], reply: IO[str], spawned_at: float) -> int:
    """Init, then answer invocations until the invocation pipe closes."""
    spec = os.environ.get("_HANDLER", "")
    try:
        handler = _load_handler(spec)
    except Exception as exc:
        module = spec.rpartition(".")[0]
        _send(
            reply,
            {
                "init_error": {
                    "errorType": "Runtime.ImportModuleError",
                    "errorMessage": f"Unable to import module '{module}': {exc}",
                }
            },
        )
        return 1
    _send(reply, {"ready": time.time() - spawned_at, "pid": os.getpid()})
    for line in invocations:
        request = json.loads(line)
        request_id = str(request.get("request_id") or uuid.uuid4())
        context = WorkerContext(request_id, float(request["deadline"]))
        try:
            result = handler(request.get("payload"), context)
        except Exception as exc:
            _send(reply, {"error": error_body(exc, request_id)})
            continue
        try:
            body = json.dumps(result)
        except (TypeError, ValueError) as exc:
            marshal = {
                "errorType": "Runtime.MarshalError",
                "errorMessage": f"Unable to marshal response: {exc}",
                "requestId": request_id,
            }
            _send(reply, {"error": marshal})
            continue
        reply.write(f'{{"children": {json.dumps(had_children())}, "result": {body}}}\n')
        reply.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoke-fd", type=int, required=True)
    parser.add_argument("--reply-fd", type=int, required=True)
    parser.add_argument("--spawned-at", type=float, required=True)
    args = parser.parse_args(argv)
    # Ctrl-C is for the stack; the environment ends when the stack ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(os.getppid())
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)
    import emf  # type: ignore[import-not-found]  # beside this file: lambda_runtime.RUNTIME_FILES

    emf.install()  # CloudWatch Logs' metric extraction, locally
    with (
        os.fdopen(args.invoke_fd, "r") as invocations,
        os.fdopen(args.reply_fd, "w") as reply,
    ):
        return serve(invocations, reply, args.spawned_at)


if __name__ == "__main__":
    sys.exit(main())
