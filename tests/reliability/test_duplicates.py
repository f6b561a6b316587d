"""At-least-once delivery, exactly-once effects per claim."""

from __future__ import annotations

import random
import threading
from typing import Any

import boto3

from runner.app import App
from runner.aws import AwsClients
from runner.config import Settings
from runner.errors import TaskConflict
from runner.local import demo_tasks
from runner.model import ClaimSource, TaskStatus
from tasks import build_registry
from tests.helpers import StreamReader, create_tasks_table, effect_key, effects_on, pending, put_raw


def test_thousand_tasks_every_record_twice_and_batches_replayed(app: App) -> None:
    # Given 1,000 inserts read from the table's real stream
    table = app.settings.table_name
    stream_arn = app.clients.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    reader = StreamReader(app.clients.client("dynamodbstreams"), stream_arn)
    for n in range(1000):
        put_raw(app.clients.dynamodb, table, pending(f"d{n:04d}", "NOOP_TASK", {}))
    records = reader.read()
    assert len(records) == 1000
    # When every record is delivered twice, shuffled, and every batch is replayed
    rng = random.Random(7)
    doubled = records + records
    rng.shuffle(doubled)
    batches = [doubled[i : i + 100] for i in range(0, len(doubled), 100)]
    for batch in batches + batches[::3]:
        assert app.stream.process(batch).failed_sequence_numbers == []
    # Then each task's effect happened exactly once, and each task was claimed once
    assert len(demo_tasks.EFFECTS) == 1000
    assert set(demo_tasks.EFFECTS.values()) == {1}
    done, _ = app.store.list(TaskStatus.DONE, limit=1000)
    assert len(done) == 1000 and {t.attempts for t in done} == {1}


def test_sixteen_concurrent_run_task_calls_run_once(moto_server: str) -> None:
    table = "race"
    create_tasks_table(
        boto3.client("dynamodb", endpoint_url=moto_server, region_name="us-east-1"), table
    )
    settings = Settings(table_name=table, endpoint_url=moto_server)
    registry = build_registry(["runner.local.demo_tasks"])
    # Sixteen workers, each with its own clients, as sixteen Lambdas would have
    workers = [App.build(settings, registry, AwsClients(settings)) for _ in range(16)]
    for round_number in range(5):
        task_id = f"race-{round_number}"
        put_raw(workers[0].clients.dynamodb, table, pending(task_id, "NOOP_TASK", {}))
        barrier = threading.Barrier(16)
        outcomes: list[Any] = []

        def run(
            app: App,
            task_id: str = task_id,
            barrier: threading.Barrier = barrier,
            outcomes: list[Any] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                outcomes.append(app.runner.run_pending(task_id, source=ClaimSource.CLI).status)
            except TaskConflict:
                outcomes.append(None)

        threads = [threading.Thread(target=run, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert effects_on(task_id) == {effect_key(workers[0], task_id): 1}
        assert outcomes.count(TaskStatus.DONE) == 1
        assert workers[0].store.get(task_id).attempts == 1
