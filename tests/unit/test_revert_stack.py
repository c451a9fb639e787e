"""Revert on the urgent path: an operator's revert_request → an urgent job with action revert → engine.revert."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from relayguard.config import load_settings
from relayguard.domain.models import Mode, Outcome
from relayguard.domain.revert import REVERT_PROBE_SCRIPT
from relayguard.domain.server import Inventory, Server
from relayguard.engine import Engine
from relayguard.events import Job, SpamAlert
from relayguard.ports import ServerState
from relayguard.services import Publisher, UrgentJobs, Worker, job_for

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
from tests.unit.samples import HOST_KEY, MODERN_EXPOSED, STACK_ENV, probe_text

KEY = HOST_KEY
SETTINGS = load_settings({**STACK_ENV, "RG_ALERT_MODE": "audit"})
WEB1 = Server(name="web1", host="203.0.113.10", host_keys=(KEY,))


def revert_request(**overrides: Any) -> dict[str, Any]:
    return {"schema": "relayguard.alert/v1", "alert_id": "revert-web1-1", "source": "manual",
            "kind": "revert_request", "observed_at": "2026-12-01T10:00:00Z", "host": {"hostname": "web1"},
            "evidence": {"requested_by": "ops@example.com", "reason": "customer's legacy POP clients"}, **overrides}


def test_a_revert_request_is_an_operators_act_only() -> None:
    assert SpamAlert.model_validate(revert_request()).action == "revert"
    with pytest.raises(ValidationError, match="comes only from an operator"):
        SpamAlert.model_validate(revert_request(source="csf_rt"))
    with pytest.raises(ValidationError, match="requested_by"):
        SpamAlert.model_validate(revert_request(evidence={}))


def test_a_revert_request_enqueues_a_fix_mode_revert_job_whatever_the_alert_mode() -> None:
    runs, queue = FakeRunStore(), FakeJobQueue()
    UrgentJobs(SETTINGS, runs, queue).enqueue(WEB1, SpamAlert.model_validate(revert_request()))
    (body,) = queue.sent[SETTINGS.urgent_queue_url]
    job = Job.model_validate_json(body)
    assert (job.action, job.mode, job.trigger) == ("revert", Mode.FIX, "alert")
    assert SETTINGS.alert_mode == Mode.AUDIT


def test_fix_and_audit_job_messages_keep_their_wire_format() -> None:
    body = job_for(WEB1, "run-1", Mode.FIX, "sweep").body()
    assert "action" not in json.loads(body)
    assert Job.model_validate_json(body).action is None
    revert = job_for(WEB1, "run-1", Mode.FIX, "alert", "a-1", action="revert")
    assert json.loads(revert.body())["action"] == "revert"
    with pytest.raises(ValidationError):
        Job.model_validate({**json.loads(body), "action": "reboot"})


def test_the_worker_runs_a_revert_job_through_engine_revert_never_reusing_a_fix_result() -> None:
    # GIVEN a fresher fix result recorded for web1, and a revert job for it
    session = FakeSession([ok(probe_text(MODERN_EXPOSED) + "revert.record.kind=missing\n")])
    runs, state, notifier = FakeRunStore(), FakeStateStore(), FakeNotifier()
    worker = Worker(SETTINGS, lambda: Engine(FakeConnector(session), FakeBannerCheck()), FakeLockStore(), state,
                    Publisher(notifier, runs, state, FakeRecordStore(), FakeMetrics()), FakeJobQueue(),
                    FakeInventoryStore(Inventory((WEB1,))))
    runs.create("alert-revert-web1-1", "fix", "alert", 1, "2026-12-01T10:00:00+00:00")
    job = job_for(WEB1, "alert-revert-web1-1", Mode.FIX, "alert", "revert-web1-1", action="revert")
    state.put(ServerState(server="web1", outcome="remediated", announced="ok",
                          updated_at=datetime.now(UTC).isoformat(), mode="fix"))
    # WHEN the worker handles it
    handled = worker.handle(job, receive_count=1, remaining_ms=600_000, queue_url=SETTINGS.urgent_queue_url)
    # THEN the engine's revert ran (its probe reads the record), not a reused result
    assert handled.status == "done"
    assert handled.result is not None
    assert (handled.result.mode, handled.result.outcome, handled.result.reason) == (
        "revert", Outcome.FAILED, "no-revert-record")
    assert session.scripts == [REVERT_PROBE_SCRIPT]


@pytest.mark.parametrize(("trigger", "alert_id", "queue"), [
    ("sweep", None, SETTINGS.work_queue_url),  # a sweep job asking for a revert
    ("alert", "revert-web1-1", SETTINGS.work_queue_url),  # on the work queue, where the intake never puts one
    ("sweep", None, SETTINGS.urgent_queue_url),
])
def test_a_revert_job_that_no_revert_request_made_is_refused_with_no_connection(trigger, alert_id, queue) -> None:
    session = FakeSession([])
    connector = FakeConnector(session)
    runs, state, notifier = FakeRunStore(), FakeStateStore(), FakeNotifier()
    worker = Worker(SETTINGS, lambda: Engine(connector, FakeBannerCheck()), FakeLockStore(), state,
                    Publisher(notifier, runs, state, FakeRecordStore(), FakeMetrics()), FakeJobQueue(),
                    FakeInventoryStore(Inventory((WEB1,))))
    job = job_for(WEB1, "run-1", Mode.FIX, trigger, alert_id, action="revert")
    handled = worker.handle(job, receive_count=1, remaining_ms=600_000, queue_url=queue)
    assert handled.status == "refused"
    assert handled.result is not None
    assert handled.result.reason.startswith("revert-refused:")
    assert connector.targets == []
