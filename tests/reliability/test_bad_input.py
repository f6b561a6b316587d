"""Bad input: malformed records and payloads never break a batch or hurt good records."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.app import App
from runner.items import serialize
from runner.model import TaskStatus
from tests.helpers import pending, put_raw, stream_record

_ids = itertools.count()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
attribute_values = st.one_of(
    st.dictionaries(
        st.sampled_from(["S", "N", "M", "L", "BOOL", "NULL", "B", "SS", "XX"]),
        json_values,
        min_size=1,
        max_size=2,
    ),
    json_values,
)
images = st.dictionaries(
    st.sampled_from(["id", "type", "status", "data", "attempts", "episode", "error", "x"]),
    attribute_values,
    max_size=6,
)
records = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "eventName": st.sampled_from(["INSERT", "MODIFY", "REMOVE", "BOGUS"]) | json_values,
            "dynamodb": st.fixed_dictionaries(
                {},
                optional={
                    "NewImage": images | json_values,
                    "OldImage": images,
                    "SequenceNumber": st.text(max_size=5) | st.integers(),
                },
            ),
        },
        optional={"eventID": json_values, "eventSourceARN": json_values},
    ),
)


def _good(app: App) -> tuple[str, dict[str, Any]]:
    task_id = f"good-{next(_ids)}"
    values = put_raw(
        app.clients.dynamodb, app.settings.table_name, pending(task_id, "NOOP_TASK", {})
    )
    return task_id, stream_record(values)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(junk=st.lists(records, min_size=1, max_size=6))
def test_arbitrary_records_never_escape_and_never_hurt_a_good_one(
    app: App, junk: list[Any]
) -> None:
    task_id, good = _good(app)
    result = app.stream.process([*junk, good])
    assert app.store.get(task_id).status is TaskStatus.DONE
    # Nothing in junk names an item that exists, so nothing is an infrastructure failure
    assert result.failed_sequence_numbers == []


@pytest.mark.parametrize(
    ("label", "values", "expected_error"),
    [
        ("missing type", {"id": "c1", "status": "PENDING", "data": {}}, "MalformedTask"),
        (
            "data not a map",
            {"id": "c2", "type": "NOOP_TASK", "status": "PENDING", "data": "{not json"},
            "MalformedTask",
        ),
        (
            "attempts a string",
            {"id": "c3", "type": "NOOP_TASK", "status": "PENDING", "data": {}, "attempts": "many"},
            "MalformedTask",
        ),
        (
            "unknown type",
            {"id": "c4", "type": "WHAT", "status": "PENDING", "data": {}},
            "UnknownTaskType",
        ),
        (
            "huge invalid input",
            {
                "id": "c5",
                "type": "EXAMPLE_TASK",
                "status": "PENDING",
                "data": {"message": 7, "extra": "x" * 300_000},
            },
            "InvalidTaskInput",
        ),
        (
            "wrong field type",
            {
                "id": "c6",
                "type": "FLAKY_TASK",
                "status": "PENDING",
                "data": {"fail_times": "often"},
            },
            "InvalidTaskInput",
        ),
    ],
)
def test_corpus_of_bad_tasks_fails_each_with_a_clear_error(
    app: App, label: str, values: dict[str, Any], expected_error: str
) -> None:
    put_raw(app.clients.dynamodb, app.settings.table_name, values)
    task_id, good = _good(app)
    result = app.stream.process([stream_record(values), good])
    assert result.failed_sequence_numbers == []
    assert app.store.get(task_id).status is TaskStatus.DONE
    item = app.clients.dynamodb.get_item(
        TableName=app.settings.table_name, Key=serialize({"id": values["id"]})
    )["Item"]
    assert item["status"] == {"S": "FAILED"}, label
    assert item["error"]["M"]["type"] == {"S": expected_error}, label
    assert item["retryable"] == {"BOOL": False}


def test_unknown_status_and_wrong_key_types_are_ignored(app: App) -> None:
    task_id, good = _good(app)
    odd = [
        stream_record({"id": "s1", "type": "NOOP_TASK", "status": "SLEEPING", "data": {}}),
        {
            "eventName": "INSERT",
            "dynamodb": {"NewImage": {"id": {"N": "5"}, "status": {"S": "PENDING"}}},
        },
        {
            "eventName": "INSERT",
            "dynamodb": {"NewImage": {"id": {"S": ""}, "status": {"S": "PENDING"}}},
        },
    ]
    result = app.stream.process([*odd, good])
    assert result.failed_sequence_numbers == [] and result.ignored == 1
    assert app.store.get(task_id).status is TaskStatus.DONE


def test_stream_record_near_and_over_400kb(app: App) -> None:
    big = {"id": "near", "type": "NOOP_TASK", "status": "PENDING", "data": {"note": "y" * 399_000}}
    put_raw(app.clients.dynamodb, app.settings.table_name, big)
    oversized = stream_record(
        {"id": "over", "type": "NOOP_TASK", "status": "PENDING", "data": {"note": "z" * 500_000}}
    )
    task_id, good = _good(app)
    result = app.stream.process([stream_record(big), oversized, good])
    assert result.failed_sequence_numbers == []
    assert app.store.get(task_id).status is TaskStatus.DONE
    # The near-limit task ran; its result (the note) cannot fit beside its input.
    near = app.store.get("near")
    assert near.status is TaskStatus.FAILED and near.error
    assert "too large" in near.error.message and not near.retryable
