"""Wiring: one set of settings, clients, store, registry and runner per process."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from runner.aws import AwsClients
from runner.config import Settings
from runner.errors import ConfigurationError
from runner.executor import TaskRunner
from runner.heartbeat import LeasePolicy
from runner.registry import TaskRegistry
from runner.store import TaskStore

if TYPE_CHECKING:
    from runner.attempts import WorkflowAttempts
    from runner.delays import DelayTimers
    from runner.dispatch import Dispatcher
    from runner.stream import StreamProcessor
    from runner.sweeper import Sweeper
    from runner.timer_inbox import TimerInbox
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
        self.runner = TaskRunner(
            self.store,
            registry,
            settings=settings,
            clients=clients,
            leases=LeasePolicy(heartbeat_seconds=settings.heartbeat_seconds),
        )

    @classmethod
    def build(
        cls,
        settings: Settings | None = None,
        registry: TaskRegistry | None = None,
        clients: AwsClients | None = None,
    ) -> App:
        settings = settings or Settings.from_env()
        return cls(
            settings,
            clients or AwsClients(settings),
            registry if registry is not None else default_registry(settings.task_modules),
        )

    def _runs_tasks(self, what: str) -> None:
        """What runs tasks needs every type the deployment has: without tasks/ each would
        end FAILED as an unknown type; refusing makes the invocation fail (and be retried)
        instead."""
        if not self.registry.complete:
            raise ConfigurationError(
                f"the {what} runs tasks and needs the deployment's task types (tasks/),"
                " which this process does not have"
            )

    @functools.cached_property
    def dispatcher(self) -> Dispatcher:
        from runner.dispatch import Dispatcher

        return Dispatcher(self.runner, self.workflow if self.settings.state_machine_arn else None)

    @functools.cached_property
    def stream(self) -> StreamProcessor:
        from runner.stream import StreamProcessor

        self._runs_tasks("stream processor")
        return StreamProcessor(self.dispatcher, max_concurrency=self.settings.max_concurrency)

    @functools.cached_property
    def workflow(self) -> RetryWorkflow:
        from runner.workflow import RetryWorkflow

        return RetryWorkflow(self.settings, self.clients, self.store)

    @functools.cached_property
    def attempts(self) -> WorkflowAttempts:
        from runner.attempts import WorkflowAttempts

        self._runs_tasks("retry workflow's attempt")
        return WorkflowAttempts(self.runner)

    @functools.cached_property
    def delays(self) -> DelayTimers:
        """Delayed tasks' timers (`delays.forget(task_id)` removes a one-time schedule)."""
        from runner.delays import DelayTimers

        return DelayTimers(self.settings, self.clients, clock=self.store.clock)

    @functools.cached_property
    def timer_inbox(self) -> TimerInbox:
        from runner.recurring import RecurringFires
        from runner.timer_inbox import TimerInbox

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

        self._runs_tasks("sweeper")
        routed = bool(self.settings.state_machine_arn)
        return Sweeper(
            self.store,
            self.dispatcher,
            workflow=self.workflow if routed else None,
            replay=FailedBatchReplay(
                self.settings,
                self.clients,
                self.stream,
                self.workflow if routed else None,
                payloads=self.store.payloads,
            ),
            repairs=ExecutionRepairs(
                self.store, self.workflow, window_hours=self.settings.repair_window_hours
            )
            if routed
            else None,
            scan_segments=self.settings.orphan_scan_segments,
        )


# The deployment's code sits beside the runner package: the repository, and Lambda's
# /var/task, have handler.py, runner/ and tasks/ side by side. An installed package has
# only runner/ (its parent is site-packages, where a `tasks` would be someone else's).
DEPLOYMENT_ROOT = Path(__file__).resolve().parent.parent
TASKS_PACKAGE = "tasks"


def deployment_tasks(root: Path | None = None) -> ModuleType | None:
    """The deployment's `tasks` package, from beside the runner package only, or None
    when this is not a deployment (no handler.py and tasks/ there). Never another
    top-level `tasks` on sys.path (a producer's Celery app, say): importing it would run
    its side effects and take its failures."""
    root = DEPLOYMENT_ROOT if root is None else root
    package = root / TASKS_PACKAGE
    init = package / "__init__.py"
    if not ((root / "handler.py").is_file() and init.is_file()):
        return None
    loaded = sys.modules.get(TASKS_PACKAGE)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
        if origin is None or Path(origin).resolve() != init.resolve():
            raise ConfigurationError(
                f"another module named {TASKS_PACKAGE!r} ({origin}) is imported in this"
                f" process: the deployment's task types are {package}"
            )
        return loaded
    spec = importlib.util.spec_from_file_location(
        TASKS_PACKAGE, init, submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[TASKS_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(TASKS_PACKAGE, None)
        raise
    return module


def default_registry(
    modules: tuple[str, ...] = (), *, required: bool = True, root: Path | None = None
) -> TaskRegistry:
    """The deployment's task types (`tasks/` beside the runner package) plus `modules`.

    `required` (what runs tasks: the handlers, `get_app()`): without `tasks/` this is a
    ConfigurationError, so a Lambda zip that lost it fails its invocations (and they are
    retried) rather than failing every task as an unknown type. Not required (a
    producer's application with the installed package, the installed CLI): only
    `modules`' types, in a registry marked incomplete; the client then sends other types'
    input as it is, and the runner validates it when the task runs.
    """
    found = deployment_tasks(root)
    if found is not None:
        registry: TaskRegistry = found.build_registry(modules)
        return registry
    if required:
        raise ConfigurationError(
            f"the deployment's task types are missing: no {TASKS_PACKAGE}/ beside handler.py"
            f" in {root or DEPLOYMENT_ROOT}"
        )
    registry = TaskRegistry(complete=False)
    for name in modules:
        registry.register_module(importlib.import_module(name))
    return registry


@functools.cache
def get_app() -> App:
    """The process-wide App, built on first use (never at import: keeps cold starts short).
    It runs tasks, so it needs the deployment's `tasks/`."""
    return App.build()


@functools.cache
def producer_app() -> App:
    """The App of a process that only creates and reads tasks (`TaskRunnerClient()`):
    the deployment's `tasks/` when it is there, else an incomplete registry."""
    settings = Settings.from_env()
    return App.build(settings, registry=default_registry(settings.task_modules, required=False))
