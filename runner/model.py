"""The task as pure data: statuses, the allowed transitions, errors and attempts.

Nothing here knows about DynamoDB; `runner.store` converts to and from items.
"""

from __future__ import annotations

import hashlib
import zlib
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runner.config import STATUS_SHARDS
from runner.limits import MAX_ATTEMPT_LOG


class TaskStatus(StrEnum):
    """Where a task is in its life; stored as the plain string."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    DONE = "DONE"
    FAILED = "FAILED"
    # A retry workflow owns the task and will run it again.
    RETRYING = "RETRYING"
    # Stopped on request (`cancel-task`): final, like DONE.
    CANCELLED = "CANCELLED"
    # Delayed: becomes PENDING at its `run_at` (runner.delays), unless cancelled first.
    SCHEDULED = "SCHEDULED"


class ClaimSource(StrEnum):
    """Who claimed a task; the sweeper only recovers claims made outside a workflow."""

    STREAM = "stream"
    CLI = "cli"
    SWEEPER = "sweeper"
    WORKFLOW = "workflow"


S = TaskStatus
# The only moves the DynamoDB layer will make; each is enforced there by a condition.
# The README's status table lists the same (a move to the same status, a new episode,
# is no transition). Into CANCELLED: from a waiting status at once
# (`runner.store.control`), from PROCESSING by the claim's own final write or, once its
# lease is dead, by whoever recovers it.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # FAILED: a task the runner cannot read or cannot run at its size (fail_unreadable,
    # fail_oversized); RETRYING: a handed-off task whose execution ended unclaimed.
    S.PENDING: frozenset({S.PROCESSING, S.FAILED, S.RETRYING, S.CANCELLED}),
    S.PROCESSING: frozenset({S.DONE, S.FAILED, S.RETRYING, S.CANCELLED}),
    S.FAILED: frozenset({S.PROCESSING, S.RETRYING, S.CANCELLED}),
    S.RETRYING: frozenset({S.PROCESSING, S.FAILED, S.CANCELLED}),
    S.DONE: frozenset(),
    S.CANCELLED: frozenset(),
    S.SCHEDULED: frozenset({S.PENDING, S.CANCELLED}),
}
# A task in one of these will not run again (FAILED only when it failed for good).
FINAL_STATUSES = frozenset({S.DONE, S.CANCELLED})


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    """True if the runner may move a task from `current` to `target`."""
    return target in TRANSITIONS[current]


# Hex digits of sha256(id, created_at) in an effect key: 64 bits, as in execution names.
EFFECT_KEY_DIGEST_CHARS = 16


def effect_key(task_id: str, created_at: str | None) -> str:
    """`task:<id>:<16 hex of sha256(id, created_at)>`: one per incarnation of an id, so a
    task re-created under an old id (a key reused after TTL, a put again) gets its own."""
    digest = hashlib.sha256(f"{task_id}\0{created_at or ''}".encode()).hexdigest()
    return f"task:{task_id}:{digest[:EFFECT_KEY_DIGEST_CHARS]}"


def status_shard(task_id: str, status: TaskStatus | str) -> str:
    """The by-status index key: the status plus a stable shard derived from the id."""
    shard = zlib.crc32(task_id.encode("utf-8")) % STATUS_SHARDS
    return f"{TaskStatus(status).value}#{shard:02d}"


class TaskErrorInfo(BaseModel):
    """Why a task failed, as stored on the task."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    retryable: bool


class Progress(BaseModel):
    """How far a running handler says it got (`ctx.report_progress`)."""

    model_config = ConfigDict(frozen=True)

    done: float
    total: float | None = None
    message: str = ""
    updated_at: str


class AttemptRecord(BaseModel):
    """One run of a task, kept in the task's bounded attempt log."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    episode: int = 0
    source: str
    started_at: str
    finished_at: str
    outcome: TaskStatus
    error: TaskErrorInfo | None = None


class StepRecord(BaseModel):
    """A step of a task that completed: its result (or a payload reference), when, on
    which attempt, and the size of its result's JSON (`runner.steps`)."""

    model_config = ConfigDict(frozen=True)

    completed_at: str
    attempt: int
    bytes: int
    result: Any = None


class Task(BaseModel):
    """A task item. Only id, type, status and data are required to insert one."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=1024)
    type: str = Field(min_length=1)
    status: TaskStatus
    # Plain mutable defaults, which pydantic copies per instance. default_factory=dict
    # would make pydantic read the signature of a builtin, which compiles the tokenizer's
    # regexes: about 35 ms of every cold start.
    data: dict[str, Any] = {}
    result: Any = None
    error: TaskErrorInfo | None = None
    # Mirrors error.retryable at the top level so a stream filter can match it.
    retryable: bool | None = None
    attempts: int = 0
    # Claims made by a runner that keys effects by incarnation (every claim adds 1, as
    # to `attempts`; a previous version's adds nothing): while the two are equal, every
    # attempt had the incarnation's `idempotency_key`. None: the item has none (0).
    effect_key_claims: int | None = None
    # Failure episodes: each retryable failure outside a workflow starts a new one.
    episode: int = 0
    episode_attempts: int = 0
    retries_exhausted: bool = False
    claimed_by: ClaimSource | None = None
    # Random per claim: lets a claimer recognise its own write when a retried request
    # finds the condition already spent (the first try was applied, its reply was lost).
    claim_token: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    # Epoch seconds: when a PROCESSING claim is presumed dead.
    lease_expires_at: int | None = None
    # Epoch seconds, read by DynamoDB's TTL.
    expires_at: int | None = None
    # A delayed task's time (ISO-8601 UTC): SCHEDULED until then, then PENDING.
    run_at: str | None = None
    executions: list[str] = []
    attempt_log: list[AttemptRecord] = []
    # Set by `cancel-task` on a PROCESSING task, for its current claim: its handler is
    # asked to stop. The next claim or redrive removes it (`runner.store.claims`).
    cancel_requested: bool = False
    progress: Progress | None = None
    # The producer's `create_task(idempotency_key=...)`, from which the id was made.
    enqueue_key: str | None = None
    # Completed durable steps by name (`runner.steps`); None: the item has no `steps` map.
    steps: dict[str, StepRecord] | None = None
    # True once any of the task's payloads lives in the payload bucket (`runner.payloads`):
    # the stream's REMOVE filter deletes its objects with it.
    payloads: bool = False

    @property
    def idempotency_key(self) -> str:
        """The same on every attempt of this task, and not the key of an earlier task
        under the same id: use it to make side effects idempotent.

        `effect_key(id, created_at)`, except for a task a previous version's runner
        claimed (it added to `attempts`, not to `effect_key_claims`), whose attempts
        used `task:<id>`: it keeps that one, so its retry does not repeat their effects.
        """
        if (self.effect_key_claims or 0) != self.attempts:
            return f"task:{self.id}"
        return effect_key(self.id, self.created_at)

    @property
    def is_final(self) -> bool:
        """True if the task will not run again: DONE, CANCELLED, or FAILED for good."""
        if self.status in FINAL_STATUSES:
            return True
        return self.status is S.FAILED and (self.retryable is not True or self.retries_exhausted)

    def with_attempt(self, record: AttemptRecord) -> list[AttemptRecord]:
        """The attempt log with `record` appended, oldest entries dropped past the bound."""
        return [*self.attempt_log, record][-MAX_ATTEMPT_LOG:]
