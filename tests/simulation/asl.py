"""Amazon States Language, JSONPath flavour, as Step Functions documents it: paths,
payload templates (`"key.$"`), intrinsic functions, Choice rules, error matching and
Retry delays. Pure functions; `tests.simulation.stepfunctions` runs executions with them.

What is not here raises `AslUnsupported`, so a definition that starts using it fails
the simulation loudly instead of being run wrongly.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
from collections.abc import Callable, Mapping
from typing import Any


class AslUnsupported(Exception):
    """The definition uses a part of ASL the simulation does not interpret."""


class StatesError(Exception):
    """An error as Step Functions names it (`States.TaskFailed`, `Lambda.Unknown`, ...)."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


# --- paths ---------------------------------------------------------------------------

_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\['([^']*)'\]|\[(\d+)\]")


def _steps(path: str) -> list[str | int]:
    body = path[2:] if path.startswith("$$") else path[1:]
    steps: list[str | int] = []
    position = 0
    while position < len(body):
        match = _TOKEN.match(body, position)
        if not match:
            raise AslUnsupported(f"path {path!r}")
        name, quoted, index = match.groups()
        steps.append(int(index) if index is not None else (name if name is not None else quoted))
        position = match.end()
    return steps


def get_path(path: str, data: Any, context: Mapping[str, Any]) -> Any:
    """The value at a path (`$.a.b`, `$['a']`, `$.a[0]`, `$$.State.EnteredTime`)."""
    node: Any = context if path.startswith("$$") else data
    if not path.startswith("$"):
        raise AslUnsupported(f"path {path!r}")
    for step in _steps(path):
        in_list = isinstance(step, int) and isinstance(node, list) and step < len(node)
        in_map = isinstance(step, str) and isinstance(node, dict) and step in node
        if in_list or in_map:
            node = node[step]
        else:
            raise StatesError("States.Runtime", f"the path {path!r} matches nothing")
    return node


def has_path(path: str, data: Any, context: Mapping[str, Any]) -> bool:
    try:
        get_path(path, data, context)
    except StatesError:
        return False
    return True


def set_path(data: Any, path: str | None, value: Any) -> Any:
    """ResultPath: `value` placed into (a copy of) `data`; `$` replaces, null discards."""
    if path is None:
        return data
    if path == "$":
        return value
    steps = _steps(path)
    result = copy.deepcopy(data) if isinstance(data, dict) else {}
    node = result
    for step in steps[:-1]:
        if not isinstance(step, str):
            raise AslUnsupported(f"ResultPath {path!r}")
        child = node.get(step)
        if not isinstance(child, dict):
            child = {}
            node[step] = child
        node = child
    last = steps[-1]
    if not isinstance(last, str):
        raise AslUnsupported(f"ResultPath {path!r}")
    node[last] = value
    return result


def select(path: Any, data: Any, context: Mapping[str, Any]) -> Any:
    """InputPath/OutputPath: `$` by default, null gives {}."""
    if path == "$":
        return data
    if path is None:
        return {}
    return get_path(str(path), data, context)


# --- payload templates and intrinsic functions -------------------------------------------


def apply_template(template: Any, data: Any, context: Mapping[str, Any]) -> Any:
    """Parameters / ResultSelector: keys ending in `.$` take a path or an intrinsic."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = evaluate(str(value), data, context)
            else:
                out[key] = apply_template(value, data, context)
        return out
    if isinstance(template, list):
        return [apply_template(v, data, context) for v in template]
    return template


def evaluate(expression: str, data: Any, context: Mapping[str, Any]) -> Any:
    expression = expression.strip()
    if expression.startswith("$"):
        return get_path(expression, data, context)
    if expression.startswith("States."):
        value, rest = _call(expression, 0, data, context)
        if expression[rest:].strip():
            raise AslUnsupported(f"intrinsic {expression!r}")
        return value
    raise AslUnsupported(f"payload expression {expression!r}")


def _call(text: str, at: int, data: Any, context: Mapping[str, Any]) -> tuple[Any, int]:
    match = re.compile(r"States\.([A-Za-z0-9]+)\(").match(text, at)
    if not match:
        raise AslUnsupported(f"intrinsic {text!r}")
    name, position = match.group(1), match.end()
    args: list[Any] = []
    while True:
        while position < len(text) and text[position] in " ,":
            position += 1
        if position < len(text) and text[position] == ")":
            position += 1
            break
        value, position = _argument(text, position, data, context)
        args.append(value)
    function = _INTRINSICS.get(name)
    if function is None:
        raise AslUnsupported(f"intrinsic States.{name}")
    return function(*args), position


def _argument(text: str, at: int, data: Any, context: Mapping[str, Any]) -> tuple[Any, int]:
    if text.startswith("States.", at):
        return _call(text, at, data, context)
    if text[at] == "'":
        chars, position = [], at + 1
        while text[position] != "'":
            if text[position] == "\\":
                position += 1
            chars.append(text[position])
            position += 1
        return "".join(chars), position + 1
    end = at
    depth = 0
    while end < len(text) and (depth or text[end] not in ",)"):
        depth += {"[": 1, "]": -1}.get(text[end], 0)
        end += 1
    token = text[at:end].strip()
    if token.startswith("$"):
        return get_path(token, data, context), end
    return json.loads(token), end


def _format(template: str, *args: Any) -> str:
    parts = template.split("{}")
    if len(parts) != len(args) + 1:
        raise StatesError("States.IntrinsicFailure", "States.Format: wrong number of arguments")
    out = parts[0]
    for arg, part in zip(args, parts[1:], strict=True):
        out += _text(arg) + part
    return out


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


_INTRINSICS: dict[str, Callable[..., Any]] = {
    "Format": _format,
    "StringToJson": json.loads,
    "JsonToString": lambda v: json.dumps(v, separators=(",", ":")),
    "Array": lambda *v: list(v),
    "ArrayLength": len,
    "ArrayGetItem": lambda a, i: a[int(i)],
    "ArrayContains": lambda a, v: v in a,
    "MathAdd": lambda a, b: a + b,
    "StringSplit": lambda s, d: [p for p in re.split("[" + re.escape(d) + "]", s) if p],
}


# --- Choice ------------------------------------------------------------------------------

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "GreaterThan": lambda a, b: a > b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThanEquals": lambda a, b: a >= b,
}
_KINDS: dict[str, Callable[[Any], bool]] = {
    "String": lambda v: isinstance(v, str),
    "Numeric": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "Boolean": lambda v: isinstance(v, bool),
    "Timestamp": lambda v: isinstance(v, str),
}


def rule_matches(rule: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> bool:
    """One Choice rule (And/Or/Not, the comparison operators, Is* tests)."""
    if "And" in rule:
        return all(rule_matches(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(rule_matches(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not rule_matches(rule["Not"], data, context)
    variable = rule.get("Variable")
    if not isinstance(variable, str):
        raise AslUnsupported(f"Choice rule {rule!r}")
    present = has_path(variable, data, context)
    for operator, operand in rule.items():
        if operator in ("Variable", "Next", "Comment"):
            continue
        if operator == "IsPresent":
            return present is bool(operand)
        if not present:
            return False
        value = get_path(variable, data, context)
        if operator == "IsNull":
            return (value is None) is bool(operand)
        if operator.startswith("Is") and operator[2:] in _KINDS:
            return _KINDS[operator[2:]](value) is bool(operand)
        if operator == "StringMatches":
            return isinstance(value, str) and _wildcard(str(operand)).fullmatch(value) is not None
        target = operand
        name = operator
        if name.endswith("Path"):
            name = name[: -len("Path")]
            target = get_path(str(operand), data, context)
        for kind, test in _KINDS.items():
            if name.startswith(kind) and name[len(kind) :] in _COMPARISONS:
                if not test(value) or not test(target):
                    return False
                return _COMPARISONS[name[len(kind) :]](value, target)
        raise AslUnsupported(f"Choice operator {operator}")
    raise AslUnsupported(f"Choice rule without an operator: {rule!r}")


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")))


def choose(state: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> str:
    for rule in state.get("Choices", []):
        if rule_matches(rule, data, context):
            return str(rule["Next"])
    if "Default" in state:
        return str(state["Default"])
    raise StatesError("States.NoChoiceMatched", "no Choice rule matched and there is no Default")


# --- errors, Retry and Catch ---------------------------------------------------------------

# Errors no retrier or catcher can match (the Step Functions Developer Guide, "Error names").
UNCATCHABLE = frozenset({"States.Runtime"})


def error_matches(patterns: list[str], error: str) -> bool:
    if error in UNCATCHABLE:
        return False
    for pattern in patterns:
        if pattern in ("States.ALL", error):
            return True
        if pattern == "States.TaskFailed" and error != "States.Timeout":
            return True
    return False


def retry_delay(retrier: Mapping[str, Any], retries_done: int, rng: random.Random) -> float:
    """Seconds before retry number `retries_done + 1` of a retrier, as documented:
    IntervalSeconds * BackoffRate^retries_done, at most MaxDelaySeconds, and with
    JitterStrategy FULL a uniformly random share of that."""
    interval = float(retrier.get("IntervalSeconds", 1))
    rate = float(retrier.get("BackoffRate", 2.0))
    delay = interval * math.pow(rate, retries_done)
    if "MaxDelaySeconds" in retrier:
        delay = min(delay, float(retrier["MaxDelaySeconds"]))
    if retrier.get("JitterStrategy", "NONE") == "FULL":
        delay = rng.uniform(0, delay)
    return delay


def max_attempts(retrier: Mapping[str, Any]) -> int:
    return int(retrier.get("MaxAttempts", 3))


def retrier_for(state: Mapping[str, Any], error: str) -> tuple[int, Mapping[str, Any]] | None:
    for index, retrier in enumerate(state.get("Retry", [])):
        if error_matches(list(retrier.get("ErrorEquals", [])), error):
            return index, retrier
    return None


def catcher_for(state: Mapping[str, Any], error: str) -> Mapping[str, Any] | None:
    for catcher in state.get("Catch", []):
        if error_matches(list(catcher.get("ErrorEquals", [])), error):
            return dict(catcher)
    return None


def path_field(state: Mapping[str, Any], name: str) -> Any:
    """InputPath/OutputPath/ResultPath as written: absent is `$`, null is null."""
    return state.get(name, "$")
