"""Chaos in the endpoint process: where runner.local.chaos's DynamoDB, Step Functions
and Lambda faults are injected.

- Every moto request passes `call_action` (patched here): a `throttle` or `unavailable`
  fault answers the request with AWS's error before it runs; a `lost-reply` fault lets it
  run and apply, then answers HTTP 500 instead of its reply.
- Every DynamoDB write that passed DynamoDB's rules is shown to `on_write`
  (runner.local.dynamodb_fidelity's observer). A write signed by one of the Lambda
  service's environments (its own dummy access key id) that claims a task (moves it to
  PROCESSING) arms a `*-after-claim` fault: once the request has applied, that
  environment's process is killed (a timeout with `@SECONDS`: its deadline moves
  there). A write that would move a task out of PROCESSING fires a `*-before-final`
  fault: the environment is killed and the write refused.
- `before_invoke` is the Lambda service's hook for `lambda[.function].throttle` and
  `service-error`.

Tasks are recognised by their documented `status` attribute, not by the runner's code.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from runner.local.chaos import FaultPlan
from runner.local.lambda_invoke import FunctionThrottled, LambdaServiceError
from runner.local.lambda_service import LambdaService

PROCESSING = "PROCESSING"
JSON_CONTENT_TYPE = "application/x-amz-json-1.0"
# moto's service names → the names faults use (IAM's prefixes).
SERVICES = {"dynamodb": "dynamodb", "stepfunctions": "states"}
# (HTTP status, error code, message) per fault kind and service.
ERRORS = {
    ("dynamodb", "throttle"): (
        400,
        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
    ),
    ("states", "throttle"): (400, "ThrottlingException", "Rate exceeded"),
    ("dynamodb", "unavailable"): (503, "ServiceUnavailable", "Service unavailable (chaos)"),
    ("states", "unavailable"): (503, "ServiceUnavailable", "Service unavailable (chaos)"),
    ("dynamodb", "lost-reply"): (
        500,
        "com.amazonaws.dynamodb.v20120810#InternalServerError",
        "Internal server error (chaos: the write applied, its reply was lost)",
    ),
    ("states", "lost-reply"): (
        500,
        "InternalFailure",
        "Internal failure (chaos: the call applied, its reply was lost)",
    ),
}


def _error_response(service: str, kind: str) -> tuple[int, dict[str, str], str]:
    status, code, message = ERRORS[(service, kind)]
    body = json.dumps({"__type": code, "message": message})
    return status, {"Content-Type": JSON_CONTENT_TYPE, "status": str(status)}, body


def _status(item: Any) -> str | None:
    value = item.attrs.get("status") if item is not None else None
    return str(value.value) if value is not None and value.type == "S" else None


class EndpointChaos:
    """Injects `plan`'s endpoint faults; `service` tells environments apart."""

    def __init__(self, plan: FaultPlan, service: LambdaService) -> None:
        self.plan = plan
        self.service = service
        self._local = threading.local()

    # --- requests ----------------------------------------------------------------------

    def call_action(self, original: Any, response: Any) -> Any:
        service = SERVICES.get(str(response.service_name))
        if service is None or not self.plan.faults:
            return original(response)
        action = response._get_action()
        for kind in ("throttle", "unavailable"):
            if self.plan.decide(service, action, kind):
                return _error_response(service, kind)
        self._local.caller = response.get_access_key()
        try:
            result = original(response)
        finally:
            self._after_request()
        status = result[0] if isinstance(result, tuple) else 200
        if int(status) < 300 and self.plan.decide(service, action, "lost-reply"):
            return _error_response(service, "lost-reply")
        return result

    def _after_request(self) -> None:
        self._local.caller = None
        armed = getattr(self._local, "kill_after", None)
        self._local.kill_after = None
        if armed is not None:
            environment, how, after = armed
            environment.force(how, after)

    # --- DynamoDB writes ---------------------------------------------------------------

    def on_write(self, before: Any, after: Any) -> None:
        """runner.local.dynamodb_fidelity's observer: the claim and final-write points."""
        if not self.plan.faults:
            return
        caller = getattr(self._local, "caller", None)
        environment = self.service.by_access_key(caller) if caller else None
        if environment is None:
            return
        old, new = _status(before), _status(after)
        task = after.attrs.get("id")
        detail = f"task {task.value if task is not None else '?'} in {environment.id}"
        name = environment.config.name
        if new == PROCESSING and old != PROCESSING:
            for how in ("crash", "timeout"):
                fault = self.plan.decide("lambda", name, f"{how}-after-claim", detail)
                if fault:
                    self._local.kill_after = (environment, how, fault.after or 0.0)
                    return
        elif old == PROCESSING and new not in (None, PROCESSING):
            for how in ("crash", "timeout"):
                if self.plan.decide("lambda", name, f"{how}-before-final", detail):
                    environment.force(how)
                    from moto.core.exceptions import JsonRESTError

                    refused = JsonRESTError("InternalServerError", "the caller was killed")
                    refused.code = 500
                    raise refused

    # --- Lambda ------------------------------------------------------------------------

    def before_invoke(self, function_name: str) -> None:
        if not self.plan.faults:
            return
        if self.plan.decide("lambda", function_name, "throttle"):
            raise FunctionThrottled(function_name)
        if self.plan.decide("lambda", function_name, "service-error"):
            raise LambdaServiceError(function_name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[EndpointChaos]:
        """Patch moto's request handling for the duration of the block."""
        from moto.core.responses import BaseResponse

        original = BaseResponse.call_action
        chaos = self

        def call_action(response: Any) -> Any:
            return chaos.call_action(original, response)

        BaseResponse.call_action = call_action  # type: ignore[method-assign,assignment]
        self.service.before_invoke = self.before_invoke
        try:
            yield self
        finally:
            BaseResponse.call_action = original  # type: ignore[method-assign]
            self.service.before_invoke = None
