"""An audit sweep through the stack announces the would-change plan and the spam signals, the worker publishes
the signals as per-server metrics, and the fix sweep that follows runs and announces the same plan."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import pytest

from harness.aws import Stack
from harness.e2e import entry, notifications, scheduled_event
from harness.sqs_source import Poller
from lab import HostSpec, Lab
from lab.spam import spam_lines

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration


def server_metrics(stdout: str, server: str) -> dict[str, float]:
    """Metric → value of the EMF documents dimensioned by ``server``."""
    found: dict[str, float] = {}
    for line in stdout.splitlines():
        blob = json.loads(line) if line.startswith("{") else {}
        for directive in blob.get("_aws", {}).get("CloudWatchMetrics", []):
            if blob.get("server") == server and ["server", "service"] in [sorted(d) for d in directive["Dimensions"]]:
                found.update({m["Name"]: sum(blob[m["Name"]]) for m in directive["Metrics"]})
    return found


def test_an_audit_sweep_announces_the_plan_and_the_spam_signals_and_the_fix_runs_that_plan(
        stack: Stack, lab: Lab, make_host: HostFactory, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN an exposed modern server with 4 queued messages and 2 send-limit hits in the last hour
    spam = spam_lines(datetime.now(), minutes_ago=15, send_limit_hits=2)
    host = make_host(HostSpec(profile="modern", queue_size=4, mainlog_lines=spam))
    stack.put_inventory({"servers": [entry(host)]})
    subscriber = stack.subscribe_queue()
    worker = Poller(stack, "WorkerFunction", "WorkQueue")

    # WHEN an audit sweep runs
    stack.invoke("PlannerFunction", scheduled_event({"mode": "audit"}))
    worker.drain()
    (audit,) = [n["doc"] for n in notifications(stack, subscriber) if n["doc"]["event"] == "server-result"]

    # THEN its message names the fix's steps and the signals with their window
    assert (audit["change"], audit["plan"]) == ("noncompliant",
                                                ["set popbeforesmtp=0", "run update_exim_rejects", "restart exim"])
    assert {k: audit["signals"][k] for k in ("window_minutes", "queue", "send_limit_hits", "relay_rejects")} == {
        "window_minutes": 60, "queue": 4, "send_limit_hits": 2, "relay_rejects": 0}
    # AND the worker published the non-zero signals as metrics of this server
    assert server_metrics(capsys.readouterr().out, host.name) == {"QueueSize": 4, "SendLimitHits": 2}

    # WHEN a fix sweep follows  THEN it announces the same plan, remediated
    stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    worker.drain()
    (fix,) = [n["doc"] for n in notifications(stack, subscriber) if n["doc"]["event"] == "server-result"]
    assert (fix["outcome"], fix["plan"]) == ("remediated", audit["plan"])
