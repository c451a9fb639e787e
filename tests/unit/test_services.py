"""Planner, worker and alert intake services, and the notification rules, through fakes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
from relayguard.config import load_settings
from relayguard.domain.evidence import record_document
from relayguard.domain.models import Mode, Outcome
from relayguard.domain.notify import change_of, digest_message
from relayguard.engine import Engine, ServerResult
from relayguard.errors import Unreachable
from relayguard.events import Job, SpamAlert
from relayguard.inventory import parse_inventory
from relayguard.ports import ServerState
from relayguard.services import (
    FINISH_RESERVE_MS,
    RUN_DEADLINE,
    AlertIntake,
    Deferred,
    LockBusy,
    Publisher,
    UrgentJobs,
    Worker,
    close_overdue_runs,
    job_for,
    plan_sweep,
)

from tests.fakes import (
    FakeBannerCheck,
    FakeConnector,
    FakeEnqueueOnce,
    FakeInventoryStore,
    FakeJobQueue,
    FakeLockStore,
    FakeMetrics,
    FakeNotifier,
    FakeRecordStore,
    FakeRunReports,
    FakeRunStore,
    FakeStateStore,
)
from tests.unit.samples import HOST_KEY, NOTIFICATION_SCHEMA, STACK_ENV

SCHEMA = NOTIFICATION_SCHEMA
KEY = HOST_KEY
ENV = STACK_ENV
SETTINGS = load_settings(ENV)
WORK = ENV["RG_WORK_QUEUE_URL"]
INVENTORY = parse_inventory({"servers": [
    {"name": f"web{i}", "host": f"198.51.100.{i}", "host_keys": [KEY],
     "aliases": [f"203.0.113.{i}", f"web{i}.example.com"]}
    for i in range(1, 4)
]})


def make_publisher() -> tuple[Publisher, FakeNotifier, FakeRunStore, FakeStateStore]:
    notifier, runs, state = FakeNotifier(), FakeRunStore(), FakeStateStore()
    return Publisher(notifier, runs, state, FakeRecordStore(), FakeMetrics()), notifier, runs, state


def unreachable_engine() -> Engine:
    return Engine(FakeConnector(error=Unreachable("web1 (198.51.100.1:22): connection refused")), FakeBannerCheck(None))


# -- notification rules ------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "outcome", "reason", "change"), [
    (None, "remediated", "", "remediated"),
    ("ok", "remediated", "", "remediated"),
    (None, "compliant", "", None),
    (None, "noncompliant", "", "noncompliant"),
    ("noncompliant", "noncompliant", "", None),
    ("noncompliant", "compliant", "", "recovered"),
    ("noncompliant", "remediated", "", "recovered"),
    (None, "failed", "exim-restart-failed", "failed"),
    ("failed:exim-restart-failed", "failed", "exim-restart-failed", None),
    ("failed:exim-restart-failed", "unreachable", "web1: connection refused", "failed"),
    ("unreachable", "unreachable", "web1: no route to host", None),
    ("failed:whmapi1-refused", "failed", "whmapi1-refused: Tweak locked", None),
    ("unreachable", "not-cpanel", "", "recovered"),
    (None, "skipped", "error-budget", "noncompliant"),
    ("noncompliant", "skipped", "max-changes", None),
    ("failed:exim-restart-failed", "excluded", "excluded", None),
    (None, "excluded", "excluded", None),
    ("ok", "reverted", "", "reverted"),
    ("reverted", "reverted", "", "reverted"),
])
def test_only_changes_are_announced(before, outcome, reason, change):
    assert change_of(before, outcome, reason) == change


def test_digest_counts_failures_and_validates_against_the_schema():
    doc = digest_message("run-1", mode="fix", trigger="sweep", total=4,
                         counts={"remediated": 2, "unreachable": 1, "noncompliant": 1}, started_at="x",
                         at="2026-11-25T10:00:00+00:00")
    assert (doc["failed"], doc["outcome"], doc["severity"]) == (1, "failed", "warning")
    jsonschema.validate(doc, SCHEMA)


# -- planner -----------------------------------------------------------------------------------


def test_sweep_plans_one_job_per_server_and_opens_a_run():
    publisher, notifier, runs, _ = make_publisher()
    queue = FakeJobQueue()
    result = plan_sweep(SETTINGS, FakeInventoryStore(INVENTORY), runs, queue, publisher)
    bodies = queue.sent[SETTINGS.work_queue_url]
    jobs = [Job.model_validate_json(b) for b in bodies]
    assert [j.server.name for j in jobs] == ["web1", "web2", "web3"]
    assert {j.mode for j in jobs} == {Mode.AUDIT}
    assert runs.progress(result["run_id"]).total == 3
    assert notifier.published == []


def test_jobs_the_queue_refuses_are_counted_failed():
    publisher, notifier, runs, _ = make_publisher()
    result = plan_sweep(SETTINGS, FakeInventoryStore(INVENTORY), runs, FakeJobQueue(refuse=3), publisher,
                        mode=Mode.FIX)
    assert runs.progress(result["run_id"]).counts == {"failed": 3}
    (digest,) = notifier.published
    assert digest.document["failed"] == 3


def test_an_empty_inventory_still_gets_its_digest():
    publisher, notifier, runs, _ = make_publisher()
    plan_sweep(SETTINGS, FakeInventoryStore(parse_inventory({"servers": []})), runs, FakeJobQueue(), publisher)
    (digest,) = notifier.published
    assert digest.document["total"] == 0
    jsonschema.validate(digest.document, SCHEMA)


def test_a_run_past_its_deadline_gets_its_digest_with_the_uncounted_servers_failed():
    publisher, notifier, runs, _ = make_publisher()
    reports = FakeRunReports(publisher.records)  # type: ignore[arg-type]
    publisher.reports = reports
    started = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    runs.create("sweep-old", "fix", "sweep", 3, started.isoformat())
    web1 = ServerResult(name="web1", address="198.51.100.1", mode="fix", outcome=Outcome.REMEDIATED,
                        exposed_before=True, exposed_after=False)
    publisher.records.put(record_document(web1.to_json(), run_id="sweep-old", job_id="j1", trigger="sweep",
                                          recorded_at=started.isoformat(), alert_id=None))
    publisher.count("sweep-old", "web1", "remediated")
    # web2 and web3 never come back (their worker was killed on their last delivery).
    assert close_overdue_runs(runs, publisher, started + RUN_DEADLINE - timedelta(seconds=1)) == []
    assert notifier.published == []
    closed = close_overdue_runs(runs, publisher, started + RUN_DEADLINE)
    assert closed == [{"run_id": "sweep-old", "lost": 2, "started_at": started.isoformat()}]
    (digest,) = notifier.published
    # Its report page is written like any run's, and says how many servers left no record.
    page = reports.pages[digest.document["report"]]
    assert "2 more servers of this run left no record" in page
    assert digest.document["run_id"] == "sweep-old"
    assert digest.document["counts"] == {"failed": 2, "remediated": 1}
    assert digest.document["failed"] == 2
    jsonschema.validate(digest.document, SCHEMA)
    # Closed once: a later sweep, or a lost job that turns up after all, sends no second digest.
    assert close_overdue_runs(runs, publisher, started + 2 * RUN_DEADLINE) == []
    publisher.count("sweep-old", "web2", "compliant")
    assert len(notifier.published) == 1


def test_a_complete_run_whose_digest_never_went_out_gets_it_at_the_next_sweep():
    publisher, notifier, runs, _ = make_publisher()
    runs.create("sweep-crashed", "audit", "sweep", 1, datetime.now(UTC).isoformat())
    runs.record("sweep-crashed", "web1", "compliant")  # counted; the worker died before publishing
    assert notifier.published == []
    plan_sweep(SETTINGS, FakeInventoryStore(INVENTORY), runs, FakeJobQueue(), publisher)
    (digest,) = notifier.published
    assert (digest.document["run_id"], digest.document["counts"]) == ("sweep-crashed", {"compliant": 1})


def test_a_run_a_worker_counts_into_while_it_is_being_closed_is_left_for_the_next_sweep():
    publisher, notifier, runs, _ = make_publisher()
    started = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    runs.create("sweep-race", "fix", "sweep", 2, started.isoformat())
    (seen,) = runs.open_runs()
    publisher.count("sweep-race", "web1", "remediated")  # lands between the read and the close
    assert runs.close(seen, 2) is None
    assert notifier.published == []
    assert [c["lost"] for c in close_overdue_runs(runs, publisher, started + RUN_DEADLINE)] == [1]
    (digest,) = notifier.published
    assert digest.document["counts"] == {"failed": 1, "remediated": 1}


# -- worker ------------------------------------------------------------------------------------


def make_worker(locks: FakeLockStore | None = None) -> tuple[Worker, FakeNotifier, FakeRunStore, FakeStateStore]:
    publisher, notifier, runs, state = make_publisher()
    worker = Worker(SETTINGS, unreachable_engine, locks or FakeLockStore(), state, publisher, FakeJobQueue(),
                    FakeInventoryStore(INVENTORY))
    return worker, notifier, runs, state


def a_job(runs: FakeRunStore, total: int = 1, server: str = "web1") -> Job:
    runs.create("run-1", "fix", "sweep", total, "2026-11-25T00:00:00+00:00")
    return job_for(INVENTORY.resolve(server), "run-1", Mode.FIX, "sweep")  # type: ignore[arg-type]


def test_worker_records_announces_and_digests_a_one_server_run():
    worker, notifier, runs, state = make_worker()
    job = a_job(runs)
    handled = worker.handle(job, receive_count=1, remaining_ms=600_000, queue_url=WORK)
    assert handled.status == "done"
    assert handled.result is not None
    assert handled.result.outcome == Outcome.UNREACHABLE
    assert state.get("web1").outcome == "unreachable"  # type: ignore[union-attr]
    server_msg, digest = (n.document for n in notifier.published)
    assert (server_msg["event"], server_msg["change"], server_msg["severity"]) == ("server-result", "failed", "warning")
    assert digest["counts"] == {"unreachable": 1}
    for doc in (server_msg, digest):
        jsonschema.validate(doc, SCHEMA)
    assert notifier.published[0].attributes == {"event": "server-result", "outcome": "unreachable",
                                                "severity": "warning", "server": "web1", "mode": "fix",
                                                "finding": "relay"}


def test_a_runs_last_job_writes_the_runs_report_page_and_the_digest_says_where_it_is():
    worker, notifier, runs, _ = make_worker()
    records = worker.publisher.records
    assert isinstance(records, FakeRecordStore)
    reports = worker.publisher.reports = FakeRunReports(records)
    runs.create("run-1", "fix", "sweep", 2, "2026-11-25T00:00:00+00:00")
    for name in ("web1", "web2"):
        worker.handle(job_for(INVENTORY.resolve(name), "run-1", Mode.FIX, "sweep"),  # type: ignore[arg-type]
                      receive_count=1, remaining_ms=600_000, queue_url=WORK)
    digest = notifier.published[-1]
    assert digest.document["report"] == "memory://reports/run-1.html"
    jsonschema.validate(digest.document, SCHEMA)
    assert digest.text.endswith("Fleet report: memory://reports/run-1.html\n")
    page = reports.pages["memory://reports/run-1.html"]
    assert '<dd id="count-total">2</dd>' in page
    assert page.count("<td class=\"server\">") == 2


def test_a_report_that_cannot_be_written_never_holds_back_the_digest(caplog: pytest.LogCaptureFixture):
    worker, notifier, runs, _ = make_worker()
    records = worker.publisher.records
    assert isinstance(records, FakeRecordStore)
    worker.publisher.reports = FakeRunReports(records, broken=True)
    worker.handle(a_job(runs), receive_count=1, remaining_ms=600_000, queue_url=WORK)
    digest = notifier.published[-1]
    assert (digest.document["event"], digest.document["report"]) == ("run-digest", None)
    assert "Fleet report" not in digest.text
    assert "run report not written" in caplog.text


def test_same_failure_again_is_not_announced_again():
    worker, notifier, runs, state = make_worker()
    state.put(ServerState("web1", "unreachable", "unreachable", "2000-01-01T00:00:00+00:00", "fix"))
    worker.handle(a_job(runs), receive_count=1, remaining_ms=600_000, queue_url=WORK)
    assert [n.document["event"] for n in notifier.published] == ["run-digest"]


def test_worker_defers_when_lambda_time_runs_short():
    worker, notifier, runs, _ = make_worker()
    with pytest.raises(Deferred):
        worker.handle(a_job(runs), receive_count=1, remaining_ms=SETTINGS.safety_margin_ms - 1, queue_url=WORK)
    assert notifier.published == []


def test_a_deferral_on_the_second_last_delivery_becomes_a_fresh_copy_not_a_dlq_step():
    worker, notifier, runs, _ = make_worker()
    job = a_job(runs)
    handled = worker.handle(job, receive_count=SETTINGS.max_receive_count - 1,
                            remaining_ms=SETTINGS.safety_margin_ms - 1, queue_url=WORK)
    assert handled.status == "requeued"
    assert worker.queue.sent[WORK] == [job.body()]  # type: ignore[attr-defined]
    assert notifier.published == []


def test_a_locked_server_sends_the_job_back_after_the_retry_delay():
    worker, notifier, runs, _ = make_worker(FakeLockStore(held=["web1"]))
    job = a_job(runs)
    handled = worker.handle(job, receive_count=1, remaining_ms=600_000, queue_url=WORK)
    assert handled.status == "requeued"
    assert worker.queue.sent[WORK] == [job.body()]  # type: ignore[attr-defined]
    assert worker.queue.delays == [SETTINGS.lock_retry_seconds]  # type: ignore[attr-defined]
    assert runs.progress("run-1").completed == 0
    assert notifier.published == []


def test_a_lock_held_longer_than_any_lock_lives_falls_back_to_sqs_retries():
    worker, _, runs, _ = make_worker(FakeLockStore(held=["web1"]))
    old = datetime.now(UTC) - timedelta(seconds=SETTINGS.lock_ttl_seconds)
    job = a_job(runs).model_copy(update={"enqueued_at": old})
    with pytest.raises(LockBusy):
        worker.handle(job, receive_count=1, remaining_ms=600_000, queue_url=WORK)
    assert worker.queue.sent == {}  # type: ignore[attr-defined]


def test_a_fresher_result_of_a_strong_enough_job_is_reused_without_ssh():
    def no_engine() -> Engine:
        raise AssertionError("no SSH session expected")

    publisher, notifier, runs, state = make_publisher()
    worker = Worker(SETTINGS, no_engine, FakeLockStore(), state, publisher, FakeJobQueue(),
                    FakeInventoryStore(INVENTORY))
    job = a_job(runs)
    later = (job.enqueued_at + timedelta(seconds=1)).isoformat()
    state.put(ServerState("web1", "remediated", "ok", later, "fix"))
    assert worker.handle(job, receive_count=2, remaining_ms=600_000, queue_url=WORK).status == "reused"
    assert runs.progress("run-1").counts == {"remediated": 1}
    assert [n.document["event"] for n in notifier.published] == ["run-digest"]


def test_an_older_or_weaker_result_is_not_reused():
    publisher, _, runs, state = make_publisher()
    worker = Worker(SETTINGS, unreachable_engine, FakeLockStore(), state, publisher, FakeJobQueue(),
                    FakeInventoryStore(INVENTORY))
    job = a_job(runs)
    state.put(ServerState("web1", "noncompliant", "noncompliant",
                          (job.enqueued_at + timedelta(seconds=1)).isoformat(), "audit"))
    assert worker.handle(job, receive_count=1, remaining_ms=600_000, queue_url=WORK).status == "done"


def test_giving_up_counts_the_server_failed_so_the_digest_completes():
    worker, notifier, runs, _ = make_worker()
    job = a_job(runs)
    worker.give_up(job)
    worker.give_up(job)  # a second give-up is not a second count
    (digest,) = notifier.published
    assert digest.document["counts"] == {"failed": 1}


# -- alert intake ------------------------------------------------------------------------------


def alert(**host: str) -> SpamAlert:
    return SpamAlert.model_validate({
        "schema": "relayguard.alert/v1", "alert_id": "a-1", "source": "csf_rt", "kind": "relay_tracking",
        "observed_at": datetime(2026, 11, 25, tzinfo=UTC), "host": host,
    })


def make_intake() -> tuple[AlertIntake, FakeRunStore, FakeJobQueue]:
    runs, queue = FakeRunStore(), FakeJobQueue()
    return AlertIntake(FakeInventoryStore(INVENTORY), FakeEnqueueOnce(UrgentJobs(SETTINGS, runs, queue))), runs, queue


@pytest.mark.parametrize("host", [{"public_ip": "203.0.113.2"}, {"hostname": "WEB2.example.com."},
                                  {"hostname": "web2"}])
def test_alerts_resolve_servers_by_alias(host):
    intake, _, queue = make_intake()
    (taken,) = intake.take([alert(**host)])
    assert (taken.status, taken.server.name, taken.answer["server"]) == ("enqueued", "web2", "web2")  # type: ignore[union-attr]
    assert len(queue.sent[SETTINGS.urgent_queue_url]) == 1


def test_an_alert_for_an_unknown_server_changes_nothing():
    intake, runs, queue = make_intake()
    (taken,) = intake.take([alert(public_ip="192.0.2.99")])
    assert (taken.server, taken.answer) == (None, {"status": "unknown-server", "alert_id": "a-1"})
    assert (queue.sent, runs.runs) == ({}, {})


def test_a_second_alert_of_the_same_kind_for_the_same_server_is_a_duplicate():
    intake, _, queue = make_intake()
    first, again = intake.take([alert(public_ip="203.0.113.2"), alert(hostname="web2.example.com")])
    assert (first.status, again.status) == ("enqueued", "duplicate")
    assert again.answer["run_id"] == first.answer["run_id"]  # the answer of the alert that enqueued the job
    assert len(queue.sent[SETTINGS.urgent_queue_url]) == 1


def test_enqueue_puts_one_urgent_job_in_alert_mode():
    runs, queue = FakeRunStore(), FakeJobQueue()
    answer = UrgentJobs(SETTINGS, runs, queue).enqueue(INVENTORY.resolve("web3"),  # type: ignore[arg-type]
                                                       alert(public_ip="203.0.113.3"))
    (body,) = queue.sent[SETTINGS.urgent_queue_url]
    job = Job.model_validate_json(body)
    assert (job.trigger, job.mode, job.alert_id, job.server.name) == ("alert", Mode.FIX, "a-1", "web3")
    assert runs.progress(answer["run_id"]).total == 1


def test_the_worker_gives_the_engine_a_deadline_inside_the_lambda_time_left():
    from tests.fakes import FakeSession, ok
    from tests.unit.samples import MODERN_COMPLIANT, probe_text

    session = FakeSession([ok(probe_text(MODERN_COMPLIANT))])
    publisher, _, runs, state = make_publisher()
    worker = Worker(SETTINGS, lambda: Engine(FakeConnector(session), FakeBannerCheck()), FakeLockStore(), state,
                    publisher, FakeJobQueue(), FakeInventoryStore(INVENTORY))
    remaining_ms = SETTINGS.safety_margin_ms + 1_000
    handled = worker.handle(a_job(runs), receive_count=1, remaining_ms=remaining_ms, queue_url=WORK)
    assert handled.result is not None
    assert handled.result.outcome == Outcome.COMPLIANT
    assert session.timeouts[0] <= (remaining_ms - FINISH_RESERVE_MS) / 1000
