"""The local stream poller applies an event source mapping's settings as Lambda does.

A fake stream (GetRecords over a list) and a recording function: no server needed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from runner.local.chaos import FaultPlan, parse_faults
from runner.local.lambdas import Invocation, InvokeThrottled
from runner.local.poller import StreamPoller
from runner.local.stack import StreamMapping
from runner.local.stream_records import first_failed_index

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"
QUEUE_URL = "http://127.0.0.1/123456789012/failures"

MAPPING = StreamMapping(
    logical_id="ProcessStreamEventSourceMapping",
    function_logical_id="ProcessStreamLambdaFunction",
    function_name="task-runner-test-processStream",
    handler="handler.process_stream",
    source_logical_id="TasksTable",
    batch_size=2,
    starting_position="TRIM_HORIZON",
    filter_patterns=(
        {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["PENDING"]}}}},
    ),
    maximum_retry_attempts=2,
    maximum_record_age_seconds=None,
    bisect_batch_on_function_error=False,
    report_batch_item_failures=True,
    on_failure_logical_id="StreamOnFailureQueue",
    on_failure_physical_id=QUEUE_URL,
)


def raw_record(seq: int, status: str = "PENDING", event: str = "INSERT") -> dict[str, Any]:
    """A record as GetRecords returns it through boto3 (no eventSourceARN, a datetime)."""
    return {
        "eventID": f"e{seq}",
        "eventName": event,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime.now(UTC),
            "Keys": {"id": {"S": f"t{seq}"}},
            "NewImage": {"id": {"S": f"t{seq}"}, "status": {"S": status}},
            "SequenceNumber": str(1000 + seq),
            "SizeBytes": 10,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


class FakeStreams:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def get_shard_iterator(self, **kwargs: Any) -> dict[str, str]:
        return {"ShardIterator": "0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        start = int(ShardIterator)
        page = self.records[start : start + Limit]
        return {"Records": page, "NextShardIterator": str(start + len(page))}


class FakeSqs:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.messages.append((QueueUrl, json.loads(MessageBody)))


class Function:
    """Invoked as Lambda's Invoke would be: records each batch's sequence numbers and
    answers from a script (or succeeds); an Exception in the script is a function error,
    InvokeThrottled a refused invocation."""

    def __init__(self, *responses: Any) -> None:
        self.responses = list(responses)
        self.batches: list[list[str]] = []
        self.events: list[dict[str, Any]] = []
        self.throttled = 0

    def __call__(self, event: dict[str, Any]) -> Invocation:
        response = self.responses.pop(0) if self.responses else {"batchItemFailures": []}
        if isinstance(response, InvokeThrottled):
            self.throttled += 1
            raise response
        json.dumps(event)  # what reaches Lambda is JSON
        self.events.append(event)
        self.batches.append([r["dynamodb"]["SequenceNumber"] for r in event["Records"]])
        if isinstance(response, Exception):
            error = {"errorType": type(response).__name__, "errorMessage": str(response)}
            return Invocation(error, "Unhandled")
        return Invocation(response)


def poll(
    records: list[dict[str, Any]],
    function: Function,
    mapping: StreamMapping = MAPPING,
    faults: FaultPlan | None = None,
) -> tuple[StreamPoller, FakeSqs]:
    sqs = FakeSqs()
    poller = StreamPoller(
        mapping,
        function,
        streams=FakeStreams(records),
        sqs=sqs,
        stream_arn=STREAM_ARN,
        shard_id="shardId-1",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:processStream",
        region="eu-west-1",
        backoff=lambda attempt: 0.0,
        faults=faults,
    )
    poller._iterator = "0"
    poller.poll_once()
    return poller, sqs


def failures(*sequences: int) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": str(1000 + s)} for s in sequences]}


def test_filter_and_batch_size_shape_the_invocations() -> None:
    records = [raw_record(1), raw_record(2, status="DONE"), raw_record(3), raw_record(4)]
    records.append(raw_record(5, event="MODIFY"))
    function = Function()

    poller, _ = poll(records, function)

    assert function.batches == [["1001", "1003"], ["1004"]]
    assert poller.stats.filtered_out == 2


def test_records_arrive_in_lambdas_shape() -> None:
    function = Function()

    poll([raw_record(1)], function)

    record = function.events[0]["Records"][0]
    assert record["eventSourceARN"] == STREAM_ARN
    assert record["awsRegion"] == "eu-west-1"
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    assert "userIdentity" not in record  # only TTL deletions carry one


def test_a_ttl_deletion_carries_lambdas_user_identity() -> None:
    # Given a REMOVE as GetRecords returns a TTL deletion (the Streams API's capitals)
    removal = raw_record(1, event="REMOVE")
    removal["userIdentity"] = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
    function = Function()
    mapping = replace(MAPPING, filter_patterns=())

    poll([removal], function, mapping)

    # Then Lambda's event has it in its own spelling
    record = function.events[0]["Records"][0]
    assert record["userIdentity"] == {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def test_a_throttled_invocation_is_retried_without_counting_as_a_retry() -> None:
    # Given a mapping that allows no retry, and a function throttled twice
    function = Function(InvokeThrottled("f"), InvokeThrottled("f"), {"batchItemFailures": []})

    poller, sqs = poll([raw_record(1)], function, replace(MAPPING, maximum_retry_attempts=0))

    # Then the batch still reached the function, and nothing was given up
    assert function.throttled == 2
    assert function.batches == [["1001"]]
    assert poller.stats.throttled == 2 and poller.stats.discarded == 0 and sqs.messages == []


def test_a_batch_is_cut_at_invokes_six_megabytes() -> None:
    # Given records of about 1 MB each, in a mapping whose batch size would take them all
    records = [raw_record(n) for n in range(1, 9)]
    for record in records:
        record["dynamodb"]["NewImage"]["data"] = {"S": "x" * 1_000_000}
    function = Function()

    poll(records, function, replace(MAPPING, batch_size=100))

    # Then no invocation carries more than 6 MB, and every record is delivered once
    assert [len(b) for b in function.batches] == [6, 2]
    assert all(len(json.dumps(e)) <= 6 * 1024 * 1024 for e in function.events)


def test_a_redeliver_fault_delivers_each_batch_twice() -> None:
    function = Function()
    faults = FaultPlan(parse_faults("stream.processStream.redeliver=1"), seed=1)

    poller, _ = poll([raw_record(1), raw_record(3)], function, faults=faults)

    assert function.batches == [["1001", "1003"], ["1001", "1003"]]
    assert poller.stats.redelivered == 1
    assert faults.snapshot()["injected"] == {"stream.processStream.redeliver=1": 1}


def test_reported_failure_retries_from_the_first_failed_record() -> None:
    function = Function(failures(2), {"batchItemFailures": []})

    poll([raw_record(1), raw_record(2)], function, replace(MAPPING, batch_size=10))

    assert function.batches == [["1001", "1002"], ["1002"]]


def test_exhausted_retries_send_batch_metadata_to_the_on_failure_queue() -> None:
    function = Function(failures(1), failures(1), failures(1))

    poller, sqs = poll([raw_record(1), raw_record(2)], function)

    assert function.batches == [["1001", "1002"]] * 3  # the first try and 2 retries
    [(url, message)] = sqs.messages
    assert url == QUEUE_URL
    info = message["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == ("1001", "1002")
    assert info["streamArn"] == STREAM_ARN and info["shardId"] == "shardId-1"
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert "Records" not in json.dumps(message)  # metadata only, as on AWS
    assert poller.stats.discarded == 2


def test_function_error_with_bisect_splits_the_batch() -> None:
    function = Function(RuntimeError("boom"))
    mapping = replace(MAPPING, batch_size=10, bisect_batch_on_function_error=True)

    poll([raw_record(1), raw_record(2), raw_record(3), raw_record(4)], function, mapping)

    assert function.batches == [
        ["1001", "1002", "1003", "1004"],
        ["1001", "1002"],
        ["1003", "1004"],
    ]


def test_a_response_is_read_only_with_report_batch_item_failures() -> None:
    function = Function(failures(1))

    poll([raw_record(1)], function, replace(MAPPING, report_batch_item_failures=False))

    assert function.batches == [["1001"]]


def test_unknown_or_empty_identifiers_fail_the_whole_batch() -> None:
    batch = [
        {"dynamodb": {"SequenceNumber": "1"}},
        {"dynamodb": {"SequenceNumber": "2"}},
    ]
    assert first_failed_index(batch, {"batchItemFailures": [{"itemIdentifier": "2"}]}) == 1
    assert first_failed_index(batch, {"batchItemFailures": [{"itemIdentifier": "9"}]}) == 0
    assert first_failed_index(batch, {"batchItemFailures": [{"itemIdentifier": ""}]}) == 0
    assert first_failed_index(batch, {"batchItemFailures": []}) is None
    assert first_failed_index(batch, None) is None


def test_a_split_counts_as_a_retry_so_no_record_is_sent_more_than_the_limit_allows() -> None:
    # Given a mapping that bisects and allows one retry, and a function that always fails
    function = Function(*[RuntimeError("boom")] * 10)
    mapping = replace(
        MAPPING, batch_size=10, bisect_batch_on_function_error=True, maximum_retry_attempts=1
    )

    poller, sqs = poll([raw_record(n) for n in (1, 2, 3, 4)], function, mapping)

    # Then the batch was split once (the one retry), and each half given up after it
    assert function.batches == [
        ["1001", "1002", "1003", "1004"],
        ["1001", "1002"],
        ["1003", "1004"],
    ]
    assert [m["requestContext"]["condition"] for _, m in sqs.messages] == [
        "RetryAttemptsExhausted"
    ] * 2
    assert poller.stats.discarded == 4


def test_a_record_older_than_the_maximum_age_is_never_sent() -> None:
    old = raw_record(1)
    old["dynamodb"]["ApproximateCreationDateTime"] = datetime.fromtimestamp(
        datetime.now(UTC).timestamp() - 120, UTC
    )
    function = Function()

    _, sqs = poll([old, raw_record(2)], function, replace(MAPPING, maximum_record_age_seconds=60))

    # Then the old record went to the on-failure queue unsent, the fresh one was sent
    assert function.batches == [["1002"]]
    [(_, message)] = sqs.messages
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    assert message["DDBStreamBatchInfo"]["startSequenceNumber"] == "1001"


def test_the_mappings_starting_position_is_taken_then_reads_go_on_after_the_last_record() -> None:
    class Recording(FakeStreams):
        def __init__(self, records: list[dict[str, Any]]) -> None:
            super().__init__(records)
            self.asked: list[dict[str, Any]] = []

        def get_shard_iterator(self, **kwargs: Any) -> dict[str, str]:
            self.asked.append(kwargs)
            return {"ShardIterator": "0"}

    streams = Recording([raw_record(1)])
    poller = StreamPoller(
        replace(MAPPING, starting_position="LATEST"),
        Function(),
        streams=streams,
        sqs=None,
        stream_arn=STREAM_ARN,
        shard_id="shardId-1",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:processStream",
        region="us-east-1",
    )
    poller._iterator = poller._new_iterator()
    poller.poll_once()
    poller._new_iterator()  # as after a broken iterator

    assert streams.asked[0]["ShardIteratorType"] == "LATEST"
    assert streams.asked[1] == {
        "StreamArn": STREAM_ARN,
        "ShardId": "shardId-1",
        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "SequenceNumber": "1001",
    }


def test_a_parallelization_factor_lets_other_keys_pass_a_slow_batch_and_keeps_each_keys_order() -> (
    None
):
    # Given a shard whose first record's batch is slow, then 30 records of 10 keys (each
    # key three times: t1 t2 ... t10 t1 t2 ...)
    import threading
    import time

    from runner.local.stream_lanes import lane_of

    slow = raw_record(0)
    records = [slow]
    for n in range(30):
        record = raw_record(n + 1)
        key = f"t{n % 10 + 1}"
        record["dynamodb"]["Keys"] = {"id": {"S": key}}
        record["dynamodb"]["NewImage"]["id"] = {"S": key}
        records.append(record)
    release = threading.Event()
    lock = threading.Lock()
    delivered: list[tuple[float, str, str]] = []  # (time, key, sequence)

    def function(event: dict[str, Any]) -> Invocation:
        keys = [r["dynamodb"]["Keys"]["id"]["S"] for r in event["Records"]]
        if "t0" in keys:
            assert release.wait(10)
        with lock:
            for r, key in zip(event["Records"], keys, strict=True):
                delivered.append((time.monotonic(), key, r["dynamodb"]["SequenceNumber"]))
        return Invocation({"batchItemFailures": []})

    mapping = replace(MAPPING, parallelization_factor=4, batch_size=3)
    poller = StreamPoller(
        mapping,
        function,
        streams=FakeStreams(records),
        sqs=None,
        stream_arn=STREAM_ARN,
        shard_id="shardId-1",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:processStream",
        region="us-east-1",
        backoff=lambda attempt: 0.0,
    )

    # When the poller delivers them, 4 batches at a time
    poller.start()
    try:
        slow_lane = lane_of(slow, 4)
        others = [r for r in records[1:] if lane_of(r, 4) != slow_lane]
        deadline = time.monotonic() + 10
        while len(delivered) < len(others):  # every other lane's records, slow one held
            assert time.monotonic() < deadline, delivered
            time.sleep(0.01)
        assert not poller.caught_up  # the slow batch is still in flight
        release.set()
        while not poller.caught_up:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        poller.stop()

    # Then every record came once, each key's records in their order, and records of
    # the keys the slow batch did not hold up went past it
    assert sorted(seq for _, _, seq in delivered) == sorted(
        r["dynamodb"]["SequenceNumber"] for r in records
    )
    by_key: dict[str, list[int]] = {}
    for _, key, seq in delivered:
        by_key.setdefault(key, []).append(int(seq))
    assert all(seqs == sorted(seqs) for seqs in by_key.values())
    assert len({lane_of(r, 4) for r in records}) > 1  # the keys do spread over lanes
