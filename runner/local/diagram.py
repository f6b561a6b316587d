"""A Mermaid diagram of the retry state machine, generated from its ASL file.

`python -m runner.local.diagram` prints it; a test keeps the README's copy in sync.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.local.statemachine import ASL_PATH


def _errors_label(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    prefixes = {name.split(".")[0] for name in names}
    if len(prefixes) == 1:
        return f"{names[0].split('.')[0]} errors ({len(names)})"
    return f"{names[0]} and {len(names) - 1} more"


def _choice_label(rule: dict[str, Any]) -> str:
    """`task_type = EXPORT_DB` for a StringEquals rule (the IsPresent guards left out)."""
    for clause in [rule, *rule.get("And", [])]:
        if "StringEquals" in clause:
            return f"{clause['Variable'].removeprefix('$.')} = {clause['StringEquals']}"
    return "when"


def _retry_label(retrier: dict[str, Any]) -> str:
    errors = _errors_label(retrier["ErrorEquals"])
    parts = [
        f"retry {errors}",
        f"{retrier.get('IntervalSeconds', 1)} s",
        f"backoff {retrier.get('BackoffRate', 2.0):g}",
    ]
    if "MaxDelaySeconds" in retrier:
        parts.append(f"cap {retrier['MaxDelaySeconds']} s")
    if retrier.get("JitterStrategy") == "FULL":
        parts.append("full jitter")
    parts.append(f"{retrier.get('MaxAttempts', 3)} tries")
    return ", ".join(parts)


def mermaid(asl: dict[str, Any]) -> str:
    """stateDiagram-v2 text: every state, Next, Choice, Retry (self-loop) and Catch edge."""
    lines = ["stateDiagram-v2", f"    [*] --> {asl['StartAt']}"]
    for name, state in asl["States"].items():
        for retrier in state.get("Retry", []):
            lines.append(f"    {name} --> {name}: {_retry_label(retrier)}")
        for catcher in state.get("Catch", []):
            lines.append(
                f"    {name} --> {catcher['Next']}: catch {', '.join(catcher['ErrorEquals'])}"
            )
        for rule in state.get("Choices", []):
            lines.append(f"    {name} --> {rule['Next']}: {_choice_label(rule)}")
        if "Default" in state:
            lines.append(f"    {name} --> {state['Default']}: otherwise")
        if "Next" in state:
            lines.append(f"    {name} --> {state['Next']}")
        if state.get("End") or state["Type"] in ("Succeed", "Fail"):
            lines.append(f"    {name} --> [*]")
    return "\n".join(lines) + "\n"


def diagram(path: Path = ASL_PATH) -> str:
    return mermaid(json.loads(path.read_text()))


if __name__ == "__main__":
    print(diagram(), end="")
