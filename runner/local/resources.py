"""The created stack read back for local use: functions, state machines, TTL, SES."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3

from runner.local import stack as cfn
from runner.local.lambda_config import FunctionConfig
from runner.local.motoserver import MOTO_CONFIG, moto_api


class ResourceError(Exception):
    """The created stack holds something the local stack cannot run."""


@dataclass(frozen=True)
class FunctionInfo:
    """A Lambda function of the stack as moto holds it."""

    name: str
    arn: str
    handler: str
    timeout: float
    environment: dict[str, str]
    memory_mb: int = 128
    reserved_concurrency: int | None = None  # the template's ReservedConcurrentExecutions

    def config(
        self, region: str, account: str, *, stream_batches: int | None = None
    ) -> FunctionConfig:
        """What the endpoint's Lambda service needs to run it; `stream_batches`: how many
        batches its stream mappings can have in flight at once (ParallelizationFactor times
        shards), each of which AWS gives an environment of its own."""
        return FunctionConfig(
            name=self.name,
            handler=self.handler,
            timeout=self.timeout,
            memory_mb=self.memory_mb,
            reserved_concurrency=self.reserved_concurrency,
            unreserved_concurrency=stream_batches,
            environment=dict(self.environment),
            region=region,
            account=account,
        )


def read_functions(
    session: boto3.Session,
    endpoint: str,
    region: str,
    created: cfn.LocalStack,
    template: dict[str, Any] | None = None,
) -> dict[str, FunctionInfo]:
    """The stack's functions, read back from moto's Lambda (handler, timeout, memory,
    environment), with the reserved concurrency the template gives them."""
    lambdas = session.client("lambda", endpoint_url=endpoint, region_name=region)
    resources = (template or {}).get("Resources", {})
    found = {}
    for logical_id, physical_id in created.resources.items():
        if not physical_id or not logical_id.endswith("LambdaFunction"):
            continue
        config = lambdas.get_function_configuration(FunctionName=physical_id)
        reserved = resources.get(logical_id, {}).get("Properties", {})
        reserved = reserved.get("ReservedConcurrentExecutions")
        found[logical_id] = FunctionInfo(
            name=config["FunctionName"],
            arn=config["FunctionArn"],
            handler=config["Handler"],
            timeout=float(config.get("Timeout", 3)),
            environment=dict(config.get("Environment", {}).get("Variables", {})),
            memory_mb=int(config.get("MemorySize", 128)),
            reserved_concurrency=None if reserved is None else int(reserved),
        )
    return found


def client_environment(
    functions: Mapping[str, FunctionInfo], names: tuple[str, ...]
) -> dict[str, str]:
    """The variables of `names` that the functions set, for a client of the stack (the
    CLI, the demo): each function runs with its own environment, but a client needs one
    table, one state machine. Refuses functions that disagree on one of them."""
    env: dict[str, str] = {}
    for info in functions.values():
        for name, value in info.environment.items():
            if name in names and env.setdefault(name, value) != value:
                raise ResourceError(
                    f"functions disagree on {name} ({env[name]!r} vs {value!r}); "
                    "a client of the local stack needs one value"
                )
    return env


def apply_time_to_live(
    session: boto3.Session, endpoint: str, region: str, created: cfn.LocalStack, template: Any
) -> list[str]:
    """Enable the tables' TimeToLiveSpecification, which moto's CloudFormation skips;
    returns the tables it enabled."""
    dynamodb = session.client("dynamodb", endpoint_url=endpoint, region_name=region)
    enabled = []
    for logical_id, resource in template.get("Resources", {}).items():
        spec = resource.get("Properties", {}).get("TimeToLiveSpecification")
        if resource.get("Type") != "AWS::DynamoDB::Table" or not spec:
            continue
        if str(spec.get("Enabled")).lower() != "true":
            continue
        table = created.resources[logical_id]
        dynamodb.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": spec["AttributeName"]},
        )
        enabled.append(table)
    return enabled


def recreate_state_machines(
    session: boto3.Session,
    endpoint: str,
    region: str,
    created: cfn.LocalStack,
    template: dict[str, Any],
    functions: Mapping[str, FunctionInfo],
) -> None:
    """Re-create the stack's state machines in moto's executing backend (same ARN).

    The definition is built from the packaged template (its `Definition` with the
    `DefinitionSubstitutions` resolved against the created stack), not read back from
    moto: moto's `Fn::Sub` runs `string.Template`, which turns the ASL's `$$.` context
    paths into `$.`.
    """
    sfn = session.client("stepfunctions", endpoint_url=endpoint, region_name=region)
    machines = []
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        arn = created.resources[logical_id]
        described = sfn.describe_state_machine(stateMachineArn=arn)
        definition = described["definition"]
        props = resource["Properties"]
        if isinstance(props.get("Definition"), dict):
            values = {
                name: _resolve(value, created, functions)
                for name, value in props.get("DefinitionSubstitutions", {}).items()
            }
            definition = substitute_definition(json.dumps(props["Definition"], indent=2), values)
        machines.append((described, definition))
    moto_api(endpoint, "config", {"stepfunctions": MOTO_CONFIG["stepfunctions"]})
    for described, definition in machines:
        arn = sfn.create_state_machine(
            name=described["name"],
            definition=definition,
            roleArn=described["roleArn"],
            type=described.get("type", "STANDARD"),
        )["stateMachineArn"]
        if arn != described["stateMachineArn"]:
            raise ResourceError(f"re-created state machine has ARN {arn}")


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_]*)\}")


def substitute_definition(text: str, values: Mapping[str, str]) -> str:
    """`${Name}` → value, as Step Functions' DefinitionSubstitutions does (nothing else)."""
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise ResourceError(f"no DefinitionSubstitutions for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _resolve(value: Any, created: cfn.LocalStack, functions: Mapping[str, FunctionInfo]) -> str:
    """A substitution value (literal, `Ref` or `Fn::GetAtt ... Arn`) against the stack."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return created.resources[value["Ref"]]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        logical_id, attribute = target if isinstance(target, list) else target.split(".", 1)
        if attribute == "Arn" and logical_id in functions:
            return functions[logical_id].arn
        physical = created.resources.get(logical_id, "")
        if attribute == "Arn" and physical.startswith("arn:"):
            return physical
    raise ResourceError(f"cannot resolve {value!r} locally")


def verify_sender(session: boto3.Session, endpoint: str, region: str, sender: str | None) -> None:
    """SES refuses to send from an unverified address; verify the configured sender."""
    if sender:
        ses = session.client("ses", endpoint_url=endpoint, region_name=region)
        ses.verify_email_identity(EmailAddress=sender)
