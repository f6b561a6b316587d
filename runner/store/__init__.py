"""The tasks table's writes: every status change is a conditional write, so two workers
can never both move a task, and every write fits DynamoDB's 400 KB (`runner.limits`).

One module per family of writes (claims, outcomes, recovery, control, scheduling,
steps), sharing one conditional update helper (`base`). Queries across the table live
in `runner.listing`, the DynamoDB plumbing in `runner.table`, item conversion in
`runner.items`.
"""

from __future__ import annotations

from runner.store.claims import ClaimWrites
from runner.store.control import ControlWrites
from runner.store.recovery import RecoveryWrites
from runner.store.scheduling import SchedulingWrites
from runner.store.steps import StepWrites


class TaskStore(ClaimWrites, RecoveryWrites, ControlWrites, SchedulingWrites, StepWrites):
    """Reads and conditional writes on the tasks table (queries: `TaskListing`)."""


__all__ = ["TaskStore"]
