"""Step Functions (Standard workflows) as AWS documents it, on the simulation's clock.

- StartExecution: a name is reserved for 90 days. The same name and input while the
  execution is RUNNING answers the same execution (idempotent); a closed execution, or a
  different input, gives ExecutionAlreadyExists. Names follow AWS's character rules.
- DescribeExecution, StopExecution (RUNNING → ABORTED), ListExecutions,
  GetExecutionHistory.
- Executions are interpreted from the state machine's ASL (tests.simulation.asl), one
  state (or one Retry wait) per `step`, so the harness interleaves them with everything
  else. Task resources are handed to an `Integrations` object (Lambda invoke, DynamoDB).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from botocore.exceptions import ClientError

from runner.local.resources import substitute_definition
from tests.simulation import asl
from tests.simulation.fibers import SimClock

# An execution name cannot be reused for this long (Standard workflows).
NAME_RESERVED_SECONDS = 90 * 24 * 3600
MAX_NAME_LENGTH = 80
_BAD_NAME = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")


class Integrations(Protocol):
    def start(
        self,
        resource: str,
        params: Any,
        state: str,
        execution: Execution,
        done: Callable[[Any, asl.StatesError | None], None],
    ) -> None: ...


@dataclass
class Machine:
    arn: str
    name: str
    definition: dict[str, Any]

    def state(self, name: str) -> dict[str, Any]:
        states: dict[str, Any] = self.definition["States"]
        return dict(states[name])


@dataclass
class Execution:
    arn: str
    name: str
    machine: Machine
    input: str
    start: float
    status: str = "RUNNING"
    stop: float | None = None
    state: str | None = None
    data: Any = None
    entered_at: float = 0.0
    next_at: float = 0.0
    waiting_until: float | None = None
    # A Task state's resource is running (a Lambda invocation): its result is awaited.
    awaiting: bool = False
    task_deadline: float | None = None
    task_seq: int = 0  # which attempt of a Task state is awaited (a late one is ignored)
    retries: dict[tuple[str, int], int] = field(default_factory=dict)
    output: Any = None
    error: str | None = None
    cause: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0

    @property
    def task_id(self) -> str | None:
        try:
            value = json.loads(self.input).get("task_id")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None


def _iso(moment: float) -> str:
    return (
        datetime.fromtimestamp(moment, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        operation,
    )


class StepFunctionsService:
    """The executions of every state machine, and the API the runner calls."""

    def __init__(self, clock: SimClock, rng: random.Random, integrations: Integrations) -> None:
        self.clock = clock
        self.rng = rng
        self.integrations = integrations
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
        self._event(execution, "ExecutionStarted", {"input": input})
        self._enter(execution, str(machine.definition["StartAt"]), data)
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
            self._close(execution, "ABORTED", error=error, cause=cause)
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
        """Run the execution's current state once (a Task: one attempt)."""
        if execution.status != "RUNNING" or execution.state is None:
            return
        execution.steps += 1
        name = execution.state
        state = execution.machine.state(name)
        context = self._context(execution)
        if execution.awaiting:  # the state's TimeoutSeconds passed first
            execution.awaiting, execution.task_deadline = False, None
            limit = state.get("TimeoutSeconds")
            error = asl.StatesError("States.Timeout", f"{name} ran past TimeoutSeconds={limit}")
            self._state_failed(execution, state, error)
            return
        try:
            kind = state["Type"]
            if kind == "Task":
                self._task(execution, name, state, context)
            elif kind == "Pass":
                self._pass(execution, state, context)
            elif kind == "Choice":
                effective = asl.select(asl.path_field(state, "InputPath"), execution.data, context)
                target = asl.choose(state, effective, context)
                out = asl.select(asl.path_field(state, "OutputPath"), effective, context)
                self._enter(execution, target, out)
            elif kind == "Wait":
                self._wait(execution, state, context)
            elif kind == "Succeed":
                effective = asl.select(asl.path_field(state, "InputPath"), execution.data, context)
                out = asl.select(asl.path_field(state, "OutputPath"), effective, context)
                self._close(execution, "SUCCEEDED", output=out)
            elif kind == "Fail":
                error = state.get("Error") or (
                    asl.get_path(state["ErrorPath"], execution.data, context)
                    if "ErrorPath" in state
                    else "States.Fail"
                )
                cause = state.get("Cause") or (
                    asl.get_path(state["CausePath"], execution.data, context)
                    if "CausePath" in state
                    else ""
                )
                self._close(execution, "FAILED", error=str(error), cause=str(cause))
            else:
                raise asl.AslUnsupported(f"state type {kind}")
        except asl.StatesError as err:
            self._state_failed(execution, state, err)

    def _task(
        self, execution: Execution, name: str, state: dict[str, Any], context: dict[str, Any]
    ) -> None:
        effective = asl.select(asl.path_field(state, "InputPath"), execution.data, context)
        params = (
            asl.apply_template(state["Parameters"], effective, context)
            if "Parameters" in state
            else effective
        )
        execution.task_seq += 1
        attempt = execution.task_seq
        limit = state.get("TimeoutSeconds")
        execution.awaiting = True
        execution.task_deadline = self.clock.t + float(limit) if limit is not None else None
        self._event(execution, "TaskScheduled", {"resource": state["Resource"], "name": name})

        def done(result: Any, error: asl.StatesError | None) -> None:
            if not (
                execution.awaiting
                and execution.task_seq == attempt
                and execution.status == "RUNNING"
            ):
                return  # the state timed out, or the execution stopped, meanwhile
            execution.awaiting, execution.task_deadline = False, None
            if error is not None:
                self._state_failed(execution, state, error)
                return
            self._event(execution, "TaskSucceeded", {"name": name})
            if "ResultSelector" in state:
                result = asl.apply_template(state["ResultSelector"], result, context)
            try:
                self._advance(execution, state, result, context)
            except asl.StatesError as err:
                self._state_failed(execution, state, err)

        self.integrations.start(str(state["Resource"]), params, name, execution, done)

    def _pass(self, execution: Execution, state: dict[str, Any], context: dict[str, Any]) -> None:
        effective = asl.select(asl.path_field(state, "InputPath"), execution.data, context)
        if "Result" in state:
            result = state["Result"]
        elif "Parameters" in state:
            result = asl.apply_template(state["Parameters"], effective, context)
        else:
            result = effective
        self._advance(execution, state, result, context)

    def _wait(self, execution: Execution, state: dict[str, Any], context: dict[str, Any]) -> None:
        if execution.waiting_until is None:
            if "Seconds" in state:
                until = self.clock.t + float(state["Seconds"])
            elif "SecondsPath" in state:
                until = self.clock.t + float(
                    asl.get_path(state["SecondsPath"], execution.data, context)
                )
            else:
                stamp = state.get("Timestamp") or asl.get_path(
                    state["TimestampPath"], execution.data, context
                )
                until = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
            execution.waiting_until = execution.next_at = until
            return
        execution.waiting_until = None
        self._advance(execution, state, None, context, keep_input=True)

    def _advance(
        self,
        execution: Execution,
        state: dict[str, Any],
        result: Any,
        context: dict[str, Any],
        *,
        keep_input: bool = False,
    ) -> None:
        out = (
            execution.data
            if keep_input
            else asl.set_path(execution.data, asl.path_field(state, "ResultPath"), result)
        )
        out = asl.select(asl.path_field(state, "OutputPath"), out, context)
        if state.get("End"):
            self._close(execution, "SUCCEEDED", output=out)
        else:
            self._enter(execution, str(state["Next"]), out)

    def _state_failed(
        self, execution: Execution, state: dict[str, Any], err: asl.StatesError
    ) -> None:
        name = execution.state or "?"
        self._event(execution, "TaskFailed", {"name": name, "error": err.error, "cause": err.cause})
        found = asl.retrier_for(state, err.error)
        if found is not None:
            index, retrier = found
            done = execution.retries.get((name, index), 0)
            if done < asl.max_attempts(retrier):
                execution.retries[(name, index)] = done + 1
                execution.next_at = self.clock.t + asl.retry_delay(retrier, done, self.rng)
                return
        catcher = asl.catcher_for(state, err.error)
        if catcher is not None:
            data = asl.set_path(
                execution.data,
                catcher.get("ResultPath", "$"),
                {"Error": err.error, "Cause": err.cause},
            )
            self._enter(execution, str(catcher["Next"]), data)
            return
        self._close(execution, "FAILED", error=err.error, cause=err.cause)

    def _enter(self, execution: Execution, name: str, data: Any) -> None:
        if name not in execution.machine.definition["States"]:
            raise asl.AslUnsupported(f"transition to unknown state {name}")
        execution.state, execution.data = name, data
        execution.entered_at = execution.next_at = self.clock.t
        execution.retries = {k: v for k, v in execution.retries.items() if k[0] != name}
        kind = execution.machine.state(name)["Type"]
        self._event(execution, f"{kind}StateEntered", {"name": name})

    def _close(self, execution: Execution, status: str, **details: Any) -> None:
        execution.status, execution.stop = status, self.clock.t
        execution.output = details.get("output")
        execution.error, execution.cause = details.get("error"), details.get("cause")
        event = {"SUCCEEDED": "Succeeded", "FAILED": "Failed", "ABORTED": "Aborted"}[status]
        self._event(
            execution,
            f"Execution{event}",
            {k: v for k, v in details.items() if k in ("error", "cause") and v is not None},
        )

    def _event(self, execution: Execution, kind: str, details: dict[str, Any]) -> None:
        key = kind[0].lower() + kind[1:] + "EventDetails"
        execution.history.append(
            {
                "id": len(execution.history) + 1,
                "timestamp": self._date(self.clock.t),
                "type": kind,
                key: details,
            }
        )

    def _context(self, execution: Execution) -> dict[str, Any]:
        return {
            "Execution": {
                "Id": execution.arn,
                "Name": execution.name,
                "StartTime": _iso(execution.start),
                "Input": json.loads(execution.input),
            },
            "State": {
                "Name": execution.state,
                "EnteredTime": _iso(execution.entered_at),
                "RetryCount": sum(
                    v for (state, _), v in execution.retries.items() if state == execution.state
                ),
            },
            "StateMachine": {"Id": execution.machine.arn, "Name": execution.machine.name},
        }


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
