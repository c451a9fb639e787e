"""Spam alerts end to end: alert_intake → urgent queue → worker → lab server; deduplicated, inventory-gated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from harness.aws import Stack, drain_messages
from harness.e2e import Tarpit, alert_detail, entry, notifications, scheduled_event, spam_alert_event
from harness.sqs_source import Poller
from lab import Host, Lab
from lab.smtp import relay_attempt

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration

PUBLIC_IP = "203.0.113.7"


def restarts(host: Host) -> int:
    return sum(1 for r in host.journal() if r["argv"][0].endswith("restartsrv_exim") and "--status" not in r["argv"])


def test_alert_naming_a_public_ip_alias_fixes_that_server_in_one_worker_invocation(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    host = make_host(profile="modern")
    stack.put_inventory({"servers": [entry(host, aliases=(PUBLIC_IP,))]})
    subscriber = stack.subscribe_queue()
    assert relay_attempt(host.address, lab.client_source()).code == 250

    answer = stack.invoke("AlertIntakeFunction", spam_alert_event(alert_detail("csf-1", public_ip=PUBLIC_IP)))

    assert answer["alerts"][0]["status"] == "enqueued"
    assert answer["alerts"][0]["server"] == host.name
    urgent = Poller(stack, "WorkerFunction", "UrgentQueue")
    assert urgent.poll_once() == {"batchItemFailures": []}
    assert urgent.poll_once() is None  # one invocation did it
    assert relay_attempt(host.address, lab.client_source()).code == 550
    sent = notifications(stack, subscriber)
    changes = [(n["doc"]["event"], n["doc"].get("change"), n["doc"]["outcome"]) for n in sent]
    assert sorted(changes) == sorted([("server-result", "remediated", "remediated"), ("run-digest", None, "ok")])
    assert all(n["attributes"]["mode"] == "fix" for n in sent)


def test_twenty_identical_alerts_and_a_sweep_job_cost_one_ssh_fix_and_one_message(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    host = make_host(profile="modern")
    stack.put_inventory({"servers": [entry(host, aliases=(PUBLIC_IP,))]})
    subscriber = stack.subscribe_queue()
    event = spam_alert_event(alert_detail("csf-burst", hostname=host.domain))
    # A sweep job for the same server is already waiting when the alerts arrive.
    assert stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))["servers"] == 1

    barrier = threading.Barrier(5)

    def one_alert(_: int) -> dict[str, Any]:
        if _ < 5:
            barrier.wait(timeout=30)
        answer: dict[str, Any] = stack.invoke("AlertIntakeFunction", event)
        return answer

    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = [a["alerts"][0] for a in pool.map(one_alert, range(20))]

    statuses = sorted(a["status"] for a in answers)
    assert statuses.count("enqueued") == 1, statuses
    assert statuses.count("duplicate") == 19, statuses
    assert stack.queue_depth("UrgentQueue") == 1

    work, urgent = Poller(stack, "WorkerFunction", "WorkQueue"), Poller(stack, "WorkerFunction", "UrgentQueue")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda p: p.drain(), (work, urgent)))

    assert host.accepted_logins() == 1
    assert restarts(host) == 1
    assert relay_attempt(host.address, lab.client_source()).code == 550
    per_server = [n for n in notifications(stack, subscriber) if n["doc"]["event"] == "server-result"]
    assert len(per_server) == 1, per_server
    assert per_server[0]["doc"]["outcome"] == "remediated"


def test_alerts_are_one_incident_per_server_and_kind_until_the_window_expires(
        stack: Stack, make_host: HostFactory) -> None:
    host = make_host(profile="modern", exposed=False)
    stack.put_inventory({"servers": [entry(host)]})
    window = int(stack.environment_of("AlertIntakeFunction")["RG_DEDUP_WINDOW_SECONDS"])

    def alert(alert_id: str, kind: str = "relay_tracking", count: int = 250) -> str:
        detail = {**alert_detail(alert_id, hostname=host.domain), "kind": kind, "metrics": {"count": count}}
        status: str = stack.invoke("AlertIntakeFunction", spam_alert_event(detail))["alerts"][0]["status"]
        return status

    assert alert("csf-1") == "enqueued"
    # Another alert id with other evidence, same server and kind: the same incident.
    assert alert("csf-2", count=900) == "duplicate"
    # Another kind for the same server is another incident.
    assert alert("icontact-1", kind="spammers_detected") == "enqueued"
    assert stack.queue_depth("UrgentQueue") == 2

    # The window is the idempotency record's expiry, DedupWindowSeconds after the first alert ...
    records = stack.table_items("IdempotencyTable")
    assert len(records) == 2
    now = time.time()
    assert all(now + window - 120 <= int(r["expiration"]["N"]) <= now + window + 1 for r in records), records
    # ... and once it has passed, the same alert starts a job again (Powertools compares the expiry
    # itself; DynamoDB's TTL sweep may take days to delete the record).
    ddb = stack.client("dynamodb")
    for r in records:
        ddb.update_item(TableName=stack.resolve["IdempotencyTable"], Key={"id": r["id"]},
                        UpdateExpression="SET expiration = :past",
                        ExpressionAttributeValues={":past": {"N": str(int(now) - 1)}})
    assert alert("csf-3") == "enqueued"
    assert stack.queue_depth("UrgentQueue") == 3
    assert host.accepted_logins() == 0  # intake never connects; only the worker does


def test_the_deployed_modes_apply_when_an_event_names_none(stack: Stack, make_host: HostFactory) -> None:
    """The real schedule sends an empty detail (template.yaml sets no Input), and an alert carries no
    mode: the SweepMode and AlertMode parameters decide, through the environment the template sets."""
    host = make_host(profile="modern", exposed=False)
    stack.put_inventory({"servers": [entry(host)]})
    sqs = stack.client("sqs")

    def queued_mode(queue: str) -> str:
        (message,) = drain_messages(sqs, stack.queue_url(queue))
        return str(json.loads(message["Body"])["mode"])

    for sweep_mode, alert_mode, kind in (("fix", "audit", "relay_tracking"), ("audit", "fix", "hourly_limit")):
        stack.parameters.update(SweepMode=sweep_mode, AlertMode=alert_mode)
        assert stack.invoke("PlannerFunction", scheduled_event())["mode"] == sweep_mode
        assert queued_mode("WorkQueue") == sweep_mode
        detail = {**alert_detail(f"alert-{kind}", hostname=host.domain), "kind": kind}
        assert stack.invoke("AlertIntakeFunction", spam_alert_event(detail))["alerts"][0]["status"] == "enqueued"
        assert queued_mode("UrgentQueue") == alert_mode


def test_alert_for_a_running_server_outside_the_inventory_opens_no_connection(
    stack: Stack, lab: Lab, make_host: HostFactory, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    known = make_host(profile="modern", exposed=False)
    stranger = make_host(profile="modern")
    stack.put_inventory({"servers": [entry(known)]})
    log_before = stranger.sshd_log()

    answer = stack.invoke("AlertIntakeFunction", spam_alert_event(
        alert_detail("csf-stranger", hostname=stranger.domain, public_ip=stranger.address)))

    assert answer["alerts"][0]["status"] == "unknown-server"
    assert stack.queue_depth("UrgentQueue") == 0
    assert stack.queue_depth("WorkQueue") == 0
    assert stranger.sshd_log() == log_before  # not even a TCP connection
    assert stranger.accepted_logins() == 0
    assert relay_attempt(stranger.address, lab.client_source()).code == 250  # left exactly as it was
    refusal = "alert names a server outside the inventory; nothing done"
    warnings = [r for r in caplog.records if r.getMessage() == refusal]
    assert len(warnings) == 1
    assert warnings[0].levelname == "WARNING"
    assert stranger.domain in str(vars(warnings[0]))
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [m["UnknownServers"] for m in emf if "UnknownServers" in m] == [[1.0]]


@pytest.fixture
def slow_servers(lab: Lab) -> Iterator[list[str]]:
    """49 addresses whose SSH port accepts and then stays silent for a while (each sweep job takes time)."""
    addresses = [f"127.{lab.net}.240.{i + 1}" for i in range(49)]
    tarpit = Tarpit(addresses, delay=0.15)
    yield addresses
    tarpit.close()


def test_an_urgent_job_finishes_before_a_sweep_of_fifty_jobs(
        stack: Stack, lab: Lab, make_host: HostFactory, slow_servers: list[str]) -> None:
    exposed = make_host(profile="modern")
    template = entry(exposed)
    slow = [{**template, "name": f"web{i:02d}", "host": ip, "aliases": []} for i, ip in enumerate(slow_servers)]
    stack.put_inventory({"servers": [entry(exposed, aliases=(PUBLIC_IP,)), *slow]})
    # Fifty sweep jobs are queued first.
    assert stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))["servers"] == 50
    # The alert arrives with all fifty waiting.
    answer = stack.invoke("AlertIntakeFunction", spam_alert_event(alert_detail("late", public_ip=PUBLIC_IP)))
    assert answer["alerts"][0]["status"] == "enqueued"

    # Each queue is its own event source (MaximumConcurrency applies per queue): both are polled at once.
    work, urgent = Poller(stack, "WorkerFunction", "WorkQueue"), Poller(stack, "WorkerFunction", "UrgentQueue")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda p: p.drain(), (work, urgent)))

    urgent_done = max(i["at"] for i in urgent.invocations)
    sweep_done = max(i["at"] for i in work.invocations)
    assert urgent_done < sweep_done
    assert len(work.invocations) >= 10  # fifty jobs in batches of five (plus a redelivery if the lock was busy)
    assert relay_attempt(exposed.address, lab.client_source()).code == 550
