"""The run's fix gate against DynamoDB (moto server, the template's RunsTable): the conditional
reservation that keeps two workers from both taking a run's last slot, and the counters it keeps."""

from __future__ import annotations

import pytest
from relayguard.adapters.dynamo import DynamoRunStore
from relayguard.domain.models import Outcome
from relayguard.domain.rollout import Decision, ErrorBudget, Rollout, SkipReason
from relayguard.domain.server import Server
from relayguard.ports import RunProgress
from relayguard.services import RunGate

from harness.aws import Stack

pytestmark = pytest.mark.integration

RUN = "sweep-20261201T060000Z-0123456789abcdef"


@pytest.fixture
def runs(stack: Stack) -> DynamoRunStore:
    return DynamoRunStore(stack.client("dynamodb"), stack.resolve["RunsTable"])


def test_the_run_keeps_its_limits_and_a_second_create_writes_nothing(runs: DynamoRunStore) -> None:
    limits = Rollout(max_changes=5, max_errors=ErrorBudget(percent=10), canary=2)
    assert runs.create(RUN, "fix", "sweep", 20, "2026-12-01T06:00:00+00:00", rollout=limits)
    assert not runs.create(RUN, "audit", "sweep", 3, "2026-12-01T07:00:00+00:00", rollout=Rollout())
    progress = runs.progress(RUN)
    assert (progress.rollout, progress.mode, progress.total) == (limits, "fix", 20)
    assert [p.run_id for p in runs.open_runs()] == [RUN]


def test_of_two_reservations_made_on_the_same_reading_only_one_wins(runs: DynamoRunStore) -> None:
    # GIVEN two workers that read the run's fix counters at the same moment
    runs.create(RUN, "fix", "sweep", 20, "2026-12-01T06:00:00+00:00", rollout=Rollout(max_changes=1))
    seen = runs.progress(RUN).tally
    # WHEN both reserve on that reading
    first, second = runs.reserve(RUN, "web1", seen), runs.reserve(RUN, "web2", seen)
    # THEN only the first is written; the second's condition no longer holds
    assert (first, second) == (True, False)
    assert (runs.reservation(RUN, "web1"), runs.reservation(RUN, "web2")) == ("running", None)
    assert runs.progress(RUN).fix_started == 1
    # AND a gate that reads again is told the run is full
    gate = RunGate(runs, RUN, lambda progress, reason: None)
    assert gate.admit(Server(name="web2", host="192.0.2.2")).reason == SkipReason.MAX_CHANGES


def test_a_server_holds_one_reservation_and_ends_it_once(runs: DynamoRunStore) -> None:
    runs.create(RUN, "fix", "sweep", 20, "2026-12-01T06:00:00+00:00", rollout=Rollout())
    assert runs.reserve(RUN, "web1", runs.progress(RUN).tally)
    assert not runs.reserve(RUN, "web1", runs.progress(RUN).tally)
    runs.release(RUN, "web1", failed=True)
    runs.release(RUN, "web1", failed=True)  # a redelivered job's second report
    runs.release(RUN, "web9", failed=True)  # never admitted
    progress = runs.progress(RUN)
    assert (progress.fix_started, progress.fix_finished, progress.fix_failed) == (1, 1, 1)
    assert runs.reservation(RUN, "web1") == "done"


def test_the_stop_is_claimed_once_and_the_gate_announces_it_once(runs: DynamoRunStore) -> None:
    runs.create(RUN, "fix", "sweep", 20, "2026-12-01T06:00:00+00:00", rollout=Rollout(max_errors=ErrorBudget(count=1)))
    stops: list[tuple[str, str]] = []

    def on_stop(progress: RunProgress, reason: str) -> None:
        stops.append((progress.run_id, reason))

    gate = RunGate(runs, RUN, on_stop)
    web1, web2, web3 = (Server(name=f"web{i}", host=f"192.0.2.{i}") for i in (1, 2, 3))
    assert gate.admit(web1).decision == Decision.START
    assert gate.admit(web2).decision == Decision.WAIT  # the one fix in flight might spend the budget
    gate.finished(web1, Outcome.FAILED)
    assert gate.admit(web2).reason == SkipReason.ERROR_BUDGET
    assert gate.admit(web3).reason == SkipReason.ERROR_BUDGET
    assert stops == [(RUN, "error-budget")]
    assert runs.progress(RUN).stopped == "error-budget"
    assert not runs.claim_stop(RUN, "canary-failed")


def test_a_run_written_before_the_gate_existed_reads_as_no_fixes_yet(stack: Stack, runs: DynamoRunStore) -> None:
    stack.client("dynamodb").put_item(TableName=stack.resolve["RunsTable"], Item={
        "run_id": {"S": RUN}, "mode": {"S": "fix"}, "trigger": {"S": "sweep"}, "total": {"N": "3"},
        "completed": {"N": "0"}, "started_at": {"S": "2026-12-01T06:00:00+00:00"}})
    progress = runs.progress(RUN)
    assert (progress.rollout, progress.tally.started) == (Rollout(), 0)
    assert runs.reserve(RUN, "web1", progress.tally)
    assert runs.progress(RUN).fix_started == 1
