"""`--help` text, from the same command table the command line is checked against: the
names as they are typed (dashed), and each flag's value in words."""

from __future__ import annotations

import enum
import json
import textwrap

from pydantic import BaseModel

from runner.cli_args import CREATE_TASK, CommandTable
from runner.cli_commands import Command, Flag, HelpRequest

PROG = "task-runner"
WIDTH = 100
OUTPUT_NOTE = (
    "Output: one JSON document on stdout (--help: this text; after an error, nothing); logs,"
    " what tasks write, and errors on stderr. Exit status: 0 done (run-task: the task ran,"
    " whatever its outcome, which the JSON gives), 1 the command failed, 64 the command line"
    " was refused (nothing ran), 4 the task was not found, 130 interrupted (Ctrl-C), 141"
    " stdout closed early (| head); with --wait: 0 DONE, 2 FAILED, 3 CANCELLED, 124 timed out."
)


def _rows(rows: list[tuple[str, str]]) -> list[str]:
    width = min(28, max((len(left) for left, _ in rows), default=0))
    indent = " " * (width + 4)
    lines = []
    for left, right in rows:
        wrapped = textwrap.wrap(right, WIDTH - len(indent)) or [""]
        if len(left) > width:
            lines.append(f"  {left}")
        else:
            lines.append(f"  {left:{width}}  {wrapped.pop(0)}")
        lines += [indent + part for part in wrapped]
    return lines


def _paragraph(text: str) -> str:
    return textwrap.fill(text, WIDTH)


def _flag_usage(flag: Flag) -> str:
    shown = flag.option if flag.is_switch else f"{flag.option} {flag.typed_name.upper()}"
    return shown if flag.required else f"[{shown}]"


def _default(flag: Flag) -> str:
    """A flag's default as it would be typed: `red` for Color.RED, `""`, `false`, `[]`."""
    value = flag.info.default
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, BaseModel):
        return value.model_dump_json(by_alias=True)
    if isinstance(value, bool) or flag.is_json:
        return json.dumps(value, default=str)
    if isinstance(value, str) and (not value or value != " ".join(value.split())):
        return json.dumps(value)  # empty, or spaces that would not show
    return str(value)


def _flag_text(flag: Flag) -> str:
    notes = [flag.value_kind]
    if flag.required:
        notes.append("required")
    elif flag.info.default is not None:
        notes.append(f"default {_default(flag)}")
    described = f"{flag.info.description} " if flag.info.description else ""
    return f"{described}({', '.join(notes)})"


def command_help(command: Command) -> str:
    usage = " ".join([PROG, command.name, *(_flag_usage(f) for f in command.flags)])
    lines = [f"usage: {usage}", "", _paragraph(command.description), ""]
    if command.flags:
        lines += ["flags:", *_rows([(f.option, _flag_text(f)) for f in command.flags])]
    if command.positional:
        names = " ".join(name.upper() for name in command.positional)
        lines += ["", _paragraph(f"or, without the flag: {PROG} {command.name} {names}")]
    lines += ["", _paragraph(OUTPUT_NOTE)]
    return "\n".join(lines) + "\n"


def create_task_help(table: CommandTable) -> str:
    rows = [(c.words[1], c.description) for c in table.create.values()]
    lines = [
        f"usage: {PROG} create-task TYPE --FLAG VALUE ...",
        "",
        "Create a PENDING task of a type (the stored name, EXAMPLE_TASK, works too).",
        "",
        "types:",
        *_rows(rows),
        "",
        f"{PROG} create-task TYPE --help shows a type's flags.",
    ]
    return "\n".join(lines) + "\n"


def overview(table: CommandTable) -> str:
    rows = [(f"{CREATE_TASK} TYPE", "Create a PENDING task of a type (see create-task --help).")]
    rows += [(name, table.fixed[name].description) for name in sorted(table.fixed)]
    lines = [
        f"usage: {PROG} COMMAND [FLAGS]",
        "",
        _paragraph(table.description),
        "",
        "commands:",
        *_rows(rows),
        "",
        _paragraph(f"{PROG} COMMAND --help shows a command's flags. {OUTPUT_NOTE}"),
    ]
    return "\n".join(lines) + "\n"


def help_text(table: CommandTable, request: HelpRequest) -> str:
    if request.command is not None:
        return command_help(request.command)
    if request.words == (CREATE_TASK,):
        return create_task_help(table)
    return overview(table)
