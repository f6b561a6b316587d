"""4. Local stack end to end: NOOP tasks inserted by a producer, run by the embedded local
stack (runner.local.server.LocalStack: moto server, the packaged template, stream
pollers), against moto's raw write throughput on the same server divided by the three
writes each task needs (insert, claim, finish).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from bench.common import Figure, median, pending_item, percentile

SECTION = "4. local stack"
WRITES_PER_TASK = 3  # the producer's insert, the claim, the finish
TARGET_SHARE = 0.70
PRODUCER_THREADS = 4


def raw_write_throughput(dynamodb: Any, table: str, tasks: int) -> float:
    """Moto's write rate (/s) for a task's three writes made directly, with no runner:
    put the PENDING item, a conditional claim, a conditional finish (status index kept).

    The best of one client thread and PRODUCER_THREADS: more threads rarely help (GIL).
    """
    from runner.local.motoserver import create_tasks_table as create_table

    create_table(dynamodb, table)

    def update(key: str, old: str, new: str, shard: str) -> None:
        dynamodb.update_item(
            TableName=table,
            Key={"id": {"S": key}},
            UpdateExpression="SET #s = :new, status_shard = :shard, updated_at = :now"
            " ADD attempts :one",
            ConditionExpression="#s = :old",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":new": {"S": new},
                ":old": {"S": old},
                ":shard": {"S": shard},
                ":now": {"S": datetime.now().isoformat()},
                ":one": {"N": "1"},
            },
            ReturnValues="ALL_NEW",
        )

    def one(key: str) -> None:
        dynamodb.put_item(TableName=table, Item=pending_item(key, "NOOP_TASK", {}))
        update(key, "PENDING", "PROCESSING", "PROCESSING#00")
        update(key, "PROCESSING", "DONE", "DONE#00")

    rates = []
    for threads in (1, PRODUCER_THREADS):
        keys = [f"raw-{threads}-{n}" for n in range(tasks)]
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, keys))
        rates.append(WRITES_PER_TASK * len(keys) / (time.perf_counter() - started))
    return max(rates)


class ServerTime:
    """Time moto spends per operation (wrapping BaseResponse.call_action): where the
    single process's one GIL goes, to explain the share."""

    def __init__(self) -> None:
        import collections
        import threading

        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._original: Any = None

    def __enter__(self) -> ServerTime:
        from moto.core.responses import BaseResponse

        self._original = original = BaseResponse.call_action
        meter = self

        def call_action(response: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(response)
            finally:
                name = response._get_action()
                with meter._lock:
                    meter.seconds[name] += time.perf_counter() - started
                    meter.calls[name] += 1

        BaseResponse.call_action = call_action  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from moto.core.responses import BaseResponse

        BaseResponse.call_action = self._original  # type: ignore[method-assign]

    def summary(self, top: int = 4) -> dict[str, dict[str, float]]:
        return {
            name: {"calls": self.calls[name], "seconds": round(seconds, 2)}
            for name, seconds in self.seconds.most_common(top)
        }


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def run(quick: bool) -> list[Figure]:
    try:
        from runner.local.server import LocalStack
    except ImportError as exc:
        return [
            Figure(SECTION, "tasks/s through the local stack", None, note=f"not measured: {exc}")
        ]
    count = 300 if quick else 1000
    started_stack = time.perf_counter()
    with LocalStack.start(log_level="ERROR") as stack:
        setup = time.perf_counter() - started_stack
        dynamodb = stack.client("dynamodb")
        raw_before = raw_write_throughput(dynamodb, f"bench-raw-{uuid.uuid4().hex[:6]}", 100)
        prefix = uuid.uuid4().hex[:6]
        ids = [f"e2e-{prefix}-{n}" for n in range(count)]
        inserted: dict[str, float] = {}

        def insert(task_id: str) -> None:
            inserted[task_id] = time.time()
            dynamodb.put_item(
                TableName=stack.table_name, Item=pending_item(task_id, "NOOP_TASK", {})
            )

        first = time.time()
        with ServerTime() as server:
            with ThreadPoolExecutor(PRODUCER_THREADS) as pool:
                list(pool.map(insert, ids))
            # wait_until_settled scans the table, holding moto's DynamoDB lock for seconds
            # at 1,000 items: only once the pollers have caught up, so no scan slows the run.
            deadline = time.monotonic() + 600
            while not stack.caught_up() and time.monotonic() < deadline:
                time.sleep(0.2)
            tasks = stack.wait_until_settled(set(ids), timeout=600, interval=3.0)
        raw_after = raw_write_throughput(dynamodb, f"bench-raw-{uuid.uuid4().hex[:6]}", 100)
    done = {t["id"]: _epoch(t["finished_at"]) for t in tasks if t.get("status") == "DONE"}
    assert len(done) == count, f"{count - len(done)} tasks not DONE"
    last = max(done.values())
    throughput = count / (last - first)
    latencies = [done[i] - inserted[i] for i in ids]
    raw = median([raw_before, raw_after])
    busy = server.summary()
    span = last - first
    ceiling = raw / WRITES_PER_TASK
    share = throughput / ceiling
    return [
        Figure(
            SECTION,
            f"{count} NOOP tasks: throughput as a share of raw writes / {WRITES_PER_TASK}",
            share * 100,
            "%",
            reference=ceiling,
            reference_name=f"raw moto writes/s / {WRITES_PER_TASK}, tasks/s",
            target=f">= {TARGET_SHARE:.0%}",
            passed=share >= TARGET_SHARE,
            note=(
                f"{throughput:.1f} tasks/s; raw writes {raw_before:.0f}/s before,"
                f" {raw_after:.0f}/s after the run; stack started in {setup:.1f} s; moto busy"
                f" {sum(v['seconds'] for v in busy.values()):.1f} s of {span:.1f} s: "
                + ", ".join(f"{k} {v['seconds']:.1f} s/{v['calls']:.0f}" for k, v in busy.items())
            ),
            details={
                "tasks": count,
                "tasks_per_s": throughput,
                "raw_writes_per_s": [raw_before, raw_after],
                "stack_start_s": setup,
                "moto_seconds_by_operation": busy,
            },
        ),
        Figure(SECTION, "tasks/s end to end", throughput, "tasks/s"),
        Figure(
            SECTION,
            "insert -> DONE latency p50, s",
            percentile(latencies, 50),
            "s",
            note=f"all {count} inserted at once by {PRODUCER_THREADS} producer threads",
        ),
        Figure(SECTION, "insert -> DONE latency p99, s", percentile(latencies, 99), "s"),
    ]
