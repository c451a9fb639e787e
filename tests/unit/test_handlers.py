"""The three Lambda handlers, driven whole (Powertools included) on events/*.json, with fakes for every port."""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from relayguard import bootstrap
from relayguard.config import load_settings
from relayguard.domain.metrics import METRICS
from relayguard.domain.models import Outcome
from relayguard.engine import Engine
from relayguard.inventory import parse_inventory
from relayguard.services import Publisher, UrgentJobs

from tests.fakes import (
    FakeBannerCheck,
    FakeConnector,
    FakeEnqueueOnce,
    FakeInventoryStore,
    FakeJobQueue,
    FakeLambdaContext,
    FakeLockStore,
    FakeMetrics,
    FakeNotifier,
    FakeRecordStore,
    FakeRunStore,
    FakeSession,
    FakeStateStore,
    ok,
)
from tests.unit.samples import MODERN_COMPLIANT, hx, probe_text

EVENTS = Path(__file__).parents[2] / "events"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
WORK = "https://sqs.eu-west-1.amazonaws.com/123456789012/relayguard-WorkQueue-AbCdEf123456"
URGENT = "https://sqs.eu-west-1.amazonaws.com/123456789012/relayguard-UrgentQueue-GhIjKl789012"
ENV = {
    "RG_INVENTORY_BUCKET": "inv", "RG_WORK_QUEUE_URL": WORK, "RG_URGENT_QUEUE_URL": URGENT, "RG_RUNS_TABLE": "runs",
    "RG_STATE_TABLE": "state", "RG_LOCKS_TABLE": "locks", "RG_IDEMPOTENCY_TABLE": "idem",
    "RG_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:results", "RG_RECORDS_BUCKET": "records",
    "POWERTOOLS_SERVICE_NAME": "relayguard",
    "POWERTOOLS_TRACE_DISABLED": "true",
    # template.yaml's Globals; Lambda sets them before the handler module is imported, and so does entrypoint().
    "POWERTOOLS_METRICS_NAMESPACE": "RelayGuard",
}
INVENTORY = parse_inventory({"servers": [
    {"name": "web1", "host": "203.0.113.10", "host_keys": [KEY], "aliases": ["web1.example.com"]},
    {"name": "web2", "host": "203.0.113.20", "host_keys": [KEY]},
]})


@pytest.fixture(autouse=True)
def lambda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


# See entrypoint(): the X-Ray SDK opens its UDP emitter's socket on import, so it is imported now, while
# this file is collected, rather than under the unit tests' disabled sockets.
importlib.import_module("aws_xray_sdk.core")


def entrypoint(name: str) -> Any:
    """The handler module, imported only now, under the Lambda environment above. Powertools reads its
    namespace and service name when ``relayguard.entrypoints`` is first imported; importing it while
    this file is collected (before any environment is set) would leave them unset for every later test
    of the session, the e2e tests' handlers included. The X-Ray SDK, which the tracer loads, is imported
    with this file instead: it opens its UDP emitter's socket on import, and unit tests run with sockets
    disabled. Metrics not flushed by an earlier test are dropped."""
    module = importlib.import_module(f"relayguard.entrypoints.{name}")
    importlib.import_module("relayguard.entrypoints").metrics.clear_metrics()
    return module


def event(path: str) -> dict[str, Any]:
    return json.loads((EVENTS / path).read_text())  # type: ignore[no-any-return]


def emitted_metrics(stdout: str) -> dict[str, float]:
    """Every metric value the handler flushed as CloudWatch EMF lines, by name (ColdStart left out).

    Each one must be a metric of ``domain.metrics.METRICS`` (the list the alarms and the dashboard are
    checked against), in the template's namespace, with exactly its dimensions plus ``service``."""
    found: dict[str, float] = {}
    for line in stdout.splitlines():
        blob = json.loads(line) if line.startswith("{") else {}
        for directive in blob.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                if metric["Name"] != "ColdStart":
                    listed = METRICS[metric["Name"]]
                    assert (directive["Namespace"], metric["Unit"]) == ("RelayGuard", listed.unit)
                    assert [sorted(d) for d in directive["Dimensions"]] == [sorted(("service", *listed.dimensions))]
                    values = blob[metric["Name"]]
                    found[metric["Name"]] = found.get(metric["Name"], 0) + (
                        sum(values) if isinstance(values, list) else values)
    return found


# -- planner -----------------------------------------------------------------------------------


def test_planner_fans_out_one_job_per_server_and_reports_them(capsys: pytest.CaptureFixture[str]) -> None:
    runs, queue, notifier = FakeRunStore(), FakeJobQueue(), FakeNotifier()
    handler = entrypoint("planner").make_handler(functools.partial(
        bootstrap.planner, inventory=FakeInventoryStore(INVENTORY), runs=runs, queue=queue,
        publisher=Publisher(notifier, runs, FakeStateStore(), FakeRecordStore(), FakeMetrics())))

    result = handler(event("planner/manual_fix_sweep.json"), FakeLambdaContext())

    assert (result["servers"], result["mode"], result["unsent"], result["closed_overdue"]) == (2, "fix", 0, [])
    assert [json.loads(body)["server"]["name"] for body in queue.sent[WORK]] == ["web1", "web2"]
    assert runs.progress(result["run_id"]).total == 2
    assert emitted_metrics(capsys.readouterr().out) == {"ServersPlanned": 2, "RunsClosedOverdue": 0,
                                                        "RunsStarted": 1}


# -- worker ------------------------------------------------------------------------------------


def worker_handler(session: FakeSession, state: FakeStateStore, queue: FakeJobQueue) -> Any:
    runs = FakeRunStore()
    return entrypoint("worker").make_handler(functools.partial(
        bootstrap.worker, engine_factory=lambda: Engine(FakeConnector(session), FakeBannerCheck()),
        locks=FakeLockStore(), state=state, queue=queue,
        publisher=Publisher(FakeNotifier(), runs, state, FakeRecordStore(), FakeMetrics()),
        inventory=FakeInventoryStore(INVENTORY)))


def test_worker_audits_each_server_of_the_batch(capsys: pytest.CaptureFixture[str]) -> None:
    session, state = FakeSession([ok(probe_text(MODERN_COMPLIANT))] * 2), FakeStateStore()
    handler = worker_handler(session, state, FakeJobQueue())

    answer = handler(event("worker/sweep_batch.json"), FakeLambdaContext())

    assert answer == {"batchItemFailures": []}
    assert {name: s.outcome for name, s in state.states.items()} == {"web1": Outcome.COMPLIANT,
                                                                     "web2": Outcome.COMPLIANT}
    session.assert_all_consumed()
    # Each sample server has 3 messages queued: its spam signals are published too.
    assert emitted_metrics(capsys.readouterr().out) == {"JobsReceived": 2, "ServersScanned": 2, "QueueSize": 6}


def server_signals(stdout: str) -> dict[str, dict[str, float]]:
    """The EMF documents carrying a ``server`` dimension: server → metric → value."""
    found: dict[str, dict[str, float]] = {}
    for line in stdout.splitlines():
        blob = json.loads(line) if line.startswith("{") else {}
        for directive in blob.get("_aws", {}).get("CloudWatchMetrics", []):
            if ["server", "service"] in [sorted(d) for d in directive["Dimensions"]]:
                assert directive["Namespace"] == "RelayGuard"
                values = {m["Name"]: sum(blob[m["Name"]]) for m in directive["Metrics"]}
                found.setdefault(blob["server"], {}).update(values)
    return found


def test_worker_publishes_each_servers_nonzero_spam_signals_under_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN web1 with send-limit hits and relay rejects but an empty queue, and web2 quiet
    noisy = {**MODERN_COMPLIANT, "exim.queue.hex": hx("0\n"), "signals.since": "2026-12-01 02:00:00",
             "signals.send_limit": "2", "signals.relay_reject": "41", "signals.partial": "0"}
    quiet = {**noisy, "signals.send_limit": "0", "signals.relay_reject": "0"}
    session = FakeSession([ok(probe_text(noisy)), ok(probe_text(quiet))])
    handler = worker_handler(session, FakeStateStore(), FakeJobQueue())

    handler(event("worker/sweep_batch.json"), FakeLambdaContext())

    # THEN only web1's non-zero counts are metrics, dimensioned by its name; zeros and web2 make none
    assert server_signals(capsys.readouterr().out) == {"web1": {"SendLimitHits": 2, "RelayRejects": 41}}


def test_worker_fails_only_the_malformed_record(capsys: pytest.CaptureFixture[str]) -> None:
    state = FakeStateStore()
    handler = worker_handler(FakeSession([ok(probe_text(MODERN_COMPLIANT))]), state, FakeJobQueue())
    poison = event("worker/good_and_poison.json")["Records"][1]["messageId"]

    answer = handler(event("worker/good_and_poison.json"), FakeLambdaContext())

    assert answer == {"batchItemFailures": [{"itemIdentifier": poison}]}
    assert list(state.states) == ["web1"]
    assert emitted_metrics(capsys.readouterr().out) == {"JobsReceived": 2, "ServersScanned": 1, "MalformedJobs": 1,
                                                        "QueueSize": 3}


def test_worker_short_of_time_hands_the_job_straight_back_to_its_queue() -> None:
    queue, state = FakeJobQueue(), FakeStateStore()
    handler = worker_handler(FakeSession(), state, queue)
    record = event("worker/urgent_job.json")["Records"][0]

    # A batch whose every record failed is an error for Powertools: SQS then retries the whole batch.
    with pytest.raises(BatchProcessingError, match="All records failed"):
        handler({"Records": [record]}, FakeLambdaContext(remaining_ms=1_000))

    assert queue.returned == [(URGENT, record["receiptHandle"])]
    assert state.states == {}


# -- alert intake ------------------------------------------------------------------------------


def intake_handler(queue: FakeJobQueue, runs: FakeRunStore | None = None) -> Any:
    dedup = FakeEnqueueOnce(UrgentJobs(load_settings(ENV), runs or FakeRunStore(), queue))
    return entrypoint("alert_intake").make_handler(functools.partial(
        bootstrap.alert_intake, inventory=FakeInventoryStore(INVENTORY), enqueue_once=dedup))


def test_alert_enqueues_one_urgent_job_and_a_repeat_is_deduplicated(capsys: pytest.CaptureFixture[str]) -> None:
    queue = FakeJobQueue()
    handler = intake_handler(queue)

    first = handler(event("alert_intake/spam_alert.json"), FakeLambdaContext())["alerts"]
    again = handler(event("alert_intake/spam_alert.json"), FakeLambdaContext())["alerts"]

    assert [(a["status"], a["server"]) for a in first + again] == [("enqueued", "web1"), ("duplicate", "web1")]
    assert again[0]["run_id"] == first[0]["run_id"]
    (body,) = queue.sent[URGENT]
    assert json.loads(body)["alert_id"] == first[0]["alert_id"]
    assert emitted_metrics(capsys.readouterr().out) == {"AlertsReceived": 2, "AlertsDeduplicated": 1,
                                                        "RunsStarted": 1}


def test_alert_naming_an_unknown_server_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    queue, runs = FakeJobQueue(), FakeRunStore()
    detail = event("alert_intake/unknown_server.json")["detail"]

    answer = intake_handler(queue, runs)(event("alert_intake/unknown_server.json"), FakeLambdaContext())

    assert answer == {"alerts": [{"status": "unknown-server", "alert_id": detail["alert_id"]}]}
    assert (queue.sent, runs.runs) == ({}, {})
    assert emitted_metrics(capsys.readouterr().out) == {"AlertsReceived": 1, "UnknownServers": 1}


def test_a_cloudwatch_alarm_becomes_an_alert_and_its_ok_is_ignored() -> None:
    queue = FakeJobQueue()
    handler = intake_handler(queue)

    (alarm,) = handler(event("alert_intake/cloudwatch_alarm.json"), FakeLambdaContext())["alerts"]
    recovered = handler(event("alert_intake/cloudwatch_alarm_ok.json"), FakeLambdaContext())

    assert (alarm["status"], alarm["server"], alarm["alert_id"].startswith("alarm-")) == ("enqueued", "web1", True)
    assert recovered == {"alerts": []}
    (body,) = queue.sent[URGENT]
    assert json.loads(body)["trigger"] == "alert"


def test_an_alarm_naming_no_server_is_rejected() -> None:
    with pytest.raises(ValueError, match="names no server"):
        intake_handler(FakeJobQueue())(event("alert_intake/malformed_alarm_without_server.json"), FakeLambdaContext())


def test_worker_reads_the_inventory_once_per_batch_and_refuses_a_tampered_job_with_a_log_line(
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a batch whose second job sends web2's SSH session to another address
    batch = event("worker/sweep_batch.json")
    tampered = json.loads(batch["Records"][1]["body"])
    tampered["server"]["host"] = "192.0.2.66"
    batch["Records"][1]["body"] = json.dumps(tampered)
    session, state = FakeSession([ok(probe_text(MODERN_COMPLIANT))]), FakeStateStore()
    connector = FakeConnector(session)
    inventory = FakeInventoryStore(INVENTORY)
    handler = entrypoint("worker").make_handler(functools.partial(
        bootstrap.worker, engine_factory=lambda: Engine(connector, FakeBannerCheck()), locks=FakeLockStore(),
        state=state, queue=FakeJobQueue(), inventory=inventory,
        publisher=Publisher(FakeNotifier(), FakeRunStore(), state, FakeRecordStore(), FakeMetrics())))

    answer = handler(batch, FakeLambdaContext())

    # THEN web1 is audited, web2's job is refused without a connection, and one inventory read served both
    assert answer == {"batchItemFailures": []}
    assert [t.host for t in connector.targets] == ["203.0.113.10"]
    assert inventory.loads == 1
    assert state.states["web2"].outcome == Outcome.FAILED
    (refusal,) = [r for r in caplog.records if r.getMessage().startswith("job refused")]
    assert refusal.levelname == "WARNING"
    assert refusal.reason == "inventory-mismatch: the job's host differ from the inventory's"  # type: ignore[attr-defined]
    assert refusal.address == "192.0.2.66"  # type: ignore[attr-defined]
    assert emitted_metrics(capsys.readouterr().out) == {"JobsReceived": 2, "ServersScanned": 2, "JobsRefused": 1,
                                                        "Failed": 1, "FailedByReason": 1, "QueueSize": 3}
