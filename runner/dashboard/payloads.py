"""How a task's payloads (input, result, a step's result) appear on its page: inline when
small, else a link to `/task/payload`, which serves the whole value; hidden with
`--redact-data`.

Payloads stored outside the item (a reference to an object in the payload bucket) are
always linked: the page never fetches them to render; `/task/payload` reads the object
(with the dashboard's credentials) and serves the whole value.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

# Above this many characters of JSON a payload is linked rather than put in the page.
INLINE_PAYLOAD_CHARS = 16 * 1024
# A field the payload endpoint serves: a top-level attribute, or `steps.<name>`.
PAYLOAD_FIELDS = ("data", "result")


@dataclass(frozen=True)
class PayloadView:
    label: str
    size: int  # bytes of its JSON
    text: str = ""  # the JSON, when inline
    url: str = ""  # where the whole value is, when linked
    hidden: bool = False

    @property
    def linked(self) -> bool:
        return bool(self.url)

    @property
    def inline_open(self) -> bool:
        """Whether a collapsible block holding it starts open: small ones do."""
        return not self.hidden and not self.linked and self.size <= 2048


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def payload_view(task_id: str, field: str, value: Any, *, label: str, redact: bool) -> PayloadView:
    text = to_json(value)
    size = len(text.encode())
    if redact:
        return PayloadView(label, size, hidden=True)
    if is_reference(value) or len(text) > INLINE_PAYLOAD_CHARS:
        return PayloadView(label, size, url=payload_url(task_id, field))
    return PayloadView(label, size, text=text)


def payload_url(task_id: str, field: str) -> str:
    return "/task/payload?" + urlencode({"id": task_id, "field": field})


def is_reference(value: Any) -> bool:
    """A payload kept outside the item (large payloads in S3), by the runner's own test
    once it has one (`runner.payloads.is_reference`)."""
    test = _reference_test()
    return bool(test(value)) if test is not None else False


@functools.cache
def _reference_test() -> Callable[[Any], Any] | None:
    try:
        payloads = importlib.import_module("runner.payloads")
    except ImportError:
        return None
    test = getattr(payloads, "is_reference", None)
    return test if callable(test) else None


def field_value(item: dict[str, Any], field: str) -> Any:
    """The value `field` names in a task item; KeyError if it has none."""
    if field in PAYLOAD_FIELDS:
        return item[field]
    if field.startswith("steps."):
        steps = item["steps"]
        name = field.removeprefix("steps.")
        if isinstance(steps, dict):
            record = steps[name]
        else:
            record = next(s for s in steps if isinstance(s, dict) and s.get("name") == name)
        return record.get("result") if isinstance(record, dict) else record
    raise KeyError(field)
