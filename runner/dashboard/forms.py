"""A task type's input model as an HTML form, and the form's values back as task data.

The form is generated from the model's JSON schema (pydantic's `model_json_schema`):
strings, numbers, integers, booleans and enums get inputs of their own, with the
schema's bounds as the browser's; anything else (lists, maps, nested models) is a JSON
text area. The model itself then validates the data, so the form never decides what is
valid: its errors are the model's, shown beside their fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

# JSON schema string formats an <input type=...> understands.
_INPUT_TYPES = {"email": "email", "uri": "url", "date": "date", "date-time": "text"}


@dataclass(frozen=True)
class FormField:
    """One input of the form."""

    name: str  # the key in the task's data (the model's alias, if it has one)
    label: str
    kind: str  # text, number, checkbox, select, json
    required: bool
    description: str = ""
    input_type: str = "text"  # for kind text/number: the <input type>
    default: Any = None
    choices: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)  # minlength, max, step, ...

    @property
    def default_text(self) -> str:
        if self.default is None:
            return ""
        if self.kind == "json":
            return json.dumps(self.default)
        return str(self.default)


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {
            **defs.get(ref.removeprefix("#/$defs/"), {}),
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    return schema


def _without_null(schema: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`X | None` (anyOf with null) → (X, True)."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [_resolve(o, defs) for o in options if o.get("type") != "null"]
        if len(kept) == 1 and len(kept) < len(options):
            merged = {**kept[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
            return merged, True
    return _resolve(schema, defs), False


def form_fields(model: type[BaseModel]) -> list[FormField]:
    """The model's fields as form inputs, in the model's order."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    fields: list[FormField] = []
    for name, raw in schema.get("properties", {}).items():
        prop, nullable = _without_null(raw, defs)
        kind, input_type, attributes = _kind(prop)
        choices = [str(c) for c in prop.get("enum", [])]
        if choices:
            kind = "select"
        fields.append(
            FormField(
                name=name,
                label=str(prop.get("title") or name),
                kind=kind,
                required=name in required and not nullable,
                description=str(prop.get("description") or ""),
                input_type=input_type,
                default=prop.get("default"),
                choices=choices,
                attributes=attributes,
            )
        )
    return fields


def _kind(prop: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    kind = prop.get("type")
    attributes: dict[str, str] = {}
    if kind == "string":
        for key, attr in (("minLength", "minlength"), ("maxLength", "maxlength")):
            if key in prop:
                attributes[attr] = str(prop[key])
        return "text", _INPUT_TYPES.get(str(prop.get("format", "")), "text"), attributes
    if kind in ("integer", "number"):
        for key, attr in (("minimum", "min"), ("maximum", "max")):
            if key in prop:
                attributes[attr] = str(prop[key])
        attributes["step"] = "1" if kind == "integer" else "any"
        return "number", "number", attributes
    if kind == "boolean":
        return "checkbox", "checkbox", attributes
    return "json", "text", attributes


@dataclass(frozen=True)
class FormResult:
    """The form's values as task data, or what is wrong with them, by field."""

    data: dict[str, Any] | None
    errors: dict[str, str]
    values: dict[str, str]  # as typed, to fill the form in again


def read_form(model: type[BaseModel], values: dict[str, str]) -> FormResult:
    """Turn submitted values into data the model accepts (validated by the model)."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in form_fields(model):
        text = values.get(spec.name)
        if spec.kind == "checkbox":
            data[spec.name] = text is not None
            continue
        if text is None or text == "":
            continue  # absent: the model's default applies, or it says the field is required
        if spec.kind == "json":
            try:
                data[spec.name] = json.loads(text)
            except ValueError as exc:
                errors[spec.name] = f"not JSON: {exc}"
        else:
            data[spec.name] = text  # the model converts "42" for an int field, as the CLI does
    if errors:
        return FormResult(None, errors, values)
    try:
        validated = model.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            where = str(error["loc"][0]) if error["loc"] else ""
            errors.setdefault(where, str(error["msg"]))
        return FormResult(None, errors, values)
    return FormResult(validated.model_dump(mode="json", by_alias=True), {}, values)
