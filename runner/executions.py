"""What names and feeds one execution of the retry state machine: a task, one of its
failure episodes, and the incarnation of its id.

Step Functions keeps an execution's name for 90 days and refuses it again whatever the
input, while a task id may be reused once DynamoDB's TTL has deleted the task (30 days)
or by another producer. So the name carries a digest of the id and its `created_at`
(which a re-created task does not share), and the input says whose execution it is.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from runner.model import Task, TaskStatus, status_shard

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Step Functions' limit on an execution name.
MAX_EXECUTION_NAME = 80
# Hex digits of the (id, created_at) digest in a name: 64 bits.
DIGEST_CHARS = 16


def execution_name(task_id: str, created_at: str, episode: int) -> str:
    """`<id, made safe>-<digest of id and created_at>-<episode>`, at most 80 characters.

    Distinct (id, created_at, episode) triples get distinct names: the readable prefix
    may collide (`order:42` and `order_42` share it), the digest does not.
    """
    digest = hashlib.sha256(f"{task_id}\0{created_at}".encode()).hexdigest()[:DIGEST_CHARS]
    suffix = f"-{digest}-{episode}"
    prefix = _NAME_UNSAFE.sub("_", task_id)[: MAX_EXECUTION_NAME - len(suffix)]
    return f"{prefix}{suffix}"


@dataclass(frozen=True)
class ExecutionRef:
    """The execution that owns one episode of one task."""

    task_id: str
    episode: int
    task_type: str
    created_at: str

    @classmethod
    def of(cls, task: Task) -> ExecutionRef:
        return cls(task.id, task.episode, task.type, task.created_at or "")

    @property
    def name(self) -> str:
        return execution_name(self.task_id, self.created_at, self.episode)

    def input(self) -> str:
        """Deterministic JSON: StartExecution is idempotent only for the same input.

        `failed_shard` is what the previous version's state machine reads (executions
        in flight during a deploy keep their definition).
        """
        return json.dumps(
            {
                "task_id": self.task_id,
                "episode": self.episode,
                "task_type": self.task_type,
                "created_at": self.created_at,
                "failed_shard": status_shard(self.task_id, TaskStatus.FAILED),
            },
            sort_keys=True,
        )

    def owns(self, execution_input: Any) -> bool:
        """True if an execution with this input is this task's, for this episode."""
        try:
            given = json.loads(execution_input) if isinstance(execution_input, str) else None
        except ValueError:
            return False
        if not isinstance(given, dict):
            return False
        return (given.get("task_id"), given.get("episode"), given.get("created_at")) == (
            self.task_id,
            self.episode,
            self.created_at,
        )
