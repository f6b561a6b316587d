"""The service as deployed, read from the packaged template: functions, stream mappings,
schedules, the table and the state machine, with their references resolved for a
simulation. Nothing about the protocol is written here; it all comes from
`sls package`'s template (cached by runner.local.template) and the ASL file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.local.stack import (
    Schedule,
    StreamMapping,
    load_packaged_template,
    schedules,
    stream_mappings,
)
from runner.local.statemachine import ASL_PATH
from runner.local.template import package_service

STAGE = "local"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account: every ARN the simulation makes has it

_FUNCTION = "AWS::Lambda::Function"
_TABLE = "AWS::DynamoDB::Table"
_STATE_MACHINE = "AWS::StepFunctions::StateMachine"
_QUEUE = "AWS::SQS::Queue"


@dataclass(frozen=True)
class Function:
    """One Lambda function of the template."""

    logical_id: str
    name: str  # e.g. task-runner-local-processStream
    handler: str  # e.g. handler.process_stream
    timeout: float
    environment: Mapping[str, Any]  # as in the template (values may be Ref/GetAtt)

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}"


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    name: str
    definition_path: Path
    substitutions: Mapping[str, Any]  # DefinitionSubstitutions, unresolved

    @property
    def arn(self) -> str:
        return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{self.name}"


@dataclass(frozen=True)
class QueueMapping:
    """An SQS event source mapping of the template (the timer queue's, to fireTimers)."""

    logical_id: str
    function_logical_id: str
    source_logical_id: str  # the queue
    batch_size: int
    maximum_concurrency: int
    report_batch_item_failures: bool


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    ttl_attribute: str | None


@dataclass(frozen=True)
class Topology:
    functions: Mapping[str, Function]  # by logical id
    mappings: tuple[StreamMapping, ...]  # of the tasks table's stream
    # Event sources the simulation does not drive (an SQS queue, say): listed in its output.
    unsimulated: tuple[str, ...]
    schedules: tuple[Schedule, ...]
    state_machines: Mapping[str, StateMachineSpec]
    table: TableSpec
    resource_types: Mapping[str, str]  # logical id -> CloudFormation type
    resource_names: Mapping[str, str]  # logical id -> its name property, where it has one
    # SQS queues (a mapping's on-failure destination): logical id -> properties.
    queues: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # Event source mappings of an SQS queue of the template (the timer queue's).
    queue_mappings: tuple[QueueMapping, ...] = ()

    def function_by_name(self, name_or_arn: str) -> Function:
        from runner.local.lambdas import function_name_of

        name = function_name_of(name_or_arn)
        for function in self.functions.values():
            if name in (function.name, function.logical_id):
                return function
        raise KeyError(f"no function {name_or_arn} in the template")

    def resolve(self, value: Any, physical: Mapping[str, str]) -> str:
        """A template value (literal, Ref, Fn::GetAtt) in the simulated account.

        `physical` maps logical ids to what the simulation made of them (the table's
        name, say); functions and state machines resolve from the template itself.
        """
        if isinstance(value, str):
            return value
        if isinstance(value, Mapping) and "Ref" in value:
            logical = str(value["Ref"])
            if logical in physical:
                return physical[logical]
            if logical in self.functions:
                return self.functions[logical].name
            if logical in self.state_machines:
                return self.state_machines[logical].arn
            if logical in self.resource_names:
                return self.resource_names[logical]
            if logical in self.resource_types:  # named by an expression: any stable name
                return f"sim-{logical.lower()}"
        if isinstance(value, Mapping) and "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            logical, attribute = target if isinstance(target, list) else target.split(".", 1)
            key = f"{logical}.{attribute}"
            if key in physical:
                return physical[key]
            if logical in self.functions and attribute == "Arn":
                return self.functions[logical].arn
            if logical in self.state_machines and attribute == "Arn":
                return self.state_machines[logical].arn
        return f"unresolved:{json.dumps(value, sort_keys=True)}"

    def environment(self, function: Function, physical: Mapping[str, str]) -> dict[str, str]:
        return {k: self.resolve(v, physical) for k, v in function.environment.items()}

    def mapped_function(self, mapping: StreamMapping) -> Function:
        return self.functions[mapping.function_logical_id]


def _name_property(resource: Mapping[str, Any]) -> str | None:
    props = resource.get("Properties", {})
    for key in ("TableName", "QueueName", "BucketName", "StateMachineName", "FunctionName"):
        if isinstance(props.get(key), str):
            return str(props[key])
    return None


def queue_mappings(resources: Mapping[str, Any]) -> tuple[QueueMapping, ...]:
    """The event source mappings whose source is one of the template's SQS queues."""
    found = []
    for logical_id, resource in sorted(resources.items()):
        if resource.get("Type") != "AWS::Lambda::EventSourceMapping":
            continue
        props = resource["Properties"]
        source = props.get("EventSourceArn")
        getatt = source.get("Fn::GetAtt") if isinstance(source, Mapping) else ""
        queue = getatt[0] if isinstance(getatt, list) else str(getatt).split(".")[0]
        if resources.get(queue, {}).get("Type") != _QUEUE:
            continue
        function = props.get("FunctionName")
        target = function.get("Fn::GetAtt") if isinstance(function, Mapping) else None
        function_id = target[0] if isinstance(target, list) else str(target).split(".")[0]
        found.append(
            QueueMapping(
                logical_id=logical_id,
                function_logical_id=function_id,
                source_logical_id=queue,
                batch_size=int(props.get("BatchSize", 10)),  # AWS's default for SQS
                maximum_concurrency=int(
                    props.get("ScalingConfig", {}).get("MaximumConcurrency", 1000)
                ),
                report_batch_item_failures="ReportBatchItemFailures"
                in props.get("FunctionResponseTypes", []),
            )
        )
    return tuple(found)


def _without_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(v) for v in node]
    return node


def _asl_file(definition: Any, directory: Path) -> Path:
    """The ASL file a template's inlined `Definition` came from (osls drops JSON nulls,
    so the file, not the template, is what Step Functions would run)."""
    for path in sorted(directory.glob("*.json")):
        if _without_nulls(json.loads(path.read_text())) == _without_nulls(definition):
            return path
    raise ValueError(f"no file in {directory} holds the template's state machine definition")


def parse_topology(template: Mapping[str, Any], asl_dir: Path = ASL_PATH.parent) -> Topology:
    resources: Mapping[str, Any] = template["Resources"]
    functions = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != _FUNCTION:
            continue
        props = resource["Properties"]
        functions[logical_id] = Function(
            logical_id=logical_id,
            name=str(props.get("FunctionName", logical_id)),
            handler=str(props["Handler"]),
            timeout=float(props.get("Timeout", 3)),  # Lambda's default
            environment=dict(props.get("Environment", {}).get("Variables", {})),
        )
    machines = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != _STATE_MACHINE:
            continue
        props = resource["Properties"]
        machines[logical_id] = StateMachineSpec(
            logical_id=logical_id,
            name=str(props.get("StateMachineName", logical_id)),
            definition_path=_asl_file(props.get("Definition"), asl_dir),
            substitutions=dict(props.get("DefinitionSubstitutions", {})),
        )
    tables = [(k, r) for k, r in resources.items() if r.get("Type") == _TABLE]
    if len(tables) != 1:
        raise ValueError(f"expected one DynamoDB table in the template, found {len(tables)}")
    table_id, table = tables[0]
    ttl = table["Properties"].get("TimeToLiveSpecification", {})
    mappings = stream_mappings(dict(template))
    return Topology(
        functions=functions,
        mappings=tuple(m for m in mappings if m.source_logical_id == table_id),
        unsimulated=tuple(
            f"{m.logical_id} ({m.source_logical_id} → {m.function_logical_id})"
            for m in mappings
            if m.source_logical_id != table_id
        ),
        queue_mappings=queue_mappings(resources),
        schedules=schedules(dict(template)),
        state_machines=machines,
        table=TableSpec(
            logical_id=table_id,
            name=str(table["Properties"].get("TableName", table_id)),
            ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled") else None,
        ),
        resource_types={k: str(r.get("Type")) for k, r in resources.items()},
        resource_names={k: n for k, r in resources.items() if (n := _name_property(r))},
        queues={
            k: dict(r.get("Properties", {}))
            for k, r in resources.items()
            if r.get("Type") == _QUEUE
        },
    )


@functools.cache
def load_topology() -> Topology:
    """The packaged template of the local stage (packaged once, then cached on disk)."""
    return parse_topology(load_packaged_template(package_service(stage=STAGE, region=REGION)))
