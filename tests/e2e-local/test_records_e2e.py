"""Evidence end to end on moto and the lab: every job's record in the versioned records bucket, written
once; the largest result still publishes to SNS; a tampered job message connects nowhere."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from relayguard import bootstrap
from relayguard.config import load_settings
from relayguard.domain.models import Mode, Outcome
from relayguard.domain.server import Server
from relayguard.engine import ServerResult
from relayguard.errors import RecordExists
from relayguard.ports import Notification
from relayguard.services import job_for

from harness.aws import Stack, drain_messages
from harness.e2e import entry, notifications, scheduled_event
from harness.sqs_source import Poller
from lab import Host, Lab

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration


def records(stack: Stack) -> list[dict[str, Any]]:
    """Every version of every record in the records bucket (records/, not the reports/ pages), oldest first."""
    listed = stack.client("s3").list_object_versions(Bucket=stack.resolve["RecordsBucket"], Prefix="records/")
    return sorted(listed.get("Versions", []), key=lambda v: v["LastModified"])


def body(stack: Stack, key: str) -> bytes:
    return bytes(stack.client("s3").get_object(Bucket=stack.resolve["RecordsBucket"], Key=key)["Body"].read())


def state_item(stack: Stack, server: str) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(TableName=stack.resolve["StateTable"], Key={"server": {"S": server}},
                                             ConsistentRead=True)["Item"]
    return dict(item)


def test_two_jobs_on_one_server_leave_two_records_and_the_first_stays_as_written(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    host = make_host(profile="modern")
    stack.put_inventory({"servers": [entry(host)]})
    subscriber = stack.subscribe_queue()
    worker = Poller(stack, "WorkerFunction", "WorkQueue")

    # GIVEN an audit sweep's record of the exposed server
    audit = stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))
    worker.drain()
    (first,) = records(stack)
    first_body = body(stack, first["Key"])
    # WHEN a fix sweep works the same server
    fix = stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    worker.drain()

    # THEN there are two records, by run and server, and the first is byte for byte what it was, one version
    both = records(stack)
    assert [v["Key"].split("/")[1:3] for v in both] == [[audit["run_id"], host.name], [fix["run_id"], host.name]]
    assert all(v["Key"].startswith("records/") for v in both)
    assert body(stack, first["Key"]) == first_body
    assert [v["VersionId"] for v in both if v["Key"] == first["Key"]] == [first["VersionId"]]
    audited, fixed = (json.loads(body(stack, v["Key"])) for v in both)
    assert (audited["result"]["outcome"], fixed["result"]["outcome"]) == ("noncompliant", "remediated")
    assert "finish" in [step["name"] for step in fixed["result"]["steps"]]
    assert fixed["result"]["before"]["gate_file"] is True
    assert "set_tweaksetting key=popbeforesmtp value=1" in fixed["result"]["revert"][0]
    # The state table keeps the latest state and points at its record; the message names it too.
    location = f"s3://{stack.resolve['RecordsBucket']}/{both[1]['Key']}"
    item = state_item(stack, host.name)
    assert (item["outcome"]["S"], item["record"]["S"], json.loads(item["result"]["S"])["record"]) == (
        "remediated", location, location)
    assert "pending" not in item
    received = [n["doc"] for n in notifications(stack, subscriber)]
    docs = [d for d in received if d["event"] == "server-result"]
    assert [d["record"] for d in docs] == [f"s3://{stack.resolve['RecordsBucket']}/{first['Key']}", location]
    # Each run's digest names its fleet report page, written beside the records from them (issue 15).
    pages = [d["report"] for d in received if d["event"] == "run-digest"]
    bucket = stack.resolve["RecordsBucket"]
    assert pages == [f"s3://{bucket}/reports/{audit['run_id']}.html", f"s3://{bucket}/reports/{fix['run_id']}.html"]
    fix_page = stack.client("s3").get_object(Bucket=bucket, Key=f"reports/{fix['run_id']}.html")
    assert fix_page["ContentType"] == "text/html; charset=utf-8"
    html = fix_page["Body"].read().decode()
    assert f'<td class="server">{host.name}</td>' in html
    assert '<td class="outcome">remediated</td>' in html
    # AND the store refuses to write a record over an existing one (S3's If-None-Match, in moto too)
    store = bootstrap.record_store(load_settings(stack.environment_of("WorkerFunction")))
    with pytest.raises(RecordExists):
        store.put(audited)
    assert body(stack, first["Key"]) == first_body


def test_the_result_of_a_10000_mailbox_server_publishes_with_its_whole_record_in_s3(stack: Stack) -> None:
    settings = load_settings(stack.environment_of("WorkerFunction"))
    subscriber = stack.subscribe_queue()
    publisher = bootstrap.publisher(settings)
    runs = bootstrap.run_store(settings)
    runs.create("sweep-big", "fix", "sweep", 1, "2026-12-01T03:00:00+00:00")
    server = Server(name="big1", host="198.51.100.200")
    mailboxes = [f"customer{i:05d}.mailbox@hosting-customer-{i % 500:03d}.example.com" for i in range(10_000)]
    result = ServerResult(name="big1", address=server.host, mode="fix", outcome=Outcome.REMEDIATED,
                          generation="legacy", exposed_before=True, exposed_after=False, restarted=True,
                          affected_mailboxes=mailboxes)
    # The whole list alone is far beyond what SNS takes in one message (moto checks SNS's 256 KiB too).
    assert len(json.dumps(mailboxes)) > 256 * 1024

    assert publisher.server_result(job_for(server, "sweep-big", Mode.FIX, "sweep"), result)
    publisher.count("sweep-big", "big1", "remediated")

    received = notifications(stack, subscriber)
    message, digest = (n["doc"] for n in received)
    assert (message["event"], message["affected_mailboxes_total"], len(message["affected_mailboxes"])) == (
        "server-result", 10_000, 20)
    assert digest["counts"] == {"remediated": 1}
    bucket, _, key = message["record"].removeprefix("s3://").partition("/")
    assert bucket == stack.resolve["RecordsBucket"]
    assert json.loads(body(stack, key))["result"]["affected_mailboxes"] == mailboxes
    # The control: the same message with every mailbox in it is refused by SNS (here moto) as too long.
    unbounded = {**message, "affected_mailboxes": mailboxes}
    with pytest.raises(ClientError, match="too long"):
        publisher.notifier.publish(Notification(subject="x", document=unbounded, text="x", attributes={}))


def connections(host: Host) -> list[str]:
    """TCP connections sshd saw (it logs each at ``LogLevel VERBOSE``, before any key exchange)."""
    return [line for line in host.sshd_log().splitlines() if "Connection from" in line]


@pytest.mark.parametrize("tamper", ["address", "key", "address-and-key"])
def test_a_tampered_job_message_connects_nowhere_and_is_reported_failed(
        stack: Stack, lab: Lab, make_host: HostFactory, tamper: str) -> None:
    # GIVEN an exposed server in the inventory, and another lab host that is not in it (the client key
    # logs in to both: with its address and key in a job, only the inventory check keeps the worker out)
    host, stranger = make_host(profile="modern"), make_host(profile="modern")
    stack.put_inventory({"servers": [entry(host)]})
    subscriber = stack.subscribe_queue()
    planned = stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    sqs, work = stack.client("sqs"), stack.queue_url("WorkQueue")
    # WHEN someone who can write to the queue swaps the job's address, its pinned key, or both
    (message,) = drain_messages(sqs, work)
    job = json.loads(message["Body"])
    if "address" in tamper:
        job["server"]["host"] = stranger.address
    if "key" in tamper:
        job["server"]["host_keys"] = entry(stranger)["host_keys"]
    stack.send_jobs("WorkQueue", [json.dumps(job)])
    worker = Poller(stack, "WorkerFunction", "WorkQueue")
    worker.drain()

    # THEN no TCP connection reached either host, and the job is reported failed and counted
    assert connections(host) == []
    assert connections(stranger) == []
    docs = [n["doc"] for n in notifications(stack, subscriber)]
    result = next(d for d in docs if d["event"] == "server-result")
    fields = {"address": "host", "key": "host_keys", "address-and-key": "host, host_keys"}[tamper]
    assert (result["outcome"], result["reason"], result["severity"]) == (
        "failed", f"inventory-mismatch: the job's {fields} differ from the inventory's", "critical")
    digest = next(d for d in docs if d["event"] == "run-digest")
    assert (digest["run_id"], digest["counts"]) == (planned["run_id"], {"failed": 1})
    assert stack.queue_depth("WorkDLQ") == 0  # refused, reported and done: not a poison message
    # AND the next genuine sweep fixes the server (so the logs above would have shown a connection)
    stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    worker.drain()
    assert host.accepted_logins() == 1
    assert connections(stranger) == []
