"""Step Functions (Standard workflows) as AWS documents it, on the simulation's clock.

- StartExecution: a name is reserved for 90 days. The same name and input while the
  execution is RUNNING answers the same execution (idempotent); a closed execution, or a
  different input, gives ExecutionAlreadyExists. Names follow AWS's character rules.
- DescribeExecution, StopExecution (RUNNING → ABORTED), ListExecutions,
  GetExecutionHistory.
- Executions are interpreted from the state machine's ASL (tests.simulation.executions),
  one state (or one Retry wait) per `step`, so the harness interleaves them with
  everything else. Task resources are handed to an `Integrations` object.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from botocore.exceptions import ClientError

from runner.local.resources import substitute_definition
from tests.simulation import asl
from tests.simulation.executions import Execution, Integrations, Interpreter, Machine
from tests.simulation.fibers import SimClock

# An execution name cannot be reused for this long (Standard workflows).
NAME_RESERVED_SECONDS = 90 * 24 * 3600
MAX_NAME_LENGTH = 80
_BAD_NAME = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")


def _client_error(code: str, message: str, operation: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, operation)


class StepFunctionsService:
    """The executions of every state machine, and the API the runner calls."""

    def __init__(self, clock: SimClock, rng: random.Random, integrations: Integrations) -> None:
        self.clock = clock
        self.interpreter = Interpreter(clock, rng, integrations)
        self.machines: dict[str, Machine] = {}
        self.executions: dict[str, Execution] = {}
        self._by_name: dict[tuple[str, str], Execution] = {}

    def create_state_machine(
        self, arn: str, name: str, definition_text: str, substitutions: Mapping[str, str]
    ) -> Machine:
        definition = json.loads(substitute_definition(definition_text, substitutions))
        if definition.get("QueryLanguage", "JSONPath") != "JSONPath":
            raise asl.AslUnsupported("QueryLanguage JSONata")
        machine = Machine(arn, name, definition)
        self.machines[arn] = machine
        return machine

    # --- the API ---------------------------------------------------------------------

    def start_execution(
        self, *, stateMachineArn: str, name: str | None = None, input: str = "{}", **_: Any
    ) -> dict[str, Any]:
        machine = self.machines.get(stateMachineArn)
        if machine is None:
            raise _client_error("StateMachineDoesNotExist", stateMachineArn, "StartExecution")
        if name is None:
            name = f"sim-{len(self.executions) + 1}"
        if not 1 <= len(name) <= MAX_NAME_LENGTH or _BAD_NAME.search(name):
            raise _client_error("InvalidName", f"invalid execution name {name!r}", "StartExecution")
        try:
            data = json.loads(input)
        except ValueError as exc:
            raise _client_error("InvalidExecutionInput", str(exc), "StartExecution") from exc
        now = self.clock.t
        existing = self._by_name.get((stateMachineArn, name))
        if existing is not None and now - existing.start < NAME_RESERVED_SECONDS:
            if existing.status == "RUNNING" and existing.input == input:
                return {"executionArn": existing.arn, "startDate": self._date(existing.start)}
            raise _client_error(
                "ExecutionAlreadyExists",
                f"Execution Already Exists: '{existing.arn}'",
                "StartExecution",
            )
        arn = f"{stateMachineArn.replace(':stateMachine:', ':execution:', 1)}:{name}"
        execution = Execution(arn=arn, name=name, machine=machine, input=input, start=now)
        self.executions[arn] = execution
        self._by_name[(stateMachineArn, name)] = execution
        self.interpreter.begin(execution, data)
        return {"executionArn": arn, "startDate": self._date(now)}

    def describe_execution(self, *, executionArn: str, **_: Any) -> dict[str, Any]:
        execution = self._get(executionArn, "DescribeExecution")
        out: dict[str, Any] = {
            "executionArn": execution.arn,
            "stateMachineArn": execution.machine.arn,
            "name": execution.name,
            "status": execution.status,
            "startDate": self._date(execution.start),
            "input": execution.input,
        }
        if execution.stop is not None:
            out["stopDate"] = self._date(execution.stop)
        if execution.status == "SUCCEEDED":
            out["output"] = json.dumps(execution.output)
        if execution.error is not None:
            out["error"], out["cause"] = execution.error, execution.cause or ""
        return out

    def stop_execution(
        self, *, executionArn: str, error: str | None = None, cause: str | None = None, **_: Any
    ) -> dict[str, Any]:
        execution = self._get(executionArn, "StopExecution")
        if execution.status == "RUNNING":
            self.interpreter.close(execution, "ABORTED", error=error, cause=cause)
        return {"stopDate": self._date(execution.stop or self.clock.t)}

    def list_executions(
        self, *, stateMachineArn: str, statusFilter: str | None = None, **_: Any
    ) -> dict[str, Any]:
        found = [
            {
                "executionArn": e.arn,
                "stateMachineArn": e.machine.arn,
                "name": e.name,
                "status": e.status,
                "startDate": self._date(e.start),
            }
            for e in sorted(self.executions.values(), key=lambda e: -e.start)
            if e.machine.arn == stateMachineArn and statusFilter in (None, e.status)
        ]
        return {"executions": found}

    def get_execution_history(
        self, *, executionArn: str, reverseOrder: bool = False, **_: Any
    ) -> dict[str, Any]:
        events = list(self._get(executionArn, "GetExecutionHistory").history)
        return {"events": events[::-1] if reverseOrder else events}

    def _get(self, arn: str, operation: str) -> Execution:
        execution = self.executions.get(arn)
        if execution is None:
            raise _client_error(
                "ExecutionDoesNotExist", f"Execution Does Not Exist: '{arn}'", operation
            )
        return execution

    def _date(self, moment: float) -> datetime:
        return datetime.fromtimestamp(moment, UTC)

    # --- running executions --------------------------------------------------------------

    def running(self) -> list[Execution]:
        return [e for e in self.executions.values() if e.status == "RUNNING"]

    def _wakes_at(self, execution: Execution) -> float | None:
        return execution.task_deadline if execution.awaiting else execution.next_at

    def due(self) -> list[Execution]:
        found = []
        for execution in self.running():
            wake = self._wakes_at(execution)
            if wake is not None and wake <= self.clock.t:
                found.append((wake, execution.arn, execution))
        return [e for _, _, e in sorted(found, key=lambda f: (f[0], f[1]))]

    def next_time(self) -> float | None:
        times = [t for e in self.running() if (t := self._wakes_at(e)) is not None]
        return min(times) if times else None

    def step(self, execution: Execution) -> None:
        """Run the execution's current state once (a Task: start one attempt)."""
        self.interpreter.step(execution)


class StepFunctionsClient:
    """What `AwsClients.stepfunctions` hands the runner: the service's API as a client."""

    _OPERATIONS: ClassVar[dict[str, str]] = {
        "start_execution": "StartExecution",
        "describe_execution": "DescribeExecution",
        "stop_execution": "StopExecution",
        "list_executions": "ListExecutions",
        "get_execution_history": "GetExecutionHistory",
    }

    class _Meta:
        def __init__(self, operations: Mapping[str, str]) -> None:
            self.method_to_api_mapping = dict(operations)
            self.service_model = type("ServiceModel", (), {"service_name": "stepfunctions"})()

    def __init__(self, service: StepFunctionsService) -> None:
        self._service = service
        self.meta = self._Meta(self._OPERATIONS)

    def __getattr__(self, name: str) -> Any:
        if name in self._OPERATIONS:
            return getattr(self._service, name)
        raise AttributeError(f"the simulated Step Functions has no {name}")
