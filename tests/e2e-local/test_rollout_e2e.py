"""Rolling out fix mode through the stack: the planner, the work queue and the worker on moto and lab
hosts (real sshd, real Exim), with the rollout limits as template parameters."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from relayguard.adapters.dynamo import DynamoRunStore

from harness.aws import Stack, drain_messages
from harness.e2e import alert_detail, entry, notifications, scheduled_event, spam_alert_event
from harness.sqs_source import Poller
from lab import Host, HostSpec, Lab
from lab.fleet import pristine_view
from lab.smtp import relay_attempt

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration

BROKEN = {"exim_restart_fail": ""}


def restarts(host: Host) -> int:
    return sum(1 for r in host.journal() if r["argv"][0].endswith("restartsrv_exim") and "--status" not in r["argv"])


def writes(host: Host) -> list[list[str]]:
    """Commands of a fix that the host's simulated cPanel tools ran: a tweak set, a driver disabled,
    the reject text updated, Exim restarted (the probe's own commands only read)."""
    def changes(argv: list[str]) -> bool:
        tool = argv[0].rsplit("/", 1)[-1]
        return (any(a in ("set_tweaksetting", "set_tweaksetting_value") or a.startswith(("--disable", "--enable"))
                    for a in argv)
                or tool == "update_exim_rejects" or (tool == "restartsrv_exim" and "--status" not in argv))
    return [r["argv"] for r in host.journal() if changes(r["argv"])]


def run_of(stack: Stack, run_id: str) -> dict[str, Any]:
    item = stack.client("dynamodb").get_item(TableName=stack.resolve["RunsTable"], Key={"run_id": {"S": run_id}},
                                             ConsistentRead=True)["Item"]
    return {k: v.get("N", v.get("S")) for k, v in item.items() if "N" in v or "S" in v}


def by_event(received: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [n for n in received if n["doc"]["event"] == event]


def test_a_fix_sweep_stops_at_its_error_budget_and_leaves_the_rest_untouched(
        stack: Stack, lab: Lab, make_fleet: Callable[[dict[str, HostSpec]], list[Host]]) -> None:
    # GIVEN twenty exposed servers, four of whose Exim cannot restart, and MaxErrors=2 as the stack's
    # parameter (the other limits at their defaults: a canary of 1, no change limit)
    broken_at = {2, 5, 9, 14}
    hosts = make_fleet({f"rb{i:02d}": HostSpec(profile="modern", switches=dict(BROKEN) if i in broken_at else {})
                        for i in range(20)})
    stack.put_inventory({"servers": [entry(h) for h in hosts]})
    stack.parameters["MaxErrors"] = "2"
    everything = stack.subscribe_queue(name="everything")
    on_call = stack.subscribe_queue(filter_policy={"event": ["run-stopped"]}, name="on-call")
    before = {h.name: pristine_view(h.snapshot()) for h in hosts}

    # WHEN a fix sweep runs through planner, work queue and worker
    planned = stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    assert (planned["servers"], planned["duplicate"]) == (20, False)
    Poller(stack, "WorkerFunction", "WorkQueue").drain(timeout=600)

    # THEN exactly two fixes failed, and every server is reported once in the digest
    received = notifications(stack, everything)
    (digest,) = by_event(received, "run-digest")
    counts = digest["doc"]["counts"]
    assert counts["failed"] == 2
    assert sum(counts.values()) == digest["doc"]["total"] == 20
    assert set(counts) == {"remediated", "failed", "skipped"}
    assert digest["doc"]["stopped"] == "error-budget"
    assert digest["attributes"]["severity"] == "critical"
    # AND each server's last result is what the run counted, skipped ones with the budget as reason
    results = {json.loads(i["result"]["S"])["host"]: json.loads(i["result"]["S"])
               for i in stack.table_items("StateTable")}
    assert len(results) == 20
    failed = sorted(n for n, r in results.items() if r["outcome"] == "failed")
    skipped = [h for h in hosts if results[h.name]["outcome"] == "skipped"]
    assert len(failed) == 2
    assert {results[h.name]["reason"] for h in skipped} == {"error-budget"}
    assert len(skipped) == counts["skipped"]
    # AND the skipped servers were probed, never written to: same files, no restart, still relaying
    for host in skipped:
        assert pristine_view(host.snapshot()) == before[host.name], host.name
        assert writes(host) == [], host.name
        assert restarts(host) == 0, host.name
    assert relay_attempt(skipped[-1].address, lab.client_source()).code == 250
    # AND the broken servers not among the two failures are skipped too, untouched
    assert sum(1 for i in broken_at if results[hosts[i].name]["outcome"] == "skipped") == 2
    # AND one run-stopped message, severity error, selected by the documented filter
    (stopped,) = by_event(received, "run-stopped")
    assert stopped["attributes"] == {"event": "run-stopped", "outcome": "stopped", "severity": "error",
                                     "server": "*", "mode": "fix", "finding": "relay"}
    assert (stopped["doc"]["reason"], stopped["doc"]["limits"]["max_errors"]) == ("error-budget", "2")
    assert [n["doc"]["event"] for n in notifications(stack, on_call)] == ["run-stopped"]
    # AND the limits the run was opened with are on its record
    run = run_of(stack, planned["run_id"])
    assert (run["max_errors"], run["canary"], run["fix_failed"]) == ("2", "1", "2")


def test_a_failed_canary_stops_the_run_with_nothing_touched_beyond_it(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    canary = make_host(profile="modern", switches=BROKEN)
    rest = [make_host(profile="modern"), make_host(profile="legacy")]
    stack.put_inventory({"servers": [entry(h) for h in (canary, *rest)]})
    stack.parameters.update({"CanarySize": "1", "MaxErrors": "unlimited"})
    subscriber = stack.subscribe_queue()
    before = {h.name: pristine_view(h.snapshot()) for h in rest}

    stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    Poller(stack, "WorkerFunction", "WorkQueue").drain()

    received = notifications(stack, subscriber)
    (digest,) = by_event(received, "run-digest")
    assert digest["doc"]["counts"] == {"failed": 1, "skipped": 2}
    assert digest["doc"]["stopped"] == "canary-failed"
    (stopped,) = by_event(received, "run-stopped")
    assert (stopped["doc"]["reason"], stopped["doc"]["severity"]) == ("canary-failed", "error")
    assert restarts(canary) >= 1
    assert writes(canary) != []  # what the checks below would see had the others been fixed
    for host in rest:
        assert pristine_view(host.snapshot()) == before[host.name], host.name
        assert writes(host) == [], host.name
        assert relay_attempt(host.address, lab.client_source()).code == 250, host.name


def test_the_same_scheduled_event_twice_opens_one_run_and_queues_each_server_once(
        stack: Stack, make_host: HostFactory) -> None:
    hosts = [make_host(profile="modern", exposed=False) for _ in range(2)]
    stack.put_inventory({"servers": [entry(h) for h in hosts]})
    event = scheduled_event({"mode": "fix"})

    first = stack.invoke("PlannerFunction", event)
    again = stack.invoke("PlannerFunction", event)  # EventBridge retrying the same delivery

    assert (first["servers"], first["duplicate"]) == (2, False)
    assert (again["run_id"], again["servers"], again["duplicate"]) == (first["run_id"], 0, True)
    runs = [i["run_id"]["S"] for i in stack.table_items("RunsTable") if i["run_id"]["S"].startswith("sweep-")]
    assert runs == [first["run_id"]]
    queued = [json.loads(m["Body"]) for m in drain_messages(stack.client("sqs"), stack.queue_url("WorkQueue"))]
    assert sorted(j["server"]["name"] for j in queued) == sorted(h.name for h in hosts)
    assert {j["run_id"] for j in queued} == {first["run_id"]}
    # A new event is a new run.
    assert stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))["run_id"] != first["run_id"]


def test_an_alert_for_an_excluded_server_is_reported_not_fixed(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    host = make_host(profile="modern")
    stack.put_inventory({"servers": [{**entry(host), "tags": ["modern", "relayguard:exclude"]}]})
    before = pristine_view(host.snapshot())

    answer = stack.invoke("AlertIntakeFunction", spam_alert_event(alert_detail("csf-x", hostname=host.domain)))
    assert answer["alerts"][0]["status"] == "enqueued"
    Poller(stack, "WorkerFunction", "UrgentQueue").drain()

    (state,) = stack.table_items("StateTable")
    result = json.loads(state["result"]["S"])
    assert (result["outcome"], result["exposed_after"], result["mode"]) == ("excluded", True, "fix")
    run = run_of(stack, answer["alerts"][0]["run_id"])
    assert (run["completed"], run["n_excluded"]) == ("1", "1")
    assert host.accepted_logins() == 1  # scanned ...
    assert writes(host) == []  # ... never written to
    assert pristine_view(host.snapshot()) == before
    assert relay_attempt(host.address, lab.client_source()).code == 250


def test_a_fix_the_canary_holds_goes_back_to_the_queue_and_runs_once_the_canary_ended(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    # GIVEN a fix sweep whose canary fix (on another server) another worker is still running
    host = make_host(profile="modern")
    stack.put_inventory({"servers": [entry(host)]})
    subscriber = stack.subscribe_queue()
    planned = stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    runs = DynamoRunStore(stack.client("dynamodb"), stack.resolve["RunsTable"])
    assert runs.reserve(planned["run_id"], "canary-elsewhere", runs.progress(planned["run_id"]).tally)
    worker = Poller(stack, "WorkerFunction", "WorkQueue")

    # WHEN the worker takes the host's job
    assert worker.poll_once() == {"batchItemFailures": []}

    # THEN the host was probed, not changed, nothing was counted, and the job is back on the queue
    assert (host.accepted_logins(), writes(host)) == (1, [])
    assert runs.progress(planned["run_id"]).completed == 0
    assert worker.waiting() == 1  # delayed by the lock retry delay
    assert notifications(stack, subscriber) == []

    # WHEN the canary ends well and the job comes back
    runs.release(planned["run_id"], "canary-elsewhere", failed=False)
    worker.drain()

    # THEN the host is fixed once and the run's digest counts it once
    assert restarts(host) == 1
    assert relay_attempt(host.address, lab.client_source()).code == 550
    (digest,) = by_event(notifications(stack, subscriber), "run-digest")
    assert (digest["doc"]["counts"], digest["doc"]["stopped"]) == ({"remediated": 1}, None)
