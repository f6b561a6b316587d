"""11. `client.wait`: from the DONE write to `wait` returning, p50 / p99, locally.

Each task is waited for from the moment it is created, and run by the runner after a
random 0-2 s, so the waiter meets every stretch of its backoff (50 ms growing by half up
to 0.5 s). The latency is the waiter's return minus the end of the outcome's write; the
reference is one strongly consistent GetItem against the same moto server. Reads per
waited task are counted too (the backoff's cost).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import Figure, median, percentile
from runner.local.motoserver import create_tasks_table, moto_server

SECTION = "11. wait"


def run(quick: bool) -> list[Figure]:
    import botocore.session

    from runner.app import App
    from runner.aws import AwsClients
    from runner.client import TaskRunnerClient
    from runner.config import Settings
    from runner.model import ClaimSource
    from tasks import build_registry

    count = 24 if quick else 200
    rng = random.Random(13)
    with moto_server() as endpoint:
        settings = Settings(table_name=f"bench-wait-{uuid.uuid4().hex[:8]}", endpoint_url=endpoint)
        session = botocore.session.get_session()
        reads: Counter[str] = Counter()
        session.register(
            "provide-client-params.dynamodb.GetItem",
            lambda params, **_: reads.update([params["Key"]["id"]["S"]]),
        )
        clients = AwsClients(settings, session)
        create_tasks_table(clients.dynamodb, settings.table_name)
        app = App(settings, clients, build_registry(["runner.local.demo_tasks"]))
        client = TaskRunnerClient(app)
        done_at: dict[str, float] = {}
        original = app.store.record_outcome

        def recorded(task: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(task, *args, **kwargs)
            done_at[task.id] = time.perf_counter()
            return result

        app.store.record_outcome = recorded  # type: ignore[method-assign]

        def one(delay: float) -> tuple[float, str]:
            task = client.create_task("NOOP_TASK", {})
            timer = threading.Timer(
                delay, lambda: app.runner.run_pending(task.id, source=ClaimSource.CLI)
            )
            timer.start()
            client.wait(task.id, timeout=30)
            returned = time.perf_counter()
            timer.join()
            return returned - done_at[task.id], task.id

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, [rng.uniform(0, 2) for _ in range(count)]))
        latencies = [latency for latency, _ in results]
        per_task = [reads[task_id] for _, task_id in results]
        single: list[float] = []
        for _ in range(20):
            started = time.perf_counter()
            app.store.get_values(results[0][1])
            single.append(time.perf_counter() - started)

    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return [
        Figure(
            SECTION,
            f"DONE → wait returns, p50 ({count} tasks, each run 0-2 s after its wait began)",
            p50,
            "s",
            reference=median(single),
            reference_name="one consistent GetItem",
            details={"latencies": sorted(latencies)},
        ),
        Figure(SECTION, "DONE → wait returns, p99", p99, "s"),
        Figure(
            SECTION,
            "GetItems per waited task, median / max",
            median(per_task),
            note=f"max {max(per_task)}; the backoff caps a waiter at 2 reads a second",
        ),
    ]
