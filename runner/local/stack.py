"""Create the packaged Serverless template in moto's CloudFormation.

`sls package` writes `.serverless/cloudformation-template-update-stack.json` and the
function zip. `create_stack` uploads the zip, adapts the template to moto (see
`adapt_for_moto`) and creates the stack; it returns the stack's outputs and the settings
of the event source mappings it had to leave out, so a local stream poller can honour
them (batch size, filters, starting position, retries, on-failure destination,
parallelization factor, handler).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3

TEMPLATE_FILE = "cloudformation-template-update-stack.json"
# The bucket `sls deploy` creates first (create-stack template) and uploads artifacts to.
DEPLOYMENT_BUCKET = "ServerlessDeploymentBucket"
DEFAULT_STACK_NAME = "task-runner-local"
DEFAULT_REGION = "us-east-1"

_ESM_TYPE = "AWS::Lambda::EventSourceMapping"
_FUNCTION_TYPE = "AWS::Lambda::Function"
_STATE_MACHINE_TYPE = "AWS::StepFunctions::StateMachine"
_SUB_VARIABLE = re.compile(r"\$\{([^}!]+)\}")

Template = dict[str, Any]


class StackError(Exception):
    """The local stack could not be created from the packaged template."""


@dataclass(frozen=True)
class StreamMapping:
    """One event source mapping of the template, as a local poller needs it."""

    logical_id: str
    function_logical_id: str
    function_name: str  # the deployed name, e.g. task-runner-dev-processStream
    handler: str  # e.g. handler.process_stream
    source_logical_id: str  # the table whose stream feeds it
    batch_size: int
    starting_position: str
    filter_patterns: tuple[dict[str, Any], ...]
    maximum_retry_attempts: int | None  # None: retry until the record expires (AWS default)
    maximum_record_age_seconds: int | None
    bisect_batch_on_function_error: bool
    report_batch_item_failures: bool
    on_failure_logical_id: str | None
    # Physical id of the on-failure resource (an SQS queue URL), once the stack exists.
    on_failure_physical_id: str | None = None
    # Batches of one shard in flight at once (AWS's default 1, at most 10).
    parallelization_factor: int = 1


@dataclass(frozen=True)
class Schedule:
    """A scheduled rule invoking a function (the sweeper)."""

    logical_id: str
    function_logical_id: str
    handler: str
    expression: str  # e.g. rate(5 minutes)


@dataclass(frozen=True)
class LocalStack:
    """A stack created in moto from the packaged template."""

    stack_name: str
    stack_id: str
    status: str
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id
    stream_mappings: tuple[StreamMapping, ...]
    schedules: tuple[Schedule, ...]


def load_packaged_template(package_dir: Path) -> Template:
    """The template `sls package` wrote into `package_dir` (usually `.serverless`)."""
    path = package_dir / TEMPLATE_FILE
    if not path.is_file():
        raise StackError(f"{path} not found: run `npx sls package` first")
    template: Template = json.loads(path.read_text())
    return template


def _resources_of_type(template: Template, resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


def _logical_id(reference: Any) -> str | None:
    """The logical id a `Ref` or `Fn::GetAtt` points at; None for anything else."""
    if isinstance(reference, Mapping):
        if "Ref" in reference:
            return str(reference["Ref"])
        if "Fn::GetAtt" in reference:
            target = reference["Fn::GetAtt"]
            return str(target[0] if isinstance(target, list) else target.split(".")[0])
    return None


def _function(template: Template, reference: Any) -> tuple[str, dict[str, Any]]:
    logical_id = _logical_id(reference)
    functions = _resources_of_type(template, _FUNCTION_TYPE)
    if logical_id not in functions:
        raise StackError(f"event target {reference!r} is not a function of the template")
    return logical_id, functions[logical_id]["Properties"]


def is_stream_source(reference: Any) -> bool:
    """An event source that is a table's stream (`Fn::GetAtt: [Table, StreamArn]`)."""
    target = reference.get("Fn::GetAtt") if isinstance(reference, Mapping) else None
    if isinstance(target, str):
        target = target.split(".")
    return isinstance(target, list) and len(target) == 2 and target[1] == "StreamArn"


def stream_mappings(template: Template) -> tuple[StreamMapping, ...]:
    """The template's event source mappings, parsed into what a poller needs."""
    mappings = []
    for logical_id, resource in sorted(_resources_of_type(template, _ESM_TYPE).items()):
        props = resource["Properties"]
        if not is_stream_source(props["EventSourceArn"]):
            continue  # a queue's mapping: runner.local.queues polls it
        function_id, function = _function(template, props["FunctionName"])
        filters = props.get("FilterCriteria", {}).get("Filters", [])
        on_failure = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        age = props.get("MaximumRecordAgeInSeconds")
        retries = props.get("MaximumRetryAttempts")
        mappings.append(
            StreamMapping(
                logical_id=logical_id,
                function_logical_id=function_id,
                function_name=str(function.get("FunctionName", function_id)),
                handler=str(function["Handler"]),
                source_logical_id=_logical_id(props["EventSourceArn"]) or "",
                batch_size=int(props.get("BatchSize", 100)),  # AWS's default for streams
                starting_position=str(props.get("StartingPosition", "LATEST")),
                filter_patterns=tuple(json.loads(f["Pattern"]) for f in filters),
                maximum_retry_attempts=None if retries in (None, -1) else int(retries),
                maximum_record_age_seconds=None if age in (None, -1) else int(age),
                bisect_batch_on_function_error=bool(props.get("BisectBatchOnFunctionError")),
                report_batch_item_failures="ReportBatchItemFailures"
                in props.get("FunctionResponseTypes", []),
                on_failure_logical_id=_logical_id(on_failure),
                parallelization_factor=int(props.get("ParallelizationFactor", 1)),
            )
        )
    return tuple(mappings)


def schedules(template: Template) -> tuple[Schedule, ...]:
    """The template's scheduled rules that target functions."""
    found = []
    for logical_id, resource in sorted(_resources_of_type(template, "AWS::Events::Rule").items()):
        props = resource["Properties"]
        if "ScheduleExpression" not in props:
            continue
        for target in props.get("Targets", []):
            function_id, function = _function(template, target["Arn"])
            found.append(
                Schedule(
                    logical_id, function_id, str(function["Handler"]), props["ScheduleExpression"]
                )
            )
    return tuple(found)


def _rename_digit_sub_variables(node: Any) -> Any:
    """Prefix `Fn::Sub` map variables that start with a digit: moto rejects them."""
    if isinstance(node, list):
        return [_rename_digit_sub_variables(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _rename_digit_sub_variables(value) for key, value in node.items()}
    sub = node.get("Fn::Sub")
    if isinstance(sub, list) and len(sub) == 2 and isinstance(sub[1], dict):
        renames = {name: f"v{name}" for name in sub[1] if name[:1].isdigit()}
        if renames:
            text = _SUB_VARIABLE.sub(
                lambda m: "${" + renames.get(m.group(1), m.group(1)) + "}", sub[0]
            )
            node["Fn::Sub"] = [text, {renames.get(k, k): v for k, v in sub[1].items()}]
    return node


_ALARM_TYPE = "AWS::CloudWatch::Alarm"
_DASHBOARD_TYPE = "AWS::CloudWatch::Dashboard"


def adapt_for_moto(template: Template) -> Template:
    """A copy of `template` that moto 5.2's CloudFormation creates as AWS would.

    - Event source mappings are removed: moto would need Docker for them, and its
      mappings ignore filters and batch settings anyway (the local poller replaces them).
    - The deployment bucket becomes a parameter: the artifacts must be in S3 before the
      functions are created, which `sls deploy` does with a first stack.
    - A state machine's `Definition` + `DefinitionSubstitutions` becomes the equivalent
      `DefinitionString` `Fn::Sub`: moto reads only `DefinitionString`.
    - `Fn::Sub` variables starting with a digit are renamed.
    - A dashboard body's `${SomeAlarm.Arn}` becomes the ARN the alarm would have: moto's
      CloudFormation does not model alarms (it skips them), so the reference is undefined.
    """
    adapted = copy.deepcopy(template)
    resources: dict[str, Any] = adapted["Resources"]
    alarms = _resources_of_type(adapted, _ALARM_TYPE)
    for resource in _resources_of_type(adapted, _DASHBOARD_TYPE).values():
        body = resource["Properties"].get("DashboardBody")
        if isinstance(body, dict) and isinstance(body.get("Fn::Sub"), str):
            text = body["Fn::Sub"]
            for logical_id in alarms:
                text = text.replace(
                    f"${{{logical_id}.Arn}}",
                    "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}"
                    f":alarm:{logical_id}",
                )
            body["Fn::Sub"] = text
    for logical_id in _resources_of_type(adapted, _ESM_TYPE):
        del resources[logical_id]
    if DEPLOYMENT_BUCKET in resources:
        del resources[DEPLOYMENT_BUCKET]
        adapted.setdefault("Parameters", {})[DEPLOYMENT_BUCKET] = {"Type": "String"}
    for resource in _resources_of_type(adapted, _STATE_MACHINE_TYPE).values():
        props = resource["Properties"]
        if "Definition" in props:
            definition = json.dumps(props.pop("Definition"))
            substitutions = props.pop("DefinitionSubstitutions", {})
            props["DefinitionString"] = {
                "Fn::Sub": _inline_substitutions(definition, substitutions)
            }
    return dict(_rename_digit_sub_variables(adapted))


def _inline_substitutions(definition: str, substitutions: dict[str, Any]) -> str:
    """`${Name}` placeholders → the string form of `Fn::Sub` (`${Resource.Attr}`, `${Resource}`).

    Moto applies a variable map with `string.Template.safe_substitute`, once per variable,
    which also turns the ASL's `$$` (the context object) into `$`; the string form is
    resolved by moto without that step, so `$$.State.EnteredTime` survives.
    """
    for name, value in substitutions.items():
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            target = ".".join(value["Fn::GetAtt"])
        elif isinstance(value, dict) and "Ref" in value:
            target = value["Ref"]
        elif isinstance(value, str):
            definition = definition.replace(f"${{{name}}}", value)
            continue
        else:
            raise StackError(f"cannot inline substitution {name}: {value!r}")
        definition = definition.replace(f"${{{name}}}", f"${{{target}}}")
    return definition


def _upload_artifacts(s3: Any, template: Template, package_dir: Path, bucket: str) -> None:
    """Put each function's zip where its `Code.S3Key` says."""
    keys = {
        props["Code"]["S3Key"]
        for resource in _resources_of_type(template, _FUNCTION_TYPE).values()
        if "S3Key" in (props := resource["Properties"]).get("Code", {})
    }
    for key in sorted(keys):
        artifact = package_dir / Path(key).name
        if not artifact.is_file():
            raise StackError(f"{artifact} (for S3 key {key}) not found")
        s3.upload_file(str(artifact), bucket, key)


def create_stack(
    package_dir: Path,
    *,
    endpoint_url: str | None = None,
    session: boto3.Session | None = None,
    stack_name: str = DEFAULT_STACK_NAME,
    region: str = DEFAULT_REGION,
) -> LocalStack:
    """Create the packaged template as `stack_name` in moto; return what it made.

    Pass `endpoint_url` for a moto server, or nothing inside `moto.mock_aws()`.
    """
    session = session or boto3.Session(region_name=region)
    s3 = session.client("s3", endpoint_url=endpoint_url, region_name=region)
    cloudformation = session.client("cloudformation", endpoint_url=endpoint_url, region_name=region)

    template = load_packaged_template(package_dir)
    bucket = f"{stack_name}-deployment".lower()
    s3.create_bucket(Bucket=bucket)
    _upload_artifacts(s3, template, package_dir, bucket)

    stack_id = cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(adapt_for_moto(template)),
        Parameters=[{"ParameterKey": DEPLOYMENT_BUCKET, "ParameterValue": bucket}],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )["StackId"]
    stack = cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise StackError(
            f"stack {stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}"
        )

    summaries = cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_id)
    resources = {
        summary["LogicalResourceId"]: summary["PhysicalResourceId"]
        for page in summaries
        for summary in page["StackResourceSummaries"]
        if summary["LogicalResourceId"]  # moto lists types it skipped under ""
    }
    mappings = tuple(_with_destination(mapping, resources) for mapping in stream_mappings(template))
    return LocalStack(
        stack_name=stack_name,
        stack_id=stack_id,
        status=stack["StackStatus"],
        outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        resources=resources,
        stream_mappings=mappings,
        schedules=schedules(template),
    )


def _with_destination(mapping: StreamMapping, resources: Mapping[str, str]) -> StreamMapping:
    if mapping.on_failure_logical_id is None:
        return mapping
    return replace(mapping, on_failure_physical_id=resources.get(mapping.on_failure_logical_id))
