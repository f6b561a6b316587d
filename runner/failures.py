"""What a failed attempt stores as its error: the type, a message without task data, and
whether a retry may help."""

from __future__ import annotations

import traceback
from pathlib import Path, PurePath

from botocore.exceptions import ClientError

from runner.errors import (
    ConfigurationError,
    InvalidTaskInput,
    ItemTooLarge,
    MalformedTask,
    PayloadCorrupt,
    TaskFailure,
    TaskRunnerError,
    UnknownTaskType,
)
from runner.model import TaskErrorInfo

# Errors of the runner's own whose messages are written without task data in them.
_PERMANENT_RUNNER_ERRORS = (
    InvalidTaskInput,
    UnknownTaskType,
    MalformedTask,
    ConfigurationError,
    ItemTooLarge,
    PayloadCorrupt,
)


# The project's root; in the Lambda zip the dependencies live beside these directories.
_ROOT = Path(__file__).resolve().parents[1]
_OWN_TOP = frozenset({"tasks", "runner", "handler.py", "tests"})


def _is_own(filename: str) -> bool:
    path = Path(filename)
    try:
        top = path.resolve().relative_to(_ROOT).parts[0]
    except (ValueError, IndexError, OSError):
        return "site-packages" not in filename and "/lib/python" not in filename
    return top in _OWN_TOP


def _where(exc: BaseException) -> str:
    """`tasks/x.py:42 in run`: the innermost frame of the project's own code (else the
    innermost), as a data-free pointer to where an exception was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if _is_own(f.filename)]
    chosen = own or frames
    if not chosen:
        return "an unknown place"
    frame = chosen[-1]
    path = PurePath(frame.filename)
    return f"{'/'.join(path.parts[-2:])}:{frame.lineno} in {frame.name}"


def describe_error(exc: BaseException) -> TaskErrorInfo:
    """A structured, storable account of why a task failed, and whether to retry it.

    Messages of `TaskFailure`s (written by the task's author) and of the runner's own
    errors are kept. An exception nobody classified may quote anything (an address, a
    value of the input, AWS's text about a request), so only its type, an AWS error
    code and where it was raised are kept.
    """
    if isinstance(exc, TaskFailure):
        return TaskErrorInfo(
            type=type(exc).__name__, message=str(exc) or type(exc).__name__, retryable=exc.retryable
        )
    if isinstance(exc, _PERMANENT_RUNNER_ERRORS):
        return TaskErrorInfo(type=type(exc).__name__, message=str(exc), retryable=False)
    if isinstance(exc, TaskRunnerError):
        return TaskErrorInfo(type=type(exc).__name__, message=str(exc), retryable=True)
    kind = type(exc).__name__
    if isinstance(exc, ClientError):
        kind += f" ({exc.response.get('Error', {}).get('Code', 'unknown code')})"
    # Unclassified: assumed transient. Retries are bounded per task type, so a real bug
    # ends FAILED after a few attempts.
    return TaskErrorInfo(
        type=type(exc).__name__,
        message=f"{kind} raised at {_where(exc)}",
        retryable=True,
    )
