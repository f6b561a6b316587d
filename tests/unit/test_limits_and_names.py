"""The size policy's bounds add up, and execution names never collide (defects 1 and 8)."""

from __future__ import annotations

import re

from runner.executions import MAX_EXECUTION_NAME, ExecutionRef, execution_name
from runner.item_size import MAX_ITEM_BYTES, item_size
from runner.limits import (
    ATTEMPT_ERROR_BYTES,
    ERROR_MESSAGE_BYTES,
    ERROR_TYPE_BYTES,
    MAX_ARN_BYTES,
    MAX_ATTEMPT_LOG,
    MAX_EXECUTIONS,
    MAX_INSERT_BYTES,
    PROGRESS_MESSAGE_BYTES,
    RUNNER_ATTRIBUTES,
    RUNNER_RESERVE,
    cut,
    storable_json,
)


def test_the_reserve_holds_every_runner_attribute_at_its_bound() -> None:
    # The worst case: every attribute the runner writes, each at its longest
    stamp = "2026-11-29T03:38:04.123Z"
    error = {
        "type": "E" * ERROR_TYPE_BYTES,
        "message": "m" * ERROR_MESSAGE_BYTES,
        "retryable": True,
    }
    entry = {
        "attempt": 99_999,
        "episode": 99_999,
        "source": "workflow",
        "started_at": stamp,
        "finished_at": stamp,
        "outcome": "PROCESSING",
        "error": {**error, "message": "m" * ATTEMPT_ERROR_BYTES},
    }
    worst = {
        "status": "PROCESSING",
        "status_shard": "PROCESSING#15",
        "created_at": stamp,
        "updated_at": stamp,
        "started_at": stamp,
        "finished_at": stamp,
        "attempts": 99_999,
        "effect_key_claims": 99_999,
        "error": error,
        "retryable": True,
        "episode": 99_999,
        "episode_attempts": 99_999,
        "retries_exhausted": True,
        "claimed_by": "workflow",
        "claim_token": "f" * 32,
        "lease_expires_at": 9_999_999_999,
        "expires_at": 9_999_999_999,
        "executions": ["a" * MAX_ARN_BYTES] * MAX_EXECUTIONS,
        "attempt_log": [entry] * MAX_ATTEMPT_LOG,
        "cancel_requested": True,
        "progress": {
            "done": 1e38,
            "total": 1e38,
            "message": "m" * PROGRESS_MESSAGE_BYTES,
            "updated_at": stamp,
        },
    }
    assert set(worst) | {"result"} == RUNNER_ATTRIBUTES
    assert item_size(worst) <= RUNNER_RESERVE
    assert MAX_INSERT_BYTES == MAX_ITEM_BYTES - RUNNER_RESERVE


def test_text_is_cut_to_bytes_without_splitting_a_character() -> None:
    assert cut("short", 10) == "short"
    cut_text = cut("é" * 100, 51)
    assert len(cut_text.encode()) <= 51 and cut_text.endswith("[cut]")


def test_only_numbers_dynamodb_stores_pass() -> None:
    assert storable_json({"a": [1, 2.5, 10**37]}) == {"a": [1, 2.5, 10**37]}
    for bad in (float("nan"), float("inf"), 10**38 + 1, 10**130, 1e-200, object()):
        try:
            storable_json({"x": bad})
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} passed")


def test_names_are_safe_bounded_and_distinct_where_the_old_ones_collided() -> None:
    stamp = "2026-11-29T03:38:04.123Z"
    names = {
        execution_name(task_id, created, episode)
        for task_id in ("order:42", "order_42", "order_42_" + "0" * 12, "x" * 1024)
        for created in (stamp, "2026-12-29T03:38:04.123Z", "")
        for episode in (0, 1, 2)
    }
    assert len(names) == 4 * 3 * 3
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", name) and len(name) <= MAX_EXECUTION_NAME


def test_an_execution_knows_whose_it_is() -> None:
    ref = ExecutionRef("t", 2, "EXAMPLE_TASK", "2026-11-29T03:38:04.123Z")
    assert ref.owns(ref.input())
    assert not ExecutionRef("t", 2, "EXAMPLE_TASK", "2026-12-29T03:38:04.123Z").owns(ref.input())
    assert not ExecutionRef("t", 3, "EXAMPLE_TASK", ref.created_at).owns(ref.input())
    assert not ref.owns("not json") and not ref.owns(None)
