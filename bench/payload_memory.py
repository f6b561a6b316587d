"""15. Memory of a large payload: peak RSS of a fresh handler process (`process_stream`)
running one task with a 10 MiB input and a 10 MiB result (the payload cap), talking to
the moto server over HTTP. It sets the cap: `runner.payloads.MAX_PAYLOAD_BYTES`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid

from bench.common import ROOT, Figure, child_env, timed
from bench.memory import CHILD
from runner.local.motoserver import StreamReader, moto_server
from runner.local.motoserver import create_tasks_table as create_table

SECTION = "15. payload memory"
MIB = 1024 * 1024


def run(quick: bool) -> list[Figure]:
    from runner.payloads import MAX_PAYLOAD_BYTES

    size = MAX_PAYLOAD_BYTES - 200  # the JSON around the blob and the result takes a few bytes
    # The same 10 MiB as JSON numbers: about 1.3 million Python objects, the costly shape.
    numbers = [1_000_000 + n for n in range((MAX_PAYLOAD_BYTES - 200) // 8)]
    figures = []
    for shape, data in (
        ("text", {"blob": "m" * size, "result_bytes": size}),
        ("numbers", {"numbers": numbers, "result_bytes": size}),
    ):
        peak, before, elapsed = _measure(data)
        payload_mib = 2 * size / MIB
        figures.append(
            Figure(
                SECTION,
                f"peak RSS, one task with a 10 MiB input ({shape}) and a 10 MiB result, MiB",
                peak,
                "MiB",
                reference=before,
                reference_name="same process before the task, MiB",
                note=(
                    f"+{peak - before:.0f} MiB for {payload_mib:.0f} MiB of payloads"
                    f" ({(peak - before) / payload_mib:.1f}x); child ran {elapsed:.1f} s"
                ),
            )
        )
    return figures


def _measure(data: dict[str, object]) -> tuple[float, float, float]:
    """(peak RSS, RSS before the task, seconds) of a child process running one task."""
    import boto3

    from runner.app import App
    from runner.aws import AwsClients
    from runner.client import TaskRunnerClient
    from runner.config import Settings
    from tasks import build_registry

    with moto_server() as endpoint:
        table = f"bench-pmem-{uuid.uuid4().hex[:8]}"
        bucket = f"bench-pmem-{uuid.uuid4().hex[:8]}"
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        reader = StreamReader(
            boto3.client("dynamodbstreams", endpoint_url=endpoint, region_name="us-east-1"),
            create_table(dynamodb, table),
        )
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        settings = Settings(
            table_name=table, region="us-east-1", endpoint_url=endpoint, payload_bucket=bucket
        )
        app = App.build(settings, build_registry(["runner.local.demo_tasks"]), AwsClients(settings))
        task = TaskRunnerClient(app).create_task("BLOB_TASK", data)
        records = reader.inserts()
        assert len(records) == 1
        with tempfile.TemporaryDirectory() as tmp:
            event_file, out_file = os.path.join(tmp, "event.json"), os.path.join(tmp, "out.json")
            with open(event_file, "w") as f:
                json.dump({"Records": records}, f)
            env = child_env(
                AWS_ENDPOINT_URL=endpoint,
                AWS_DYNAMO_DB_TABLE_NAME=table,
                TASK_RUNNER_PAYLOAD_BUCKET=bucket,
            )
            elapsed, done = timed(
                lambda: subprocess.run(
                    [sys.executable, "-c", CHILD, event_file, out_file],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            )
            if done.returncode != 0:
                raise RuntimeError(f"payload memory child failed: {done.stderr[-2000:]}")
            with open(out_file) as f:
                result = json.load(f)
        finished = app.store.get(task.id)
        assert finished.status.value == "DONE", finished.error
    return result["peak_kib"] / 1024, result["before_kib"] / 1024, elapsed
