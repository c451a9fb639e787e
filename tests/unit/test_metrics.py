"""domain.metrics: the one list of metrics, its data points, the Publisher's run metrics and the EMF sink."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aws_lambda_powertools.metrics import Metrics, MetricUnit
from relayguard.adapters.emf_metrics import EmfMetricSink
from relayguard.domain.metrics import (
    ALERT_TO_FIX_LATENCY,
    FAILED_BY_REASON,
    METRICS,
    RUN_OUTCOMES,
    RUNS_FINISHED,
    Metric,
    point,
    reason_code,
    server_points,
)
from relayguard.domain.models import FAILURE_OUTCOMES, Outcome
from relayguard.domain.notify import digest_message
from relayguard.domain.rollout import ErrorBudget, Rollout
from relayguard.domain.server import Server
from relayguard.services import Publisher, RunGate

from tests.fakes import FakeMetrics, FakeNotifier, FakeRecordStore, FakeRunStore, FakeStateStore

PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "relayguard" / "relayguard"
T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


def names(points: list) -> list[str]:  # type: ignore[type-arg]
    return [p.metric.name for p in points]


# -- the list --------------------------------------------------------------------------------------


def test_every_listed_metric_has_a_cloudwatch_unit_and_lower_case_dimensions() -> None:
    for name, metric in METRICS.items():
        assert metric.name == name
        assert MetricUnit(metric.unit)
        assert all(re.fullmatch(r"[a-z]+", d) for d in metric.dimensions), metric
        assert "service" not in metric.dimensions  # Powertools adds it to every metric
        assert metric.meaning


def test_a_point_of_an_unlisted_metric_or_with_other_dimensions_is_refused() -> None:
    with pytest.raises(ValueError, match="not in"):
        point(Metric("Fixed", "Count"), 1)
    with pytest.raises(ValueError, match="dimensions"):
        point(RUNS_FINISHED, 1)
    with pytest.raises(ValueError, match="dimensions"):
        point(RUNS_FINISHED, 1, outcome="ok", server="web1")
    with pytest.raises(ValueError, match="empty"):
        point(RUNS_FINISHED, 1, outcome="")


def test_the_code_names_no_metric_outside_the_list() -> None:
    """Product code adds metrics only through the EMF sink; nowhere else is a metric name written."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name == "emf_metrics.py":
            continue
        assert "add_metric(" not in text, path
        assert "EphemeralMetrics" not in text, path


# -- one server's points ---------------------------------------------------------------------------


def server(outcome: str, reason: str = "", *, exposed: bool | None = False, trigger: str = "sweep",
           action: str | None = None, seconds: float = 30) -> list:  # type: ignore[type-arg]
    return server_points(outcome, reason, exposed_before=exposed, trigger=trigger, action=action,
                         enqueued_at=T0, finished_at=T0 + timedelta(seconds=seconds))


def test_a_fixed_server_counts_scanned_exposed_and_remediated() -> None:
    assert names(server("remediated", exposed=True)) == ["ServersScanned", "Exposed", "Remediated"]
    assert names(server("noncompliant", exposed=True)) == ["ServersScanned", "Exposed", "NonCompliant"]
    assert names(server("compliant")) == ["ServersScanned"]


@pytest.mark.parametrize("outcome", sorted(FAILURE_OUTCOMES))
def test_every_failure_counts_failed_and_failed_by_reason(outcome: str) -> None:
    points = server(outcome, "")
    assert names(points)[-2:] == ["Failed", "FailedByReason"]
    assert points[-1].dimensions == (("reason", outcome),)


def test_failed_by_reason_uses_the_stable_code_and_never_free_text() -> None:
    assert reason_code("failed", "whmapi1-refused: Access denied for root") == "whmapi1-refused"
    assert reason_code("failed", "auth-submission-broken") == "auth-submission-broken"
    # A transport error's message is free text: a dimension per message would be a metric per message.
    assert reason_code("unreachable", "web1 (198.51.100.1:22): connection refused") == "unreachable"
    assert reason_code("failed", "internal error: KeyError") == "failed"
    assert reason_code("failed", "") == "failed"
    (by_reason,) = [p for p in server("failed", "exim-restart-failed: exit 1") if p.metric == FAILED_BY_REASON]
    assert by_reason.dimensions == (("reason", "exim-restart-failed"),)


def test_host_key_problems_are_counted_apart() -> None:
    assert "HostKeyProblems" in names(server("host-key-mismatch"))
    assert "HostKeyProblems" in names(server("host-key-unknown"))


def test_alert_to_fix_latency_is_measured_for_an_alert_whose_server_ends_closed() -> None:
    (latency,) = [p for p in server("remediated", trigger="alert", seconds=95.5) if p.metric == ALERT_TO_FIX_LATENCY]
    assert (latency.value, latency.metric.unit) == (95.5, "Seconds")
    assert "AlertToFixLatency" in names(server("compliant", trigger="alert"))
    for no in (server("remediated"), server("failed", trigger="alert"), server("noncompliant", trigger="alert"),
               server("reverted", trigger="alert", action="revert"),
               server("remediated", trigger="alert", action="revert")):
        assert "AlertToFixLatency" not in names(no)


def test_the_digest_outcomes_are_the_run_outcomes_the_dashboard_shows() -> None:
    seen = {digest_message("r", mode="fix", trigger="sweep", total=1, counts=counts, started_at="t", at="t")["outcome"]
            for counts in ({"compliant": 1}, {"noncompliant": 1}, {"failed": 1}, {})}
    assert seen == set(RUN_OUTCOMES)


# -- the Publisher's run metrics -------------------------------------------------------------------

RUN = "sweep-20261206T020000Z-abc"
WEB = [Server(name=f"web{i}", host=f"198.51.100.{i}") for i in range(1, 4)]


def test_a_run_stopped_by_its_budget_emits_runs_stopped_once_and_its_digest_its_failed_servers() -> None:
    metrics, runs = FakeMetrics(), FakeRunStore()
    publisher = Publisher(FakeNotifier(), runs, FakeStateStore(), FakeRecordStore(), metrics)
    runs.create(RUN, "fix", "sweep", 3, "2026-12-06T02:00:00+00:00", rollout=Rollout(max_errors=ErrorBudget(count=1)))
    gate = RunGate(runs, RUN, publisher.run_stopped)
    gate.admit(WEB[0])
    gate.finished(WEB[0], Outcome.FAILED)
    gate.admit(WEB[1])
    gate.admit(WEB[2])  # the second skip must not announce, nor count, the stop again
    assert metrics.values("RunsStopped") == [1]
    assert metrics.values("RunsStoppedByReason", reason="error-budget") == [1]
    assert metrics.values("RunsFinished", outcome="failed") == []  # not done yet
    for name, outcome in (("web1", "failed"), ("web2", "skipped"), ("web3", "skipped")):
        publisher.count(RUN, name, outcome)
    assert metrics.values("RunsFinished", outcome="failed") == [1]
    assert metrics.values("RunFailedServers") == [1]


def test_a_clean_run_finishes_ok_with_no_failed_servers() -> None:
    metrics, runs = FakeMetrics(), FakeRunStore()
    publisher = Publisher(FakeNotifier(), runs, FakeStateStore(), FakeRecordStore(), metrics)
    runs.create(RUN, "audit", "sweep", 2, "2026-12-06T02:00:00+00:00")
    publisher.count(RUN, "web1", "compliant")
    publisher.count(RUN, "web1", "compliant")  # a redelivery counts once, and finishes nothing
    assert metrics.points == []
    publisher.count(RUN, "web2", "not-cpanel")
    assert [(p.metric.name, p.value, p.dimensions) for p in metrics.points] == [
        ("RunsFinished", 1, (("outcome", "ok"),)), ("RunFailedServers", 0, ())]


def test_a_digest_whose_publish_fails_still_counts_the_run() -> None:
    metrics, runs = FakeMetrics(), FakeRunStore()
    publisher = Publisher(FakeNotifier(failures=1), runs, FakeStateStore(), FakeRecordStore(), metrics)
    runs.create(RUN, "audit", "sweep", 1, "2026-12-06T02:00:00+00:00")
    with pytest.raises(ConnectionError):
        publisher.count(RUN, "web1", "noncompliant")
    assert metrics.values("RunsFinished", outcome="noncompliant") == [1]


# -- the EMF sink ----------------------------------------------------------------------------------


def emf_documents(stdout: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_the_sink_writes_each_dimension_set_as_its_own_document(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "RelayGuard")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "relayguard")
    shared = Metrics()
    shared.clear_metrics()
    sink = EmfMetricSink(shared)
    sink.emit([*server("failed", "whmapi1-refused: no", exposed=True, trigger="alert"),
               point(RUNS_FINISHED, 1, outcome="failed")])
    # Dimensioned points are out at once, each set in its own document ...
    by_dims = {tuple(sorted(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0])): d
               for d in emf_documents(capsys.readouterr().out)}
    assert set(by_dims) == {("reason", "service"), ("outcome", "service")}
    assert (by_dims[("reason", "service")]["reason"], by_dims[("reason", "service")]["FailedByReason"]) == (
        "whmapi1-refused", [1.0])
    assert by_dims[("outcome", "service")]["outcome"] == "failed"
    for doc in by_dims.values():
        assert (doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], doc["service"]) == ("RelayGuard", "relayguard")
    # ... and the others wait in the handler's buffer for its one flush, with the service dimension only.
    shared.flush_metrics()
    (flushed,) = emf_documents(capsys.readouterr().out)
    assert flushed["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert {m["Name"] for m in flushed["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == {
        "ServersScanned", "Exposed", "Failed"}


def test_the_sink_names_its_namespace_where_the_environment_does_not(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The CLI's publisher and in-process callers run without the functions' Powertools variables.
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    EmfMetricSink(Metrics(namespace="Fleet-A")).emit([point(RUNS_FINISHED, 1, outcome="ok")])
    (doc,) = emf_documents(capsys.readouterr().out)
    assert (doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], doc["outcome"], doc["RunsFinished"]) == (
        "Fleet-A", "ok", [1.0])
