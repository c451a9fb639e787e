"""Deliverability in the notifications: a server-deliverability message on change (attribute finding),
counts in the server message, and the run's totals in the digest; every document follows the schema."""

from __future__ import annotations

import jsonschema
from relayguard.domain.deliverability import (
    Check,
    CheckResult,
    Collected,
    Deliverability,
    DomainFinding,
    MailDomain,
    Source,
)
from relayguard.domain.mailreport import report_json
from relayguard.domain.models import Mode, Outcome
from relayguard.domain.notify import (
    DELIVERABILITY_EVENT,
    attributes,
    deliverability_message,
    deliverability_text,
    digest_text,
)
from relayguard.domain.server import Server
from relayguard.engine import ServerResult
from relayguard.services import Publisher, job_for

from tests.fakes import FakeMetrics, FakeNotifier, FakeRecordStore, FakeRunStore, FakeStateStore
from tests.unit.samples import NOTIFICATION_SCHEMA

WEB1 = Server(name="web1", host="203.0.113.10")


def _finding(name: str, dmarc: str, ptr: str, *rules: str) -> DomainFinding:
    return DomainFinding(name, "192.0.2.1", (CheckResult(Check.SPF, "valid"), CheckResult(Check.DMARC, dmarc),
                                             CheckResult(Check.PTR, ptr)), rules)


def _result(*findings: DomainFinding, outcome: Outcome = Outcome.COMPLIANT) -> ServerResult:
    collected = Collected(tuple(MailDomain(f.domain, "192.0.2.1", "web1.example.com", Source.SERVER, Source.SERVER)
                                for f in findings), total_domains=len(findings))
    result = ServerResult(name="web1", address=WEB1.host, mode="audit", outcome=outcome)
    result.deliverability = report_json(collected, Deliverability(domains=findings))
    return result


BAD = (_finding("a.test", "missing", "missing_ptr", "gmail-all-senders", "gmail-bulk-senders"),
       _finding("b.test", "valid", "valid"))


def _publisher() -> tuple[Publisher, FakeNotifier, FakeRunStore]:
    notifier, runs = FakeNotifier(), FakeRunStore()
    return Publisher(notifier, runs, FakeStateStore(), FakeRecordStore(), FakeMetrics()), notifier, runs


def test_a_server_with_failing_domains_gets_one_deliverability_message_until_its_summary_changes() -> None:
    publisher, notifier, runs = _publisher()
    runs.create("run-1", "audit", "sweep", 1, "2026-12-06T15:00:00+00:00")
    job = job_for(WEB1, "run-1", Mode.AUDIT, "sweep")
    # GIVEN a compliant server (no relay news) with a domain breaking Gmail's rules
    assert publisher.server_result(job, _result(*BAD)) is True
    (message,) = notifier.published
    doc = message.document
    jsonschema.validate(doc, NOTIFICATION_SCHEMA)
    # THEN it is a deliverability message subscribers can filter apart from relay results
    assert message.attributes["finding"] == "deliverability"
    assert (doc["event"], doc["outcome"], doc["severity"]) == (DELIVERABILITY_EVENT, "failing", "warning")
    assert doc["domains"] == [{"domain": "a.test", "sending_ip": "192.0.2.1",
                               "rules_broken": ["gmail-all-senders", "gmail-bulk-senders"],
                               "checks": {"spf": "valid", "dmarc": "missing", "ptr": "missing_ptr"}}]
    assert "a.test (192.0.2.1): gmail-all-senders, gmail-bulk-senders" in deliverability_text(doc)
    # AND the same findings again are not news; all fixed is (the summary changed)
    publisher.server_result(job, _result(*BAD))
    assert len(notifier.published) == 1
    publisher.server_result(job, _result(_finding("a.test", "valid", "valid")))
    assert [n.document["outcome"] for n in notifier.published] == ["failing", "ok"]


def test_an_all_good_or_unjudged_server_sends_no_deliverability_message() -> None:
    publisher, notifier, _ = _publisher()
    job = job_for(WEB1, "run-1", Mode.AUDIT, "sweep")
    publisher.server_result(job, _result(_finding("a.test", "valid", "valid")))
    unjudged = _result(*BAD)
    assert unjudged.deliverability is not None
    unjudged.deliverability["judged"] = False
    publisher.server_result(job, unjudged)
    assert notifier.published == []


def test_the_digest_adds_up_the_servers_summaries() -> None:
    publisher, notifier, runs = _publisher()
    runs.create("run-1", "audit", "sweep", 3, "2026-12-06T15:00:00+00:00")
    for name in ("web1", "web2"):
        publisher.count("run-1", name, "compliant", _result(*BAD).deliverability["summary"])  # type: ignore[index]
    publisher.count("run-1", "web3", "not-cpanel", None)
    (digest,) = [n.document for n in notifier.published]
    jsonschema.validate(digest, NOTIFICATION_SCHEMA)
    assert digest["deliverability"]["servers"] == 2
    assert digest["deliverability"]["without_dmarc"] == 2
    assert attributes(digest)["finding"] == "relay"
    assert digest_text(digest).endswith(
        "Deliverability: 2 domains breaking receiver rules, 2 domains without DMARC, "
        "2 sending IPs without forward-confirmed PTR, across 2 servers\n")


def test_a_huge_server_still_fits_one_message() -> None:
    findings = tuple(_finding(f"{'x' * 200}{i}.test", "missing", "valid", "gmail-bulk-senders") for i in range(3000))
    doc = deliverability_message(_result(*findings).to_json(), "run-1", "sweep", "2026-12-06T15:00:00+00:00")
    jsonschema.validate(doc, NOTIFICATION_SCHEMA)
    assert len(doc["domains"]) == 20
    assert doc["failing_total"] == 3000
