"""The packaged template creates in moto's CloudFormation (runner/local/stack.py)."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from moto import mock_aws

from runner.local.stack import adapt_for_moto, create_stack
from tests.deploy.conftest import REPORT, Packaged

pytestmark = [
    pytest.mark.slow,
    # Alarms and bucket policies: moto skips the types it does not model, as expected.
    pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning"),
]


def test_packaged_template_reaches_create_complete(packaged: Packaged) -> None:
    with mock_aws():
        started = time.perf_counter()
        stack = create_stack(packaged.directory, stack_name="task-runner-test")
        REPORT.append(f"moto stack creation: {time.perf_counter() - started:.1f} s")

        assert stack.status == "CREATE_COMPLETE"
        assert stack.outputs["TasksTableName"] == "task-runner-tasks-test"
        assert "/stream/" in stack.outputs["TasksTableStreamArn"]
        assert stack.outputs["RetryStateMachineArn"].endswith(
            ":stateMachine:task-runner-retry-test"
        )
        assert stack.outputs["OnFailureQueueUrl"].endswith("/task-runner-stream-failures-test")
        assert stack.outputs["ExportBucketName"].startswith("task-runner-exports-test-")

        # The state machine got its definition with the placeholders filled in
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        definition = json.loads(
            sfn.describe_state_machine(stateMachineArn=stack.outputs["RetryStateMachineArn"])[
                "definition"
            ]
        )
        run_task = definition["States"]["UseTaskFunction"]["Result"]
        run_export = definition["States"]["UseExportFunction"]["Result"]
        assert run_task.endswith(":function:task-runner-test-runTask")
        assert run_export.endswith(":function:task-runner-test-runExport")
        # ... and nothing else changed (moto's Fn::Sub variable map turns `$$` into `$`)
        from runner.local.statemachine import load_definition

        assert definition == json.loads(
            load_definition({"RunTaskFunctionArn": run_task, "ExportFunctionArn": run_export})
        )

        # The functions exist with the uploaded code
        lambdas = boto3.client("lambda", region_name="us-east-1")
        names = {f["FunctionName"] for f in lambdas.list_functions()["Functions"]}
        assert names == {
            f"task-runner-test-{name}"
            for name in (
                "processStream",
                "routeFailed",
                "runTask",
                "runExport",
                "sweep",
                "fireTimers",
            )
        }


def test_stack_reports_the_mappings_it_left_for_the_local_poller(packaged: Packaged) -> None:
    with mock_aws():
        stack = create_stack(packaged.directory, stack_name="task-runner-test")

    by_handler = {m.handler: m for m in stack.stream_mappings}
    assert set(by_handler) == {"handler.process_stream", "handler.route_failed"}
    process = by_handler["handler.process_stream"]
    assert process.batch_size == 100
    assert process.starting_position == "TRIM_HORIZON"
    assert process.maximum_retry_attempts == 5
    assert process.maximum_record_age_seconds == 3600
    assert process.bisect_batch_on_function_error
    assert process.report_batch_item_failures
    assert process.filter_patterns[0]["eventName"] == ["INSERT"]
    assert process.on_failure_physical_id == stack.outputs["OnFailureQueueUrl"]
    assert by_handler["handler.route_failed"].filter_patterns[0]["eventName"] == ["MODIFY"]
    assert [(s.handler, s.expression) for s in stack.schedules] == [
        ("handler.sweep", "rate(5 minutes)")
    ]
    # The timer queue's mapping is not a stream's: runner.local.queue_poller runs it
    from runner.local.queue_poller import queue_mappings

    [timers] = queue_mappings(packaged.template)
    assert (timers.function_logical_id, timers.queue_logical_id) == (
        "FireTimersLambdaFunction",
        "TimerQueue",
    )
    assert (timers.batch_size, timers.maximum_concurrency) == (10, 5)
    assert timers.report_batch_item_failures


def test_adapting_for_moto_keeps_the_original_and_drops_only_what_moto_cannot_run(
    packaged: Packaged,
) -> None:
    adapted = adapt_for_moto(packaged.template)

    removed = set(packaged.template["Resources"]) - set(adapted["Resources"])
    assert {packaged.resource(r)["Type"] for r in removed} == {
        "AWS::Lambda::EventSourceMapping",
        "AWS::S3::Bucket",  # the deployment bucket, now a parameter
    }
    assert "Definition" in packaged.resource("RetryStateMachine")["Properties"]
    assert "Definition" not in adapted["Resources"]["RetryStateMachine"]["Properties"]
