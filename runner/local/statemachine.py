"""The retry state machine's ASL, with its placeholders filled in for moto."""

from __future__ import annotations

import json
import re
from pathlib import Path

ASL_PATH = Path(__file__).resolve().parents[2] / "statemachine" / "retry.asl.json"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_]*)\}")


def load_definition(substitutions: dict[str, str], path: Path = ASL_PATH) -> str:
    """The ASL text with each `${Name}` replaced, as DefinitionSubstitutions would."""
    text = path.read_text()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(substitutions))
    if missing:
        raise KeyError(f"no value for ASL placeholders: {', '.join(missing)}")
    filled = _PLACEHOLDER.sub(lambda m: substitutions[m.group(1)], text)
    json.loads(filled)  # fail here, not inside moto, if a value broke the JSON
    return filled
