"""7. Slow neighbours: time for 100 short tasks inserted behind one slow one, on one shard.

A stream mapping delivers a shard's records in order, one batch in flight at a time
(ParallelizationFactor 1, AWS's default), so a batch waits for its slowest task and every
later batch of the shard waits for it too. With ParallelizationFactor N, Lambda runs up to
N batches of a shard at once, records spread over them by partition key (records with
the same key stay in order; tasks all have distinct ids). This section drives the real
`handler.process_stream` against a moto server, shaping the batches as Lambda documents
it does for each setting (as the local stack's poller does: runner/local/stream_lanes.py).
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import FakeLambdaContext, Figure, clients_for, insert_tasks, pending_item
from runner.local.motoserver import StreamReader, moto_server
from runner.local.motoserver import create_tasks_table as create_table
from runner.local.stream_lanes import lane_of

SECTION = "7. slow neighbours"
BATCH_SIZE = 100  # processStream's mapping
SHORT_TASKS = 100
SHORT_SECONDS = 0.2
# The factor serverless.yml gives processStream.
FACTOR = 10


def _lanes(records: list[dict[str, Any]], factor: int) -> list[list[dict[str, Any]]]:
    """Records split over `factor` concurrent batches by partition key, in order (as the
    local stack's poller splits them)."""
    lanes: list[list[dict[str, Any]]] = [[] for _ in range(factor)]
    for record in records:
        lanes[lane_of(record, factor)].append(record)
    return [lane for lane in lanes if lane]


class _Shard:
    def __init__(self, endpoint: str) -> None:
        import handler
        from runner.app import get_app

        self.handler = handler
        clients = clients_for(endpoint)
        self.dynamodb = clients["dynamodb"]
        self.table = f"bench-neighbours-{uuid.uuid4().hex[:8]}"
        self.reader = StreamReader(
            clients["dynamodbstreams"], create_table(self.dynamodb, self.table)
        )
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        os.environ["AWS_DYNAMO_DB_TABLE_NAME"] = self.table
        get_app.cache_clear()

    def insert(self, slow_seconds: float) -> tuple[list[dict[str, Any]], set[str]]:
        """One slow task, then the short ones; returns the records and the short ids."""
        prefix = uuid.uuid4().hex[:8]
        items = [pending_item(f"{prefix}-slow", "SLEEP_TASK", {"seconds": slow_seconds})]
        short = {f"{prefix}-{n:03d}" for n in range(SHORT_TASKS)}
        items += [
            pending_item(task_id, "SLEEP_TASK", {"seconds": SHORT_SECONDS})
            for task_id in sorted(short)
        ]
        insert_tasks(self.dynamodb, self.table, items)
        records = self.reader.inserts()
        assert len(records) == len(items)
        return records, short

    def deliver(self, records: list[dict[str, Any]], factor: int, short: set[str]) -> float:
        """Seconds until every short task is DONE, with `factor` batches at once."""
        started = time.perf_counter()
        done_at: dict[str, float] = {}

        def lane(batch_records: list[dict[str, Any]]) -> None:
            for start in range(0, len(batch_records), BATCH_SIZE):
                batch = batch_records[start : start + BATCH_SIZE]
                self.handler.process_stream({"Records": batch}, FakeLambdaContext(300))
                finished = time.perf_counter() - started
                for record in batch:
                    done_at.setdefault(record["dynamodb"]["Keys"]["id"]["S"], finished)

        with ThreadPoolExecutor(max_workers=factor) as pool:
            list(pool.map(lane, _lanes(records, factor)))
        # A task's outcome is written when it ends, not when its batch does: read them.
        last = self._last_short_finish(short, started)
        return last if last is not None else max(done_at[t] for t in short)

    def _last_short_finish(self, short: set[str], started: float) -> float | None:
        from datetime import datetime

        latest = None
        for task_id in short:
            item = self.dynamodb.get_item(
                TableName=self.table, Key={"id": {"S": task_id}}, ConsistentRead=True
            )["Item"]
            assert item["status"]["S"] == "DONE", item
            finished = datetime.fromisoformat(item["finished_at"]["S"].replace("Z", "+00:00"))
            latest = finished if latest is None or finished > latest else latest
        if latest is None:
            return None
        return latest.timestamp() - (time.time() - (time.perf_counter() - started))


def run(quick: bool) -> list[Figure]:
    from runner.app import get_app

    slow = 4.0 if quick else 20.0
    try:
        with moto_server() as endpoint:
            shard = _Shard(endpoint)
            warm, warm_short = shard.insert(0.0)  # clients, pools
            shard.deliver(warm, 1, warm_short)
            records, short = shard.insert(slow)
            serial = shard.deliver(records, 1, short)
            records, short = shard.insert(slow)
            parallel = shard.deliver(records, FACTOR, short)
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        get_app.cache_clear()
    return [
        Figure(
            SECTION,
            f"{SHORT_TASKS} x {SHORT_SECONDS:g} s tasks behind one {slow:g} s task, "
            f"ParallelizationFactor {FACTOR}",
            parallel,
            "s",
            reference=serial,
            reference_name="ParallelizationFactor 1 (AWS's default), s",
            target=f"< the slow task ({slow:g} s)",
            passed=parallel < slow,
            note="time until the last short task is DONE; a task longer than processStream "
            "can give (EXPORT_DB) is not run on the stream path at all",
            details={"slow_seconds": slow, "factor_1_s": serial, f"factor_{FACTOR}_s": parallel},
        )
    ]
