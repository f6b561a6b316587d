"""The client in a producer's process, which has no `tasks/`: types it does not register
are sent as given and validated by the runner when they run; with `tasks/` (a complete
registry) the client validates first, as it always has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import handler
from runner.app import App, default_registry, get_app
from runner.client import TaskRunnerClient
from runner.errors import ConfigurationError, InvalidTaskInput, UnknownTaskType
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskRegistry
from tests.helpers import FakeLambdaContext, pending, put_raw, stream_record


class Hello(BaseModel):
    message: str


def producer(app: App) -> TaskRunnerClient:
    return TaskRunnerClient(App(app.settings, app.clients, TaskRegistry(complete=False)))


def test_without_tasks_the_producers_registry_is_incomplete(tmp_path: Path) -> None:
    # An installed package: runner/ in site-packages, no handler.py or tasks/ beside it
    registry = default_registry(("runner.local.demo_tasks",), required=False, root=tmp_path)
    assert not registry.complete
    assert "NOOP_TASK" in registry and "EXAMPLE_TASK" not in registry
    assert default_registry.__module__ == "runner.app"


def test_what_runs_tasks_refuses_to_start_without_tasks(tmp_path: Path) -> None:
    # A Lambda zip that lost tasks/: a configuration error, never a registry that turns
    # every task into an UnknownTaskType failure
    (tmp_path / "handler.py").write_text("")
    with pytest.raises(ConfigurationError, match="task types are missing"):
        default_registry(root=tmp_path)


def test_a_deployed_function_without_tasks_fails_its_invocation_and_fails_no_task(
    app: App, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given the stream function's code without tasks/ (handler.py and runner/ only)
    (tmp_path / "handler.py").write_text("")
    monkeypatch.setattr("runner.app.DEPLOYMENT_ROOT", tmp_path)
    monkeypatch.setattr(
        "runner.app.Settings.from_env", classmethod(lambda cls, env=None: app.settings)
    )
    get_app.cache_clear()
    values = put_raw(
        app.clients.dynamodb,
        app.settings.table_name,
        pending("lost-tasks", "EXAMPLE_TASK", {"message": "hi"}),
    )

    # When a batch arrives, the invocation fails (Lambda retries the batch, bisects it,
    # and the sweeper finds what stays PENDING) ...
    with pytest.raises(ConfigurationError, match="task types"):
        handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    # ... and the task is untouched: not FAILED as an unknown type
    assert app.store.get("lost-tasks").status is TaskStatus.PENDING
    # An App handed an incomplete registry refuses to run tasks too
    incomplete = App(app.settings, app.clients, TaskRegistry(complete=False))
    for part in ("stream", "attempts", "sweeper"):
        with pytest.raises(ConfigurationError, match="needs the deployment's task types"):
            getattr(incomplete, part)


def test_a_producers_own_tasks_package_is_never_imported(tmp_path: Path) -> None:
    # A producer application with a top-level `tasks` of its own (a Celery app, say)
    # beside the installed package: loading the registry must not import it
    site = tmp_path / "site-packages"
    (site / "tasks").mkdir(parents=True)
    (site / "tasks" / "__init__.py").write_text("raise RuntimeError('the producer tasks ran')\n")
    registry = default_registry(required=False, root=site)
    assert not registry.complete and len(registry) == 0


def test_with_tasks_the_registry_is_complete_and_unknown_types_are_refused(app: App) -> None:
    assert default_registry().complete
    with pytest.raises(UnknownTaskType):
        TaskRunnerClient(app).create_task("NO_SUCH_TASK", {})
    with pytest.raises(InvalidTaskInput):
        TaskRunnerClient(app).create_task("EXAMPLE_TASK", {"message": ""})


def test_a_producer_sends_an_unknown_type_as_given_and_the_runner_validates_it(app: App) -> None:
    client = producer(app)

    good = client.create_task("example-task", {"message": "hi"})
    bad = client.create_task("EXAMPLE_TASK", {"message": ""})
    unknown = client.create_task("NOT_DEPLOYED", {"x": 1})

    assert (good.type, good.data, good.status) == (
        "EXAMPLE_TASK",
        {"message": "hi"},
        TaskStatus.PENDING,
    )
    assert bad.data == {"message": ""}  # not checked here ...
    runner = app.runner  # ... but where the tasks run, with the deployment's registry
    assert runner.run_claimable(bad, source=ClaimSource.CLI).status is TaskStatus.FAILED
    failed = app.store.get(bad.id)
    assert failed.error is not None and failed.error.type == "InvalidTaskInput"
    assert failed.retryable is False
    runner.run_claimable(unknown, source=ClaimSource.CLI)
    assert app.store.get(unknown.id).error.type == "UnknownTaskType"  # type: ignore[union-attr]


def test_a_producer_may_send_a_model_of_its_own(app: App) -> None:
    task = producer(app).create_task("EXAMPLE_TASK", Hello(message="typed"))
    assert task.data == {"message": "typed"}


@pytest.mark.parametrize(
    ("task_type", "data", "error"),
    [
        ("not a type", {}, UnknownTaskType),
        ("", {}, UnknownTaskType),
        ("EXAMPLE_TASK", ["not", "a", "map"], InvalidTaskInput),
        ("EXAMPLE_TASK", {"n": float("nan")}, InvalidTaskInput),
        ("EXAMPLE_TASK", {"when": object()}, InvalidTaskInput),
    ],
)
def test_what_no_runner_could_read_is_refused_before_anything_is_written(
    app: App, task_type: str, data: Any, error: type[Exception]
) -> None:
    client = producer(app)
    with pytest.raises(error):
        client.create_task(task_type, data)
    assert client.list_tasks()[0] == []


def test_a_producer_sends_dates_and_decimals_as_a_validating_client_would(app: App) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    when = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    task = producer(app).create_task("NOT_DEPLOYED", {"when": when, "amount": Decimal("1.5")})
    assert task.data == {"when": "2026-12-01T12:00:00Z", "amount": "1.5"}
    assert app.store.get(task.id).data == task.data
