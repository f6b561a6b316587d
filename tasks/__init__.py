"""The task types a deployment runs. Adding one: a module here plus one line below."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from runner.registry import TaskRegistry
from tasks import example, export_db

# One line per task type; keep alphabetical.
TASK_MODULES = (example, export_db)


def build_registry(extra_modules: Iterable[str] = ()) -> TaskRegistry:
    """The deployment's registry, plus any extra modules named (demos and tests only)."""
    registry = TaskRegistry()
    for module in TASK_MODULES:
        registry.register_module(module)
    for name in extra_modules:
        registry.register_module(importlib.import_module(name))
    return registry
