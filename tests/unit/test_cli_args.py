from __future__ import annotations

from runner.cli import quote_string_flags
from tasks import build_registry


def test_string_flags_are_quoted_so_fire_does_not_parse_them() -> None:
    registry = build_registry()
    argv = ["create-task", "example-task", "--message", "hello, world"]
    assert quote_string_flags(argv, registry)[-1] == "'hello, world'"
    assert quote_string_flags(["run-task", "--task-id", "123"], registry) == [
        "run-task",
        "--task-id",
        "'123'",
    ]
    assert quote_string_flags(["get-task", "--task-id=007"], registry) == [
        "get-task",
        "--task-id='007'",
    ]
    # Numbers stay numbers where the command wants one.
    assert quote_string_flags(["list-tasks", "--limit", "5"], registry) == [
        "list-tasks",
        "--limit",
        "5",
    ]
