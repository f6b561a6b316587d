from __future__ import annotations

import pytest
from pydantic import BaseModel

from runner.errors import (
    InvalidTaskInput,
    PermanentTaskError,
    RegistryError,
    RetryableTaskError,
    UnknownTaskType,
)
from runner.executor import describe_error
from runner.item_size import MAX_ITEM_BYTES, item_size, value_size
from runner.local import demo_tasks
from runner.model import TaskStatus, can_transition, status_shard
from runner.registry import TaskDefinition, TaskRegistry
from tasks import build_registry


class _In(BaseModel):
    x: int


def _noop(data: _In, ctx: object) -> None:
    return None


def test_transitions_allow_only_the_documented_moves() -> None:
    assert can_transition(TaskStatus.PENDING, TaskStatus.PROCESSING)
    assert not can_transition(TaskStatus.PENDING, TaskStatus.DONE)
    assert not can_transition(TaskStatus.DONE, TaskStatus.PROCESSING)
    assert can_transition(TaskStatus.FAILED, TaskStatus.RETRYING)
    assert can_transition(TaskStatus.RETRYING, TaskStatus.PROCESSING)


def test_status_shard_is_stable_and_spread() -> None:
    assert status_shard("abc", TaskStatus.DONE) == status_shard("abc", "DONE")
    shards = {status_shard(f"task-{n}", TaskStatus.PENDING) for n in range(500)}
    assert len(shards) == 16
    assert all(s.startswith("PENDING#") for s in shards)


def test_registry_rejects_duplicates_and_unknown_types() -> None:
    registry = TaskRegistry([TaskDefinition(type="A_TASK", input_model=_In, handler=_noop)])
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(TaskDefinition(type="A_TASK", input_model=_In, handler=_noop))
    with pytest.raises(UnknownTaskType, match="known: A_TASK"):
        registry.get("B_TASK")
    assert registry.get("a-task").type == "A_TASK"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "lower"},
        {"max_attempts": 0},
        {"max_attempts": 11},
        {"timeout_seconds": 0},
        {"input_model": dict},
    ],
)
def test_definition_rejects_bad_options(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"type": "OK_TASK", "input_model": _In, "handler": _noop}
    with pytest.raises(RegistryError):
        TaskDefinition(**{**base, **kwargs})  # type: ignore[arg-type]


def test_parse_input_names_the_bad_field() -> None:
    definition = TaskDefinition(type="OK_TASK", input_model=_In, handler=_noop)
    with pytest.raises(InvalidTaskInput, match="x: "):
        definition.parse_input({"x": "not a number"})


def test_deployment_registry_has_no_demo_tasks() -> None:
    registry = build_registry()
    shipped = {d.type for d in registry}
    # The shipped types, and any a user adds (tests/e2e/test_readme.py adds one), no demo's
    assert {"EXAMPLE_TASK", "EXPORT_DB"} <= shipped
    assert not shipped & {d.type for d in demo_tasks.TASKS}
    assert registry.get("example-task").cli_name == "example-task"
    assert registry.get("EXPORT_DB").is_async is False
    assert registry.get("EXAMPLE_TASK").is_async is True


def test_errors_say_whether_they_are_retryable() -> None:
    assert describe_error(RetryableTaskError("x")).retryable
    assert not describe_error(PermanentTaskError("x")).retryable
    assert not describe_error(InvalidTaskInput("x")).retryable
    assert not describe_error(UnknownTaskType("x")).retryable
    # An exception the task did not classify is assumed transient (retries are bounded).
    info = describe_error(KeyError("boom"))
    assert info.retryable and info.type == "KeyError"


def test_item_size_follows_dynamodb_rules() -> None:
    # Documented examples: strings are UTF-8 bytes, names count, numbers ~1 byte / 2 digits.
    assert value_size("abc") == 3
    assert value_size("é") == 2
    assert value_size(True) == 1
    assert value_size(123456) == 4
    assert value_size({}) == 3
    assert value_size({"a": "b"}) == 3 + 1 + 1 + 1
    assert value_size([1]) == 3 + 2 + 1
    assert item_size({"id": "x" * 10}) == 12
    big = {"id": "t", "data": {"blob": "x" * MAX_ITEM_BYTES}}
    assert item_size(big) > MAX_ITEM_BYTES
