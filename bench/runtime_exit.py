"""8. The cost of ending the runtime: a batch delivered again after its invocation exited.

When a handler outlives its timeout and cannot be stopped, processStream records every
outcome, then ends the Lambda runtime (`runner.runtime`) so the thread cannot resume
later. Lambda takes the exit for a function error: with BisectBatchOnFunctionError it
splits the batch and delivers each half again. Every task is recorded by then, so the
redelivery only loses claims. This section measures that redelivery of a 100-task batch
(two halves of 50), against the batch's own first run, and counts its AWS calls.
"""

from __future__ import annotations

import collections
import os
import uuid
from typing import Any

from bench.common import FakeLambdaContext, Figure, clients_for, insert_tasks, pending_item, timed
from runner.local.motoserver import StreamReader, moto_server
from runner.local.motoserver import create_tasks_table as create_table

SECTION = "8. ending the runtime"
BATCH = 100


def run(quick: bool) -> list[Figure]:
    import botocore.session

    import handler
    from runner.app import App, get_app
    from runner.aws import AwsClients
    from runner.config import Settings
    from tasks import build_registry

    repetitions = 2 if quick else 5
    calls: collections.Counter[str] = collections.Counter()
    first: list[float] = []
    again: list[float] = []
    try:
        with moto_server() as endpoint:
            clients = clients_for(endpoint)
            table = f"bench-exit-{uuid.uuid4().hex[:8]}"
            reader = StreamReader(
                clients["dynamodbstreams"], create_table(clients["dynamodb"], table)
            )
            session = botocore.session.get_session()
            session.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))
            settings = Settings(table_name=table, endpoint_url=endpoint)
            app = App(
                settings, AwsClients(settings, session), build_registry(["runner.local.demo_tasks"])
            )
            get_app.cache_clear()
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            import runner.app

            original = runner.app.get_app
            runner.app.get_app = lambda: app  # type: ignore[assignment]
            try:
                for _ in range(repetitions):
                    prefix = uuid.uuid4().hex[:8]
                    items = [pending_item(f"{prefix}-{n}", "NOOP_TASK", {}) for n in range(BATCH)]
                    insert_tasks(clients["dynamodb"], table, items)
                    records = reader.inserts()
                    elapsed, _ = timed(
                        lambda r=records: handler.process_stream(
                            {"Records": r}, FakeLambdaContext()
                        )
                    )
                    first.append(elapsed)
                    calls.clear()
                    halves = [records[: BATCH // 2], records[BATCH // 2 :]]
                    elapsed, responses = timed(
                        lambda h=halves: [
                            handler.process_stream({"Records": half}, FakeLambdaContext())
                            for half in h
                        ]
                    )
                    assert all(r == {"batchItemFailures": []} for r in responses)
                    again.append(elapsed)
                    redelivery_calls: dict[str, Any] = dict(calls)
            finally:
                runner.app.get_app = original  # type: ignore[assignment]
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        get_app.cache_clear()
    from bench.common import median

    return [
        Figure(
            SECTION,
            f"redelivery of a {BATCH}-task batch after the runtime ended (2 halves), s",
            median(again),
            "s",
            reference=median(first),
            reference_name="the batch's first run, s",
            note=f"median of {repetitions}; AWS calls of one redelivery: "
            + ", ".join(f"{n} {op}" for op, n in sorted(redelivery_calls.items()))
            + " (failed conditional claims, 1 write unit each); nothing runs again",
            details={"first_s": first, "again_s": again, "calls": redelivery_calls},
        )
    ]
