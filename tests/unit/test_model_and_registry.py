from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
from pydantic import BaseModel

import tasks
from runner.errors import (
    InvalidTaskInput,
    PermanentTaskError,
    RegistryError,
    RetryableTaskError,
    UnknownTaskType,
)
from runner.failures import describe_error
from runner.item_size import MAX_ITEM_BYTES, item_size, value_size
from runner.local import demo_tasks
from runner.model import (
    TRANSITIONS,
    Task,
    TaskStatus,
    can_transition,
    effect_key,
    status_shard,
)
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
    # The store fails a PENDING task it cannot read or run (fail_unreadable,
    # fail_oversized) and redrives a handed-off one whose execution ended unclaimed.
    assert can_transition(TaskStatus.PENDING, TaskStatus.FAILED)
    assert can_transition(TaskStatus.PENDING, TaskStatus.RETRYING)


def test_the_readmes_status_table_lists_exactly_the_models_transitions() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented: dict[str, set[str]] = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`[A-Z]+`", cells[0]):
            status = cells[0].strip("`")
            if status in {s.value for s in TaskStatus}:
                # A move to the same status (a new episode) is no transition.
                documented[status] = set(re.findall(r"`([A-Z]+)`", cells[2])) - {status}
    assert documented == {s.value: {t.value for t in targets} for s, targets in TRANSITIONS.items()}


def test_status_shard_is_stable_and_spread() -> None:
    assert status_shard("abc", TaskStatus.DONE) == status_shard("abc", "DONE")
    shards = {status_shard(f"task-{n}", TaskStatus.PENDING) for n in range(500)}
    assert len(shards) == 16
    assert all(s.startswith("PENDING#") for s in shards)


def test_the_effect_key_is_the_incarnations_unless_a_previous_runner_claimed_the_task() -> None:
    def task(created_at: str, attempts: int, effect_key_claims: int | None) -> Task:
        return Task.model_validate(
            {
                "id": "order:42",
                "type": "X",
                "status": "PROCESSING",
                "created_at": created_at,
                "attempts": attempts,
                "effect_key_claims": effect_key_claims,
            }
        )

    first, again = "2026-12-01T00:00:00.000Z", "2027-01-15T00:00:00.000Z"
    key = effect_key("order:42", first)
    assert re.fullmatch(r"task:order:42:[0-9a-f]{16}", key)
    # Every claim by this version: the incarnation's key, another for a re-created id
    assert task(first, 1, 1).idempotency_key == key == task(first, 3, 3).idempotency_key
    assert task(again, 1, 1).idempotency_key != key
    assert task(first, 0, None).idempotency_key == key  # not claimed yet
    # A claim by a runner before this version (attempts counted, not the claims): the key
    # its attempts used, on every later attempt too
    assert task(first, 1, None).idempotency_key == "task:order:42"
    assert task(first, 2, 1).idempotency_key == "task:order:42"
    assert task(first, 5, 4).idempotency_key == "task:order:42"


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


def check_deployment_registry() -> None:
    """The deployment's registry is what tasks/__init__.py's TASK_MODULES define, whatever
    a user added, removed or replaced there, and none of the demo's types."""
    registry = build_registry()
    defined = [d for m in tasks.TASK_MODULES for d in (getattr(m, "TASKS", None) or [m.TASK])]
    assert {d.type for d in registry} == {d.type for d in defined}
    assert not {d.type for d in registry} & {d.type for d in demo_tasks.TASKS}
    for definition in registry:
        assert registry.get(definition.cli_name) is definition
        assert registry.get(definition.type) is definition


def test_deployment_registry_has_no_demo_tasks() -> None:
    check_deployment_registry()


def test_the_registry_check_holds_for_a_deployment_that_replaced_the_examples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a deployment whose tasks/__init__.py registers only a task of its own
    module = types.ModuleType("tasks.resize_image")
    module.TASK = TaskDefinition(type="RESIZE_IMAGE", input_model=_In, handler=_noop)
    monkeypatch.setattr(tasks, "TASK_MODULES", (module,))

    # Then the check holds: no test depends on the shipped examples being registered
    check_deployment_registry()
    assert [d.type for d in build_registry()] == ["RESIZE_IMAGE"]


def test_sync_and_async_handlers_are_told_apart() -> None:
    example = pytest.importorskip("tasks.example")  # a deployment may have removed it
    export_db = pytest.importorskip("tasks.export_db")
    assert example.TASK.is_async is True
    assert export_db.TASK.is_async is False


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
