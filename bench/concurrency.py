"""1. Batch concurrency: 100 one-second tasks through process_stream, against the floor
(1 s + the same batch's DynamoDB writes without task time) and against one after another.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from bench.common import (
    FakeLambdaContext,
    Figure,
    clients_for,
    insert_tasks,
    median,
    pending_item,
    timed,
)
from runner.local.motoserver import StreamReader, moto_server
from runner.local.motoserver import create_tasks_table as create_table

SECTION = "1. batch concurrency"
BATCH = 100
TASK_SECONDS = 1.0
# Allowed time above the 1 s of task time, as a multiple of the write-only batch time.
OVERHEAD_TARGET = 1.25


class _Batches:
    def __init__(self, endpoint: str) -> None:
        import handler
        from runner.app import get_app

        self.handler = handler
        clients = clients_for(endpoint)
        self.dynamodb = clients["dynamodb"]
        self.table = f"bench-concurrency-{uuid.uuid4().hex[:8]}"
        self.reader = StreamReader(
            clients["dynamodbstreams"], create_table(self.dynamodb, self.table)
        )
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        os.environ["AWS_DYNAMO_DB_TABLE_NAME"] = self.table
        get_app.cache_clear()

    def records(self, count: int, task_type: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        prefix = uuid.uuid4().hex[:8]
        items = [pending_item(f"{prefix}-{n}", task_type, data) for n in range(count)]
        insert_tasks(self.dynamodb, self.table, items)
        records = self.reader.inserts()
        assert len(records) == count, (len(records), count)
        return records

    def run(self, records: list[dict[str, Any]]) -> float:
        elapsed, response = timed(
            lambda: self.handler.process_stream({"Records": records}, FakeLambdaContext())
        )
        assert response == {"batchItemFailures": []}, response
        return elapsed

    def check_done(self, records: list[dict[str, Any]]) -> None:
        for record in records[:: max(1, len(records) // 10)]:
            key = record["dynamodb"]["Keys"]
            item = self.dynamodb.get_item(TableName=self.table, Key=key)["Item"]
            assert item["status"]["S"] == "DONE", item


def run(quick: bool) -> list[Figure]:
    from runner.app import get_app

    repetitions = 2 if quick else 3
    sequential_sample = 5 if quick else BATCH
    sleep = ("SLEEP_TASK", {"seconds": TASK_SECONDS})
    try:
        with moto_server() as endpoint:
            batches = _Batches(endpoint)
            batches.run(batches.records(10, "NOOP_TASK", {}))  # warm-up: clients, pools
            write_only: list[float] = []
            concurrent: list[float] = []
            for _ in range(repetitions):  # interleaved, so drift hits both alike
                write_only.append(batches.run(batches.records(BATCH, "NOOP_TASK", {})))
                records = batches.records(BATCH, *sleep)
                concurrent.append(batches.run(records))
                batches.check_done(records)
            one_by_one = [batches.run([r]) for r in batches.records(sequential_sample, *sleep)]
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        get_app.cache_clear()
    floor_writes = median(write_only)
    batch_time = median(concurrent)
    sequential = sum(one_by_one) * BATCH / sequential_sample
    extrapolated = sequential_sample < BATCH
    over = batch_time - TASK_SECONDS
    seq_note = (
        f"sequential extrapolated from {sequential_sample} tasks run one after another"
        if extrapolated
        else f"sequential measured on all {BATCH} tasks"
    )
    return [
        Figure(
            SECTION,
            "batch time above 1 s / write-only batch time",
            over / floor_writes,
            "x",
            reference=floor_writes,
            reference_name=f"{BATCH} NOOP_TASK batch (writes only), s",
            target=f"<= {OVERHEAD_TARGET}",
            passed=over / floor_writes <= OVERHEAD_TARGET,
            note=f"median of {repetitions}, interleaved",
            details={
                "batch_seconds": concurrent,
                "write_only_seconds": write_only,
                "batch_median_s": batch_time,
                "floor_s": TASK_SECONDS + floor_writes,
            },
        ),
        Figure(
            SECTION,
            f"{BATCH} x 1 s SLEEP_TASK batch, s",
            batch_time,
            "s",
            reference=TASK_SECONDS + floor_writes,
            reference_name="floor: 1 s + write-only batch, s",
            note=f"ratio to floor {batch_time / (TASK_SECONDS + floor_writes):.2f}",
        ),
        Figure(
            SECTION,
            "speed-up over one after another",
            sequential / batch_time,
            "x",
            reference=sequential,
            reference_name="one after another, s" + (" (extrapolated)" if extrapolated else ""),
            target=f">= {BATCH / (TASK_SECONDS + OVERHEAD_TARGET * floor_writes):.0f} (implied)",
            passed=sequential / batch_time
            >= BATCH / (TASK_SECONDS + OVERHEAD_TARGET * floor_writes),
            note=seq_note,
            details={"one_by_one_seconds": one_by_one},
        ),
    ]
