"""12. Delayed tasks: how far after its `run_at` each of 200 delayed tasks starts.

On the local stack (the template's timer queue and `fireTimers`, the stream and
`processStream`, each in Lambda environments of their own): 200 tasks (quick: 30) are
created with `run_at` spread evenly over 60 s (quick: 10 s), all through the SQS path (a
delay under 15 minutes), after a warm-up that gives `fireTimers` and each of
`processStream`'s ParallelizationFactor lanes its cold start. The figure is `started_at -
run_at` of each task's claim: p50 and p99, never negative (no task starts early).
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import Figure, percentile

SECTION = "12. delayed tasks"
# fireTimers' MaximumConcurrency (serverless.yml): its environments are warmed first.
WARM_DELAYED = 5


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _promotions(stack: Any, ids: set[str]) -> dict[str, float]:
    """When each task's SCHEDULED → PENDING write happened (its stream record's time)."""
    from runner.local.motoserver import StreamReader

    dynamodb = stack.client("dynamodb")
    arn = dynamodb.describe_table(TableName=stack.table_name)["Table"]["LatestStreamArn"]
    found: dict[str, float] = {}
    for record in StreamReader(stack.client("dynamodbstreams"), arn).read():
        body = record["dynamodb"]
        old = body.get("OldImage", {}).get("status", {}).get("S")
        new = body.get("NewImage", {}).get("status", {}).get("S")
        task_id = body.get("Keys", {}).get("id", {}).get("S")
        if task_id in ids and (old, new) == ("SCHEDULED", "PENDING"):
            found[task_id] = float(body["ApproximateCreationDateTime"])
    return found


def _by_function(stats: dict[str, Any]) -> dict[str, Any]:
    return {name.rsplit("-", 1)[-1]: value for name, value in stats.items()}


def run(quick: bool) -> list[Figure]:
    from bench.local_stack import _lanes, _one_per_lane
    from runner.app import get_app
    from runner.client import TaskRunnerClient
    from runner.local.server import LocalStack

    count, spread = (30, 10.0) if quick else (200, 60.0)
    with LocalStack.start(log_level="ERROR") as stack:
        client = TaskRunnerClient(get_app())
        prefix = uuid.uuid4().hex[:6]
        warm = _one_per_lane(f"delay-{prefix}-warm", _lanes(stack))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: client.create_task("NOOP_TASK", {}, task_id=i), warm))
        # Timers a quarter second apart, each held 1.5 s in its invocation: as many
        # fireTimers invocations at once as its MaximumConcurrency, each environment's
        # cold start paid here
        for _ in range(WARM_DELAYED):
            warm.append(client.create_task("NOOP_TASK", {}, delay=2.5).id)
            time.sleep(0.25)
        stack.wait_until_settled(set(warm), timeout=120, interval=0.1)
        before = _by_function(stack.lambda_stats())

        first = datetime.now(UTC) + timedelta(seconds=8)  # after every create has returned
        due = [first + timedelta(seconds=spread * n / max(1, count - 1)) for n in range(count)]
        with ThreadPoolExecutor(8) as pool:
            created = list(
                pool.map(lambda when: client.create_task("NOOP_TASK", {}, run_at=when), due)
            )
        made_by = time.time()
        ids = {t.id for t in created}
        done = stack.wait_until_settled(ids, timeout=spread + 120, interval=0.25)
        after = _by_function(stack.lambda_stats())
        promoted_at = _promotions(stack, ids)
    late = sorted(_epoch(t["started_at"]) - _epoch(t["run_at"]) for t in done)
    # Where the time goes: run_at → the promotion's write (the timer), then → the claim
    # (the stream and processStream)
    timer = sorted(
        promoted_at[t["id"]] - _epoch(t["run_at"]) for t in done if t["id"] in promoted_at
    )
    stream = sorted(
        _epoch(t["started_at"]) - promoted_at[t["id"]] for t in done if t["id"] in promoted_at
    )
    p50, p99 = percentile(late, 50), percentile(late, 99)
    cold = {
        name: after.get(name, {}).get("cold_starts", 0) - before.get(name, {}).get("cold_starts", 0)
        for name in ("fireTimers", "processStream")
    }
    details: dict[str, Any] = {
        "tasks": count,
        "spread_seconds": spread,
        "created_ahead_seconds": round(first.timestamp() - made_by, 2),
        "min": round(late[0], 3),
        "max": round(late[-1], 3),
        "early": sum(1 for s in late if s < 0),
        "fire_timers_invocations": after.get("fireTimers", {}).get("invocations", 0)
        - before.get("fireTimers", {}).get("invocations", 0),
        "cold_starts_during_run": cold,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "promotion_after_run_at_p50_p99": [
            round(percentile(timer, 50), 3),
            round(percentile(timer, 99), 3),
        ],
        "claim_after_promotion_p50_p99": [
            round(percentile(stream, 50), 3),
            round(percentile(stream, 99), 3),
        ],
    }
    return [
        Figure(
            SECTION,
            "start - run_at, p50 / p99",
            round(p50, 3),
            unit="s",
            reference=round(p99, 3),
            reference_name="p99",
            target="p99 <= 1 s, none early",
            passed=p99 <= 1.0 and details["early"] == 0,
            note=(
                f"{count} tasks due over {spread:.0f} s (SQS DelaySeconds path);"
                f" min {late[0]:.3f} s, max {late[-1]:.3f} s, {details['early']} early;"
                f" fireTimers invocations {details['fire_timers_invocations']}; cold starts"
                f" during the run: fireTimers {cold['fireTimers']},"
                f" processStream {cold['processStream']}; load average"
                f" {details['load_average_1m']}; promotion after run_at p50/p99"
                f" {details['promotion_after_run_at_p50_p99']}, claim after promotion"
                f" {details['claim_after_promotion_p50_p99']}"
            ),
            details=details,
        )
    ]
