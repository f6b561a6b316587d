"""Task definitions and the registry that maps a task type to its handler."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from runner.errors import InvalidTaskInput, RegistryError, UnknownTaskType

if TYPE_CHECKING:
    from runner.context import TaskContext

# A task may run this long unless its definition says otherwise. It fits what the stream
# function (300 s, less its margins: 285 s) can give, so a task of a default type runs
# on the stream path; a type with a longer timeout runs in the retry workflow
# (runner.dispatch).
DEFAULT_TASK_TIMEOUT_SECONDS = 240.0
# Workflow attempts per failure episode before the task's retries are exhausted.
DEFAULT_MAX_ATTEMPTS = 3
# The state machine's Retry allows at most this many attempts; see statemachine/.
MAX_ATTEMPTS_CAP = 10
# The longest timeout any function can give a task: runTask's 900 s (serverless.yml)
# less the handler's deadline margin (10 s) and the time kept to record the outcome
# (5 s). A test checks these against the template and the runner's constants.
LONGEST_FUNCTION_SECONDS = 900.0
MAX_TASK_TIMEOUT_SECONDS = LONGEST_FUNCTION_SECONDS - 10.0 - 5.0

# The CLI's own create-task flags (`--delay`, `--run-at`, `--wait`, `--idempotency-key`,
# `--follow`): an input model may not have a field (or alias) of these names.
RESERVED_FIELDS = frozenset({"delay", "run_at", "wait", "idempotency_key", "follow"})

ModelClass = type[BaseModel]
TaskHandler = Callable[[Any, "TaskContext"], Any | Awaitable[Any]]
_TYPE_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class TaskDefinition:
    """One task type: its input model, its handler and how it may be retried."""

    type: str
    input_model: ModelClass
    handler: TaskHandler
    description: str = ""
    timeout_seconds: float = DEFAULT_TASK_TIMEOUT_SECONDS
    # Attempts the retry workflow makes per failure episode.
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # Quick in-process retries of RetryableTaskError before the task is marked FAILED.
    local_retries: int = 0
    local_retry_delay_seconds: float = 0.2
    # Recurring schedules (runner.recurring.Recurring): each fire creates one task.
    schedules: tuple[Any, ...] = ()
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        if not _TYPE_RE.match(self.type):
            raise RegistryError(f"task type {self.type!r} must be UPPER_SNAKE_CASE")
        if not (isinstance(self.input_model, type) and issubclass(self.input_model, BaseModel)):
            raise RegistryError(f"{self.type}: input_model must be a pydantic model class")
        if not callable(self.handler):
            raise RegistryError(f"{self.type}: handler must be callable")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS_CAP:
            raise RegistryError(f"{self.type}: max_attempts must be 1..{MAX_ATTEMPTS_CAP}")
        if self.timeout_seconds <= 0 or self.local_retries < 0:
            raise RegistryError(f"{self.type}: timeout must be > 0 and local_retries >= 0")
        if self.timeout_seconds > MAX_TASK_TIMEOUT_SECONDS:
            raise RegistryError(
                f"{self.type}: timeout_seconds is at most {MAX_TASK_TIMEOUT_SECONDS:g} "
                "(the longest a Lambda function can give a task and still record it)"
            )
        reserved = sorted(
            name
            for key, info in self.input_model.model_fields.items()
            for name in {key, info.alias or key}
            if name.replace("-", "_").lower() in RESERVED_FIELDS
        )
        if reserved:
            raise RegistryError(
                f"{self.type}: input field {reserved[0]!r} has the name of a create-task flag"
                f" ({', '.join('--' + n.replace('_', '-') for n in sorted(RESERVED_FIELDS))}"
                " are reserved); rename it"
            )
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))
        if self.schedules:
            from runner.recurring import check_schedules

            object.__setattr__(self, "schedules", tuple(self.schedules))
            check_schedules(self)

    @property
    def cli_name(self) -> str:
        """The CLI's name for the type: EXAMPLE_TASK → example-task."""
        return self.type.lower().replace("_", "-")

    def parse_input(self, data: Any) -> BaseModel:
        """Validate raw data against the input model, or raise InvalidTaskInput."""
        try:
            model = self.input_model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidTaskInput(f"invalid input for {self.type}: {problems}") from exc
        unstorable = "; ".join(
            f"{'.'.join(str(p) for p in path)}: {value!r} {NOT_FINITE}"
            for path, value in non_finite_numbers(model)
        )
        if unstorable:
            raise InvalidTaskInput(f"invalid input for {self.type}: {unstorable}")
        return model


# pydantic accepts nan, inf and 1e400 (inf) for a float; JSON has no such numbers (pydantic
# writes them as null) and neither has DynamoDB.
NOT_FINITE = "is not a finite number (JSON and DynamoDB hold only finite ones)"


def non_finite_numbers(model: BaseModel) -> list[tuple[tuple[str | int, ...], float | Decimal]]:
    """(path, value) of each NaN or infinite number in a model's values, nested ones too."""
    found: list[tuple[tuple[str | int, ...], float | Decimal]] = []

    def walk(value: Any, path: tuple[str | int, ...]) -> None:
        if (isinstance(value, float) and not math.isfinite(value)) or (
            isinstance(value, Decimal) and not value.is_finite()
        ):
            found.append((path, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))
        elif isinstance(value, list | tuple | set | frozenset):
            for index, item in enumerate(value):
                walk(item, (*path, index))

    walk(model.model_dump(), ())
    return found


def stored_name(task_type: str) -> str:
    """The name a type is stored under: `example-task` → `EXAMPLE_TASK`."""
    return task_type.strip().upper().replace("-", "_")


def is_type_name(name: str) -> bool:
    return bool(_TYPE_RE.match(name))


class TaskRegistry:
    """Task types by name; rejects duplicates at registration and unknown types at lookup.

    `complete` says whether it holds every type the deployment runs (it was built from the
    deployment's `tasks/`), or only some (a producer's process, with the installed package
    and no `tasks/`), so that a type it lacks may still exist where the tasks run.
    """

    def __init__(
        self, definitions: list[TaskDefinition] | None = None, *, complete: bool = True
    ) -> None:
        self.complete = complete
        self._by_type: dict[str, TaskDefinition] = {}
        for definition in definitions or []:
            self.register(definition)

    def register(self, definition: TaskDefinition) -> TaskDefinition:
        if definition.type in self._by_type:
            raise RegistryError(f"task type {definition.type} is already registered")
        self._by_type[definition.type] = definition
        return definition

    def register_module(self, module: ModuleType) -> list[TaskDefinition]:
        """Register the `TASK` a task module defines (or each of its `TASKS`)."""
        found = getattr(module, "TASKS", None) or [getattr(module, "TASK", None)]
        if not all(isinstance(d, TaskDefinition) for d in found):
            raise RegistryError(f"module {module.__name__} defines no TASK = TaskDefinition(...)")
        return [self.register(d) for d in found]

    def get(self, task_type: str) -> TaskDefinition:
        """Look a type up by its stored name (EXAMPLE_TASK) or CLI name (example-task)."""
        key = stored_name(task_type)
        try:
            return self._by_type[key]
        except KeyError:
            known = ", ".join(sorted(self._by_type)) or "none"
            raise UnknownTaskType(f"unknown task type {task_type!r} (known: {known})") from None

    def __contains__(self, task_type: str) -> bool:
        return stored_name(task_type) in self._by_type

    def __iter__(self) -> Iterator[TaskDefinition]:
        return iter(sorted(self._by_type.values(), key=lambda d: d.type))

    def __len__(self) -> int:
        return len(self._by_type)
