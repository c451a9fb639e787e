"""Every job leaves its whole record before anything is announced; a failed publish loses nothing; a job
is checked against the inventory and refused, with no SSH connection, when its message disagrees."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from relayguard.adapters.local_records import DirectoryRecordStore
from relayguard.cli import report
from relayguard.config import load_settings
from relayguard.domain.bounds import MAILBOX_LIMIT
from relayguard.domain.evidence import RECORD_SCHEMA, key_part, record_document, record_key
from relayguard.domain.models import Mode, Outcome, Policy
from relayguard.domain.server import Inventory, Server
from relayguard.engine import Engine, ServerResult
from relayguard.errors import RecordExists, Unreachable
from relayguard.events import Job
from relayguard.inventory import parse_inventory
from relayguard.ports import FixGate
from relayguard.services import Publisher, Worker, job_for

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
    FakeStateStore,
)
from tests.unit.samples import HOST_KEY, STACK_ENV

SETTINGS = load_settings(STACK_ENV)
WORK = STACK_ENV["RG_WORK_QUEUE_URL"]
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBwU7H2rqwXT0Hq3hGk3Zb3y0zJ5m9d2o8WcKpQvV1aX"
INVENTORY = parse_inventory({"servers": [
    {"name": "web1", "host": "198.51.100.1", "host_keys": [HOST_KEY]},
    {"name": "web2", "host": "198.51.100.2", "host_keys": [HOST_KEY], "tags": ["relayguard:exclude"]},
]})
WEB1, WEB2 = INVENTORY.servers


@dataclasses.dataclass
class Stack:
    worker: Worker
    notifier: FakeNotifier
    runs: FakeRunStore
    state: FakeStateStore
    records: FakeRecordStore
    connector: FakeConnector
    inventory: FakeInventoryStore


def make_stack(failures: int = 0, inventory: Inventory = INVENTORY) -> Stack:
    notifier, runs, state, records = FakeNotifier(failures), FakeRunStore(), FakeStateStore(), FakeRecordStore()
    connector = FakeConnector(error=Unreachable("198.51.100.1:22: connection refused"))
    store = FakeInventoryStore(inventory)
    worker = Worker(SETTINGS, lambda: Engine(connector, FakeBannerCheck(None)), FakeLockStore(), state,
                    Publisher(notifier, runs, state, records, FakeMetrics()), FakeJobQueue(), store)
    return Stack(worker, notifier, runs, state, records, connector, store)


def a_job(stack: Stack, run_id: str = "sweep-1", server: dict[str, Any] | None = None) -> Job:
    """A job for web1 in a new one-server run; ``server`` changes what its message says about web1."""
    stack.runs.create(run_id, "fix", "sweep", 1, "2026-11-25T00:00:00+00:00")
    return job_for(dataclasses.replace(WEB1, **(server or {})), run_id, Mode.FIX, "sweep")


def handle(stack: Stack, job: Job, receive_count: int = 1) -> str:
    return stack.worker.handle(job, receive_count=receive_count, remaining_ms=600_000, queue_url=WORK).status


# -- the record --------------------------------------------------------------------------------


def test_a_record_key_is_by_run_and_server_and_unique_per_write_whatever_the_names() -> None:
    doc = record_document({"host": "[2001:db8::1]:2222"}, run_id="cli-1", job_id="j/1", trigger="cli",
                          recorded_at="2026-11-25T13:23:10.123456+00:00")
    assert record_key(doc) == "cli-1/_2001_db8__1__2222/20261125T132310123456Z-j_1.json"
    assert (key_part(".."), key_part("../etc"), key_part("")) == ("_.", "_._etc", "_")


def test_the_worker_writes_the_whole_record_first_and_the_state_and_message_point_at_it() -> None:
    stack = make_stack()
    job = a_job(stack)
    assert handle(stack, job) == "done"
    (location,) = stack.records.puts
    document = stack.records.get(location)
    assert (document["schema"], document["run_id"], document["job_id"], document["server"]) == (
        RECORD_SCHEMA, "sweep-1", job.job_id, "web1")
    assert document["result"]["outcome"] == "unreachable"
    state = stack.state.get("web1")
    assert state is not None
    assert (state.record, state.pending, state.announced) == (location, "", "unreachable")
    assert stack.state.results["web1"]["record"] == location
    message = stack.notifier.published[0].document
    assert message["record"] == location
    assert "Full record: " + location in stack.notifier.published[0].text


def test_two_jobs_on_one_server_leave_two_records_and_the_first_is_untouched() -> None:
    stack = make_stack()
    first_job = a_job(stack)
    handle(stack, first_job)
    first = json.dumps(stack.records.get(stack.records.puts[0]))
    handle(stack, a_job(stack, run_id="sweep-2"))
    assert len(stack.records.puts) == 2
    assert json.dumps(stack.records.get(stack.records.puts[0])) == first
    assert stack.state.get("web1").record == stack.records.puts[1]  # type: ignore[union-attr]


def test_a_10000_mailbox_result_is_recorded_whole_and_announced_bounded() -> None:
    stack = make_stack()
    job = a_job(stack)
    mailboxes = [f"user{i}@example.com" for i in range(10_000)]
    result = ServerResult(name="web1", address="198.51.100.1", mode="fix", outcome=Outcome.REMEDIATED,
                          generation="modern", exposed_before=True, exposed_after=False, restarted=True,
                          affected_mailboxes=mailboxes)
    assert stack.worker.publisher.server_result(job, result)
    (location,) = stack.records.puts
    assert stack.records.get(location)["result"]["affected_mailboxes"] == mailboxes
    assert len(stack.state.results["web1"]["affected_mailboxes"]) == MAILBOX_LIMIT
    (message,) = stack.notifier.published
    assert message.document["affected_mailboxes_total"] == 10_000
    assert message.document["affected_mailboxes"] == mailboxes[:20]


# -- a publish that fails ------------------------------------------------------------------------


def test_a_failed_publish_leaves_the_result_recorded_counted_and_owed_then_the_retry_announces_it() -> None:
    stack = make_stack(failures=1)
    job = a_job(stack)
    with pytest.raises(ConnectionError):
        handle(stack, job)
    (location,) = stack.records.puts
    state = stack.state.get("web1")
    assert state is not None
    assert (state.outcome, state.record, state.pending, state.announced) == ("unreachable", location, "failed", "ok")
    # The digest counted the server at once, with its real outcome ...
    (digest,) = (n.document for n in stack.notifier.published)
    assert (digest["event"], digest["counts"]) == ("run-digest", {"unreachable": 1})
    # ... and SQS's redelivery reuses the recorded result (no second SSH session) and announces it.
    assert handle(stack, job, receive_count=2) == "reused"
    assert len(stack.connector.targets) == 1
    announced = stack.notifier.published[1].document
    assert (announced["event"], announced["change"], announced["record"]) == ("server-result", "failed", location)
    state = stack.state.get("web1")
    assert state is not None
    assert (state.pending, state.announced) == ("", "unreachable")
    assert stack.state.results["web1"]["record"] == location
    assert len(stack.notifier.published) == 2  # the digest was not published twice


def test_a_change_still_owed_is_announced_before_the_next_result_is_judged() -> None:
    stack = make_stack(failures=1)
    with pytest.raises(ConnectionError):
        handle(stack, a_job(stack))
    handle(stack, a_job(stack, run_id="sweep-2"))
    events = [(n.document["event"], n.document.get("change"), n.document["run_id"]) for n in stack.notifier.published]
    # The owed "failed" of sweep-1 goes out once; the same failure in sweep-2 is then no news.
    assert events == [("run-digest", None, "sweep-1"), ("server-result", "failed", "sweep-1"),
                      ("run-digest", None, "sweep-2")]


# -- trust the inventory, not the message ----------------------------------------------------------


@pytest.mark.parametrize(("server", "reason"), [
    ({"host": "203.0.113.66"}, "inventory-mismatch: the job's host differ from the inventory's"),
    ({"host_keys": (OTHER_KEY,)}, "inventory-mismatch: the job's host_keys differ from the inventory's"),
    ({"port": 2222, "user": "admin"}, "inventory-mismatch: the job's port, user differ from the inventory's"),
    ({"name": "web9"}, "not-in-inventory: no server named 'web9'"),
])
def test_a_job_whose_message_disagrees_with_the_inventory_is_refused_reported_and_counted_without_ssh(
        server: dict[str, Any], reason: str) -> None:
    stack = make_stack()
    job = a_job(stack, server=server)
    handled = stack.worker.handle(job, receive_count=1, remaining_ms=600_000, queue_url=WORK)
    assert (handled.status, handled.note) == ("refused", reason)
    assert stack.connector.targets == []  # no SSH connection, to any address
    assert handled.result is not None
    assert (handled.result.outcome, handled.result.reason) == (Outcome.FAILED, reason)
    message, digest = (n.document for n in stack.notifier.published)
    assert (message["change"], message["reason"], message["severity"]) == ("failed", reason, "critical")
    assert digest["counts"] == {"failed": 1}
    assert stack.records.get(stack.records.puts[0])["result"]["reason"] == reason


class PolicyRecordingEngine(Engine):
    """The real engine, noting the policy each job runs under."""

    policies: list[Policy]

    def run(self, target: Server, policy: Policy, deadline: float | None = None,
            gate: FixGate | None = None) -> ServerResult:
        self.policies.append(policy)
        return super().run(target, policy, deadline, gate)


def test_the_worker_connects_with_the_inventorys_server_and_its_exclusion_not_the_messages() -> None:
    stack = make_stack()
    engine = PolicyRecordingEngine(stack.connector, FakeBannerCheck(None))
    engine.policies = []
    stack.worker.engine_factory = lambda: engine
    job = job_for(WEB2, "sweep-1", Mode.FIX, "sweep", excluded=False)  # the message "forgets" the exclusion
    stack.runs.create("sweep-1", "fix", "sweep", 1, "2026-11-25T00:00:00+00:00")
    handle(stack, job)
    (target,) = stack.connector.targets
    assert target == WEB2  # tags included: the inventory's own entry
    assert [p.excluded for p in engine.policies] == [True]


def test_the_inventory_is_read_once_for_a_whole_batch() -> None:
    stack = make_stack()
    for run in ("sweep-1", "sweep-2", "sweep-3"):
        handle(stack, a_job(stack, run_id=run))
    assert stack.inventory.loads == 1


# -- the CLI's record directory ------------------------------------------------------------------


def test_a_record_file_is_created_once_and_never_overwritten(tmp_path: Path) -> None:
    store = DirectoryRecordStore(tmp_path / "records")
    doc = record_document({"host": "web1", "steps": [{"stdout": "x" * 50_000}]}, run_id="cli-1", job_id="j1",
                          trigger="cli", recorded_at="2026-11-25T13:23:10+00:00")
    location = store.put(doc)
    assert Path(location).parent == tmp_path / "records" / "cli-1" / "web1"
    assert store.get(location) == doc
    written = Path(location).read_bytes()
    with pytest.raises(RecordExists):
        store.put({**doc, "result": {"host": "web1", "forged": True}})
    assert Path(location).read_bytes() == written
    assert Path(location).stat().st_mode & 0o777 == 0o600


def test_the_cli_writes_one_record_per_host_and_prints_bounded_lines_that_point_at_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mailboxes = [f"user{i}@example.com" for i in range(10_000)]
    results = [ServerResult(name="web1", address="198.51.100.1", mode="audit", outcome=Outcome.NONCOMPLIANT,
                            affected_mailboxes=mailboxes),
               ServerResult(name="web2:2222", address="198.51.100.2", mode="audit", outcome=Outcome.COMPLIANT)]
    assert report(results, as_json=True, record_dir=str(tmp_path)) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["affected_mailboxes_total"] for line in lines] == [10_000, 0]
    assert len(lines[0]["affected_mailboxes"]) == MAILBOX_LIMIT
    for line in lines:
        document = json.loads(Path(line["record"]).read_text())
        assert document["result"]["host"] == line["host"]
        assert Path(line["record"]).is_relative_to(tmp_path)
    assert json.loads(Path(lines[0]["record"]).read_text())["result"]["affected_mailboxes"] == mailboxes
    # A second run writes new files beside the first run's, which stay as they were.
    first = {p: p.read_bytes() for p in tmp_path.rglob("*.json")}
    assert report(results, as_json=True, record_dir=str(tmp_path)) == 1
    assert len(list(tmp_path.rglob("*.json"))) == 4
    assert all(p.read_bytes() == data for p, data in first.items())


def test_a_record_the_cli_cannot_write_fails_the_run_but_still_prints_every_result(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    results = [ServerResult(name="web1", address="198.51.100.1", mode="audit", outcome=Outcome.COMPLIANT)]
    assert report(results, as_json=True, record_dir=str(blocker)) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["record"] is None
    assert err.startswith("relayguard: --record-dir: ")
