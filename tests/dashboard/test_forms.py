"""A task type's input model as a form, and the form's values back as data its model
accepts: the form never decides what is valid, the model does."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, EmailStr, Field

from runner.dashboard.forms import form_fields, read_form


class Size(StrEnum):
    SMALL = "small"
    LARGE = "large"


class Dimensions(BaseModel):
    width: int
    height: int


class Everything(BaseModel):
    key: str = Field(min_length=1, max_length=20, description="S3 key")
    width: int = Field(gt=0, le=4096)
    ratio: float = 1.5
    email: EmailStr
    size: Size = Size.SMALL
    crop: bool = False
    tags: list[str] = []
    box: Dimensions | None = None
    note: str | None = None
    renamed: str = Field(default="x", alias="renamedField")


def test_each_field_gets_the_input_its_schema_describes() -> None:
    fields = {f.name: f for f in form_fields(Everything)}

    assert list(fields) == [
        "key", "width", "ratio", "email", "size", "crop", "tags", "box", "note", "renamedField",
    ]  # fmt: skip
    assert (fields["key"].kind, fields["key"].required) == ("text", True)
    assert fields["key"].attributes == {"minlength": "1", "maxlength": "20"}
    assert fields["key"].description == "S3 key"
    assert fields["width"].kind == "number" and fields["width"].attributes["step"] == "1"
    assert fields["width"].attributes["max"] == "4096"
    assert fields["ratio"].attributes["step"] == "any" and fields["ratio"].default == 1.5
    assert fields["email"].input_type == "email"
    assert (fields["size"].kind, fields["size"].choices) == ("select", ["small", "large"])
    assert fields["crop"].kind == "checkbox"
    assert fields["tags"].kind == "json" and fields["box"].kind == "json"
    assert (fields["note"].kind, fields["note"].required) == ("text", False)


def test_values_become_the_data_the_model_accepts() -> None:
    result = read_form(
        Everything,
        {
            "key": "a.png",
            "width": "200",
            "email": "ops@example.org",
            "size": "large",
            "crop": "true",
            "tags": '["a", "b"]',
            "box": '{"width": 2, "height": 3}',
            "note": "",
            "renamedField": "y",
        },
    )
    assert result.errors == {}
    assert result.data == {
        "key": "a.png",
        "width": 200,
        "ratio": 1.5,
        "email": "ops@example.org",
        "size": "large",
        "crop": True,
        "tags": ["a", "b"],
        "box": {"width": 2, "height": 3},
        "note": None,
        "renamedField": "y",
    }


def test_what_the_model_refuses_comes_back_by_field_with_the_values_as_typed() -> None:
    typed = {"key": "", "width": "0", "email": "nope", "tags": "[oops"}
    result = read_form(Everything, typed)
    assert result.data is None
    assert set(result.errors) == {"tags"}  # JSON first: nothing is validated half-read
    result = read_form(Everything, {**typed, "tags": "[]"})
    assert result.data is None
    assert set(result.errors) == {"key", "width", "email"}
    assert result.values["width"] == "0"


def test_a_string_field_keeps_what_was_typed() -> None:
    result = read_form(Everything, {"key": "42", "width": "1", "email": "a@example.org"})
    assert result.data is not None and result.data["key"] == "42"


def test_a_field_named_like_the_forms_own_does_not_collide(routed_app: Any) -> None:
    from pydantic import BaseModel

    from runner.registry import TaskDefinition
    from tests.dashboard.conftest import serve

    class Clashing(BaseModel):
        csrf: str
        type: str

    routed_app.registry.register(
        TaskDefinition(type="CLASHING_TASK", input_model=Clashing, handler=lambda data, ctx: None)
    )
    served = serve(routed_app)
    browser = served.browser()
    form = browser.get("/new?type=CLASHING_TASK").text
    assert 'name="f.csrf"' in form and 'name="f.type"' in form
    reply = browser.post(
        "/new/confirm",
        {"__type": "CLASHING_TASK", "f.csrf": "mine", "f.type": "also mine", "csrf": served.csrf},
    )
    assert reply.status == 200, reply.text
    assert '"csrf": "mine"' in reply.page and '"type": "also mine"' in reply.page
