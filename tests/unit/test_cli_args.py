"""The command line's grammar: checked whole, from the signatures and the input models."""

from __future__ import annotations

import ast

import pytest

from runner.cli import Cli
from runner.cli_args import CommandTable
from runner.cli_commands import HelpRequest, Invocation
from runner.errors import UsageError
from runner.local import demo_tasks
from runner.registry import TaskRegistry
from tasks import example, export_db


@pytest.fixture(scope="module")
def table() -> CommandTable:
    # The shipped example modules themselves, registered or not in tasks/__init__.py (a
    # deployment may replace them), and the demo's.
    return CommandTable(Cli, TaskRegistry([example.TASK, export_db.TASK, *demo_tasks.TASKS]))


def parsed(table: CommandTable, *argv: str) -> Invocation:
    result = table.parse(argv)
    assert isinstance(result, Invocation)
    return result


def refused(table: CommandTable, *argv: str) -> str:
    with pytest.raises(UsageError) as caught:
        table.parse(argv)
    message = str(caught.value)
    assert "\n" not in message
    return message


def fire_values(invocation: Invocation) -> dict[str, object]:
    """What python-fire will read back from the arguments it is given."""
    values = {}
    for arg in invocation.fire_args()[len(invocation.command.fire_path) :]:
        name, _, literal = arg[2:].partition("=")
        values[name] = ast.literal_eval(literal)
    return values


def test_values_reach_the_task_model_as_typed(table: CommandTable) -> None:
    # python-fire alone would make `42` an int and `hello, world` a tuple
    for typed in ("42", "hello, world", "007", "-5", 'it\'s "quoted"\nand two lines'):
        invocation = parsed(table, "create-task", "example-task", "--message", typed)
        assert invocation.command.fire_path == ("create_task", "example_task")
        assert fire_values(invocation) == {"message": typed}
    assert fire_values(parsed(table, "create-task", "example-task", "--message=a=b")) == {
        "message": "a=b"
    }


def test_fixed_commands_get_checked_values_with_their_defaults(table: CommandTable) -> None:
    listed = parsed(table, "list-tasks", "--status", "failed", "--limit", "5")
    assert fire_values(listed) == {"status": "FAILED", "limit": 5, "cursor": None}
    assert fire_values(parsed(table, "get-task", "--task_id", "123")) == {
        "task_id": "123",
        "wait": None,
        "follow": False,
        "payloads": False,
    }
    assert fire_values(parsed(table, "get-task", "123", "--payloads")) == {
        "task_id": "123",
        "wait": None,
        "follow": False,
        "payloads": True,
    }
    assert fire_values(parsed(table, "retry-task", "123", "--reset-steps")) == {
        "task_id": "123",
        "reset_steps": True,
    }
    # A required parameter may be given without its flag, as python-fire allows
    assert fire_values(parsed(table, "run_task", "abc")) == {"task_id": "abc"}


def test_the_stored_type_name_and_underscores_work_too(table: CommandTable) -> None:
    for name in ("EXAMPLE_TASK", "example_task", "example-task"):
        invocation = parsed(table, "create-task", name, "--message", "x")
        assert invocation.command.words == ("create-task", "example-task")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("create-task", "example-task", "--mesage", "hi"), "--mesage (did you mean --message?)"),
        (("create-task", "example-task", "--message", "hi", "--extra", "1"), "--extra"),
        (("list-tasks", "--stauts", "FAILED"), "--stauts (did you mean --status?)"),
        (("get-task", "--taskid", "x"), "--taskid (did you mean --task-id?)"),
        (("sweep", "--bogus"), "unknown flag --bogus; it takes no flags"),
        (("list-tasks", "-s", "FAILED"), "-s (did you mean --status?)"),
        (("get-tsk", "--task-id", "x"), "unknown command 'get-tsk' (did you mean get-task?)"),
        (("create-task", "example-taks"), "'example-taks' (did you mean example-task?)"),
        (("create-task", "no-such"), "TASK_RUNNER_TASK_MODULES"),
        (("create-task",), "create-task needs a task type: "),
        (("create-task", "example-task"), "missing --message (Text to log)"),
        (("get-task",), "missing --task-id"),
        (("get-task", "a", "b"), "unexpected argument 'b'"),
        (("get-task", "--task-id", "a", "--task-id", "b"), "--task-id is given twice"),
        (("list-tasks", "--limit"), "--limit needs a value (a whole number)"),
        (("list-tasks", "--limit", "--status", "DONE"), "--limit needs a value"),
        (("list-tasks", "--limit", "1e3"), "--limit: input should be a valid integer"),
        (("list-tasks", "--limit", "0"), "--limit: input should be greater than or equal to 1"),
        (("list-tasks", "--status", "BOGUS"), "use one of PENDING, PROCESSING, DONE, FAILED"),
        (("list-tasks", "--cursor", "%%%"), "invalid cursor"),
        (("get-task", "--task-id", ""), "--task-id: string should have at least 1 character"),
        (("create-task", "flaky-task", "--fail-times", "x"), "--fail-times: input should be"),
        (
            (),
            "no command; commands: cancel-task, create-task, export-link, get-task, history,"
            " list-schedules, list-tasks",
        ),
    ],
)
def test_a_wrong_command_line_is_refused_in_one_line(
    table: CommandTable, argv: tuple[str, ...], expected: str
) -> None:
    assert expected in refused(table, *argv)


def test_help_anywhere_asks_for_the_deepest_command_named(table: CommandTable) -> None:
    assert table.parse(["--help"]) == HelpRequest(())
    assert table.parse(["create-task", "-h"]) == HelpRequest(("create-task",))
    request = table.parse(["create-task", "flaky-task", "--fail-times", "--help"])
    assert isinstance(request, HelpRequest) and request.words == ("create-task", "flaky-task")
    assert isinstance(table.parse(["list-tasks", "--bogus", "--help"]), HelpRequest)
    # A value that merely looks like the help flag is a value
    assert fire_values(parsed(table, "create-task", "example-task", "--message=--help")) == {
        "message": "--help"
    }


def test_json_fields_take_json_and_a_bare_switch_is_true() -> None:
    from pydantic import BaseModel

    from runner.registry import TaskDefinition

    class Input(BaseModel):
        sizes: list[int]
        dry_run: bool = False

    registry = TaskRegistry(
        [TaskDefinition(type="BATCH_TASK", input_model=Input, handler=lambda d, c: None)]
    )
    table = CommandTable(Cli, registry)
    invocation = parsed(table, "create-task", "batch-task", "--sizes", "[1, 2]", "--dry-run")
    assert fire_values(invocation) == {"sizes": [1, 2], "dry_run": "true"}
    assert fire_values(
        parsed(table, "create-task", "batch-task", "--sizes=[]", "--dry-run=no")
    ) == {
        "sizes": [],
        "dry_run": "no",
    }
    assert "--sizes takes JSON, not '1,2'" in refused(
        table, "create-task", "batch-task", "--sizes", "1,2"
    )
    assert "--dry-run: input should be a valid boolean" in refused(
        table, "create-task", "batch-task", "--sizes", "[]", "--dry-run=maybe"
    )
