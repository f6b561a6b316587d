"""The packaged template's CloudWatch dashboard and per-type RetriesExhausted alarms
(infra/metrics.js) against runner/metrics.py: the same namespace, metric names and
dimensions the functions print, an alarm for every registered type, every alarm of the
template on the dashboard."""

from __future__ import annotations

import json
import re
from typing import Any

from runner import metrics
from tests.deploy.conftest import STAGE, Packaged


def body(packaged: Packaged) -> dict[str, Any]:
    dashboard = packaged.resource("TaskRunnerDashboard")
    assert dashboard["Type"] == "AWS::CloudWatch::Dashboard"
    text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def test_the_functions_print_into_the_namespace_the_dashboard_and_alarms_read(
    packaged: Packaged,
) -> None:
    namespace = f"TaskRunner/{STAGE}"
    for logical_id, function in packaged.resources_of_type("AWS::Lambda::Function").items():
        env = function["Properties"].get("Environment", {}).get("Variables", {})
        if "POWERTOOLS_SERVICE_NAME" in env:
            assert env[metrics.NAMESPACE_ENV] == namespace, logical_id
    assert packaged.template["Outputs"]["MetricsNamespace"]["Value"] == namespace
    lines = [m for w in body(packaged)["widgets"] for m in w["properties"].get("metrics", [])]
    assert lines and {line[0] for line in lines} == {namespace}


def test_every_registered_type_has_a_retries_exhausted_alarm_to_the_topic(
    packaged: Packaged,
) -> None:
    alarms = [
        a["Properties"]
        for a in packaged.resources_of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == metrics.RETRIES_EXHAUSTED
    ]
    types = metrics.registered_types()
    assert types and sorted(a["Dimensions"][0]["Value"] for a in alarms) == types
    for alarm in alarms:
        assert alarm["Namespace"] == f"TaskRunner/{STAGE}"
        assert [d["Name"] for d in alarm["Dimensions"]] == [metrics.TYPE]
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 0)
        assert alarm["TreatMissingData"] == "notBreaching"  # no exhausted task: no data
        assert "Metrics" not in alarm  # no metric math: an alarm may not SEARCH


def test_the_dashboard_shows_every_metric_per_type_beside_every_alarm(packaged: Packaged) -> None:
    widgets = body(packaged)["widgets"]
    lines = [m for w in widgets for m in w["properties"].get("metrics", [])]
    shown: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for line in lines:
        name, *pairs = line[1:-1]
        dims = tuple(zip(pairs[::2], pairs[1::2], strict=True))
        assert {d for d, _ in dims} <= {metrics.TYPE, metrics.OUTCOME}
        shown.setdefault(name, set()).add(dims)
    assert set(shown) == set(metrics.COUNTS) | set(metrics.DURATIONS)
    for name, dims in shown.items():
        assert {dict(d)[metrics.TYPE] for d in dims} == set(metrics.registered_types()), name
    outcomes = {dict(d).get(metrics.OUTCOME) for d in shown[metrics.FAILED]}
    assert outcomes == {metrics.RETRYABLE, metrics.PERMANENT}

    (alarm_widget,) = [w for w in widgets if w["type"] == "alarm"]
    on_dashboard = {
        re.fullmatch(r"\$\{(\w+)\.Arn\}", a)[1] for a in alarm_widget["properties"]["alarms"]
    }  # type: ignore[index]
    assert on_dashboard == set(packaged.resources_of_type("AWS::CloudWatch::Alarm"))
