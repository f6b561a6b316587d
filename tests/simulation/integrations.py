"""The Task resources of the simulated Step Functions: `lambda:invoke` (an invocation of
the simulated Lambda, with the faults Lambda's Invoke can meet) and `dynamodb:*` (a call
to moto through the fault client, named after the state), as Step Functions reports
their errors (`Lambda.Unknown`, `DynamoDB.ConditionalCheckFailedException`, ...)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from tests.simulation import asl
from tests.simulation.executions import Execution
from tests.simulation.faults import SITE_OVERRIDE, FaultKind, FaultyClient
from tests.simulation.fibers import SimCrash
from tests.simulation.lambdas import Invocation
from tests.simulation.topology import Function

if TYPE_CHECKING:
    from tests.simulation.world import World

# What Step Functions reports for an invocation that timed out or whose runtime died
# ("Unhandled errors in Lambda are reported as Lambda.Unknown ... These include
# out-of-memory errors and function timeouts": Step Functions Developer Guide).
LAMBDA_DIED = "Lambda.Unknown"


class SfnIntegrations:
    def __init__(self, world: World) -> None:
        self.world = world

    def start(
        self,
        resource: str,
        params: Any,
        state: str,
        execution: Execution,
        done: Callable[[Any, asl.StatesError | None], None],
    ) -> None:
        """Run a Task state's resource; `done(result, error)` when it has finished."""
        task = execution.task_id or "*"
        if resource.startswith("arn:aws:states:::lambda:invoke"):
            function = self.world.topology.function_by_name(str(params["FunctionName"]))

            def optimized(result: Any, error: asl.StatesError | None) -> None:
                wrapped = {"ExecutedVersion": "$LATEST", "Payload": result, "StatusCode": 200}
                done(None if error else wrapped, error)

            self._invoke_from_sfn(function, params.get("Payload", {}), state, task, optimized)
            return
        if resource.startswith("arn:aws:lambda:"):
            function = self.world.topology.function_by_name(resource)
            self._invoke_from_sfn(function, params, state, task, done)
            return
        match = re.fullmatch(r"arn:aws:states:::(aws-sdk:)?dynamodb:(\w+)", resource)
        if not match:
            raise asl.AslUnsupported(f"Task resource {resource}")
        self.world.sfn_actor = f"sfn:{execution.name}"
        try:
            result = self._dynamodb_from_sfn(match.group(2), params, state, bool(match.group(1)))
        except asl.StatesError as error:
            done(None, error)
        else:
            done(result, None)
        finally:
            self.world.sfn_actor = None

    def _invoke_from_sfn(
        self,
        function: Function,
        payload: Any,
        state: str,
        task: str,
        done: Callable[[Any, asl.StatesError | None], None],
    ) -> None:
        site = f"ASL:{state}:Invoke"
        kind = self.world.fault_for(site, task, process=True)
        if kind is FaultKind.TRANSIENT:
            done(None, asl.StatesError("Lambda.TooManyRequestsException", "Rate Exceeded."))
            return
        if kind is FaultKind.CRASH_BEFORE:
            done(None, asl.StatesError(LAMBDA_DIED, "the runtime exited before the handler ran"))
            return
        firing = self.world.faults.firings[-1] if kind is not None else None

        def after() -> None:  # a fault that strikes once the handler has returned
            if kind is FaultKind.CRASH_AFTER:
                self.world.scheduler.kill_current(SimCrash, "crashed after the handler returned")
            elif kind is FaultKind.TIMEOUT:
                self.world.scheduler.hang_current()

        def finished(invocation: Invocation) -> None:
            if kind is FaultKind.LOST_REPLY and invocation.outcome == "ok":
                done(None, asl.StatesError("Lambda.ServiceException", "the reply was lost"))
                return
            try:
                done(self._lambda_answer(invocation), None)
            except asl.StatesError as error:
                done(None, error)

        invocation = self.world.lambdas.start(
            function,
            json.loads(json.dumps(payload)),
            choice=self.world.sfn_choice,
            after=after,
            on_done=finished,
        )
        if firing is not None:
            invocation.faults.append(firing)

    def _lambda_answer(self, invocation: Invocation) -> Any:
        if invocation.outcome == "ok":
            return json.loads(json.dumps(invocation.result, default=str))
        if invocation.outcome == "error" and invocation.error is not None:
            error = invocation.error
            cause = {"errorMessage": str(error)[:2000], "errorType": type(error).__name__}
            raise asl.StatesError(type(error).__name__, json.dumps(cause))
        raise asl.StatesError(LAMBDA_DIED, f"the invocation ended: {invocation.outcome}")

    def _dynamodb_from_sfn(self, operation: str, params: Any, state: str, sdk: bool) -> Any:
        client = FaultyClient(self.world.raw.dynamodb, "dynamodb", self.world)
        method = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
        prefix = "DynamoDb." if sdk else "DynamoDB."
        token = SITE_OVERRIDE.set(f"ASL:{state}")
        try:
            response: dict[str, Any] = getattr(client, method)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise asl.StatesError(
                prefix + str(error.get("Code")), str(error.get("Message"))
            ) from exc
        except BotoCoreError as exc:
            raise asl.StatesError(prefix + "InternalServerErrorException", str(exc)) from exc
        finally:
            SITE_OVERRIDE.reset(token)
        response.pop("ResponseMetadata", None)
        return response
