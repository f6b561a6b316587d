"""The local stack is built from serverless.yml: change a copy of it and the stack follows."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, ServedStack, serve
from tests.e2e.test_local_stack import _write_together

pytestmark = pytest.mark.slow

# Everything `sls package` reads, linked into the copy; serverless.yml itself is copied.
LINKED = (
    "handler.py",
    "runner",
    "tasks",
    "infra",
    "statemachine",
    "requirements.txt",
    "package.json",
    "package-lock.json",
    "node_modules",
)
PROCESS_STREAM_FILTER = """\
                NewImage:
                  status:
                    S: [PENDING]
"""


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected exactly one {old!r} in serverless.yml"
    return text.replace(old, new)


def copy_service(target: Path, edit: dict[str, str]) -> Path:
    """A service directory like the repository's, with serverless.yml edited."""
    target.mkdir()
    for name in LINKED:
        os.symlink(ROOT / name, target / name)
    text = (ROOT / "serverless.yml").read_text()
    for old, new in edit.items():
        text = _replace_once(text, old, new)
    (target / "serverless.yml").write_text(text)
    return target


@pytest.fixture(scope="module")
def edited_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedStack]:
    """processStream with batchSize 1, one batch of a shard at a time (a factor of 1),
    and a filter that also requires EXAMPLE_TASK."""
    service = copy_service(
        tmp_path_factory.mktemp("service") / "task-runner",
        {
            "batchSize: 100": "batchSize: 1",
            "parallelizationFactor: 10": "parallelizationFactor: 1",
            PROCESS_STREAM_FILTER: PROCESS_STREAM_FILTER
            + "                  type:\n                    S: [EXAMPLE_TASK]\n",
        },
    )
    yield from serve("--stage", "edited", "--service-dir", str(service))


def test_a_filter_added_to_the_copy_keeps_other_tasks_from_process_stream(
    edited_stack: ServedStack,
) -> None:
    # Given a NOOP task, then an EXAMPLE task, written one after the other
    noop = _write_together(edited_stack, "NOOP_TASK", {}, count=1)[0]
    example = _write_together(edited_stack, "EXAMPLE_TASK", {"message": {"S": "hi"}}, count=1)[0]

    # When the EXAMPLE task (later in the stream) is DONE
    edited_stack.wait_for(example, {"DONE"}, timeout=20)

    # Then the NOOP record was filtered out by the edited pattern: still PENDING
    assert edited_stack.get_task(noop)["status"] == "PENDING"


def test_batch_size_one_in_the_copy_runs_tasks_one_batch_at_a_time(
    edited_stack: ServedStack,
) -> None:
    # Given three tasks that reach the stream together
    ids = _write_together(edited_stack, "EXAMPLE_TASK", {"message": {"S": "one"}}, count=3)

    # When they have run
    tasks = [edited_stack.wait_for(i, {"DONE"}, timeout=30) for i in ids]

    # Then each started only after the one before it finished (one record per invocation)
    spans = sorted(
        (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"]))
        for t in tasks
    )
    for (_, finished), (started, _) in itertools.pairwise(spans):
        assert started >= finished, spans
