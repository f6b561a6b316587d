"""Wiring: one set of settings, clients, store, registry and runner per process."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from runner.aws import AwsClients
from runner.config import Settings
from runner.executor import TaskRunner
from runner.registry import TaskRegistry
from runner.store import TaskStore

if TYPE_CHECKING:
    from runner.attempts import WorkflowAttempts
    from runner.delays import DelayTimers, TimerInbox
    from runner.dispatch import Dispatcher
    from runner.stream import StreamProcessor
    from runner.sweeper import Sweeper
    from runner.workflow import RetryWorkflow


class App:
    """The runner's parts for one configuration.

    Each Lambda uses one of stream, workflow and sweeper; they are imported and built on
    first use, so a function's cold start pays only for its own.
    """

    def __init__(self, settings: Settings, clients: AwsClients, registry: TaskRegistry) -> None:
        self.settings = settings
        self.clients = clients
        self.registry = registry
        self.store = TaskStore(settings, clients)
        self.runner = TaskRunner(self.store, registry, settings=settings, clients=clients)

    @classmethod
    def build(
        cls,
        settings: Settings | None = None,
        registry: TaskRegistry | None = None,
        clients: AwsClients | None = None,
    ) -> App:
        from tasks import build_registry

        settings = settings or Settings.from_env()
        return cls(
            settings,
            clients or AwsClients(settings),
            registry or build_registry(settings.task_modules),
        )

    @functools.cached_property
    def dispatcher(self) -> Dispatcher:
        from runner.dispatch import Dispatcher

        return Dispatcher(self.runner, self.workflow if self.settings.state_machine_arn else None)

    @functools.cached_property
    def stream(self) -> StreamProcessor:
        from runner.stream import StreamProcessor

        return StreamProcessor(self.dispatcher, max_concurrency=self.settings.max_concurrency)

    @functools.cached_property
    def workflow(self) -> RetryWorkflow:
        from runner.workflow import RetryWorkflow

        return RetryWorkflow(self.settings, self.clients, self.store)

    @functools.cached_property
    def attempts(self) -> WorkflowAttempts:
        from runner.attempts import WorkflowAttempts

        return WorkflowAttempts(self.runner)

    @functools.cached_property
    def delays(self) -> DelayTimers:
        """Delayed tasks' timers (`delays.forget(task_id)` removes a one-time schedule)."""
        from runner.delays import DelayTimers

        return DelayTimers(self.settings, self.clients, clock=self.store.clock)

    @functools.cached_property
    def timer_inbox(self) -> TimerInbox:
        from runner.delays import TimerInbox
        from runner.recurring import RecurringFires

        return TimerInbox(
            self.store,
            self.delays,
            RecurringFires(self.store, self.registry),
            clock=self.store.clock,
        )

    @functools.cached_property
    def sweeper(self) -> Sweeper:
        from runner.repair import ExecutionRepairs
        from runner.replay import FailedBatchReplay
        from runner.sweeper import Sweeper

        routed = bool(self.settings.state_machine_arn)
        return Sweeper(
            self.store,
            self.dispatcher,
            workflow=self.workflow if routed else None,
            replay=FailedBatchReplay(
                self.settings, self.clients, self.stream, self.workflow if routed else None
            ),
            repairs=ExecutionRepairs(
                self.store, self.workflow, window_hours=self.settings.repair_window_hours
            )
            if routed
            else None,
            scan_segments=self.settings.orphan_scan_segments,
        )


@functools.cache
def get_app() -> App:
    """The process-wide App, built on first use (never at import: keeps cold starts short)."""
    return App.build()
