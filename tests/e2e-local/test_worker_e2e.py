"""The worker's delivery semantics end to end: announcements, poison records, running out of time, the DLQ."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from harness.aws import Stack, drain_messages
from harness.e2e import entry, notifications, scheduled_event
from harness.sqs_source import Poller
from lab import Lab
from lab.smtp import relay_attempt

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration


def per_server(stack: Stack, queue_url: str) -> list[dict[str, Any]]:
    return [n for n in notifications(stack, queue_url) if n["doc"]["event"] == "server-result"]


def test_audit_sweeps_announce_a_problem_once_and_a_fix_as_one_recovery(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    host = make_host(profile="modern")
    stack.put_inventory({"servers": [entry(host)]})
    subscriber = stack.subscribe_queue()
    worker = Poller(stack, "WorkerFunction", "WorkQueue")

    for _ in range(2):
        stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))
        worker.drain()
    after_audits = per_server(stack, subscriber)
    stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    worker.drain()
    after_fix = per_server(stack, subscriber)

    assert [(n["doc"]["change"], n["doc"]["outcome"]) for n in after_audits] == [("noncompliant", "noncompliant")]
    assert after_audits[0]["attributes"]["severity"] == "warning"
    assert [(n["doc"]["change"], n["doc"]["outcome"]) for n in after_fix] == [("recovered", "remediated")]
    assert relay_attempt(host.address, lab.client_source()).code == 550


def test_a_poison_record_fails_alone_and_the_other_servers_are_fixed(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    hosts = [make_host(profile="modern"), make_host(profile="legacy")]
    stack.put_inventory({"servers": [entry(h) for h in hosts]})
    stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    sqs = stack.client("sqs")
    poison_id = sqs.send_message(QueueUrl=stack.queue_url("WorkQueue"),
                                 MessageBody='{"schema": "relayguard.job/v1", "server": "not an object"}')["MessageId"]
    worker = Poller(stack, "WorkerFunction", "WorkQueue")

    answer = worker.poll_once()

    assert answer == {"batchItemFailures": [{"itemIdentifier": poison_id}]}
    assert len(worker.invocations[0]["messages"]) == 3
    for host in hosts:
        assert relay_attempt(host.address, lab.client_source()).code == 550, host.name
    # Redelivered until maxReceiveCount, then parked in the dead-letter queue for an operator.
    worker.drain()
    parked = drain_messages(sqs, stack.queue_url("WorkDLQ"))
    assert [m["MessageId"] for m in parked] == [poison_id]


def test_a_batch_that_runs_out_of_time_fixes_what_it_can_and_redelivery_finishes(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    # GIVEN five exposed servers; the second one's Exim restart takes four seconds
    hosts = [make_host(profile="modern") for _ in range(5)]
    hosts[1] = make_host(profile="modern", switches={"slow_restartsrv_exim": "4"})
    stack.put_inventory({"servers": [entry(h) for h in hosts]})
    stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    worker = Poller(stack, "WorkerFunction", "WorkQueue")
    margin = int(stack.environment_of("WorkerFunction")["RG_SAFETY_MARGIN_MS"])

    # WHEN the worker is invoked with a little more than its safety margin left
    answer = worker.poll_once(remaining_ms=margin + 3000)
    assert answer is not None, "the planner's jobs should be waiting"

    # THEN it fixed at least the first server, reported the untouched rest as batch failures
    bodies = {m: b for m, b in zip(worker.invocations[0]["messages"], worker.invocations[0]["bodies"], strict=True)}
    failed = {bodies[f["itemIdentifier"]]["server"]["name"] for f in answer["batchItemFailures"]}
    done = {h.name for h in hosts} - failed
    assert hosts[0].name in done
    assert failed, "the slow restart should have used up the time"
    by_name = {h.name: h for h in hosts}
    for name in failed:
        assert by_name[name].accepted_logins() == 0, f"{name} was started although reported as not done"
    # AND they are back on the queue at once, not after the visibility timeout (30 min by default) ...
    assert worker.waiting() == len(failed)
    # ... so the next invocations finish them (no simulated redelivery), each server fixed exactly once
    worker.drain(redeliver=False)
    for host in hosts:
        assert relay_attempt(host.address, lab.client_source()).code == 550, host.name
        assert host.accepted_logins() == 1, host.name


def test_servers_that_end_in_the_dlq_are_counted_failed_in_the_one_digest(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    hosts = [make_host(profile="modern", exposed=False), make_host(profile="not-cpanel")]
    stack.put_inventory({"servers": [entry(h) for h in hosts]})
    subscriber = stack.subscribe_queue()
    # Every delivery fails: the SSH key secret is gone (deleted by mistake, or not readable).
    stack.client("secretsmanager").delete_secret(SecretId="relayguard/ssh-key", ForceDeleteWithoutRecovery=True)
    planned = stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))
    worker = Poller(stack, "WorkerFunction", "WorkQueue")

    worker.drain()

    parked = drain_messages(stack.client("sqs"), stack.queue_url("WorkDLQ"))
    assert sorted(json.loads(m["Body"])["server"]["name"] for m in parked) == sorted(h.name for h in hosts)
    max_receives = int(stack.environment_of("WorkerFunction")["RG_MAX_RECEIVE_COUNT"])
    assert len(worker.invocations) == max_receives  # both jobs in every batch, until SQS parks them
    digests = [n["doc"] for n in notifications(stack, subscriber) if n["doc"]["event"] == "run-digest"]
    assert len(digests) == 1
    assert digests[0]["run_id"] == planned["run_id"]
    assert digests[0]["counts"] == {"failed": 2}
    assert digests[0]["outcome"] == "failed"
    assert all(h.accepted_logins() == 0 for h in hosts)


def test_a_run_whose_worker_died_on_a_last_delivery_gets_its_digest_from_a_later_sweep(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    """A worker killed by its timeout or memory limit counts nothing before SQS dead-letters the job;
    the next sweep after RUN_DEADLINE closes that run with the server counted failed."""
    hosts = [make_host(profile="modern", exposed=False), make_host(profile="not-cpanel")]
    stack.put_inventory({"servers": [entry(h) for h in hosts]})
    subscriber = stack.subscribe_queue()
    first = stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))
    sqs, work = stack.client("sqs"), stack.queue_url("WorkQueue")
    # One job is worked; the other one's deliveries all die with their invocation (the message is
    # taken off the queue as if SQS had moved it to the DLQ, and nothing counts it).
    bodies = [m["Body"] for m in drain_messages(sqs, work)]
    (lost,) = [b for b in bodies if json.loads(b)["server"]["name"] == hosts[1].name]
    stack.send_jobs("WorkQueue", [b for b in bodies if b != lost])
    Poller(stack, "WorkerFunction", "WorkQueue").drain()
    assert [n["doc"]["event"] for n in notifications(stack, subscriber)] == []  # no digest: one server missing

    # A sweep before the deadline leaves the run open ...
    second = stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))
    assert second["closed_overdue"] == []
    drain_messages(sqs, work)
    # ... one after it closes it (the run's start moved back instead of waiting 24 hours).
    stack.client("dynamodb").update_item(
        TableName=stack.resolve["RunsTable"], Key={"run_id": {"S": first["run_id"]}},
        UpdateExpression="SET started_at = :then",
        ExpressionAttributeValues={":then": {"S": "2026-01-01T00:00:00+00:00"}})
    third = stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))
    assert [(c["run_id"], c["lost"]) for c in third["closed_overdue"]] == [(first["run_id"], 1)]
    digests = [n["doc"] for n in notifications(stack, subscriber) if n["doc"]["event"] == "run-digest"]
    assert [(d["run_id"], d["counts"]) for d in digests] == [(first["run_id"], {"compliant": 1, "failed": 1})]
    # AND the planner wrote the run's report page, which shows the server that reported and counts the lost one
    bucket = stack.resolve["RecordsBucket"]
    assert digests[0]["report"] == f"s3://{bucket}/reports/{first['run_id']}.html"
    page = stack.client("s3").get_object(Bucket=bucket, Key=f"reports/{first['run_id']}.html")["Body"].read().decode()
    assert f'<td class="server">{hosts[0].name}</td>' in page
    assert hosts[1].name not in page
    assert "1 more server of this run left no record: its job never finished" in page
    # Closed for good: the next sweep does not publish it again.
    assert stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))["closed_overdue"] == []
    assert [n for n in notifications(stack, subscriber) if n["doc"]["run_id"] == first["run_id"]] == []
    assert json.loads(lost)["run_id"] == first["run_id"]
