"""Least privilege: each role holds exactly the actions its code needs, on named resources."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import pytest

from tests.deploy.conftest import Packaged

pytestmark = pytest.mark.slow

Grants = dict[str, set[str]]  # action -> resources, rendered by `render`

TABLE = "TasksTable.Arn"
SES_IDENTITIES = "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/*"
XRAY = {"xray:PutTraceSegments": {"*"}, "xray:PutTelemetryRecords": {"*"}}
STREAM_READ = {
    f"dynamodb:{action}": {"TasksTable.StreamArn"}
    for action in ("DescribeStream", "GetRecords", "GetShardIterator", "ListStreams")
}
TASK_WRITES = {"dynamodb:GetItem": {TABLE}, "dynamodb:UpdateItem": {TABLE}}
# EXPORT_DB, in its own function: the only role that may read the whole table.
EXPORTS = {
    "dynamodb:Scan": {TABLE},
    "s3:PutObject": {"ExportBucket.Arn/*"},
    "s3:GetObject": {"ExportBucket.Arn/*"},
    "ses:SendEmail": {SES_IDENTITIES},
    "ses:SendRawEmail": {SES_IDENTITIES},
}
ON_FAILURE = {"sqs:SendMessage": {"StreamOnFailureQueue.Arn"}}
# Offloaded payloads: under tasks/, and a staged input its producer did not move.
PAYLOADS = {
    "s3:GetObject": {"PayloadBucket.Arn/tasks/*", "PayloadBucket.Arn/staging/*"},
    "s3:PutObject": {"PayloadBucket.Arn/tasks/*"},
    "s3:DeleteObject": {"PayloadBucket.Arn/tasks/*", "PayloadBucket.Arn/staging/*"},
}
# routeFailed deletes a removed task's objects (its REMOVE record).
PAYLOAD_CLEANUP = {
    "s3:ListBucket": {"PayloadBucket.Arn"},
    "s3:DeleteObject": {"PayloadBucket.Arn/tasks/*", "PayloadBucket.Arn/staging/*"},
}
START_RETRY = {"states:StartExecution": {"RetryStateMachine"}}
DESCRIBE_RETRIES = {
    "states:DescribeExecution": {
        "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}"
        ":execution:task-runner-retry-test:*"
    }
}
REPLAY = {
    "sqs:ReceiveMessage": {"StreamOnFailureQueue.Arn"},
    "sqs:DeleteMessage": {"StreamOnFailureQueue.Arn"},
    "dynamodb:GetShardIterator": {"TasksTable.StreamArn"},
    "dynamodb:GetRecords": {"TasksTable.StreamArn"},
}
LOG_DELIVERY = {
    f"logs:{action}": {"*"}
    for action in (
        "CreateLogDelivery",
        "GetLogDelivery",
        "UpdateLogDelivery",
        "DeleteLogDelivery",
        "ListLogDeliveries",
        "PutResourcePolicy",
        "DescribeResourcePolicies",
        "DescribeLogGroups",
    )
}

TIMER_QUEUE = "TimerQueue.Arn"

EXPECTED_FUNCTION_GRANTS: dict[str, Grants] = {
    # Runs tasks, and hands those longer than it can give to the retry workflow.
    "processStream": {
        **XRAY,
        **STREAM_READ,
        **TASK_WRITES,
        **START_RETRY,
        **DESCRIBE_RETRIES,
        **ON_FAILURE,
        **PAYLOADS,
    },
    "routeFailed": {
        **XRAY,
        **STREAM_READ,
        **ON_FAILURE,
        **START_RETRY,
        **DESCRIBE_RETRIES,
        **TASK_WRITES,
        **PAYLOAD_CLEANUP,
    },
    "runTask": {**XRAY, **TASK_WRITES, **PAYLOADS},
    "runExport": {
        **XRAY,
        **TASK_WRITES,
        **EXPORTS,
        **PAYLOADS,
        "s3:GetObject": EXPORTS["s3:GetObject"] | PAYLOADS["s3:GetObject"],
        "s3:PutObject": EXPORTS["s3:PutObject"] | PAYLOADS["s3:PutObject"],
    },
    # The sweeper lists by status, replays failed stream batches, runs what it finds
    # (never EXPORT_DB: that goes to the workflow), restarts stranded retries and moves
    # the staged inputs their producers left (it lists staging/).
    "sweep": {
        **XRAY,
        **TASK_WRITES,
        **START_RETRY,
        **DESCRIBE_RETRIES,
        **REPLAY,
        **PAYLOADS,
        # Moves staged inputs; a replayed REMOVE record's objects are listed, then deleted.
        "s3:ListBucket": PAYLOAD_CLEANUP["s3:ListBucket"],
        "dynamodb:Query": {"TasksTable.Arn/index/by-status", "TasksTable.Arn/index/by-run-at"},
    },
    # Promotes delayed tasks, keeps early timers in the queue for the time left (never
    # a copy: it sends nothing), inserts recurring schedules' tasks.
    "fireTimers": {
        **XRAY,
        **TASK_WRITES,
        "dynamodb:PutItem": {TABLE},
        "sqs:ChangeMessageVisibility": {TIMER_QUEUE},
        "sqs:ReceiveMessage": {TIMER_QUEUE},
        "sqs:DeleteMessage": {TIMER_QUEUE},
        "sqs:GetQueueAttributes": {TIMER_QUEUE},
    },
}
SCHEDULES_OF_DELAYS = (
    "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}"
    ":schedule/task-runner-delays-test/*"
)
# What a producer needs to create tasks, delayed ones included.
EXPECTED_PRODUCER_GRANTS: Grants = {
    "dynamodb:PutItem": {TABLE},
    "dynamodb:GetItem": {TABLE},
    "sqs:SendMessage": {TIMER_QUEUE},
    "scheduler:CreateSchedule": {SCHEDULES_OF_DELAYS},
    "scheduler:GetSchedule": {SCHEDULES_OF_DELAYS},
    "scheduler:UpdateSchedule": {SCHEDULES_OF_DELAYS},
    "scheduler:DeleteSchedule": {SCHEDULES_OF_DELAYS},
    "iam:PassRole": {"SchedulerRole.Arn"},
}
EXPECTED_STATE_MACHINE_GRANTS: Grants = {
    # runTask also makes the final "retries exhausted" write: the state machine touches
    # no table itself.
    "lambda:InvokeFunction": {
        "RunTaskLambdaFunction.Arn",
        "RunTaskLambdaFunction.Arn:*",
        "RunExportLambdaFunction.Arn",
        "RunExportLambdaFunction.Arn:*",
    },
    "xray:PutTraceSegments": {"*"},
    "xray:PutTelemetryRecords": {"*"},
    "xray:GetSamplingRules": {"*"},
    "xray:GetSamplingTargets": {"*"},
    **LOG_DELIVERY,
}
# Actions without resource-level permissions: the only ones allowed on "*".
STAR_ALLOWED = {
    action for action, resources in EXPECTED_STATE_MACHINE_GRANTS.items() if resources == {"*"}
}
LAMBDA_LOG_ACTIONS = {"logs:CreateLogStream", "logs:CreateLogGroup", "logs:PutLogEvents"}


def render(node: Any) -> str:
    """An intrinsic function as readable text: GetAtt -> `Id.Attr`, Ref -> `Id`."""
    if isinstance(node, str):
        return node
    if "Ref" in node:
        return str(node["Ref"])
    if "Fn::GetAtt" in node:
        return ".".join(node["Fn::GetAtt"])
    if "Fn::Join" in node:
        separator, parts = node["Fn::Join"]
        return str(separator).join(render(part) for part in parts)
    if "Fn::Sub" in node:
        sub = node["Fn::Sub"]
        return str(sub if isinstance(sub, str) else sub[0])
    raise AssertionError(f"unexpected intrinsic {node!r}")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in role["Properties"].get("Policies", [])
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def grants(role: dict[str, Any]) -> Grants:
    found: Grants = defaultdict(set)
    for statement in statements(role):
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            found[action] |= {render(resource) for resource in as_list(statement["Resource"])}
    return dict(found)


def function_role(packaged: Packaged, name: str) -> dict[str, Any]:
    function = packaged.resource(f"{name[0].upper()}{name[1:]}LambdaFunction")
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    return packaged.resource(role_id)


@pytest.mark.parametrize("name", sorted(EXPECTED_FUNCTION_GRANTS))
def test_function_role_grants_exactly_what_its_code_needs(packaged: Packaged, name: str) -> None:
    role = function_role(packaged, name)
    granted = grants(role)
    log_grants = {action: granted.pop(action) for action in LAMBDA_LOG_ACTIONS & set(granted)}

    assert granted == EXPECTED_FUNCTION_GRANTS[name]
    # Logs only into the function's own log group
    for resources in log_grants.values():
        assert all(f"/aws/lambda/task-runner-test-{name}:" in r for r in resources), resources
    principal = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"Service": ["lambda.amazonaws.com"]}


def test_each_function_has_its_own_role_and_no_shared_role_is_left(packaged: Packaged) -> None:
    roles = {
        function["Properties"]["Role"]["Fn::GetAtt"][0]
        for function in packaged.resources_of_type("AWS::Lambda::Function").values()
    }

    assert len(roles) == len(EXPECTED_FUNCTION_GRANTS)
    assert "IamRoleLambdaExecution" not in packaged.template["Resources"]


def test_only_the_export_function_may_scan_the_table(packaged: Packaged) -> None:
    scanners = [
        name
        for name in EXPECTED_FUNCTION_GRANTS
        if "dynamodb:Scan" in grants(function_role(packaged, name))
    ]
    assert scanners == ["runExport"]


def test_ses_is_allowed_only_from_the_sender_address(packaged: Packaged) -> None:
    for name in ("runExport",):
        [statement] = [
            s for s in statements(function_role(packaged, name)) if "ses:SendEmail" in s["Action"]
        ]
        assert statement["Condition"] == {
            "StringEquals": {"ses:FromAddress": "noreply@example.com"}
        }


def test_state_machine_may_invoke_only_run_task_and_update_only_the_table(
    packaged: Packaged,
) -> None:
    role_id = packaged.resource("RetryStateMachine")["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    role = packaged.resource(role_id)

    assert grants(role) == EXPECTED_STATE_MACHINE_GRANTS
    principal = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert principal == {"Service": "states.amazonaws.com"}


def test_the_scheduler_role_only_sends_timers(packaged: Packaged) -> None:
    assert grants(packaged.resource("SchedulerRole")) == {"sqs:SendMessage": {TIMER_QUEUE}}


def test_producers_may_pass_the_scheduler_role_to_eventbridge_scheduler_only(
    packaged: Packaged,
) -> None:
    policy = packaged.resource("ProducerPolicy")
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    found: Grants = defaultdict(set)
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            found[action] |= {render(r) for r in as_list(statement["Resource"])}
    assert dict(found) == EXPECTED_PRODUCER_GRANTS
    [pass_role] = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}
    }
    # Producers cannot touch the recurring schedules, which only a deploy changes
    assert all("recurring" not in r for rs in found.values() for r in rs)


def test_no_role_grants_wildcard_actions_or_star_resources_beyond_xray_and_logs(
    packaged: Packaged,
) -> None:
    for logical_id, role in packaged.resources_of_type("AWS::IAM::Role").items():
        for action, resources in grants(role).items():
            assert "*" not in action, f"{logical_id}: {action}"
            if "*" in resources:
                assert action in STAR_ALLOWED, f"{logical_id}: {action} on *"


def test_only_the_cancel_policy_may_stop_executions_and_only_this_stages(
    packaged: Packaged,
) -> None:
    # No function stops an execution: cancel-task does, with the operator's credentials
    for name in EXPECTED_FUNCTION_GRANTS:
        assert "states:StopExecution" not in grants(function_role(packaged, name)), name
    policy = packaged.resource("CancelTasksPolicy")
    granted: Grants = defaultdict(set)
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            granted[action] |= {render(resource) for resource in as_list(statement["Resource"])}

    assert dict(granted) == {
        **TASK_WRITES,
        "states:DescribeExecution": DESCRIBE_RETRIES["states:DescribeExecution"],
        "states:StopExecution": DESCRIBE_RETRIES["states:DescribeExecution"],
    }


def policy_grants(packaged: Packaged, logical_id: str) -> Grants:
    found: Grants = defaultdict(set)
    for statement in packaged.resource(logical_id)["Properties"]["PolicyDocument"]["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            found[action] |= {render(resource) for resource in as_list(statement["Resource"])}
    return dict(found)


def allows(patterns: set[str], key: str) -> bool:
    """An S3 object ARN pattern matches `key` as IAM matches it: `*` any characters, "/"
    included (IAM JSON policy elements: Resource, "Using wildcards in resource ARNs"),
    `?` any one, case-sensitive."""
    bucket = "PayloadBucket.Arn/"
    for pattern in patterns:
        assert pattern.startswith(bucket), pattern
        regex = "".join(
            ".*" if c == "*" else "." if c == "?" else re.escape(c)
            for c in pattern.removeprefix(bucket)
        )
        if re.fullmatch(regex, key):
            return True
    return False


@pytest.fixture
def payload_keys(aws: None, settings: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every kind of object key the runner makes, from a real run on moto's S3: an input as
    staged and as moved, a result and a step result."""
    from pydantic import BaseModel

    from runner.client import TaskRunnerClient
    from runner.model import ClaimSource, TaskStatus
    from runner.payloads import staged_key
    from runner.registry import TaskDefinition, TaskRegistry
    from tests.reliability.test_steps_and_payload_faults import BUCKET, payload_app

    class Blob(BaseModel):
        blob: str

    def big(data: Blob, ctx: Any) -> str:
        return str(ctx.step("big step", lambda: "s" * 20_000)) + data.blob

    app = payload_app(settings, monkeypatch)
    registry = TaskRegistry(
        [*app.registry, TaskDefinition(type="BIG_TASK", input_model=Blob, handler=big)]
    )
    app.registry = app.runner.registry = registry
    app.store.payloads.commit_input = lambda ref: None  # type: ignore[method-assign]
    task = TaskRunnerClient(app).create_task("BIG_TASK", {"blob": "i" * 20_000})
    del app.store.payloads.commit_input
    staged = staged_key(task.data)
    assert app.runner.run_pending(task.id, source=ClaimSource.STREAM).status is TaskStatus.DONE
    listed = app.clients.s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    found = {"staged input": staged}
    for key in (str(o["Key"]) for o in listed):
        kind = "input" if key.endswith("/input.json") else "step" if "/steps/" in key else "result"
        found[kind] = key
    assert set(found) == {"staged input", "input", "step", "result"}, found
    return found


def test_payload_producers_write_only_their_uploads_and_inputs_operators_read_all(
    packaged: Packaged, payload_keys: dict[str, str]
) -> None:
    producer = policy_grants(packaged, "PayloadProducerPolicy")
    operator = policy_grants(packaged, "PayloadOperatorPolicy")
    staging = "PayloadBucket.Arn/staging/*"
    assert producer == {
        "s3:PutObject": {staging, "PayloadBucket.Arn/tasks/*/input.json"},
        "s3:GetObject": {staging, "PayloadBucket.Arn/tasks/*"},
        "s3:DeleteObject": {staging},
    }
    assert operator == {"s3:GetObject": {staging, "PayloadBucket.Arn/tasks/*"}}
    # A producer stages its input and moves it under the task's prefix (CopyObject: read
    # the source, write the target), and deletes an upload whose insert was refused...
    writes = producer["s3:PutObject"]
    assert allows(writes, payload_keys["staged input"]) and allows(writes, payload_keys["input"])
    assert allows(producer["s3:GetObject"], payload_keys["staged input"])
    assert allows(producer["s3:DeleteObject"], payload_keys["staged input"])
    # ...but can overwrite no result or step result (their sha256 check would then fail
    # the task for good) and delete nothing under tasks/
    for kind in ("result", "step"):
        assert not allows(writes, payload_keys[kind]), payload_keys[kind]
    for kind in ("input", "result", "step"):
        assert not allows(producer["s3:DeleteObject"], payload_keys[kind])
    # Producers (client.wait) and operators (get-task --payloads, the dashboard) read every
    # payload, an input still where its producer staged it included
    for key in payload_keys.values():
        assert allows(producer["s3:GetObject"], key) and allows(operator["s3:GetObject"], key)
