"""Executions of a state machine, interpreted from its ASL (tests.simulation.asl) one
state (or one Retry wait) per `step`, on the simulation's clock. A Task state hands its
resource to an `Integrations` object and waits for its `done` callback; its
TimeoutSeconds runs meanwhile."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from tests.simulation import asl
from tests.simulation.fibers import SimClock


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


class Interpreter:
    """Runs executions state by state; every transition is recorded in its history."""

    def __init__(self, clock: SimClock, rng: random.Random, integrations: Integrations) -> None:
        self.clock = clock
        self.rng = rng
        self.integrations = integrations

    def _date(self, moment: float) -> datetime:
        return datetime.fromtimestamp(moment, UTC)

    def begin(self, execution: Execution, data: Any) -> None:
        self._event(execution, "ExecutionStarted", {"input": execution.input})
        self._enter(execution, str(execution.machine.definition["StartAt"]), data)

    def close(self, execution: Execution, status: str, **details: Any) -> None:
        self._close(execution, status, **details)

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
                name_of_error = state.get("Error") or (
                    asl.get_path(state["ErrorPath"], execution.data, context)
                    if "ErrorPath" in state
                    else "States.Fail"
                )
                cause = state.get("Cause") or (
                    asl.get_path(state["CausePath"], execution.data, context)
                    if "CausePath" in state
                    else ""
                )
                self._close(execution, "FAILED", error=str(name_of_error), cause=str(cause))
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
