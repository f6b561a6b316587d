"""Wiring: one set of settings, clients, store, registry and runner per process."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from runner.aws import AwsClients
from runner.config import Settings
from runner.executor import TaskRunner
from runner.registry import TaskRegistry
from runner.store import TaskStore
from runner.stream import StreamProcessor
from runner.sweeper import Sweeper
from runner.workflow import RetryWorkflow


@dataclass(frozen=True)
class App:
    settings: Settings
    clients: AwsClients
    registry: TaskRegistry
    store: TaskStore
    runner: TaskRunner
    stream: StreamProcessor
    workflow: RetryWorkflow
    sweeper: Sweeper

    @classmethod
    def build(
        cls,
        settings: Settings | None = None,
        registry: TaskRegistry | None = None,
        clients: AwsClients | None = None,
    ) -> App:
        from tasks import build_registry

        settings = settings or Settings.from_env()
        clients = clients or AwsClients(settings)
        registry = registry or build_registry(settings.task_modules)
        store = TaskStore(settings, clients)
        runner = TaskRunner(store, registry, settings=settings, clients=clients)
        return cls(
            settings=settings,
            clients=clients,
            registry=registry,
            store=store,
            runner=runner,
            stream=StreamProcessor(runner, max_concurrency=settings.max_concurrency),
            workflow=RetryWorkflow(settings, clients, store),
            sweeper=Sweeper(store, runner),
        )


@functools.cache
def get_app() -> App:
    """The process-wide App, built on first use (never at import: keeps cold starts short)."""
    return App.build()
