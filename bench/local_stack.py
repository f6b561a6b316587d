"""4. Local stack end to end: NOOP tasks inserted by a producer, run by the embedded local
stack (runner.local.server.LocalStack: moto's server in its own process with the packaged
template and the Lambda service, whose functions run in worker processes of their own;
the stream pollers in this one), against moto's raw write throughput on the same server
divided by the three writes each task needs (insert, claim, finish), measured from this
process with the runner's own requests. Also: the peak memory of the stack's endpoint and
its Lambda environments (and, apart, of this process), sampled through the run.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from bench.common import Figure, median, pending_item, percentile

SECTION = "4. local stack"
WRITES_PER_TASK = 3  # the producer's insert, the claim, the finish
TARGET_SHARE = 0.70
PRODUCER_THREADS = 4
# Client threads tried for the raw reference; the best rate is the ceiling. With moto in
# its own process, more threads keep its queue full while this one parses replies.
RAW_THREADS = (1, 4, 16)


def _best_rate(one: Callable[[str], None], prefix: str, tasks: int) -> float:
    """Writes/s for `one` (a task's three writes) over `tasks` keys: the best over
    RAW_THREADS client threads."""
    rates = []
    for threads in RAW_THREADS:
        keys = [f"{prefix}-{threads}-{n}" for n in range(tasks)]
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, keys))
        rates.append(WRITES_PER_TASK * len(keys) / (time.perf_counter() - started))
    return max(rates)


def runner_requests(endpoint: str, table: str) -> list[dict[str, Any]]:
    """The UpdateItem requests the runner makes for one NOOP task (claim, finish),
    captured from a real run against `table`: what the raw reference replays."""
    from runner.app import App
    from runner.config import Settings
    from runner.items import deserialize_image, task_from_item
    from runner.model import ClaimSource

    settings = dataclasses.replace(Settings.from_env(), table_name=table, endpoint_url=endpoint)
    app = App.build(settings)
    captured: list[dict[str, Any]] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        captured.append(copy.deepcopy(params))

    app.clients.dynamodb.meta.events.register("provide-client-params.dynamodb.UpdateItem", capture)
    item = pending_item("captured", "NOOP_TASK", {})
    app.clients.dynamodb.put_item(TableName=table, Item=item)
    outcome = app.runner.run_claimable(
        task_from_item(deserialize_image(item)), source=ClaimSource.STREAM
    )
    assert outcome.status is not None and outcome.status.value == "DONE", outcome
    assert len(captured) == 2, captured
    return captured


def raw_write_throughput(dynamodb: Any, endpoint: str, table: str, tasks: int) -> float:
    """Moto's write rate (/s) for the three writes a task needs, made directly with no
    runner, stream or poller: the producer's put, then the runner's own claim and finish
    requests (captured from one real task, replayed per key with a plain client).

    Moto's cost per UpdateItem grows with the number of clauses in its expression, so
    the reference must be the runner's actual requests, not shorter stand-ins.
    """
    from runner.local.motoserver import create_tasks_table as create_table

    create_table(dynamodb, table)
    claim, finish = runner_requests(endpoint, table)

    def one(key: str) -> None:
        dynamodb.put_item(TableName=table, Item=pending_item(key, "NOOP_TASK", {}))
        for request in (claim, finish):
            dynamodb.update_item(**{**request, "Key": {"id": {"S": key}}})

    return _best_rate(one, "raw", tasks)


def minimal_write_throughput(dynamodb: Any, table: str, tasks: int) -> float:
    """The same three writes with the shortest expressions that keep the status index
    (four clauses each, where the runner's have about ten): shown for comparison."""
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

    return _best_rate(one, "minimal", tasks)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; PSS shares shared pages out among their users."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class MemorySampler:
    """Samples the memory of this process's descendants (the stack's endpoint and its
    Lambda environments) and, apart, of this process; keeps the peaks."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.peak_processes = 0
        self.peak_own_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            own = os.getpid()
            pids = [pid for pid in process_tree(own) if pid != own]
            sizes = [memory_kib(pid) for pid in pids]
            self.peak_rss_kib = max(self.peak_rss_kib, sum(r for r, _ in sizes))
            self.peak_pss_kib = max(self.peak_pss_kib, sum(p for _, p in sizes))
            self.peak_processes = max(self.peak_processes, len(pids))
            self.peak_own_pss_kib = max(self.peak_own_pss_kib, memory_kib(own)[1])
            if self._stop.wait(self.interval):
                return


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} s"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _lanes(stack: Any) -> int:
    """The lanes processStream's mapping has (its ParallelizationFactor)."""
    factors = [
        m.parallelization_factor
        for m in stack.created.stream_mappings
        if m.function_name.endswith("processStream")
    ]
    return max(factors, default=1)


def _one_per_lane(prefix: str, lanes: int) -> list[str]:
    """Task ids whose stream records fall one in each of `lanes` lanes."""
    from runner.local.stream_lanes import lane_of

    found: dict[int, str] = {}
    n = 0
    while len(found) < lanes:
        task_id = f"{prefix}-{n}"
        found.setdefault(lane_of({"dynamodb": {"Keys": {"id": {"S": task_id}}}}, lanes), task_id)
        n += 1
    return sorted(found.values())


def run(quick: bool) -> list[Figure]:
    try:
        from runner.local.server import LocalStack
    except ImportError as exc:
        return [
            Figure(SECTION, "tasks/s through the local stack", None, note=f"not measured: {exc}")
        ]
    count = 300 if quick else 1000
    started_stack = time.perf_counter()
    with MemorySampler() as memory, LocalStack.start(log_level="ERROR") as stack:
        setup = time.perf_counter() - started_stack
        dynamodb = stack.client("dynamodb")
        raw_before = raw_write_throughput(
            dynamodb, stack.endpoint_url, f"bench-raw-{uuid.uuid4().hex[:6]}", 100
        )
        minimal_before = minimal_write_throughput(
            dynamodb, f"bench-min-{uuid.uuid4().hex[:6]}", 100
        )
        prefix = uuid.uuid4().hex[:6]
        # One task first: processStream's cold start (its environment's Init and the first
        # call building the app) is reported on its own, not queued ahead of the run. Then
        # one per other ParallelizationFactor lane at once, so each lane's environment has
        # had its cold start too.
        first_lane, *other_lanes = _one_per_lane(f"e2e-{prefix}-warm", _lanes(stack))
        warm_started = time.time()
        dynamodb.put_item(
            TableName=stack.table_name, Item=pending_item(first_lane, "NOOP_TASK", {})
        )
        (warm,) = stack.wait_until_settled({first_lane}, timeout=60, interval=0.05)
        cold_latency = _epoch(warm["finished_at"]) - warm_started
        with ThreadPoolExecutor(max(1, len(other_lanes))) as pool:
            list(
                pool.map(
                    lambda i: dynamodb.put_item(
                        TableName=stack.table_name, Item=pending_item(i, "NOOP_TASK", {})
                    ),
                    other_lanes,
                )
            )
        stack.wait_until_settled(set(other_lanes), timeout=60, interval=0.05)
        ids = [f"e2e-{prefix}-{n}" for n in range(count)]
        inserted: dict[str, float] = {}

        def insert(task_id: str) -> None:
            inserted[task_id] = time.time()
            dynamodb.put_item(
                TableName=stack.table_name, Item=pending_item(task_id, "NOOP_TASK", {})
            )

        first = time.time()
        server_cpu = cpu_seconds(stack.server_pid)
        stack.server_stats()  # from here on
        own_cpu = time.process_time()
        with ThreadPoolExecutor(PRODUCER_THREADS) as pool:
            list(pool.map(insert, ids))
        # wait_until_settled scans the table, holding moto's DynamoDB lock for seconds
        # at 1,000 items: only once the pollers have caught up, so no scan slows the run.
        deadline = time.monotonic() + 600
        while not stack.caught_up() and time.monotonic() < deadline:
            time.sleep(0.2)
        caught_up = time.time()
        server_end = cpu_seconds(stack.server_pid)
        actions = sorted(stack.server_stats().items(), key=lambda kv: -kv[1]["cpu_s"])
        own_cpu = time.process_time() - own_cpu
        server_cpu = None if server_cpu is None or server_end is None else server_end - server_cpu
        tasks = stack.wait_until_settled(set(ids), timeout=600, interval=3.0)
        raw_after = raw_write_throughput(
            dynamodb, stack.endpoint_url, f"bench-raw-{uuid.uuid4().hex[:6]}", 100
        )
        minimal_after = minimal_write_throughput(dynamodb, f"bench-min-{uuid.uuid4().hex[:6]}", 100)
        lambdas = stack.lambda_stats() if hasattr(stack, "lambda_stats") else {}
    done = {t["id"]: _epoch(t["finished_at"]) for t in tasks if t.get("status") == "DONE"}
    assert len(done) == count, f"{count - len(done)} tasks not DONE"
    last = max(done.values())
    throughput = count / (last - first)
    latencies = [done[i] - inserted[i] for i in ids]
    raw = median([raw_before, raw_after])
    minimal = median([minimal_before, minimal_after])
    window = caught_up - first
    ceiling = raw / WRITES_PER_TASK
    share = throughput / ceiling
    return [
        Figure(
            SECTION,
            f"{count} NOOP tasks: throughput as a share of raw writes / {WRITES_PER_TASK}",
            share * 100,
            "%",
            reference=ceiling,
            reference_name=f"raw moto writes/s (the runner's own) / {WRITES_PER_TASK}, tasks/s",
            target=f">= {TARGET_SHARE:.0%}",
            passed=share >= TARGET_SHARE,
            note=(
                f"{throughput:.1f} tasks/s; raw writes {raw_before:.0f}/s before,"
                f" {raw_after:.0f}/s after the run; stack started in {setup:.1f} s; CPU in the"
                f" {window:.1f} s until caught up: endpoint process {_seconds(server_cpu)},"
                f" producers + pollers + handlers {own_cpu:.1f} s; in moto's actions: "
                + ", ".join(
                    f"{name.split('.')[-1]} {v['cpu_s']:.1f} s/{v['calls']:.0f}"
                    for name, v in actions[:6]
                )
            ),
            details={
                "tasks": count,
                "tasks_per_s": throughput,
                "raw_writes_per_s": [raw_before, raw_after],
                "minimal_writes_per_s": [minimal_before, minimal_after],
                "stack_start_s": setup,
                "endpoint_process_cpu_s": server_cpu,
                "endpoint_cpu_by_action": dict(actions),
                "runner_process_cpu_s": own_cpu,
                "until_caught_up_s": window,
            },
        ),
        Figure(SECTION, "tasks/s end to end", throughput, "tasks/s"),
        Figure(
            SECTION,
            "throughput as a share of minimal writes / 3, %",
            throughput / (minimal / WRITES_PER_TASK) * 100,
            "%",
            reference=minimal / WRITES_PER_TASK,
            reference_name="4-clause writes/s / 3, tasks/s",
            note="shorter expressions than the runner needs: moto's cost, not the runner's",
        ),
        Figure(
            SECTION,
            "insert -> DONE latency p50, s",
            percentile(latencies, 50),
            "s",
            note=f"all {count} inserted at once by {PRODUCER_THREADS} producer threads",
        ),
        Figure(SECTION, "insert -> DONE latency p99, s", percentile(latencies, 99), "s"),
        Figure(
            SECTION,
            "insert -> DONE of the first task (a cold start), s",
            cold_latency,
            "s",
            note=(
                "processStream's cold start: Init "
                + ", ".join(
                    f"{v['init_s'][0]:.2f} s, whole first invocation"
                    f" {v['cold_invocation_s'][0]:.2f} s"
                    for name, v in lambdas.items()
                    if name.endswith("processStream") and v.get("cold_invocation_s")
                )
                + f"; then {len(other_lanes)} at once, one per other lane, warmed the"
                " stack: the run's latencies above are of a warm stack"
            ),
        ),
        Figure(
            SECTION,
            "peak memory of the endpoint and the Lambda environments (PSS), MiB",
            memory.peak_pss_kib / 1024,
            "MiB",
            note=(
                f"RSS summed: {memory.peak_rss_kib / 1024:.0f} MiB over up to"
                f" {memory.peak_processes} processes; this process (pollers, producers,"
                f" the reference's clients) {memory.peak_own_pss_kib / 1024:.0f} MiB more;"
                " cold starts: "
                + (
                    ", ".join(
                        f"{name.rsplit('-', 1)[-1]} {v['cold_starts']}"
                        f" ({max(v['init_s'], default=0):.2f} s)"
                        for name, v in lambdas.items()
                    )
                    or "not reported"
                )
            ),
            details={
                "peak_pss_kib": memory.peak_pss_kib,
                "bench_process_peak_pss_kib": memory.peak_own_pss_kib,
                "peak_rss_kib": memory.peak_rss_kib,
                "processes": memory.peak_processes,
                "lambda": lambdas,
            },
        ),
    ]
