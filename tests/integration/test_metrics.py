"""The runner's EMF metrics, as the handlers print them in Lambda: one document per task
type (and outcome) for a mixed batch, the dimensions only `type` and `outcome`, the
retry workflow's exhaust step counting RetriesExhausted, nothing printed outside Lambda
(the CLI's stdout is its answer)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from runner import metrics
from tests.integration.test_workflow import Workflow, _build


def documents(out: str) -> list[dict[str, Any]]:
    found = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            found.append(json.loads(line))
    return found


def by_dimensions(docs: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], dict[str, Any]]:
    """Metric name → values, by the document's dimension values (EMF: each metric's value
    is a number or a list)."""
    merged: dict[tuple[tuple[str, str], ...], dict[str, Any]] = defaultdict(dict)
    for doc in docs:
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == metrics.DEFAULT_NAMESPACE
        (names,) = directive["Dimensions"]
        assert set(names) <= {"type", "outcome"}, names  # no `service`, nothing else
        key = tuple(sorted((n, doc[n]) for n in names))
        for metric in directive["Metrics"]:
            value = doc[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            merged[key].setdefault(metric["Name"], []).extend(values)
            assert metric["Unit"] == (
                "Milliseconds" if metric["Name"] in metrics.DURATIONS else "Count"
            )
    return merged


@pytest.fixture
def flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    yield from _build(monkeypatch, instant=True)


@pytest.fixture
def in_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(metrics.LAMBDA_ENV, "processStream")
    monkeypatch.delenv(metrics.NAMESPACE_ENV, raising=False)
    metrics.discard()


def test_a_mixed_batch_prints_one_document_per_type_and_outcome(
    flow: Workflow, in_lambda: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a batch of three types: one succeeds, one fails permanently (invalid input),
    # one fails retryably and then exhausts its retries in the workflow
    flow.insert("ok-1", "NOOP_TASK", {})
    flow.insert("ok-2", "NOOP_TASK", {})
    flow.insert("bad", "EXAMPLE_TASK", {"message": ""})
    flow.insert("doomed", "ALWAYS_FAILING_TASK", {})
    flow.pump()
    stream_out = capsys.readouterr().out
    flow.wait()
    workflow_out = capsys.readouterr().out

    # Then the stream invocation printed one document per (type, outcome)
    stream = by_dimensions(documents(stream_out))
    noop = stream[(("type", "NOOP_TASK"),)]
    assert noop[metrics.SUCCEEDED] == [1, 1]
    assert len(noop[metrics.HANDLER_DURATION]) == 2 and len(noop[metrics.QUEUE_LATENCY]) == 2
    assert all(v >= 0 for v in noop[metrics.QUEUE_LATENCY])
    assert stream[(("outcome", "permanent"), ("type", "EXAMPLE_TASK"))] == {metrics.FAILED: [1]}
    assert stream[(("outcome", "retryable"), ("type", "ALWAYS_FAILING_TASK"))] == {
        metrics.FAILED: [1]
    }
    assert metrics.RETRIES_EXHAUSTED not in json.dumps(list(stream.values()))

    # And the workflow's attempts counted as retries, its exhaust step as exhausted
    allowed = flow.app.registry.get("ALWAYS_FAILING_TASK").max_attempts
    workflow = by_dimensions(documents(workflow_out))
    doomed = workflow[(("type", "ALWAYS_FAILING_TASK"),)]
    assert sum(doomed[metrics.RETRIED]) == allowed
    assert sum(doomed[metrics.RETRIES_EXHAUSTED]) == 1
    assert metrics.QUEUE_LATENCY not in doomed  # only a first claim has one
    failed = workflow[(("outcome", "retryable"), ("type", "ALWAYS_FAILING_TASK"))]
    assert sum(failed[metrics.FAILED]) == allowed
    assert metrics.pending() == {}  # every invocation flushed what it measured


def test_nothing_is_printed_outside_lambda(
    flow: Workflow, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(metrics.LAMBDA_ENV, raising=False)
    flow.insert("quiet", "NOOP_TASK", {})
    flow.pump()
    assert documents(capsys.readouterr().out) == []
    assert metrics.pending() == {}


def test_a_metric_that_cannot_be_printed_never_fails_the_invocation(
    in_lambda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics.recorded("NOOP_TASK", "DONE", None)

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("stdout closed")

    monkeypatch.setattr("aws_lambda_powertools.metrics.EphemeralMetrics.flush_metrics", broken)
    assert metrics.flush() == 0
