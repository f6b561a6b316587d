"""Configuration: the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from runner.errors import ConfigurationError

# The names the original TypeScript runner used, kept for its users.
TABLE_NAME_ENV = "AWS_DYNAMO_DB_TABLE_NAME"
REGION_ENV = "AWS_REGION"

DEFAULT_TABLE_NAME = "task-runner-tasks"
DEFAULT_REGION = "us-east-1"
# Finished tasks are kept this long, then DynamoDB's TTL deletes them.
DEFAULT_RESULT_TTL_DAYS = 30
# Shards of the by-status index: enough that one busy status is never one hot partition
# (each GSI partition takes ~1,000 writes/s), few enough that list-tasks stays cheap.
STATUS_SHARDS = 16
STATUS_INDEX = "by-status"
# Sparse index of SCHEDULED tasks by `run_at` (hash `scheduled_shard`, written only while
# a task is SCHEDULED): the sweeper finds overdue ones with bounded Queries, no Scan.
RUN_AT_INDEX = "by-run-at"
# The scheduled sweeper's Scan for PENDING tasks no index holds: off (0). Lost stream
# records are read again from the stream instead (the on-failure queue says which), so
# recovery costs in proportion to failures, not to the table. N > 0 reads one of N
# segments per run, in rotation by the run's minute (a prime N reaches every segment at
# any rate but a multiple of N minutes); the sweep role then needs dynamodb:Scan.
DEFAULT_ORPHAN_SCAN_SEGMENTS = 0
# How far back (by `updated_at`) the sweeper looks for FAILED and RETRYING tasks whose
# retry execution is not running: a bounded Query of the index, not a Scan.
DEFAULT_REPAIR_WINDOW_HOURS = 24
# A running handler's heartbeat (runner.heartbeat): its lease kept alive, its cancel read.
DEFAULT_HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class Settings:
    """Everything the runner reads from its environment."""

    table_name: str = DEFAULT_TABLE_NAME
    region: str = DEFAULT_REGION
    endpoint_url: str | None = None
    state_machine_arn: str | None = None
    export_bucket: str | None = None
    sender_email: str | None = None
    task_modules: tuple[str, ...] = field(default_factory=tuple)
    result_ttl_days: int = DEFAULT_RESULT_TTL_DAYS
    # Tasks of one stream batch run at once; None means the whole batch.
    max_concurrency: int | None = None
    orphan_scan_segments: int = DEFAULT_ORPHAN_SCAN_SEGMENTS
    repair_window_hours: float = DEFAULT_REPAIR_WINDOW_HOURS
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    # The stream mappings' on-failure queue, which the sweeper replays.
    failed_batch_queue_url: str | None = None
    # Who EXPORT_DB may mail: addresses and `@domain` entries; empty refuses every export.
    export_recipients: tuple[str, ...] = field(default_factory=tuple)
    # Delayed and recurring tasks (runner.delays, runner.recurring): the queue every timer
    # fires into, the role EventBridge Scheduler sends with, and the schedule groups of
    # one-time (delay) and recurring schedules.
    timer_queue_url: str | None = None
    scheduler_role_arn: str | None = None
    delay_schedule_group: str | None = None
    recurring_schedule_group: str | None = None

    # The payload bucket (runner.payloads); None keeps every payload on its item.
    payload_bucket: str | None = None

    def __post_init__(self) -> None:
        if self.result_ttl_days < 1:
            # A smaller value would let TTL delete a task whose retry still waits or runs.
            raise ConfigurationError(
                f"TASK_RUNNER_RESULT_TTL_DAYS must be at least 1, not {self.result_ttl_days}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        modules = _list(env.get("TASK_RUNNER_TASK_MODULES", ""))
        return cls(
            table_name=env.get(TABLE_NAME_ENV) or DEFAULT_TABLE_NAME,
            region=env.get(REGION_ENV) or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            state_machine_arn=env.get("TASK_RUNNER_STATE_MACHINE_ARN") or None,
            export_bucket=env.get("TASK_RUNNER_EXPORT_BUCKET") or None,
            sender_email=env.get("TASK_RUNNER_SENDER_EMAIL") or None,
            task_modules=modules,
            result_ttl_days=int(env.get("TASK_RUNNER_RESULT_TTL_DAYS") or DEFAULT_RESULT_TTL_DAYS),
            max_concurrency=int(env["TASK_RUNNER_MAX_CONCURRENCY"])
            if env.get("TASK_RUNNER_MAX_CONCURRENCY")
            else None,
            orphan_scan_segments=int(
                env.get("TASK_RUNNER_ORPHAN_SCAN_SEGMENTS") or DEFAULT_ORPHAN_SCAN_SEGMENTS
            ),
            repair_window_hours=float(
                env.get("TASK_RUNNER_REPAIR_WINDOW_HOURS") or DEFAULT_REPAIR_WINDOW_HOURS
            ),
            failed_batch_queue_url=env.get("TASK_RUNNER_FAILED_BATCH_QUEUE_URL") or None,
            heartbeat_seconds=_heartbeat(env.get("TASK_RUNNER_HEARTBEAT_SECONDS")),
            export_recipients=_list(env.get("TASK_RUNNER_EXPORT_RECIPIENTS", "")),
            timer_queue_url=env.get("TASK_RUNNER_TIMER_QUEUE_URL") or None,
            scheduler_role_arn=env.get("TASK_RUNNER_SCHEDULER_ROLE_ARN") or None,
            delay_schedule_group=env.get("TASK_RUNNER_DELAY_SCHEDULE_GROUP") or None,
            recurring_schedule_group=env.get("TASK_RUNNER_RECURRING_SCHEDULE_GROUP") or None,
            payload_bucket=env.get("TASK_RUNNER_PAYLOAD_BUCKET") or None,
        )


def _list(text: str) -> tuple[str, ...]:
    """A comma-separated setting as its stripped, non-empty entries."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _heartbeat(value: str | None) -> float:
    """TASK_RUNNER_HEARTBEAT_SECONDS: between 0.1 and 60 (the live lease is 120 s)."""
    if not value:
        return DEFAULT_HEARTBEAT_SECONDS
    seconds = float(value)
    if not 0.1 <= seconds <= 60:
        raise ValueError("TASK_RUNNER_HEARTBEAT_SECONDS must be between 0.1 and 60")
    return seconds
