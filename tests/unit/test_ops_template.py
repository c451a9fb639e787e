"""template.yaml's operations alarms and dashboard name only metrics the code emits (issue 15).

Every RelayGuard metric an alarm watches or a dashboard widget plots must be in
``relayguard.domain.metrics.METRICS`` with exactly its dimensions plus Powertools' ``service``, in the
namespace and service the functions are configured with (Globals). The code emits only points of that
list (tests/unit/test_metrics.py), so an alarm cannot watch a metric nobody sends. AWS metrics must name
the stack's own queues and functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from relayguard.domain.metrics import METRICS, RUN_OUTCOMES, TRIGGERS

from harness.intrinsics import Resolver
from harness.template import load_template

REPO = Path(__file__).resolve().parents[2]
DLQS = {"WorkDLQ", "UrgentDLQ", "AlertIntakeDLQ"}
FUNCTIONS = {"PlannerFunction", "WorkerFunction", "AlertIntakeFunction"}
ACTION = {"Fn::If": ["CreateOpsAlarmTopic", {"Ref": "OpsAlarmTopic"}, {"Ref": "OpsAlarmTopicArn"}]}


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


class Placeholders(Mapping[str, str]):
    """Resolves a Ref or GetAtt of any resource of the template to ``<LogicalId>`` or ``<LogicalId.Attr>``."""

    def __init__(self, resources: Mapping[str, Any], **given: str) -> None:
        self.resources, self.given = resources, given

    def __getitem__(self, key: str) -> str:
        if key in self.given:
            return self.given[key]
        if key.split(".", 1)[0] in self.resources:
            return f"<{key}>"
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.given)

    def __len__(self) -> int:
        return len(self.given)


def globals_env(sam: dict[str, Any]) -> dict[str, Any]:
    return sam["Globals"]["Function"]["Environment"]["Variables"]  # type: ignore[no-any-return]


def alarms(sam: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in sam["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"}


def dashboard(sam: dict[str, Any]) -> dict[str, Any]:
    (body,) = [r["Properties"]["DashboardBody"] for r in sam["Resources"].values()
               if r["Type"] == "AWS::CloudWatch::Dashboard"]
    return json.loads(Resolver(sam, Placeholders(sam["Resources"])).value(body))  # type: ignore[no-any-return]


def assert_relayguard_metric(sam: dict[str, Any], name: str, dimensions: dict[str, str], where: str) -> None:
    """``name`` with ``dimensions`` is a listed metric, as the functions' Powertools emits it."""
    assert name in METRICS, f"{where}: {name} is not in domain.metrics.METRICS"
    metric = METRICS[name]
    assert set(dimensions) == {"service", *metric.dimensions}, f"{where}: {name} dimensions {sorted(dimensions)}"
    assert dimensions["service"] == globals_env(sam)["POWERTOOLS_SERVICE_NAME"], where


def dashboard_metrics(sam: dict[str, Any]) -> list[tuple[str, str, dict[str, str], str]]:
    """(namespace, metric, dimensions, widget title) of every metric line of every metric widget; a SEARCH
    expression gives its namespace, metric and dimension names (values ``*``)."""
    found = []
    for widget in dashboard(sam)["widgets"]:
        if widget["type"] != "metric":
            continue
        title = widget["properties"]["title"]
        for line in widget["properties"]["metrics"]:
            fields = [f for f in line if not isinstance(f, dict)]
            options = [f for f in line if isinstance(f, dict)]
            if not fields:
                (expression,) = [o["expression"] for o in options]
                match = re.fullmatch(r"""SEARCH\('\{([^}]*)\} MetricName="(\w+)"', '\w+', \d+\)""", expression)
                assert match, f"{title}: an expression other than SEARCH: {expression}"
                namespace, *keys = match.group(1).split(",")
                found.append((namespace, match.group(2), dict.fromkeys(keys, "*"), title))
                continue
            assert "." not in fields, f"{title}: write every field out, no '.' shorthand"
            namespace, name, *pairs = fields
            found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)), title))
    return found


# -- alarms ----------------------------------------------------------------------------------------


def test_every_alarm_watches_a_metric_the_code_emits_or_the_stacks_own_queue_or_function(sam) -> None:
    namespace = globals_env(sam)["POWERTOOLS_METRICS_NAMESPACE"]
    for logical_id, alarm in alarms(sam).items():
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        if alarm["Namespace"] == namespace:
            assert_relayguard_metric(sam, alarm["MetricName"], dims, logical_id)
        elif alarm["Namespace"] == "AWS/SQS":
            assert (alarm["MetricName"], dims["QueueName"]["Fn::GetAtt"][1]) == (
                "ApproximateNumberOfMessagesVisible", "QueueName"), logical_id
            assert dims["QueueName"]["Fn::GetAtt"][0] in DLQS, logical_id
        else:
            assert alarm["Namespace"] == "AWS/Lambda", logical_id
            assert dims["FunctionName"]["Ref"] in FUNCTIONS, logical_id


def test_the_alarms_cover_every_dlq_failed_servers_planner_errors_missed_sweeps_and_stops(sam) -> None:
    watched = {(a["MetricName"], json.dumps(a["Dimensions"], sort_keys=True)) for a in alarms(sam).values()}
    for dlq in DLQS:
        dims = [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}]
        assert ("ApproximateNumberOfMessagesVisible", json.dumps(dims, sort_keys=True)) in watched, dlq
    names = {a["MetricName"] for a in alarms(sam).values()}
    assert {"RunFailedServers", "Errors", "RunsStarted", "RunsStopped"} <= names
    # Every queue that dead-letters somewhere, and the alert intake's on-failure destination, is one of DLQS.
    resources = sam["Resources"]
    targets = {r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
               for r in resources.values() if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"]}
    on_failure = resources["AlertIntakeFunction"]["Properties"]["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert targets | {on_failure["Destination"]["Fn::GetAtt"][0]} == DLQS


def test_the_failed_servers_alarm_compares_each_runs_count_with_the_parameter(sam) -> None:
    (alarm,) = [a for a in alarms(sam).values() if a["MetricName"] == "RunFailedServers"]
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"], alarm["TreatMissingData"]) == (
        "Maximum", "GreaterThanThreshold", {"Ref": "FailedServersAlarmThreshold"}, "notBreaching")


def test_the_missed_sweep_alarm_breaches_only_when_no_sweep_started_in_the_whole_window(sam) -> None:
    (alarm,) = [a for a in alarms(sam).values() if a["MetricName"] == "RunsStarted"]
    assert {"Name": "trigger", "Value": "sweep"} in alarm["Dimensions"]
    assert "sweep" in TRIGGERS
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"], alarm["TreatMissingData"]) == (
        "Sum", "LessThanThreshold", 1, "breaching")
    hours = {"Ref": "MissedSweepAlarmHours"}
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (3600, hours, hours)
    # CloudWatch evaluates at most 7 days, for periods of an hour or more.
    assert sam["Parameters"]["MissedSweepAlarmHours"]["MaxValue"] * alarm["Period"] <= 7 * 86400


def test_the_missed_sweep_window_is_twice_the_default_schedule(sam) -> None:
    match = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", sam["Parameters"]["ScheduleExpression"]["Default"])
    assert match, "the default schedule is a rate() whose period this test can read"
    hours = int(match.group(1)) * {"minute": 1 / 60, "hour": 1, "day": 24}[match.group(2)]
    assert sam["Parameters"]["MissedSweepAlarmHours"]["Default"] == 2 * hours


def test_every_alarm_notifies_the_ops_topic_and_never_the_spam_alarm_topic(sam) -> None:
    """AlarmTopic feeds the alert intake, which starts urgent fixes: an ops alarm there would be a fix order."""
    for logical_id, alarm in alarms(sam).items():
        assert alarm["AlarmActions"] == [ACTION], logical_id
        assert alarm["OKActions"] == [ACTION], logical_id
        assert "AlarmTopic" not in json.dumps(alarm).replace("OpsAlarmTopic", ""), logical_id


@pytest.mark.parametrize(("given", "created", "target"), [
    ("", True, "<OpsAlarmTopic>"),
    ("arn:aws:sns:eu-west-1:123456789012:oncall", False, "arn:aws:sns:eu-west-1:123456789012:oncall"),
])
def test_the_ops_topic_is_created_only_when_no_topic_arn_is_given(sam, given: str, created: bool, target: str) -> None:
    resolver = Resolver(sam, Placeholders(sam["Resources"], OpsAlarmTopicArn=given))
    assert resolver.condition("CreateOpsAlarmTopic") is created
    for logical_id in ("OpsAlarmTopic", "OpsAlarmTopicPolicy"):
        assert sam["Resources"][logical_id]["Condition"] == "CreateOpsAlarmTopic"
    assert resolver.value(ACTION) == target
    assert resolver.value(sam["Outputs"]["OpsAlarmTopicArn"]["Value"]) == target
    assert re.fullmatch(sam["Parameters"]["OpsAlarmTopicArn"]["AllowedPattern"], given)


def test_cloudwatch_may_publish_to_the_ops_topic_for_this_account_only(sam) -> None:
    (statement,) = sam["Resources"]["OpsAlarmTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Principal"], statement["Action"], statement["Resource"]) == (
        {"Service": "cloudwatch.amazonaws.com"}, "sns:Publish", {"Ref": "OpsAlarmTopic"})
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


# -- dashboard -------------------------------------------------------------------------------------


def test_every_dashboard_metric_is_emitted_by_the_code_or_the_stacks_own_queue_or_function(sam) -> None:
    namespace = globals_env(sam)["POWERTOOLS_METRICS_NAMESPACE"]
    for ns, name, dims, title in dashboard_metrics(sam):
        if ns == namespace:
            if "*" not in dims.values():
                assert_relayguard_metric(sam, name, dims, title)
            else:
                assert name in METRICS, title
                assert set(dims) == {"service", *METRICS[name].dimensions}, title
        elif ns == "AWS/SQS":
            assert dims["QueueName"] in {f"<{q}.QueueName>" for q in DLQS}, title
        else:
            assert ns == "AWS/Lambda", title
            assert dims["FunctionName"] in {f"<{f}>" for f in FUNCTIONS}, title


def test_the_dashboard_shows_what_issue_15_asks_for(sam) -> None:
    shown = {(name, tuple(sorted(dims.items()))) for _, name, dims, _ in dashboard_metrics(sam)}
    names = {name for name, _ in shown}
    # Runs by outcome over time: every outcome a digest can have.
    assert {dict(d).get("outcome") for n, d in shown if n == "RunsFinished"} == set(RUN_OUTCOMES)
    # Exposed vs fixed, alert-to-fix latency, failures by reason.
    assert {"Exposed", "Remediated", "AlertToFixLatency", "FailedByReason"} <= names
    # DLQ depth of every dead-letter queue; errors, throttles and duration of every function.
    assert {dict(d)["QueueName"] for n, d in shown if n == "ApproximateNumberOfMessagesVisible"} == {
        f"<{q}.QueueName>" for q in DLQS}
    for metric in ("Errors", "Throttles", "Duration"):
        assert {dict(d)["FunctionName"] for n, d in shown if n == metric} == {f"<{f}>" for f in FUNCTIONS}, metric


def test_the_dashboards_alarm_widget_lists_every_alarm(sam) -> None:
    (widget,) = [w for w in dashboard(sam)["widgets"] if w["type"] == "alarm"]
    assert sorted(widget["properties"]["alarms"]) == sorted(f"<{a}.Arn>" for a in alarms(sam))


# -- docs ------------------------------------------------------------------------------------------


def test_operations_md_lists_every_metric_and_says_what_to_do_for_every_alarm(sam) -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    metrics_table = text.split("\n### Metrics\n", 1)[1].split("\n## ", 1)[0]
    for name, metric in METRICS.items():
        (row,) = [line for line in metrics_table.splitlines() if line.startswith("|") and f"`{name}`" in line]
        assert all(f"`{d}`" in row for d in metric.dimensions), row
    alarms_table = text.split("\n## Alarms\n", 1)[1].split("\n## ", 1)[0]
    for logical_id in alarms(sam):
        assert f"| `{logical_id}` |" in alarms_table, logical_id
