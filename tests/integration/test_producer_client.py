"""The client in a producer's process, which has no `tasks/`: types it does not register
are sent as given and validated by the runner when they run; with `tasks/` (a complete
registry) the client validates first, as it always has."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
from pydantic import BaseModel

from runner.app import App, default_registry
from runner.client import TaskRunnerClient
from runner.errors import InvalidTaskInput, UnknownTaskType
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskRegistry


class Hello(BaseModel):
    message: str


def producer(app: App) -> TaskRunnerClient:
    return TaskRunnerClient(App(app.settings, app.clients, TaskRegistry(complete=False)))


def test_without_tasks_the_default_registry_is_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_tasks(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "tasks":
            raise ModuleNotFoundError("No module named 'tasks'", name="tasks")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tasks)
    registry = default_registry(("runner.local.demo_tasks",))
    assert not registry.complete
    assert "NOOP_TASK" in registry and "EXAMPLE_TASK" not in registry
    assert default_registry.__module__ == "runner.app"


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
