"""Where a PENDING task runs: here, or in the retry workflow when it cannot run here now.

The stream function and the sweeper give a task at most what is left of their own
invocation (300 s functions). A task whose type's timeout is longer than that (EXPORT_DB)
would be cut short, time out, and run again: it is handed to the state machine at once
instead, in an execution of its own (episode 0), whose `runTask` (900 s) gives it its
whole timeout. A hand-off claims nothing: the execution's first attempt does.

A task whose offloaded input would take this process past `PROCESS_INPUT_BUDGET_BYTES`
of inputs running at once (runner.payloads: a batch runs up to 100 tasks in one 1 GB
function) is handed off the same way, to run in an invocation of its own.

A task put over one whose claim is live (PutItem replaced a PROCESSING item, e.g. a
producer's retried put whose first reply was lost) must not run beside it: it is held
(`fence_pending`) until that lease is over, and handed off the same way; the execution's
attempt waits out the lease. Without a workflow, the sweeper runs it after the lease.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.errors import ConfigurationError, TaskAlreadyClaimed
from runner.executions import ExecutionRef
from runner.executor import RECORDING_MARGIN_SECONDS, Outcome, TaskRunner
from runner.logs import get_logger
from runner.model import ClaimSource, Task
from runner.payloads import InputBudget, reference_bytes

if TYPE_CHECKING:
    from runner.workflow import RetryWorkflow


class Dispatcher:
    """Runs PENDING tasks that fit the time left here, hands the others to the workflow."""

    def __init__(
        self,
        runner: TaskRunner,
        workflow: RetryWorkflow | None,
        *,
        input_budget: InputBudget | None = None,
    ) -> None:
        self.runner = runner
        self.workflow = workflow
        # Large offloaded inputs running here at once (runner.payloads): past it, the
        # workflow runs the task in an invocation of its own.
        self.input_budget = input_budget or InputBudget()
        self.log = get_logger()

    @property
    def _has_workflow(self) -> bool:
        return self.workflow is not None and bool(self.workflow.settings.state_machine_arn)

    def fits_here(self, task: Task, remaining_seconds: float | None) -> bool:
        """True if the task's whole timeout fits in what is left of this invocation."""
        definition = self.runner.definition_or_none(task.type)
        if definition is None or remaining_seconds is None:
            return True  # an unknown type fails at once; no deadline, no limit
        return definition.timeout_seconds <= remaining_seconds - RECORDING_MARGIN_SECONDS

    def dispatch(
        self,
        task: Task,
        *,
        source: ClaimSource,
        remaining_seconds: float | None,
        held_until: int | None = None,
    ) -> Outcome:
        """Run the task here, or hand it off. `held_until`: the lease (epoch seconds) of
        the claim on the item this task replaced, which it must not run beside."""
        if held_until is not None and held_until >= self.runner.store.now_epoch():
            return self.hold(task, held_until, source=source)
        if self.fits_here(task, remaining_seconds):
            size = reference_bytes(task.data)
            if not size:
                return self.runner.run_claimable(
                    task, source=source, remaining_seconds=remaining_seconds
                )
            if not self.input_budget.try_take(size, force=not self._has_workflow):
                self.log.info(
                    "large inputs already running here: handing the task to the workflow",
                    extra={"task_id": task.id, "task_type": task.type, "bytes": size},
                )
                return self.hand_off(task, source=source)
            try:
                return self.runner.run_claimable(
                    task, source=source, remaining_seconds=remaining_seconds
                )
            finally:
                self.input_budget.give_back(size)
        if not self._has_workflow:
            # No workflow to hand it to (a test, a stack without one): run it here with
            # the time there is, as the only way it can run at all.
            self.log.warning(
                "no retry workflow configured: running a task with less than its timeout",
                extra={"task_id": task.id, "task_type": task.type},
            )
            return self.runner.run_claimable(
                task, source=source, remaining_seconds=remaining_seconds
            )
        return self.hand_off(task, source=source)

    def hand_off(self, task: Task, *, source: ClaimSource) -> Outcome:
        """Start the task's own execution (idempotent); it stays PENDING until claimed."""
        if self.workflow is None:
            raise ConfigurationError("hand_off needs the retry workflow")
        try:
            prepared = self.runner.store.prepare_handoff(task.id)
        except TaskAlreadyClaimed:
            return Outcome(task.id, None, note="already claimed")
        started = self.workflow.ensure_running(ExecutionRef.of(prepared))
        if started is None:
            return Outcome(task.id, None, note="no longer waiting for a run")
        self.log.info(
            "task handed to the workflow",
            extra={"task_id": task.id, "task_type": task.type, "execution": started.arn},
        )
        return Outcome(task.id, None, note=f"handed to the workflow: {started.arn}")

    def hold(self, task: Task, until: int, *, source: ClaimSource) -> Outcome:
        """Fence the task until `until`, then let the workflow (or the sweeper) run it."""
        try:
            self.runner.store.fence_pending(task.id, until)
        except TaskAlreadyClaimed:
            return Outcome(task.id, None, note="already claimed")
        self.log.warning(
            "task put over a live claim; held until that claim's lease is over",
            extra={"task_id": task.id, "task_type": task.type, "lease_expires_at": until},
        )
        if self.workflow is None or not self.workflow.settings.state_machine_arn:
            return Outcome(task.id, None, note="held until a live lease is over; a sweep runs it")
        return self.hand_off(task, source=source)
