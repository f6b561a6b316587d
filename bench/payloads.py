"""14. Large payloads: time and AWS calls (DynamoDB, S3) of a task with a 1 MB input and
a 1 MB result (the claim check: both in the payload bucket), next to a 1 KB one (both
on the item); and a sweep's staged-inputs phase (`runner.staged_inputs`) moving one
input its producer left, among orphans. The runner in-process, the moto server
(DynamoDB and S3) over HTTP.
"""

from __future__ import annotations

import collections
import time
import uuid
from typing import Any

from bench.common import Figure, median
from bench.steps import build_app
from bench.workflow import CallCounter, dynamodb_split
from runner.local.motoserver import create_tasks_table as create_table
from runner.local.motoserver import moto_server

SECTION = "14. large payloads"
KB, MB = 1024, 1024 * 1024


def _s3(calls: collections.Counter[str]) -> str:
    found = {k.split(":")[1]: v for k, v in calls.items() if k.startswith("s3:")}
    return ", ".join(f"{v} {k}" for k, v in sorted(found.items())) or "none"


def run(quick: bool) -> list[Figure]:
    import dataclasses

    import boto3

    from runner.client import TaskRunnerClient
    from runner.model import ClaimSource, TaskStatus
    from runner.payloads import is_reference

    rounds = 3 if quick else 10
    counter = CallCounter()
    with moto_server() as endpoint:
        table = f"bench-payloads-{uuid.uuid4().hex[:8]}"
        bucket = f"bench-payloads-{uuid.uuid4().hex[:8]}"
        create_table(
            boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1"), table
        )
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        app = build_app(endpoint, table, counter, [])
        app.store.payloads.bucket = bucket
        app.settings = dataclasses.replace(app.settings, payload_bucket=bucket)
        client = TaskRunnerClient(app)

        def one(size: int) -> tuple[float, collections.Counter[str]]:
            data = {"blob": "p" * (size - 40), "result_bytes": size - 150}
            with counter.measuring() as calls:
                started = time.perf_counter()
                task = client.create_task("BLOB_TASK", data)
                outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)
                elapsed = time.perf_counter() - started
            assert outcome.status is TaskStatus.DONE, outcome
            assert is_reference(task.data) is (size > KB)
            return elapsed, calls

        one(KB), one(MB)  # warm
        small = [one(KB) for _ in range(rounds)]
        large = [one(MB) for _ in range(rounds)]
        moved_s, moved_calls = _staged_phase(app, client, counter)
    small_s, large_s = median([t for t, _ in small]), median([t for t, _ in large])
    small_calls, large_calls = small[-1][1], large[-1][1]
    small_w, small_r = dynamodb_split(small_calls)
    large_w, large_r = dynamodb_split(large_calls)
    return [
        Figure(
            SECTION,
            "1 MB input + 1 MB result: create to DONE, ms",
            large_s * 1000,
            reference=small_s * 1000,
            reference_name="1 KB input + 1 KB result (on the item), ms",
            note=f"{large_s / small_s:.1f}x; median of {rounds} each, the runner in-process",
        ),
        Figure(
            SECTION,
            "1 MB task's DynamoDB writes / reads, and S3 calls",
            large_w,
            reference=small_w,
            reference_name="the 1 KB task's DynamoDB writes",
            note=(
                f"1 MB: {large_w} writes / {large_r} reads, S3 {_s3(large_calls)};"
                f" 1 KB: {small_w} writes / {small_r} reads, S3 {_s3(small_calls)}"
            ),
            details={"large": dict(large_calls), "small": dict(small_calls)},
        ),
        Figure(
            SECTION,
            f"sweep's staged phase: 1 input moved among {ORPHANS} orphans, ms",
            moved_s * 1000,
            note=(
                f"S3 {_s3(moved_calls)}, DynamoDB"
                f" {sum(v for k, v in moved_calls.items() if k.startswith('dynamodb:'))} reads;"
                " an orphan costs a HeadObject and a GetItem per sweep until the lifecycle"
                " rule expires it"
            ),
            details=dict(moved_calls),
        ),
    ]


# Staged inputs no item refers to (producers that died before their insert) in the phase.
ORPHANS = 20


def _staged_phase(
    app: Any, client: Any, counter: CallCounter
) -> tuple[float, collections.Counter[str]]:
    """One sweep phase over `ORPHANS` orphans and one input its producer did not move."""
    from datetime import timedelta

    from runner.items import iso, utcnow
    from runner.model import TaskStatus
    from runner.staged_inputs import move_staged_inputs

    payloads = app.store.payloads
    for n in range(ORPHANS):
        payloads.stage_input(f"orphan-{n}-{uuid.uuid4().hex[:8]}", iso(utcnow()), "o" * 20 * KB)
    payloads.commit_input = lambda ref: None  # the producer's move fails
    task = client.create_task("BLOB_TASK", {"blob": "m" * MB})
    del payloads.commit_input
    app.store.clock = lambda: utcnow() + timedelta(minutes=10)
    with counter.measuring() as calls:
        started = time.perf_counter()
        moved = move_staged_inputs(app.store)
        elapsed = time.perf_counter() - started
    app.store.clock = utcnow
    assert moved == 1 and app.store.get(task.id).status is TaskStatus.PENDING, moved
    return elapsed, calls
