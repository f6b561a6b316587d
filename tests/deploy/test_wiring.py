"""The packaged template wires what docs/DESIGN.md promises."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.metrics import registered_types
from tests.deploy.conftest import ROOT, Packaged

pytestmark = pytest.mark.slow

TABLE = {"Ref": "TasksTable"}
STREAM = {"Fn::GetAtt": ["TasksTable", "StreamArn"]}
QUEUE_ARN = {"Fn::GetAtt": ["StreamOnFailureQueue", "Arn"]}
STATE_MACHINE = {"Ref": "RetryStateMachine"}
HANDLERS = {
    "ProcessStreamLambdaFunction": "handler.process_stream",
    "RouteFailedLambdaFunction": "handler.route_failed",
    "RunTaskLambdaFunction": "handler.run_task",
    "RunExportLambdaFunction": "handler.run_export",
    "SweepLambdaFunction": "handler.sweep",
    "FireTimersLambdaFunction": "handler.fire_timers",
}
INSERT_PENDING = {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["PENDING"]}}}}
# A task put over an existing id: PutItem replaced the item (DONE, FAILED, ...) with a PENDING one.
PUT_AGAIN_AS_PENDING = {
    "eventName": ["MODIFY"],
    "dynamodb": {
        "OldImage": {"status": {"S": [{"anything-but": ["PENDING"]}]}},
        "NewImage": {"status": {"S": ["PENDING"]}},
    },
}
PROCESSING_TO_RETRYABLE_FAILED = {
    "eventName": ["MODIFY"],
    "dynamodb": {
        "OldImage": {"status": {"S": ["PROCESSING"]}},
        "NewImage": {"status": {"S": ["FAILED"]}, "retryable": {"BOOL": [True]}},
    },
}

# An item with payload objects, deleted (TTL): routeFailed deletes its objects.
REMOVED_WITH_PAYLOADS = {
    "eventName": ["REMOVE"],
    "dynamodb": {"OldImage": {"payloads": {"BOOL": [True]}}},
}


def mapping_for(packaged: Packaged, function_logical_id: str) -> dict[str, Any]:
    mappings: list[dict[str, Any]] = [
        resource["Properties"]
        for resource in packaged.resources_of_type("AWS::Lambda::EventSourceMapping").values()
        if resource["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_logical_id, "Arn"]}
    ]
    assert len(mappings) == 1, f"{function_logical_id} has {len(mappings)} mappings"
    return mappings[0]


def filters(mapping: dict[str, Any]) -> list[Any]:
    return [json.loads(f["Pattern"]) for f in mapping["FilterCriteria"]["Filters"]]


def assert_bounded_stream_settings(mapping: dict[str, Any]) -> None:
    # With AWS's defaults one bad record would block its shard for the stream's 24 h
    assert mapping["EventSourceArn"] == STREAM
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 0 <= mapping["MaximumRetryAttempts"] <= 10
    assert 60 <= mapping["MaximumRecordAgeInSeconds"] <= 3600
    assert mapping["DestinationConfig"] == {"OnFailure": {"Destination": QUEUE_ARN}}


def test_process_stream_gets_only_new_pending_tasks(packaged: Packaged) -> None:
    mapping = mapping_for(packaged, "ProcessStreamLambdaFunction")

    assert filters(mapping) == [INSERT_PENDING, PUT_AGAIN_AS_PENDING]
    assert mapping["BatchSize"] == 100
    # A slow task holds up one of ten batches of its shard, not the shard
    assert mapping["ParallelizationFactor"] == 10
    assert_bounded_stream_settings(mapping)


def test_a_delayed_tasks_promotion_reaches_process_stream_and_its_insert_does_not(
    packaged: Packaged,
) -> None:
    """SCHEDULED → PENDING is a MODIFY the second filter admits; the SCHEDULED insert,
    and the delayed task's other writes, invoke nothing."""
    from moto.events.models import EventPattern

    from tests.helpers import stream_record

    def admitted(function_logical_id: str, record: dict[str, Any]) -> bool:
        patterns = filters(mapping_for(packaged, function_logical_id))
        return any(EventPattern.load(json.dumps(p)).matches_event(record) for p in patterns)

    task = {"id": "t1", "type": "NOOP_TASK", "data": {}, "run_at": "2026-12-01T10:00:00.000Z"}
    inserted = stream_record({**task, "status": "SCHEDULED"})
    promoted = stream_record(
        {**task, "status": "PENDING"}, event_name="MODIFY", old={**task, "status": "SCHEDULED"}
    )

    assert admitted("ProcessStreamLambdaFunction", promoted)
    assert not admitted("ProcessStreamLambdaFunction", inserted)
    assert not admitted("RouteFailedLambdaFunction", inserted)
    assert not admitted("RouteFailedLambdaFunction", promoted)


def test_fire_timers_reads_the_timer_queue_in_small_batches(packaged: Packaged) -> None:
    mapping = mapping_for(packaged, "FireTimersLambdaFunction")
    queue = packaged.resource("TimerQueue")["Properties"]
    function = packaged.resource("FireTimersLambdaFunction")["Properties"]

    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["TimerQueue", "Arn"]}
    assert mapping["BatchSize"] == 10
    assert mapping["MaximumBatchingWindowInSeconds"] == 0
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"]["MaximumConcurrency"] >= 2
    # AWS: a Lambda-consumed queue's visibility timeout at least six times the function's
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert queue["SqsManagedSseEnabled"] is True


def test_schedules_send_only_to_the_timer_queue_with_a_role_only_scheduler_assumes(
    packaged: Packaged,
) -> None:
    from runner.delays import SCHEDULE_LEAD_SECONDS, SQS_MAX_DELAY_SECONDS

    groups = packaged.resources_of_type("AWS::Scheduler::ScheduleGroup")
    assert {g["Properties"]["Name"] for g in groups.values()} == {
        "task-runner-delays-test",
        "task-runner-recurring-test",
    }
    role = packaged.resource("SchedulerRole")["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    [policy] = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": ["TimerQueue", "Arn"]},
        }
    ]
    # A one-time schedule fires early enough for SQS to take the rest
    assert 60 < SCHEDULE_LEAD_SECONDS < SQS_MAX_DELAY_SECONDS
    for logical_id in HANDLERS:
        env = packaged.resource(logical_id)["Properties"]["Environment"]["Variables"]
        assert env["TASK_RUNNER_TIMER_QUEUE_URL"] == {"Ref": "TimerQueue"}
        assert env["TASK_RUNNER_SCHEDULER_ROLE_ARN"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
        assert env["TASK_RUNNER_DELAY_SCHEDULE_GROUP"] == "task-runner-delays-test"
        assert env["TASK_RUNNER_RECURRING_SCHEDULE_GROUP"] == "task-runner-recurring-test"


def test_the_packaged_recurring_schedules_are_the_registrys(packaged: Packaged) -> None:
    """infra/recurring-schedules.js adds what runner.recurring makes of the deployment's
    registry (tasks/), no more, no less."""
    from runner.recurring import schedule_resources
    from tasks import build_registry

    packaged_schedules = packaged.resources_of_type("AWS::Scheduler::Schedule")
    assert packaged_schedules == schedule_resources(build_registry(()))


def test_route_failed_gets_only_retryable_failures_of_running_tasks(packaged: Packaged) -> None:
    mapping = mapping_for(packaged, "RouteFailedLambdaFunction")

    assert filters(mapping) == [PROCESSING_TO_RETRYABLE_FAILED, REMOVED_WITH_PAYLOADS]
    assert mapping["BatchSize"] == 10
    assert_bounded_stream_settings(mapping)


def test_payloads_have_a_bucket_of_their_own_kept_only_by_their_tasks(packaged: Packaged) -> None:
    bucket = packaged.template["Resources"]["PayloadBucket"]["Properties"]
    # Every function is told where payloads are
    for logical_id, function in packaged.resources_of_type("AWS::Lambda::Function").items():
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["TASK_RUNNER_PAYLOAD_BUCKET"] == {"Ref": "PayloadBucket"}, logical_id
    # Lifecycle expires only staged inputs (the orphans' backstop: the sweeper moves
    # within minutes those an item refers to, so a week is its margin) and deleted
    # versions: a task's own objects go with the task, however long its TTL is renewed
    rules = bucket["LifecycleConfiguration"]["Rules"]
    expiring = [r for r in rules if "ExpirationInDays" in r]
    assert [(r["Prefix"], r["ExpirationInDays"]) for r in expiring] == [("staging/", 7)]
    assert any(r.get("NoncurrentVersionExpiration") for r in rules)
    # and the delete markers the deletes leave once their versions have gone
    assert any(r.get("ExpiredObjectDeleteMarker") is True for r in rules)
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    outputs = packaged.template["Outputs"]
    assert {"PayloadBucketName", "PayloadProducerPolicyArn", "PayloadOperatorPolicyArn"} <= set(
        outputs
    )


def test_functions_run_python312_on_arm64_with_active_tracing(packaged: Packaged) -> None:
    functions = packaged.resources_of_type("AWS::Lambda::Function")

    assert {k: f["Properties"]["Handler"] for k, f in functions.items()} == HANDLERS
    for logical_id, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == "python3.12", logical_id
        assert props["Architectures"] == ["arm64"], logical_id
        assert props["TracingConfig"] == {"Mode": "Active"}, logical_id
    # The state machine's RunTask state must outlive the functions' own timeouts
    asl = json.loads((ROOT / "statemachine" / "retry.asl.json").read_text())
    for name in ("RunTaskLambdaFunction", "RunExportLambdaFunction"):
        timeout = functions[name]["Properties"]["Timeout"]
        assert asl["States"]["RunTask"]["TimeoutSeconds"] > timeout


def test_task_timeouts_fit_the_functions_that_run_them(packaged: Packaged) -> None:
    """The registry's limits are the template's timeouts less the runner's margins."""
    from runner.executor import RECORDING_MARGIN_SECONDS
    from runner.registry import (
        DEFAULT_TASK_TIMEOUT_SECONDS,
        LONGEST_FUNCTION_SECONDS,
        MAX_TASK_TIMEOUT_SECONDS,
    )
    from runner.runtime import DEADLINE_MARGIN_SECONDS
    from tasks import build_registry

    functions = packaged.resources_of_type("AWS::Lambda::Function")
    timeout = {k: f["Properties"]["Timeout"] for k, f in functions.items()}
    margins = DEADLINE_MARGIN_SECONDS + RECORDING_MARGIN_SECONDS
    assert timeout["RunTaskLambdaFunction"] == LONGEST_FUNCTION_SECONDS
    assert timeout["RunExportLambdaFunction"] == LONGEST_FUNCTION_SECONDS
    assert LONGEST_FUNCTION_SECONDS - margins == MAX_TASK_TIMEOUT_SECONDS
    # A task of a default type runs on the stream path; EXPORT_DB cannot
    stream = timeout["ProcessStreamLambdaFunction"] - margins
    assert stream >= DEFAULT_TASK_TIMEOUT_SECONDS
    assert build_registry().get("EXPORT_DB").timeout_seconds > stream


def test_functions_get_the_design_environment(packaged: Packaged) -> None:
    for logical_id in HANDLERS:
        env = packaged.resource(logical_id)["Properties"]["Environment"]["Variables"]
        assert env["AWS_DYNAMO_DB_TABLE_NAME"] == TABLE
        assert env["TASK_RUNNER_EXPORT_BUCKET"] == {"Ref": "ExportBucket"}
        assert env["TASK_RUNNER_SENDER_EMAIL"]
        assert env["POWERTOOLS_SERVICE_NAME"] == "task-runner"
        assert "TASK_RUNNER_EXPORT_RECIPIENTS" in env
        # Only the functions that start executions know the state machine (runTask and
        # runExport cannot: the state machine already refers to them)
        starters = {
            "ProcessStreamLambdaFunction",
            "RouteFailedLambdaFunction",
            "SweepLambdaFunction",
        }
        expected = STATE_MACHINE if logical_id in starters else None
        assert env.get("TASK_RUNNER_STATE_MACHINE_ARN") == expected, logical_id
    sweep = packaged.resource("SweepLambdaFunction")["Properties"]["Environment"]["Variables"]
    assert sweep["TASK_RUNNER_FAILED_BATCH_QUEUE_URL"] == {"Ref": "StreamOnFailureQueue"}


def test_sweep_runs_every_five_minutes(packaged: Packaged) -> None:
    rules = packaged.resources_of_type("AWS::Events::Rule")

    assert [r["Properties"]["ScheduleExpression"] for r in rules.values()] == ["rate(5 minutes)"]
    targets = next(iter(rules.values()))["Properties"]["Targets"]
    assert [t["Arn"] for t in targets] == [{"Fn::GetAtt": ["SweepLambdaFunction", "Arn"]}]


def test_tasks_table_matches_the_design(packaged: Packaged) -> None:
    props = packaged.resource("TasksTable")["Properties"]

    assert props["TableName"] == "task-runner-tasks-test"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    by_status, by_run_at = props["GlobalSecondaryIndexes"]
    assert by_status == {
        "IndexName": "by-status",
        "KeySchema": [
            {"AttributeName": "status_shard", "KeyType": "HASH"},
            {"AttributeName": "updated_at", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }
    # Sparse (only SCHEDULED tasks carry scheduled_shard) and keys only: the sweeper's
    # Query for overdue delayed tasks reads nothing else
    assert by_run_at == {
        "IndexName": "by-run-at",
        "KeySchema": [
            {"AttributeName": "scheduled_shard", "KeyType": "HASH"},
            {"AttributeName": "run_at", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    }


def test_export_bucket_is_private_encrypted_and_expires_exports(packaged: Packaged) -> None:
    props = packaged.resource("ExportBucket")["Properties"]

    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    [rule] = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["ExpirationInDays"] == 7


def test_on_failure_queue_is_encrypted_and_keeps_messages_14_days(packaged: Packaged) -> None:
    props = packaged.resource("StreamOnFailureQueue")["Properties"]

    assert props["SqsManagedSseEnabled"] is True
    assert props["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_state_machine_is_standard_traced_and_logged(packaged: Packaged) -> None:
    props = packaged.resource("RetryStateMachine")["Properties"]

    assert props["StateMachineName"] == "task-runner-retry-test"
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    logging = props["LoggingConfiguration"]
    assert logging["Level"] == "ALL"
    assert logging["IncludeExecutionData"] is False
    assert logging["Destinations"] == [
        {
            "CloudWatchLogsLogGroup": {
                "LogGroupArn": {"Fn::GetAtt": ["RetryStateMachineLogGroup", "Arn"]}
            }
        }
    ]
    assert props["DefinitionSubstitutions"] == {
        "RunTaskFunctionArn": {"Fn::GetAtt": ["RunTaskLambdaFunction", "Arn"]},
        "ExportFunctionArn": {"Fn::GetAtt": ["RunExportLambdaFunction", "Arn"]},
    }
    assert props["Definition"] == json.loads((ROOT / "statemachine" / "retry.asl.json").read_text())


def test_alarms_watch_failures_lag_and_errors(packaged: Packaged) -> None:
    alarms = packaged.resources_of_type("AWS::CloudWatch::Alarm").values()
    watched = {
        (a["Properties"]["MetricName"], json.dumps(a["Properties"]["Dimensions"][0]["Value"]))
        for a in alarms
    }

    def ref(logical_id: str) -> str:
        return json.dumps({"Ref": logical_id})

    assert watched == {
        (
            "ApproximateNumberOfMessagesVisible",
            json.dumps({"Fn::GetAtt": ["StreamOnFailureQueue", "QueueName"]}),
        ),
        (
            "ApproximateNumberOfMessagesVisible",
            json.dumps({"Fn::GetAtt": ["StreamOnFailureDeadLetterQueue", "QueueName"]}),
        ),
        (
            "ApproximateNumberOfMessagesVisible",
            json.dumps({"Fn::GetAtt": ["TimerDeadLetterQueue", "QueueName"]}),
        ),
        ("IteratorAge", ref("ProcessStreamLambdaFunction")),
        ("IteratorAge", ref("RouteFailedLambdaFunction")),
        ("ExecutionsFailed", ref("RetryStateMachine")),
        ("ExecutionsTimedOut", ref("RetryStateMachine")),
        *(("Errors", ref(logical_id)) for logical_id in HANDLERS),
        # one per registered task type (tests/deploy/test_metrics_resources.py)
        *(("RetriesExhausted", json.dumps(t)) for t in registered_types()),
    }
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"


def test_alarms_can_notify_through_a_key_cloudwatch_may_use(packaged: Packaged) -> None:
    """CloudWatch cannot publish to a topic encrypted with the AWS-managed alias/aws/sns
    (its key policy cannot be changed to allow it): the topic has a key of its own."""
    topic = packaged.resource("AlarmTopic")["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key = packaged.resource("AlarmTopicKey")["Properties"]
    assert key["EnableKeyRotation"] is True
    statements = key["KeyPolicy"]["Statement"]
    [cloudwatch] = [s for s in statements if s["Principal"].get("Service")]
    assert cloudwatch["Effect"] == "Allow"
    assert cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
    # The account keeps administering its key (else nobody could change the policy)
    [admin] = [s for s in statements if s["Principal"].get("AWS")]
    assert admin["Action"] == "kms:*"


def test_outputs_name_what_clients_need(packaged: Packaged) -> None:
    outputs = packaged.template["Outputs"]

    assert {
        "TasksTableName",
        "TasksTableStreamArn",
        "RetryStateMachineArn",
        "OnFailureQueueUrl",
        "ExportBucketName",
        "CancelTasksPolicyArn",
        "TimerQueueUrl",
        "ProducerPolicyArn",
    } <= set(outputs)


def test_test_and_bench_table_matches_the_template(packaged: Packaged) -> None:
    """create_tasks_table (bare-moto tests, benchmarks) keeps serverless.yml's schema."""
    from runner.local.motoserver import create_tasks_table

    captured: dict[str, Any] = {}

    class Recorder:
        def create_table(self, **kwargs: Any) -> dict[str, Any]:
            captured.update(kwargs)
            return {"TableDescription": {"LatestStreamArn": "arn"}}

    create_tasks_table(Recorder(), "t")
    table = packaged.resource("TasksTable")["Properties"]

    def by_name(items: list[dict[str, Any]], key: str) -> dict[str, Any]:
        return {item[key]: item for item in items}

    assert by_name(captured["AttributeDefinitions"], "AttributeName") == by_name(
        table["AttributeDefinitions"], "AttributeName"
    )
    assert captured["KeySchema"] == table["KeySchema"]
    assert captured["BillingMode"] == table["BillingMode"]
    assert (
        captured["StreamSpecification"]["StreamViewType"]
        == (table["StreamSpecification"]["StreamViewType"])
    )
    ours = by_name(captured["GlobalSecondaryIndexes"], "IndexName")
    theirs = by_name(table["GlobalSecondaryIndexes"], "IndexName")
    assert ours.keys() == theirs.keys()
    for name, index in ours.items():
        assert index["KeySchema"] == theirs[name]["KeySchema"]
        assert index["Projection"] == theirs[name]["Projection"]


def test_a_timer_message_that_keeps_failing_moves_to_an_alarmed_dead_letter_queue(
    packaged: Packaged,
) -> None:
    # A poison timer message leaves the queue (not 14 days of redeliveries), but only after
    # more receives than a kept message may use: a timer before its item is received at
    # each retry of MISSING_ITEM_RETRY_SECONDS until its grace ends, a recurring fire that
    # is refused for FIRE_RETRY_SECONDS at each visibility timeout
    from runner.recurring import FIRE_RETRY_SECONDS
    from runner.timer_inbox import MISSING_ITEM_GRACE_SECONDS, MISSING_ITEM_RETRY_SECONDS

    props = packaged.resource("TimerQueue")["Properties"]
    redrive = props["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["TimerDeadLetterQueue", "Arn"]}
    kept_before_item = len(MISSING_ITEM_RETRY_SECONDS) + (
        MISSING_ITEM_GRACE_SECONDS // MISSING_ITEM_RETRY_SECONDS[-1]
    )
    refused_fire = FIRE_RETRY_SECONDS // props["VisibilityTimeout"] + 1
    assert redrive["maxReceiveCount"] >= 2 * max(kept_before_item, refused_fire)
    dlq = packaged.resource("TimerDeadLetterQueue")["Properties"]
    assert dlq["SqsManagedSseEnabled"] is True
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    alarm = packaged.resource("TimerDeadLetterAlarm")["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["TimerDeadLetterQueue", "QueueName"]}
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_a_message_the_sweeper_cannot_replay_moves_to_an_alarmed_dead_letter_queue(
    packaged: Packaged,
) -> None:
    # A message that keeps failing comes back once per sweep: after a day's sweeps (the
    # stream no longer holds its records) it leaves for the dead-letter queue
    props = packaged.resource("StreamOnFailureQueue")["Properties"]
    redrive = props["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["StreamOnFailureDeadLetterQueue", "Arn"]
    }
    assert redrive["maxReceiveCount"] * 5 * 60 >= 24 * 3600
    dlq = packaged.resource("StreamOnFailureDeadLetterQueue")["Properties"]
    assert dlq["SqsManagedSseEnabled"] is True
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    alarm = packaged.resource("StreamOnFailureDeadLetterAlarm")["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": ["StreamOnFailureDeadLetterQueue", "QueueName"]
    }
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
