"""The stack's rollout: the run's gate over the run record, the planner's run per event, window and
exclusions, the worker's hold-and-requeue and the run-stopped message. Fakes only (tests/fakes.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from relayguard.config import ConfigError, Settings, load_settings
from relayguard.domain.models import Mode, Outcome
from relayguard.domain.rollout import Admission, Decision, ErrorBudget, MaintenanceWindow, Rollout, SkipReason
from relayguard.domain.server import Server
from relayguard.engine import Engine
from relayguard.events import Job, SpamAlert
from relayguard.inventory import parse_inventory
from relayguard.ports import RunProgress
from relayguard.services import (
    GATE_ATTEMPTS,
    RUN_DEADLINE,
    Publisher,
    RunGate,
    UrgentJobs,
    Worker,
    job_for,
    plan_sweep,
)

from tests.fakes import (
    FakeBannerCheck,
    FakeConnector,
    FakeInventoryStore,
    FakeJobQueue,
    FakeLockStore,
    FakeMetrics,
    FakeNotifier,
    FakeRecordStore,
    FakeRunStore,
    FakeSession,
    FakeStateStore,
    ok,
)
from tests.unit.samples import HOST_KEY, MODERN_EXPOSED, NOTIFICATION_SCHEMA, STACK_ENV, probe_text

SCHEMA = NOTIFICATION_SCHEMA
KEY = HOST_KEY
ENV = STACK_ENV
WORK = ENV["RG_WORK_QUEUE_URL"]
INVENTORY = parse_inventory({"servers": [
    {"name": "web1", "host": "198.51.100.1", "host_keys": [KEY]},
    {"name": "web2", "host": "198.51.100.2", "host_keys": [KEY], "tags": ["relayguard:exclude"]},
    {"name": "web3", "host": "198.51.100.3", "host_keys": [KEY], "tags": ["prod"]},
]})
RUN = "sweep-1"
WEB1, WEB2, WEB3 = INVENTORY.servers


def settings(**env: str) -> Settings:
    return load_settings({**ENV, **env})


def open_run(runs: FakeRunStore, rollout: Rollout, total: int = 20) -> None:
    assert runs.create(RUN, "fix", "sweep", total, "2026-11-25T00:00:00+00:00", rollout=rollout)


def gate_on(runs: FakeRunStore, stops: list[tuple[str, str]] | None = None) -> RunGate:
    def on_stop(progress: RunProgress, reason: str) -> None:
        if stops is not None:
            stops.append((progress.run_id, reason))

    return RunGate(runs, RUN, on_stop)


# -- settings ------------------------------------------------------------------------------------


def test_rollout_settings_read_unlimited_counts_percentages_window_and_tag() -> None:
    cfg = load_settings({**ENV, "RG_MAX_CHANGES": "5", "RG_MAX_ERRORS": "10%", "RG_CANARY_SIZE": "2",
                         "RG_MAINTENANCE_WINDOW": "sat,sun 01:00-05:00 Europe/Berlin", "RG_EXCLUDE_TAG": "hands-off"})
    assert cfg.rollout == Rollout(max_changes=5, max_errors=ErrorBudget(percent=10), canary=2)
    assert cfg.maintenance_window == MaintenanceWindow.parse("sat,sun 01:00-05:00 Europe/Berlin")
    assert cfg.exclude_tag == "hands-off"
    unlimited = load_settings({**ENV, "RG_MAX_CHANGES": "unlimited", "RG_MAX_ERRORS": "UNLIMITED"})
    assert unlimited.rollout == Rollout()
    assert load_settings({**ENV, "RG_MAX_CHANGES": "0"}).rollout.max_changes == 0  # 0 is a limit, not "none"


@pytest.mark.parametrize(("name", "value"), [
    ("RG_MAX_CHANGES", "-1"), ("RG_MAX_CHANGES", "lots"), ("RG_MAX_ERRORS", "0"), ("RG_MAX_ERRORS", "150%"),
    ("RG_CANARY_SIZE", "-2"), ("RG_MAINTENANCE_WINDOW", "01:00-05:00 Mars/Olympus"),
])
def test_a_malformed_rollout_setting_fails_the_cold_start_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({**ENV, name: value})


# -- the run's gate ------------------------------------------------------------------------------


def test_an_admitted_fix_is_reserved_on_the_run_and_counted_once_when_it_ends() -> None:
    runs = FakeRunStore()
    open_run(runs, Rollout(max_errors=ErrorBudget(count=2)))
    gate = gate_on(runs)
    assert gate.admit(WEB1).decision == Decision.START
    assert (runs.progress(RUN).fix_started, runs.reservation(RUN, "web1")) == (1, "running")
    gate.finished(WEB1, Outcome.FAILED)
    gate.finished(WEB1, Outcome.FAILED)  # a second report of the same fix changes nothing
    progress = runs.progress(RUN)
    assert (progress.fix_started, progress.fix_finished, progress.fix_failed) == (1, 1, 1)


def test_two_workers_cannot_both_take_the_last_change() -> None:
    # GIVEN a run that may change one server, and another worker that takes that slot between this
    # gate's read and its reservation
    runs = FakeRunStore(conflicts=1)
    open_run(runs, Rollout(max_changes=1))
    # WHEN this gate asks for web1
    answer = gate_on(runs).admit(WEB1)
    # THEN its reservation loses, it reads again, and the run is full
    assert answer == Admission(Decision.SKIP, SkipReason.MAX_CHANGES)
    assert runs.reservation(RUN, "web1") is None
    assert runs.progress(RUN).fix_started == 1


def test_a_gate_that_keeps_losing_its_reservation_waits_instead_of_failing() -> None:
    runs = FakeRunStore(conflicts=GATE_ATTEMPTS)
    open_run(runs, Rollout())
    assert gate_on(runs).admit(WEB1).decision == Decision.WAIT
    assert runs.reservation(RUN, "web1") is None


def test_a_redelivered_job_resumes_its_admitted_fix_without_counting_a_second_change() -> None:
    runs = FakeRunStore()
    open_run(runs, Rollout(max_changes=1))
    assert gate_on(runs).admit(WEB1).decision == Decision.START
    # The worker died; SQS delivers the job again.
    assert gate_on(runs).admit(WEB1).decision == Decision.START
    assert runs.progress(RUN).fix_started == 1
    assert gate_on(runs).admit(WEB3) == Admission(Decision.SKIP, SkipReason.MAX_CHANGES)


def test_the_canary_holds_the_rest_until_it_ended_well() -> None:
    runs = FakeRunStore()
    open_run(runs, Rollout(canary=1))
    gate = gate_on(runs)
    assert gate.admit(WEB1) == Admission(Decision.START, canary=True)
    assert gate.admit(WEB3).decision == Decision.WAIT
    gate.finished(WEB1, Outcome.REMEDIATED)
    assert gate.admit(WEB3) == Admission(Decision.START)


def test_a_spent_budget_stops_the_run_once_and_only_the_first_skip_announces_it() -> None:
    runs, stops = FakeRunStore(), list[tuple[str, str]]()
    open_run(runs, Rollout(max_errors=ErrorBudget(count=2)))
    for server in (WEB1, WEB3):
        gate = gate_on(runs, stops)
        assert gate.admit(server).decision == Decision.START
        gate.finished(server, Outcome.FAILED)
    assert stops == []  # nothing was held back yet
    later = [Server(name=f"web{i}", host=f"198.51.100.{i}") for i in range(4, 7)]
    answers = [gate_on(runs, stops).admit(s) for s in later]
    assert answers == [Admission(Decision.SKIP, SkipReason.ERROR_BUDGET)] * 3
    assert stops == [(RUN, "error-budget")]
    assert runs.progress(RUN).stopped == "error-budget"


def test_a_job_of_no_run_record_is_not_limited() -> None:
    assert RunGate(FakeRunStore(), "sweep-gone", lambda p, r: None).admit(WEB1).decision == Decision.START


# -- the run-stopped message and the digest ---------------------------------------------------------


def test_the_stop_is_one_error_message_and_the_digest_says_stopped() -> None:
    notifier, runs = FakeNotifier(), FakeRunStore()
    publisher = Publisher(notifier, runs, FakeStateStore(), FakeRecordStore(), FakeMetrics())
    open_run(runs, Rollout(max_errors=ErrorBudget(count=1), canary=1), total=3)
    gate = RunGate(runs, RUN, publisher.run_stopped)
    assert gate.admit(WEB1).decision == Decision.START
    gate.finished(WEB1, Outcome.FAILED)
    for server in (WEB1, WEB2, WEB3):
        if server is not WEB1:
            assert gate.admit(server) == Admission(Decision.SKIP, SkipReason.CANARY_FAILED)
    publisher.count(RUN, "web1", "failed")
    publisher.count(RUN, "web2", "skipped")
    publisher.count(RUN, "web3", "skipped")

    stopped, digest = notifier.published
    assert stopped.attributes == {"event": "run-stopped", "outcome": "stopped", "severity": "error", "server": "*",
                                  "mode": "fix", "finding": "relay"}
    assert (stopped.document["reason"], stopped.document["fixes"], stopped.document["limits"]) == (
        "canary-failed", {"started": 1, "finished": 1, "failed": 1},
        {"max_changes": None, "max_errors": "1", "canary": 1})
    assert "STOPPED" in stopped.text
    assert (digest.document["stopped"], digest.document["counts"]) == ("canary-failed", {"failed": 1, "skipped": 2})
    assert digest.document["severity"] == "critical"  # the failed server is worse than the stop
    assert "STOPPED: canary-failed" in digest.text
    for message in (stopped, digest):
        jsonschema.validate(message.document, SCHEMA)


def test_a_digest_of_a_stopped_run_without_failures_is_at_least_an_error() -> None:
    notifier, runs = FakeNotifier(), FakeRunStore()
    publisher = Publisher(notifier, runs, FakeStateStore(), FakeRecordStore(), FakeMetrics())
    open_run(runs, Rollout(), total=1)
    assert runs.claim_stop(RUN, "error-budget")
    publisher.count(RUN, "web1", "skipped")
    (digest,) = notifier.published
    assert (digest.document["severity"], digest.attributes["severity"]) == ("error", "error")


# -- the planner ----------------------------------------------------------------------------------


def planned(cfg: Settings, runs: FakeRunStore, queue: FakeJobQueue, **kwargs: Any) -> dict[str, Any]:
    publisher = Publisher(FakeNotifier(), runs, FakeStateStore(), FakeRecordStore(), FakeMetrics())
    return plan_sweep(cfg, FakeInventoryStore(INVENTORY), runs, queue, publisher, **kwargs)


def test_the_same_event_twice_opens_one_run_and_queues_each_server_once() -> None:
    runs, queue = FakeRunStore(), FakeJobQueue()
    cfg = settings(RG_MAX_ERRORS="2", RG_CANARY_SIZE="1")
    at = datetime(2026, 12, 1, 6, tzinfo=UTC)
    first = planned(cfg, runs, queue, mode=Mode.FIX, event_id="evt-1", event_time=at)
    again = planned(cfg, runs, queue, mode=Mode.FIX, event_id="evt-1", event_time=at)
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert first["run_id"] == again["run_id"]
    assert list(runs.runs) == [first["run_id"]]
    assert [Job.model_validate_json(b).server.name for b in queue.sent[WORK]] == ["web1", "web2", "web3"]
    # The limits travel with the run.
    assert runs.progress(str(first["run_id"])).rollout == Rollout(max_errors=ErrorBudget(count=2), canary=1)
    other = planned(cfg, runs, queue, mode=Mode.FIX, event_id="evt-2", event_time=at)
    assert other["run_id"] != first["run_id"]
    assert len(queue.sent[WORK]) == 6


def test_excluded_servers_are_queued_marked_excluded() -> None:
    runs, queue = FakeRunStore(), FakeJobQueue()
    result = planned(settings(), runs, queue, mode=Mode.FIX)
    jobs = {j.server.name: j for j in (Job.model_validate_json(b) for b in queue.sent[WORK])}
    assert {name: job.excluded for name, job in jobs.items()} == {"web1": False, "web2": True, "web3": False}
    assert result["excluded"] == 1
    # Another tag is the exclusion when the stack says so.
    queue = FakeJobQueue()
    planned(settings(RG_EXCLUDE_TAG="prod"), FakeRunStore(), queue, mode=Mode.FIX)
    assert [Job.model_validate_json(b).excluded for b in queue.sent[WORK]] == [False, False, True]


@pytest.mark.parametrize(("hour", "mode", "outside"), [(2, Mode.FIX, False), (12, Mode.AUDIT, True)])
def test_a_fix_sweep_outside_the_maintenance_window_only_audits(hour: int, mode: Mode, outside: bool) -> None:
    runs, queue = FakeRunStore(), FakeJobQueue()
    cfg = settings(RG_MAINTENANCE_WINDOW="01:00-05:00 UTC")
    result = planned(cfg, runs, queue, mode=Mode.FIX, event_id="e", event_time=datetime(2026, 12, 1, hour, tzinfo=UTC))
    assert (result["mode"], result["outside_window"]) == (str(mode), outside)
    assert {Job.model_validate_json(b).mode for b in queue.sent[WORK]} == {mode}
    assert runs.progress(str(result["run_id"])).mode == str(mode)


# -- the job message ------------------------------------------------------------------------------


def test_a_job_of_a_server_that_is_not_excluded_is_the_message_it_always_was() -> None:
    job = job_for(WEB1, RUN, Mode.FIX, "sweep")
    assert "excluded" not in json.loads(job.body())
    assert Job.model_validate_json(job.body()).excluded is False
    marked = job_for(WEB2, RUN, Mode.FIX, "sweep", excluded=True)
    assert json.loads(marked.body())["excluded"] is True
    assert Job.model_validate_json(marked.body()) == marked


# -- the worker -----------------------------------------------------------------------------------


def exposed_engine(session: FakeSession) -> Engine:
    return Engine(FakeConnector(session), FakeBannerCheck(220))


def make_worker(runs: FakeRunStore, session: FakeSession, cfg: Settings | None = None) -> tuple[Worker, FakeNotifier]:
    notifier = FakeNotifier()
    publisher = Publisher(notifier, runs, FakeStateStore(), FakeRecordStore(), FakeMetrics())
    worker = Worker(cfg or settings(), lambda: exposed_engine(session), FakeLockStore(), publisher.state, publisher,
                    FakeJobQueue(), FakeInventoryStore(INVENTORY))
    return worker, notifier


def test_a_fix_the_run_holds_goes_back_to_the_queue_uncounted_and_unannounced() -> None:
    # GIVEN a run whose canary (web1) is still running
    runs = FakeRunStore()
    open_run(runs, Rollout(canary=1), total=2)
    assert gate_on(runs).admit(WEB1).decision == Decision.START
    session = FakeSession([ok(probe_text(MODERN_EXPOSED))])
    worker, notifier = make_worker(runs, session)
    job = job_for(WEB3, RUN, Mode.FIX, "sweep")
    # WHEN web3's job comes
    handled = worker.handle(job, receive_count=1, remaining_ms=600_000, queue_url=WORK)
    # THEN only the probe ran, and the same job is queued again after the retry delay
    assert handled.status == "requeued"
    assert len(session.scripts) == 1
    assert worker.queue.sent[WORK] == [job.body()]  # type: ignore[attr-defined]
    assert worker.queue.delays == [worker.settings.lock_retry_seconds]  # type: ignore[attr-defined]
    assert runs.progress(RUN).completed == 0
    assert notifier.published == []
    assert worker.state.get("web3") is None


def test_a_held_job_older_than_any_run_lives_is_left_to_sqs_retries() -> None:
    runs = FakeRunStore()
    open_run(runs, Rollout(canary=1), total=2)
    gate_on(runs).admit(WEB1)
    worker, _ = make_worker(runs, FakeSession([ok(probe_text(MODERN_EXPOSED))]))
    old = job_for(WEB3, RUN, Mode.FIX, "sweep").model_copy(
        update={"enqueued_at": datetime.now(UTC) - RUN_DEADLINE - timedelta(minutes=1)})
    with pytest.raises(Exception, match="holds the fix"):
        worker.handle(old, receive_count=1, remaining_ms=600_000, queue_url=WORK)
    assert worker.queue.sent == {}  # type: ignore[attr-defined]


def test_an_excluded_server_is_probed_and_reported_never_fixed() -> None:
    runs = FakeRunStore()
    open_run(runs, Rollout(), total=1)
    session = FakeSession([ok(probe_text(MODERN_EXPOSED))])
    worker, _ = make_worker(runs, session)
    handled = worker.handle(job_for(WEB2, RUN, Mode.FIX, "sweep", excluded=True), 1, 600_000, WORK)
    assert handled.result is not None
    assert (handled.result.outcome, handled.result.exposed_after) == (Outcome.EXCLUDED, True)
    session.assert_all_consumed()  # the probe and nothing else
    assert runs.progress(RUN).counts == {"excluded": 1}
    assert runs.progress(RUN).fix_started == 0


def test_an_alert_job_is_not_limited_by_any_run() -> None:
    runs = FakeRunStore()
    assert runs.create("alert-1", "fix", "alert", 1, "2026-11-25T00:00:00+00:00")
    worker, _ = make_worker(runs, FakeSession())
    assert worker.gate(job_for(WEB1, "alert-1", Mode.FIX, "alert", "a-1")) is None
    assert worker.gate(job_for(WEB1, RUN, Mode.AUDIT, "sweep")) is None
    assert isinstance(worker.gate(job_for(WEB1, RUN, Mode.FIX, "sweep")), RunGate)


def test_giving_up_on_an_admitted_fix_ends_it_failed_so_the_canary_does_not_wait_forever() -> None:
    runs = FakeRunStore()
    open_run(runs, Rollout(canary=1), total=2)
    assert gate_on(runs).admit(WEB1).decision == Decision.START
    worker, _ = make_worker(runs, FakeSession())
    worker.give_up(job_for(WEB1, RUN, Mode.FIX, "sweep"))
    progress = runs.progress(RUN)
    assert (progress.fix_finished, progress.fix_failed, progress.counts) == (1, 1, {"failed": 1})
    assert gate_on(runs).admit(WEB3) == Admission(Decision.SKIP, SkipReason.CANARY_FAILED)


# -- alerts ---------------------------------------------------------------------------------------


def test_an_alert_for_an_excluded_server_queues_an_excluded_job() -> None:
    runs, queue = FakeRunStore(), FakeJobQueue()
    alert = SpamAlert.model_validate({"schema": "relayguard.alert/v1", "alert_id": "a-1", "source": "csf_rt",
                                      "kind": "relay_tracking", "observed_at": "2026-12-01T05:59:00Z",
                                      "severity": "critical", "host": {"hostname": "web2"}})
    answer = UrgentJobs(settings(), runs, queue).enqueue(WEB2, alert)
    (body,) = queue.sent[ENV["RG_URGENT_QUEUE_URL"]]
    job = Job.model_validate_json(body)
    assert (job.excluded, job.trigger, answer["run_id"]) == (True, "alert", "alert-a-1")
    assert runs.progress("alert-a-1").rollout == Rollout()  # an alert's run has no limits
