"""Revert through the stack: an operator's revert_request → alert_intake → urgent queue → worker → engine.revert."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from harness.aws import Stack
from harness.e2e import alert_detail, entry, notifications, spam_alert_event
from harness.sqs_source import Poller
from lab import Host, Lab
from lab.smtp import relay_attempt

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration


def restarts(host: Host) -> int:
    return sum(1 for r in host.journal() if r["argv"][0].endswith("restartsrv_exim") and "--status" not in r["argv"])


def revert_detail(alert_id: str, hostname: str) -> dict[str, Any]:
    return {"schema": "relayguard.alert/v1", "alert_id": alert_id, "source": "manual", "kind": "revert_request",
            "observed_at": "2026-12-02T10:00:00Z", "severity": "critical", "host": {"hostname": hostname},
            "evidence": {"requested_by": "ops@example.com", "reason": "e2e"}}


def test_an_operators_revert_request_reopens_a_server_the_alert_path_fixed(
        stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    host = make_host(profile="legacy")
    stack.put_inventory({"servers": [entry(host)]})
    subscriber = stack.subscribe_queue()
    urgent = Poller(stack, "WorkerFunction", "UrgentQueue")
    # GIVEN a server the alert path fixed
    stack.invoke("AlertIntakeFunction", spam_alert_event(alert_detail("csf-1", hostname=host.domain)))
    urgent.drain()
    assert relay_attempt(host.address, lab.client_source()).code == 550
    fixed_restarts = restarts(host)

    # WHEN an operator sends a revert request
    answer = stack.invoke("AlertIntakeFunction", spam_alert_event(revert_detail("revert-1", host.domain)))
    assert answer["alerts"][0]["status"] == "enqueued"
    urgent.drain()

    # THEN the worker reverted it: one more Exim restart, relaying after POP login works, and it was announced
    assert restarts(host) == fixed_restarts + 1
    assert relay_attempt(host.address, lab.client_source()).code == 250
    results = [n["doc"] for n in notifications(stack, subscriber) if n["doc"]["event"] == "server-result"]
    assert [(d["outcome"], d["mode"]) for d in results] == [("remediated", "fix"), ("reverted", "revert")]
