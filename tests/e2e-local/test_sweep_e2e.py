"""A scheduled sweep end to end: planner → SQS → worker → lab servers over SSH → SNS → subscribers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from harness.aws import Stack
from harness.e2e import documented_filter_policy, entry, notifications, scheduled_event
from harness.sqs_source import Poller
from lab import Lab
from lab.smtp import relay_attempt

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration

FAILURE_OUTCOMES = ["failed", "unreachable", "timeout", "host-key-mismatch", "host-key-unknown", "auth-failed",
                    "permission-denied"]


def test_scheduled_fix_sweep_fixes_the_fleet_and_reports_once(stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    # GIVEN a fleet: modern and legacy exposed, compliant, not cPanel, Exim that cannot restart, and a
    # server whose SSH port nobody listens on
    modern = make_host(profile="modern")
    legacy = make_host(profile="legacy")
    compliant = make_host(profile="modern", exposed=False)
    plain = make_host(profile="not-cpanel")
    broken = make_host(profile="modern", switches={"exim_restart_fail": ""})
    dead = {**entry(modern, name="dead"), "host": lab.address_of(199), "aliases": []}
    stack.put_inventory({"servers": [entry(modern), entry(legacy), entry(compliant), entry(plain), entry(broken),
                                     dead]})
    everything = stack.subscribe_queue(name="everything")
    pager = stack.subscribe_queue(filter_policy=documented_filter_policy("### Only failures to a pager"), name="pager")
    source = lab.client_source()
    assert relay_attempt(modern.address, source).code == 250
    assert relay_attempt(legacy.address, source).code == 250

    # WHEN the schedule fires in fix mode and the worker drains the work queue
    planned = stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    assert planned["servers"] == 6
    assert stack.queue_depth("WorkQueue") == 6
    worker = Poller(stack, "WorkerFunction", "WorkQueue")
    worker.drain()

    # THEN the exposed servers refuse the same relay attempt that was accepted before
    for host in (modern, legacy):
        reply = relay_attempt(host.address, source)
        assert reply.code == 550, (host.name, reply)
        assert "is not permitted to relay through this server without authentication" in " ".join(reply.text.split())

    # AND each per-server message carries the filterable attributes and matches the result
    received = notifications(stack, everything)
    per_server = {n["doc"]["server"]: n for n in received if n["doc"]["event"] == "server-result"}
    digests = [n for n in received if n["doc"]["event"] == "run-digest"]
    assert set(per_server) == {modern.name, legacy.name, broken.name, "dead"}  # compliant/not-cpanel: no news
    assert per_server[modern.name]["doc"]["outcome"] == "remediated"
    assert per_server[modern.name]["attributes"] == {
        "event": "server-result", "outcome": "remediated", "severity": "info", "server": modern.name, "mode": "fix",
        "finding": "relay"}
    assert per_server[legacy.name]["doc"]["generation"] == "legacy"
    assert per_server[broken.name]["attributes"]["outcome"] == "failed"
    assert per_server[broken.name]["attributes"]["severity"] == "critical"
    assert per_server["dead"]["attributes"]["outcome"] == "unreachable"

    # AND exactly one digest with correct counts
    assert len(digests) == 1
    digest = digests[0]["doc"]
    assert digest["run_id"] == planned["run_id"]
    assert digest["total"] == 6
    assert digest["counts"] == {"remediated": 2, "compliant": 1, "not-cpanel": 1, "failed": 1, "unreachable": 1}
    assert digests[0]["attributes"]["event"] == "run-digest"

    # AND the documented pager filter delivers only the failures
    paged = notifications(stack, pager)
    assert sorted(n["doc"]["server"] for n in paged) == sorted([broken.name, "dead"])
    assert all(n["doc"]["outcome"] in FAILURE_OUTCOMES for n in paged)

    # AND one SSH session per reachable server
    for host in (modern, legacy, compliant, plain, broken):
        assert host.accepted_logins() == 1, host.name


def test_secret_and_inventory_never_reach_a_function_environment(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    host = make_host(profile="modern", exposed=False)
    inventory = {"servers": [entry(host)]}
    stack.put_inventory(inventory)
    key_text = lab.client_key.read_text()
    for function in ("PlannerFunction", "WorkerFunction", "AlertIntakeFunction"):
        env = json.dumps(stack.environment_of(function))
        assert "PRIVATE KEY" not in env
        assert key_text.strip().splitlines()[1] not in env
        assert host.address not in env
        assert inventory["servers"][0]["host_keys"][0].split()[1] not in env
    # The worker still gets the key (from Secrets Manager) and the planner the inventory (from S3).
    planned = stack.invoke("PlannerFunction", scheduled_event())
    assert planned["servers"] == 1
    Poller(stack, "WorkerFunction", "WorkQueue").drain()
    assert host.accepted_logins() == 1
