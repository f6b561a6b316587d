"""Values a task type's model takes, through the CLI as a shell runs it: what cannot be
stored is refused before anything is created, an aliased field keeps its value, and
`--help` shows each default as it would be typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import cli, items, ok, one_error_line
from tests.integration.test_cli_output import module_env

TYPED_MODULE = """
import enum
from typing import Literal

from pydantic import BaseModel, Field

from runner.context import TaskContext
from runner.registry import TaskDefinition


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class In(BaseModel):
    text: str = ""
    tags: list[str] = []
    meta: dict[str, float] = {}
    flag: bool = False
    ratio: float = 1.0
    maybe: float | None = None
    color: Color = Color.RED
    mode: Literal["a", "b"] = "a"
    id_: str = Field("", alias="id", description="an id of the caller's")


def run(data: In, ctx: TaskContext) -> dict[str, object]:
    return {"id": data.id_, "ratio": data.ratio}


TASK = TaskDefinition(type="TYPED_TASK", input_model=In, handler=run)
"""


@pytest.fixture
def typed_env(server_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return module_env(server_env, tmp_path, "typed_tasks", TYPED_MODULE)


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--ratio", "nan"), "--ratio"),
        (("--ratio", "inf"), "--ratio"),
        (("--ratio", "1e400"), "--ratio"),
        (("--maybe", "-inf"), "--maybe"),
        (("--meta", '{"x": 1e400}'), "--meta['x']"),
    ],
)
def test_a_number_dynamodb_cannot_store_is_refused(
    typed_env: dict[str, str], args: tuple[str, ...], flag: str
) -> None:
    # When a non-finite number is given (pydantic accepts it; JSON and DynamoDB cannot hold it)
    done = cli(typed_env, "create-task", "typed-task", *args)

    # Then nothing is created, and the one line names the flag
    said = one_error_line(done, 64)
    assert f"{flag}: " in said and "finite" in said, said
    assert items(typed_env) == []


def test_an_aliased_field_is_stored_by_its_alias_and_reaches_the_handler(
    typed_env: dict[str, str],
) -> None:
    # Given a field named id_ whose alias (its name in the data) is id
    created = ok(typed_env, "create-task", "typed-task", "--id", "abc", "--ratio", "0.5")

    # Then the task's data holds it under the alias, and the handler gets the value
    assert created["data"]["id"] == "abc" and "id_" not in created["data"]
    ran = ok(typed_env, "run-task", created["id"])
    assert ran["status"] == "DONE"
    assert ok(typed_env, "get-task", created["id"])["result"] == {"id": "abc", "ratio": 0.5}


def test_help_shows_defaults_as_typed_and_every_exit_status(typed_env: dict[str, str]) -> None:
    done = cli(typed_env, "create-task", "typed-task", "--help")
    assert done.returncode == 0, done.stderr
    shown = " ".join(done.stdout.split())
    assert '--text (text, default "")' in shown
    assert "--color (one of red, blue, default red)" in shown
    assert "--flag (true or false, default false)" in shown
    assert "--tags (JSON, default [])" in shown
    assert '--id an id of the caller\'s (text, default "")' in shown
    assert "Color." not in shown and "--id-" not in shown
    # And what stdout holds, and each exit status the CLI can end with
    for said in ("--help: this text", "after an error, nothing", "130", "141"):
        assert said in shown, said
