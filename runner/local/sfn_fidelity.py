"""Moto's Step Functions made to name a failed Lambda task, and to stop an execution, as
Step Functions does.

For `arn:aws:states:::lambda:invoke`, Step Functions names a function error after the
`errorType` the function returned (`TaskRetryableError`, ...). Errors the Lambda
platform reports rather than the function (a timeout, the runtime dying, running out of
memory) are "reported as Lambda.Unknown" (Step Functions Developer Guide, "Handle Lambda
service exceptions"): `Retry` and `Catch` must match them by that name. Moto 5.2.5 names
them after the payload's `errorType` (`Sandbox.Timedout`, `Runtime.ExitError`), or
`Exception` when there is none, so a state machine that retries `Lambda.Unknown` passed
locally only by luck. docs/MOTO-GAPS.md has the gap.

`lambda_unknown_errors()` patches moto's Lambda task state for the duration of the block;
`immediate_stop()` makes StopExecution end an execution ABORTED at once, as AWS does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

# errorType prefixes of errors the Lambda platform reports, not the function.
PLATFORM_ERROR_PREFIXES = ("Sandbox.", "Runtime.")
UNKNOWN = "Lambda.Unknown"


def step_functions_error(payload: str) -> str | None:
    """The error name Step Functions gives a function error with this payload, if it is
    Lambda.Unknown (None: the payload's own errorType)."""
    try:
        error_type = json.loads(payload).get("errorType")
    except (ValueError, AttributeError):
        error_type = None
    if not isinstance(error_type, str) or error_type.startswith(PLATFORM_ERROR_PREFIXES):
        return UNKNOWN
    return None


@contextlib.contextmanager
def lambda_unknown_errors() -> Iterator[None]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
        lambda_eval_utils,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_lambda as module,
    )

    service = module.StateTaskServiceLambda
    original = service._from_error

    def from_error(self: Any, env: Any, ex: Exception) -> Any:
        if (
            isinstance(ex, lambda_eval_utils.LambdaFunctionErrorException)
            and step_functions_error(ex.payload) == UNKNOWN
        ):
            cause = (
                "The cause could not be determined because Lambda did not return an "
                f"error type. Returned payload: {ex.payload}"
            )
            body = json.dumps({"errorType": UNKNOWN, "errorMessage": cause})
            ex = lambda_eval_utils.LambdaFunctionErrorException(ex.function_error, body)
        return original(self, env, ex)

    service._from_error = from_error  # type: ignore[method-assign]
    try:
        yield
    finally:
        service._from_error = original  # type: ignore[method-assign]


@contextlib.contextmanager
def immediate_stop() -> Iterator[None]:
    """StopExecution ends a RUNNING execution ABORTED at once, as Step Functions reports
    it (DescribeExecution right after shows ABORTED and its stopDate). Moto 5.2.5 only
    marks it when its worker thread next looks, which may be after a whole Retry wait."""
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.backend.execution import Execution

    original = Execution.stop

    def stop(self: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
        original(self, stop_date, error, cause)
        if self.exec_status == ExecutionStatus.RUNNING:
            self.exec_status = ExecutionStatus.ABORTED
            self.stop_date = stop_date
            self.error, self.cause = error, cause

    Execution.stop = stop  # type: ignore[method-assign]
    try:
        yield
    finally:
        Execution.stop = original  # type: ignore[method-assign]
