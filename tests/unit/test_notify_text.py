"""What people read: the email text and subject of each notification, and how the SNS adapter packs
text for email beside JSON for machines (``MessageStructure=json``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from relayguard.adapters.notify_sns import SnsNotifier
from relayguard.domain.models import Outcome
from relayguard.domain.notify import (
    attributes,
    digest_message,
    digest_text,
    server_message,
    server_text,
    severity_of,
)
from relayguard.engine import ServerResult
from relayguard.ports import Notification

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

AT = "2026-11-25T13:23:10.000000+00:00"


def remediated() -> dict[str, Any]:
    result = ServerResult(name="web1", address="203.0.113.10", mode="fix", outcome=Outcome.REMEDIATED,
                          generation="modern", exposed_before=True, exposed_after=False, restarted=True,
                          warnings=["admin-exception:alwaysrelay"],
                          affected_mailboxes=["alice@example.com", "bob@example.com"],
                          relay_probe={"ip": "198.51.100.23", "code": 550, "reply": "550 relay not permitted"})
    return server_message(result.to_json(), "remediated", "sweep-1", "sweep", AT)


class RecordingSns:
    """Stands in for boto3's SNS client: keeps what ``publish`` was called with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def publish(self, **kwargs: Any) -> dict[str, str]:
        self.calls.append(kwargs)
        return {"MessageId": str(len(self.calls))}


def test_the_server_email_says_what_changed_and_whom_to_tell():
    text = server_text(remediated())
    lines = text.splitlines()
    assert lines[0] == "RelayGuard: web1 remediated (remediated)"
    assert "Mode: fix (trigger: sweep, run sweep-1)" in lines
    assert "Exposed before/after: yes / no" in lines
    assert "Exim restarted: yes" in lines
    assert "Relay probe from 198.51.100.23: 550 relay not permitted" in lines
    assert "Warnings: admin-exception:alwaysrelay" in lines
    # Support's to-do list: the customers who must switch on SMTP authentication.
    ask = lines.index("These mailboxes relied on POP-before-SMTP; ask their owners to enable SMTP authentication:")
    assert lines[ask + 1:] == ["  - alice@example.com", "  - bob@example.com"]


def test_a_failure_email_names_its_reason_and_leaves_out_what_did_not_happen():
    result = ServerResult(name="web9", address="203.0.113.19", mode="fix", outcome=Outcome.FAILED,
                          reason="exim-restart-failed", generation="legacy", exposed_before=True)
    text = server_text(server_message(result.to_json(), "failed", "alert-7", "alert", AT))
    assert text.splitlines()[0] == "RelayGuard: web9 failed (failed, exim-restart-failed)"
    assert "Exim restarted: no" in text
    assert "Exposed before/after: yes / unknown" in text  # the failure came before the proof
    assert "Relay probe" not in text
    assert "mailboxes" not in text


def test_the_digest_email_sums_up_in_its_first_line_then_lists_the_chat_facts():
    doc = digest_message("sweep-1", mode="fix", trigger="sweep", total=5,
                         counts={"remediated": 2, "compliant": 1, "unreachable": 1, "not-cpanel": 1},
                         started_at="2026-11-25T13:00:00+00:00", at=AT)
    assert digest_text(doc).splitlines() == [
        "RelayGuard run sweep-1 (sweep, fix): 5 servers; compliant: 1, not-cpanel: 1, remediated: 2, unreachable: 1; "
        "failed: 1",
        "",
        "Outcome: failed (severity warning)",
        "Servers: 5",
        "By outcome: compliant 1, not-cpanel 1, remediated 2, unreachable 1",
        "Failed: 1",
        f"Started / finished: 2026-11-25T13:00:00+00:00 / {AT}",
    ]


def test_sns_gets_text_for_email_and_the_document_for_every_machine_protocol():
    doc = remediated()
    sns = RecordingSns()
    subject = "RelayGuard: web1 remediated " + "x" * 200
    # The adapter is typed against boto3's whole client; the fake has the one method it calls.
    SnsNotifier(cast("SNSClient", sns), "arn:aws:sns:eu-west-1:123456789012:results").publish(
        Notification(subject=subject, document=doc, text=server_text(doc), attributes=attributes(doc)))
    (call,) = sns.calls
    assert call["TopicArn"] == "arn:aws:sns:eu-west-1:123456789012:results"
    assert call["MessageStructure"] == "json"
    assert call["Subject"] == subject[:100]  # SNS refuses subjects over 100 characters
    message = json.loads(call["Message"])
    assert message["email"] == server_text(doc)
    for protocol in ("default", "email-json", "sqs", "lambda", "https"):
        assert json.loads(message[protocol]) == doc, protocol
    assert {k: v["StringValue"] for k, v in call["MessageAttributes"].items()} == {
        "event": "server-result", "outcome": "remediated", "severity": doc["severity"], "server": "web1",
        "mode": "fix", "finding": "relay"}


def test_an_audit_message_carries_the_plan_a_fix_would_run_and_the_spam_signals():
    # GIVEN an audited exposed server with a queue and relay rejects
    signals = {"window_minutes": 60, "since": "2026-11-25 12:23:10", "queue": 12, "send_limit_hits": 0,
               "relay_rejects": 40, "partial": False}
    result = ServerResult(name="web1", address="203.0.113.10", mode="audit", outcome=Outcome.NONCOMPLIANT,
                          generation="modern", exposed_before=True, exposed_after=True,
                          plan=["set popbeforesmtp=0", "run update_exim_rejects", "restart exim"], signals=signals)
    # WHEN announced
    doc = server_message(result.to_json(), "noncompliant", "sweep-1", "sweep", AT)
    # THEN the document and the email both carry them, the window stated
    assert (doc["plan"], doc["signals"]) == (result.plan, signals)
    lines = server_text(doc).splitlines()
    assert "A fix would run: set popbeforesmtp=0; run update_exim_rejects; restart exim" in lines
    assert "Spam signals: queue 12, send-limit hits 0, relay rejects 40 in the last 60 min" in lines


def test_a_record_stored_before_plan_and_signals_existed_still_announces():
    full = ServerResult(name="web1", address="203.0.113.10", mode="audit", outcome=Outcome.NONCOMPLIANT).to_json()
    old = {k: v for k, v in full.items() if k not in ("plan", "signals")}
    doc = server_message(old, "noncompliant", "sweep-1", "sweep", AT)
    assert (doc["plan"], doc["signals"]) == ([], None)
    assert "Spam signals" not in server_text(doc)


def test_a_post_fix_regression_is_announced_at_error_and_other_failures_stay_critical():
    def severity(reason: str) -> str:
        result = ServerResult(name="web3", address="203.0.113.13", mode="fix", outcome=Outcome.FAILED, reason=reason)
        return str(server_message(result.to_json(), "failed", "sweep-1", "sweep", AT)["severity"])

    assert severity("auth-submission-broken: no AUTH on 587") == "error"
    assert severity("alwaysrelay-broken: 192.0.2.77, 192.0.2.78") == "error"
    assert severity("relay-probe-deferred") == "error"
    assert severity("relay-probe-accepted") == "critical"
    assert severity("exim-restart-failed") == "critical"
    assert severity_of("remediated", "auth-submission-broken") == "info"  # a reason only matters on a failure
