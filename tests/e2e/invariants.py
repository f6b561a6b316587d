"""The hardening issue's invariants, checked from outside the stack (through its endpoint).

Handlers run in the functions' own worker processes, so effects are read back from where
EFFECT_TASK records them (S3 objects, runner.local.demo_tasks) and compared with the
task item's attempt log:

- I1 no two runs overlap: no effect of an attempt is later than the start of a later
  attempt of the same task;
- I2 no double effect: no effect after the task was DONE, no step of an attempt acting
  twice (a handler run twice within one claim), and (where no fault could justify a
  re-run) exactly the task's `steps` effects, from one attempt;
- I3 every task final (DONE, CANCELLED, FAILED permanent, FAILED with retries exhausted);
- I4 a final task holds no lease;
- I5 every final task carries `expires_at`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from botocore.config import Config

from runner.local.demo_tasks import effects_of
from runner.local.server import is_settled
from tests.e2e.conftest import ServedStack

# A client that rides out injected throttling, as any careful producer would.
PATIENT = Config(retries={"max_attempts": 12, "mode": "standard"})
# ISO timestamps have millisecond precision; effects are timed to the microsecond.
CLOCK_SLACK_S = 0.002


def client(stack: ServedStack, service: str) -> Any:
    import boto3

    return boto3.client(  # type: ignore[call-overload]
        service, endpoint_url=stack.endpoint_url, region_name="us-east-1", config=PATIENT
    )


def put_task(stack: ServedStack, task_id: str, task_type: str, data: dict[str, Any]) -> None:
    """A PENDING task with only the documented attributes, as a user would insert it."""
    from runner.items import serialize

    item = {"id": task_id, "type": task_type, "status": "PENDING", "data": data}
    client(stack, "dynamodb").put_item(TableName=stack.table_name, Item=serialize(item))


def get_task(stack: ServedStack, task_id: str) -> dict[str, Any]:
    from runner.items import deserialize_image

    found = client(stack, "dynamodb").get_item(
        TableName=stack.table_name, Key={"id": {"S": task_id}}, ConsistentRead=True
    )
    return deserialize_image(found["Item"]) if "Item" in found else {}


def wait_final(
    stack: ServedStack, task_ids: Iterable[str], timeout: float
) -> dict[str, dict[str, Any]]:
    """Every task's item once all are final (I3); AssertionError naming those that are not."""
    ids = list(task_ids)
    deadline = time.monotonic() + timeout
    while True:
        tasks = {task_id: get_task(stack, task_id) for task_id in ids}
        waiting = {i: t.get("status", "MISSING") for i, t in tasks.items() if not is_settled(t)}
        if not waiting:
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"I3: not final after {timeout:.0f} s: {waiting}")
        time.sleep(0.5)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def effects(stack: ServedStack, task_id: str) -> list[dict[str, Any]]:
    return effects_of(client(stack, "s3"), stack.env["TASK_RUNNER_EXPORT_BUCKET"], task_id)


def violations(
    stack: ServedStack, tasks: dict[str, dict[str, Any]], *, one_run_each: bool
) -> list[str]:
    """What breaks I1, I2, I4 or I5 among final tasks (empty: all hold)."""
    problems = []
    for task_id, task in tasks.items():
        found = effects(stack, task_id)
        starts: dict[int, float] = {}
        for entry in task.get("attempt_log", []):
            starts.setdefault(int(entry["attempt"]), _epoch(entry["started_at"]))
        for effect in found:  # an attempt that crashed before recording starts at its effects
            starts.setdefault(int(effect["attempt"]), effect["at"])
        for effect in found:
            later = [a for a, at in starts.items() if a > effect["attempt"]]
            for attempt in later:
                if effect["at"] > starts[attempt] + CLOCK_SLACK_S:
                    problems.append(
                        f"I1 {task_id}: attempt {effect['attempt']} acted "
                        f"{effect['at'] - starts[attempt]:.2f} s after attempt {attempt} started"
                    )
        if task.get("status") == "DONE" and task.get("finished_at"):
            finished = _epoch(task["finished_at"])
            late = [e for e in found if e["at"] > finished + CLOCK_SLACK_S]
            if late:
                problems.append(f"I2 {task_id}: {len(late)} effects after it was DONE")
        twice = Counter((e.get("episode"), int(e["attempt"]), int(e["step"])) for e in found)
        repeated = sorted(pair for pair, count in twice.items() if count > 1)
        if repeated:
            problems.append(
                f"I2 {task_id}: (episode, attempt, step) {repeated} acted more than once"
            )
        runs = sorted({int(e["attempt"]) for e in found})
        steps = int((task.get("data") or {}).get("steps", 1))
        if one_run_each and (len(runs) > 1 or len(found) != steps):
            problems.append(
                f"I2 {task_id}: {len(found)} effects from attempts {runs}, "
                f"expected one run of {steps} steps"
            )
        if "lease_expires_at" in task:
            problems.append(f"I4 {task_id}: final ({task.get('status')}) but still leased")
        if "expires_at" not in task:
            problems.append(f"I5 {task_id}: final ({task.get('status')}) without expires_at")
    return problems
