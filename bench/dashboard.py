"""9. The operator dashboard over a table of 10,000 tasks (1,000 in the quick run) on the
local stack's endpoint (moto in a process of its own, with DynamoDB's fidelity patches).

For each page: its first render (every data cache empty; templates compiled), fetched
over HTTP from the real uvicorn server, against the AWS calls that render made, captured
and replayed with a plain botocore client on 16 threads (the fastest way to make them);
for the overview, also its render with the counts cached (p95 of repeated requests); and
the Scans the endpoint saw while the pages were served (the target is none). Moto
answers an index Query by walking every item of the table, so these times are moto's,
not DynamoDB's: the ratios say what the dashboard adds.
"""

from __future__ import annotations

import copy
import http.client
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import Figure, insert_tasks, median, percentile

SECTION = "9. dashboard"
FIRST_RENDER_TARGET = 1.5
CACHED_P95_TARGET_S = 0.300
# Share of each status among the table's tasks.
MIX = (("DONE", 60), ("FAILED", 20), ("PENDING", 12), ("PROCESSING", 5), ("RETRYING", 3))
TOKEN = "bench-token-" + "b" * 32
PREFIX = "/d/bench"
# The task page with retry executions: this many, each read (description and history).
EXECUTIONS = 3
PASS_STATE = '{"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": true}}}'


def _items(count: int) -> list[dict[str, Any]]:
    from runner.items import serialize
    from runner.model import status_shard

    statuses = list(itertools.chain.from_iterable([s] * share for s, share in MIX))
    items = []
    for n in range(count):
        status = statuses[n % len(statuses)]
        task_id = f"bench-{n:06d}"
        at = f"2026-12-01T{10 + n * 3600 // count // 3600:02d}:{n * 60 // count:02d}:00.000Z"
        values: dict[str, Any] = {
            "id": task_id,
            "type": "NOOP_TASK",
            "status": status,
            "data": {"n": n},
            "status_shard": status_shard(task_id, status),
            "created_at": at,
            "updated_at": at,
            "attempts": 1 if status != "PENDING" else 0,
        }
        if status == "FAILED":
            values["error"] = {"type": "RetryableTaskError", "message": "boom", "retryable": True}
            values["retryable"] = True
        items.append(serialize(values))
    return items


class Recorder:
    """The AWS calls a client makes (operation and parameters), to replay them raw."""

    def __init__(self, *clients: Any) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        for client in clients:
            service = client.meta.service_model.service_name
            client.meta.events.register(
                f"provide-client-params.{service}.*",
                lambda params, model, _s=service, **_: self.calls.append(
                    (_s, model.name, copy.deepcopy(params))
                ),
            )

    def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        taken, self.calls = self.calls, []
        return taken


def _replay(raw: dict[str, Any], calls: list[tuple[str, str, dict[str, Any]]]) -> float:
    from botocore import xform_name

    def one(call: tuple[str, str, dict[str, Any]]) -> None:
        service, operation, params = call
        getattr(raw[service], xform_name(operation))(**params)

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, calls))
    return time.perf_counter() - started


def _get(port: int, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("GET", PREFIX + path, headers={"Authorization": f"Bearer {TOKEN}"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return time.perf_counter() - started, response.status


def run(quick: bool) -> list[Figure]:
    import botocore.session

    from runner.app import App
    from runner.aws import AwsClients
    from runner.client import TaskRunnerClient
    from runner.config import Settings
    from runner.dashboard.app import create_app
    from runner.dashboard.reads import DashboardReads
    from runner.dashboard.serve import _server, bound_settings
    from runner.dashboard.settings import DashboardSettings
    from runner.dashboard.throughput import throughput_source
    from runner.local.endpoint import EndpointProcess
    from runner.local.motoserver import create_tasks_table
    from tasks import build_registry

    tasks = 1_000 if quick else 10_000
    repeats = 3 if quick else 5
    server = EndpointProcess()
    try:
        endpoint = server.endpoint_url
        settings = Settings(table_name="bench-dashboard", region="us-east-1", endpoint_url=endpoint)
        clients = AwsClients(settings)
        create_tasks_table(clients.dynamodb, settings.table_name)
        machine = clients.stepfunctions.create_state_machine(
            name="bench-retry",
            definition=PASS_STATE,
            roleArn="arn:aws:iam::123456789012:role/sfn",
        )["stateMachineArn"]
        settings = Settings(
            table_name="bench-dashboard",
            region="us-east-1",
            endpoint_url=endpoint,
            state_machine_arn=machine,
        )
        clients = AwsClients(settings)
        items = _items(tasks)
        chunks = [items[i : i + 500] for i in range(0, len(items), 500)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda c: insert_tasks(clients.dynamodb, settings.table_name, c), chunks))
        app = App(settings, clients, build_registry(["runner.local.demo_tasks"]))
        client = TaskRunnerClient(app)
        retried = "bench-000061"  # a FAILED task, given retry executions
        arns = [
            clients.stepfunctions.start_execution(
                stateMachineArn=machine, name=f"{retried}-{n}", input="{}"
            )["executionArn"]
            for n in range(EXECUTIONS)
        ]
        clients.dynamodb.update_item(
            TableName=settings.table_name,
            Key={"id": {"S": retried}},
            UpdateExpression="SET executions = :e",
            ExpressionAttributeValues={":e": {"L": [{"S": a} for a in arns]}},
        )
        dash, sock = bound_settings(
            DashboardSettings(token=TOKEN, prefix=PREFIX, count_ttl_seconds=3600)
        )
        reads = DashboardReads(app, dash, throughput=throughput_source(app))
        uvicorn = _server(create_app(dash, client, reads))
        thread = threading.Thread(target=uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not uvicorn.started:
            time.sleep(0.02)
        recorder = Recorder(clients.dynamodb, clients.client("cloudwatch"), clients.stepfunctions)
        session = botocore.session.get_session()
        raw = {
            name: session.create_client(name, region_name="us-east-1", endpoint_url=endpoint)
            for name in ("dynamodb", "cloudwatch", "stepfunctions")
        }
        server.stats()  # start counting the endpoint's actions from here
        failed_id = "bench-000060"  # the MIX's first FAILED
        pages = {
            "overview": "/",
            "FAILED list": "/tasks?status=FAILED",
            "all-status list": "/tasks",
            "task page": f"/task?id={failed_id}",
            f"task page, {EXECUTIONS} executions": f"/task?id={retried}",
        }
        figures: list[Figure] = []
        for name, path in pages.items():
            renders, references = [], []
            calls: list[tuple[str, str, dict[str, Any]]] = []
            _get(dash.port, path)  # the templates compile once per process, not per render
            for _ in range(repeats):
                reads.reset()
                recorder.take()
                seconds, status = _get(dash.port, path)
                assert status == 200, (path, status)
                calls = recorder.take()
                renders.append(seconds)
                references.append(_replay(raw, calls))
            render, reference = median(renders), median(references)
            operations = sorted({op for _, op, _ in calls})
            figures.append(
                Figure(
                    SECTION,
                    f"{name}, first render ÷ its {len(calls)} AWS calls made raw",
                    render / reference,
                    "x",
                    reference=reference,
                    reference_name=f"raw {', '.join(operations)}, 16 threads",
                    target=f"≤ {FIRST_RENDER_TARGET}x",
                    passed=render / reference <= FIRST_RENDER_TARGET,
                    note=f"render {render:.3f} s over HTTP, {tasks:,} tasks in the table",
                    details={"renders_s": renders, "references_s": references, "calls": len(calls)},
                )
            )
        _get(dash.port, "/")  # counts cached from here
        cached = [_get(dash.port, "/")[0] for _ in range(30 if quick else 100)]
        p95 = percentile(cached, 95)
        figures.append(
            Figure(
                SECTION,
                "overview, cached render p95",
                p95,
                "s",
                target=f"≤ {CACHED_P95_TARGET_S} s",
                passed=p95 <= CACHED_P95_TARGET_S,
                note=f"p50 {percentile(cached, 50) * 1000:.0f} ms over {len(cached)} requests",
            )
        )
        actions = server.stats()
        scans = int(actions.get("Scan", {}).get("calls", 0))
        figures.append(
            Figure(
                SECTION,
                "Scans while the pages were served",
                scans,
                target="0",
                passed=scans == 0,
                note="counted by the endpoint: "
                + ", ".join(f"{a} {int(v['calls'])}" for a, v in sorted(actions.items())),
            )
        )
        uvicorn.should_exit = True
        thread.join(10)
        return figures
    finally:
        server.stop()
