"""The command line's grammar, read from the commands' signatures and the task types' input
models, and checked whole before anything runs.

python-fire, which dispatches the commands, checks a command line only as it consumes it:
a misspelt flag is reported after the command has run. Here every token is accounted for
first; a command line that is not exactly right is refused (`UsageError`, exit status 64)
with one line naming the problem, and nothing runs.

The grammar: `COMMAND [VALUE...] [--flag VALUE | --flag=VALUE]...`, where a flag is a
parameter's name with dashes (`--task-id`; `--task_id` is accepted too), a bare
`--flag` sets a true/false flag, and a fixed command's required parameters may also be
given in order without their flag (`get-task ID`). `-h`/`--help` anywhere asks for help.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import AfterValidator, BaseModel, Field, ValidationError, create_model

from runner.cli_commands import (
    Command,
    Flag,
    HelpRequest,
    Invocation,
    command_model,
    dashed,
    first_paragraph,
)
from runner.cli_control import with_create_options
from runner.errors import UsageError
from runner.registry import NOT_FINITE, TaskDefinition, TaskRegistry, non_finite_numbers

HELP_FLAGS = frozenset({"-h", "--help"})
CREATE_TASK = "create-task"
# What the CLI says a task module is registered with, when a type is not found.
TASK_MODULES_HINT = (
    "task types outside tasks/ are registered with TASK_RUNNER_TASK_MODULES"
    " (the demo's: TASK_RUNNER_TASK_MODULES=runner.local.demo_tasks)"
)
# A year: EventBridge Scheduler's one-time schedules reach that far, and a delay
# longer than that is more likely a unit mistake.
MAX_DELAY_SECONDS = 366 * 86400


def _aware_time(value: str | None) -> str | None:
    from runner.delays import parse_time

    if value is not None:
        parse_time(value)  # ValueError: not ISO-8601, or no Z/offset
    return value


# create-task's own flags, beside the type's input fields (whose names the registry
# keeps free of these: runner.registry.RESERVED_FIELDS).
CREATE_TASK_OPTIONS: dict[str, Any] = {
    "delay": (
        typing.Annotated[
            float | None,
            Field(
                ge=0,
                le=MAX_DELAY_SECONDS,
                allow_inf_nan=False,
                description="run it this many seconds from now (SCHEDULED until then)",
            ),
        ],
        None,
    ),
    "run_at": (
        typing.Annotated[
            str | None,
            AfterValidator(_aware_time),
            Field(description="run it then: ISO-8601 with Z or an offset (SCHEDULED until then)"),
        ],
        None,
    ),
}


def create_task_model(definition: TaskDefinition) -> type[BaseModel]:
    """The flags of `create-task TYPE`: the type's input model and create-task's own."""
    model: type[BaseModel] = create_model(
        f"{definition.input_model.__name__}_create_task",
        __base__=definition.input_model,
        **CREATE_TASK_OPTIONS,
    )
    return model


def _suggestion(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class CommandTable:
    """Every command: the fixed ones from a class's public methods, one create-task per type."""

    def __init__(self, commands_class: type, registry: TaskRegistry) -> None:
        self.registry = registry
        self.description = first_paragraph(commands_class.__doc__)
        self.fixed: dict[str, Command] = {}
        for name, member in vars(commands_class).items():
            if name.startswith("_") or not callable(member):
                continue
            model = command_model(member)
            self.fixed[dashed(name)] = Command(
                words=(dashed(name),),
                description=first_paragraph(member.__doc__),
                model=model,
                fire_path=(name,),
                positional=tuple(n for n, f in model.model_fields.items() if f.is_required()),
            )
        self.create: dict[str, Command] = {
            d.cli_name: Command(
                words=(CREATE_TASK, d.cli_name),
                description=d.description or d.type,
                model=with_create_options(create_task_model(d)),
                fire_path=("create_task", d.cli_name.replace("-", "_")),
                definition=d,
            )
            for d in registry
        }

    @property
    def command_names(self) -> list[str]:
        return sorted([CREATE_TASK, *self.fixed])

    def commands(self) -> Iterator[Command]:
        yield from self.fixed.values()
        yield from self.create.values()

    # --- parsing -----------------------------------------------------------------------

    def parse(self, argv: Sequence[str]) -> Invocation | HelpRequest:
        """Check a whole command line; raises UsageError (one line) if it is not right."""
        wants_help = any(token in HELP_FLAGS for token in argv)
        tokens = [token for token in argv if token not in HELP_FLAGS]
        if not tokens or tokens[0].startswith("-"):
            if wants_help and not tokens:
                return HelpRequest(())
            first = f"{tokens[0]} before a command" if tokens else "no command"
            raise UsageError(f"{first}; commands: {', '.join(self.command_names)}")
        command, rest = self._resolve(tokens, wants_help)
        if isinstance(command, HelpRequest):
            return command
        if wants_help:
            return HelpRequest(command.words, command)
        return Invocation(command, self._values(command, rest))

    def _resolve(self, tokens: list[str], wants_help: bool) -> tuple[Any, list[str]]:
        word = dashed(tokens[0])
        if word in self.fixed:
            return self.fixed[word], tokens[1:]
        if word != CREATE_TASK:
            raise UsageError(
                f"unknown command {tokens[0]!r}{_suggestion(word, self.command_names)};"
                f" commands: {', '.join(self.command_names)}"
            )
        types_list = ", ".join(self.create) or "none"
        if len(tokens) < 2 or tokens[1].startswith("-"):
            if wants_help:
                return HelpRequest((CREATE_TASK,)), []
            raise UsageError(f"create-task needs a task type: {types_list}")
        given = tokens[1]
        if given in self.registry:
            return self.create[self.registry.get(given).cli_name], tokens[2:]
        suggestion = _suggestion(dashed(given.lower()), list(self.create))
        hint = "" if suggestion else f"; {TASK_MODULES_HINT}"
        raise UsageError(
            f"create-task: unknown task type {given!r}{suggestion}; known: {types_list}{hint}"
        )

    def _values(self, command: Command, tokens: list[str]) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        positional = list(command.positional)
        index = 0
        while index < len(tokens):
            token = tokens[index]
            index += 1
            if token.startswith("--") and len(token) > 2:
                name, eq, value = token[2:].partition("=")
                found = command.flag(name)
                if found is None:
                    raise UsageError(self._unknown_flag(command, f"--{name}"))
                if found.name in raw:
                    raise UsageError(f"{command.name}: {found.option} is given twice")
                if not eq:
                    if found.is_switch:
                        value = "true"
                    elif index < len(tokens) and not tokens[index].startswith("--"):
                        value = tokens[index]
                        index += 1
                    else:
                        raise UsageError(
                            f"{command.name}: {found.option} needs a value ({found.value_kind})"
                        )
                raw[found.name] = self._decoded(command, found, value)
            elif token.startswith("-") and not _is_number(token):
                raise UsageError(self._unknown_flag(command, token))
            else:
                while positional and positional[0] in raw:
                    positional.pop(0)
                if not positional:
                    raise UsageError(
                        f"{command.name}: unexpected argument {token!r}"
                        + (f" (flags: {_options(command)})" if command.flags else "")
                    )
                target = command.flag(positional.pop(0))
                assert target is not None
                raw[target.name] = self._decoded(command, target, token)
        missing = [f.option for f in command.flags if f.required and f.name not in raw]
        if missing:
            described = [
                f"{f.option} ({f.info.description or f.value_kind})"
                for f in command.flags
                if f.option in missing
            ]
            raise UsageError(f"{command.name}: missing {' and '.join(described)}")
        return self._validated(command, raw)

    def _decoded(self, command: Command, flag: Flag, value: str) -> Any:
        try:
            return flag.decode(value)
        except UsageError as exc:
            raise UsageError(f"{command.name}: {exc}") from None

    def _validated(self, command: Command, raw: dict[str, Any]) -> dict[str, Any]:
        if command.definition is not None:
            keys = {f.name: f.info.alias or f.name for f in command.flags}
            try:
                model = command.model.model_validate({keys[k]: v for k, v in raw.items()})
            except ValidationError as exc:
                raise UsageError(f"{command.name}: {describe_problems(exc)}") from None
            unstorable = "; ".join(
                f"{_flag_path(command, path)}: {value!r} {NOT_FINITE}"
                for path, value in non_finite_numbers(model)
            )
            if unstorable:
                raise UsageError(f"{command.name}: {unstorable}")
            # The task's own model validates again in the client; it gets the text as typed.
            return raw
        try:
            checked = command.model.model_validate(raw)
        except ValidationError as exc:
            raise UsageError(f"{command.name}: {describe_problems(exc)}") from None
        values: dict[str, Any] = checked.model_dump()
        return values

    def _unknown_flag(self, command: Command, given: str) -> str:
        options = [f.option for f in command.flags]
        suggestion = _suggestion(given if given.startswith("--") else f"-{given}", options)
        if not suggestion and len(given) == 2:  # -m for --message
            starting = [o for o in options if o[2:3] == given[1:2]]
            suggestion = f" (did you mean {starting[0]}?)" if len(starting) == 1 else ""
        listed = f"; flags: {_options(command)}" if options else "; it takes no flags"
        return f"{command.name}: unknown flag {given}{suggestion}{listed}"


def _flag_path(command: Command, path: tuple[str | int, ...]) -> str:
    """`--meta['x']`: a value's place in a model, as the command line gave it."""
    flag = command.flag(str(path[0]))
    return (flag.option if flag else str(path[0])) + "".join(f"[{part!r}]" for part in path[1:])


def _options(command: Command) -> str:
    return ", ".join(f.option for f in command.flags)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def describe_problems(exc: ValidationError) -> str:
    """pydantic's errors as flags: `--limit: input should be ... (got '1e3')`."""
    problems = []
    for error in exc.errors():
        location = error["loc"]
        flag = f"--{dashed(str(location[0]))}" if location else "input"
        nested = "".join(f"[{part!r}]" for part in location[1:])
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        given = error.get("input")
        shown = ""
        if isinstance(given, str | int | float) and repr(given) not in message:
            shown = f" (got {given!r})"
        problems.append(f"{flag}{nested}: {message}{shown}")
    return "; ".join(problems)
