"""A command as the command line knows it: its words, its flags (read from its signature or
a task type's input model) and a checked invocation of it. runner.cli_args builds the table
of commands from these and checks a command line against it; runner.cli_help renders them.
"""

from __future__ import annotations

import enum
import inspect
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, create_model
from pydantic.fields import FieldInfo

from runner.errors import UsageError
from runner.registry import TaskDefinition

_CONTAINERS = (list, tuple, set, frozenset, dict)


def dashed(name: str) -> str:
    return name.replace("_", "-")


def _unwrap(annotation: Any) -> Any:
    """`X | None` → X (pydantic has already taken Annotated's metadata off)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


@dataclass(frozen=True)
class Flag:
    """One parameter of a command, as the command line spells it."""

    name: str  # the parameter's (Python) name: task_id
    info: FieldInfo

    @property
    def typed_name(self) -> str:
        """The name in the task's data: the field's alias if it has one (`id_` → `id`)."""
        return self.info.alias or self.name

    @property
    def option(self) -> str:
        return f"--{dashed(self.typed_name)}"

    @property
    def required(self) -> bool:
        return self.info.is_required()

    @property
    def kind(self) -> Any:
        return _unwrap(self.info.annotation)

    @property
    def is_switch(self) -> bool:
        """A true/false flag: `--flag` alone means true."""
        return self.kind is bool

    @property
    def is_json(self) -> bool:
        """Lists, maps and nested models are typed as JSON on the command line."""
        kind = self.kind
        origin = typing.get_origin(kind) or kind
        return isinstance(origin, type) and issubclass(origin, (*_CONTAINERS, BaseModel))

    @property
    def value_kind(self) -> str:
        """The flag's value in words, for help."""
        kind = self.kind
        if kind is bool:
            return "true or false"
        if kind is int:
            return "a whole number"
        if kind is float:
            return "a number"
        if self.is_json:
            return "JSON"
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return "one of " + ", ".join(str(m.value) for m in kind)
        if typing.get_origin(kind) is typing.Literal:
            return "one of " + ", ".join(str(v) for v in typing.get_args(kind))
        return "text"

    def decode(self, raw: str) -> Any:
        """The value the model is given: the text as typed, or decoded JSON."""
        if not self.is_json:
            return raw
        try:
            return json.loads(raw)
        except ValueError:
            raise UsageError(f"{self.option} takes JSON, not {raw!r}") from None


@dataclass(frozen=True)
class Command:
    """A command the CLI runs: its words, what it does, and its flags' model."""

    words: tuple[str, ...]  # ("create-task", "example-task") or ("list-tasks",)
    description: str
    model: type[BaseModel]
    # The attribute path python-fire follows to the command.
    fire_path: tuple[str, ...]
    # Required parameters a user may give without their flag, in this order.
    positional: tuple[str, ...] = ()
    # For create-task: the task type whose input model the flags come from.
    definition: TaskDefinition | None = None
    flags: tuple[Flag, ...] = field(init=False)

    def __post_init__(self) -> None:
        flags = tuple(Flag(name, info) for name, info in self.model.model_fields.items())
        object.__setattr__(self, "flags", flags)

    @property
    def name(self) -> str:
        return " ".join(self.words)

    def flag(self, name: str) -> Flag | None:
        """The flag typed as `--name`: by its alias, or by its parameter's name."""
        wanted = name.replace("-", "_")
        return next(
            (f for f in self.flags if wanted in (f.name, f.typed_name.replace("-", "_"))), None
        )


@dataclass(frozen=True)
class Invocation:
    """A checked command line: the command, and its values as the command will get them."""

    command: Command
    values: dict[str, Any]

    def fire_args(self) -> list[str]:
        """The command line for python-fire: every value a Python literal it reads back."""
        return [
            *self.command.fire_path,
            *(f"--{name}={value!r}" for name, value in self.values.items()),
        ]


@dataclass(frozen=True)
class HelpRequest:
    """`--help`: for the whole CLI (no words), create-task's types, or one command."""

    words: tuple[str, ...]
    command: Command | None = None


def command_model(method: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model of a method's keyword parameters (annotations, defaults, Field)."""
    hints = typing.get_type_hints(method, include_extras=True)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(method).parameters.items():
        if name == "self":
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (hints[name], default)
    model: type[BaseModel] = create_model(
        f"{method.__name__}_flags", __doc__=method.__doc__, **fields
    )
    return model


def first_paragraph(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())
