"""The engine collects deliverability facts in the probe's round trip and judges them after the session,
never letting DNS trouble change the relay result."""

from __future__ import annotations

import time

from relayguard.domain.deliverability import Check, CheckResult, Deliverability, DomainFinding
from relayguard.domain.models import Mode, Outcome, Policy
from relayguard.domain.probe import PROBE_SCRIPT
from relayguard.domain.server import Server
from relayguard.engine import Engine, ServerResult

from tests.fakes import FakeBannerCheck, FakeConnector, FakeJudge, FakeSession, ok
from tests.unit.samples import MODERN_COMPLIANT, MODERN_EXPOSED, NOT_CPANEL, probe_text

WEB1 = Server(name="web1", host="203.0.113.10")
MAIL = {
    "id.hostname": "web1.example.com", "mail.present": "1", "mail.opt.use_rdns_for_helo": "1",
    "mail.file.mailhelo": "1", "mail.mainip": "192.0.2.1", "mail.domain": "a.test MIIBIj",
    "mail.helo": "* web1.example.com", "mail.total": "1", "mail.bad": "0",
}
FAILING = Deliverability(
    domains=(DomainFinding("a.test", "192.0.2.1", (CheckResult(Check.SPF, "valid"), CheckResult(Check.DKIM, "valid"),
                                                  CheckResult(Check.DMARC, "missing"), CheckResult(Check.PTR, "valid")),
                           rules_broken=("bulk-senders",)),),
    total_domains=1)


AUDIT = Policy(mode=Mode.AUDIT)


def run(facts: dict[str, str], judge: FakeJudge | None,
        deadline: float | None = None) -> tuple[FakeSession, ServerResult]:
    session = FakeSession([ok(probe_text(facts))])
    engine = Engine(FakeConnector(session), FakeBannerCheck(), timeout=5, judge=judge, judge_budget=10)
    return session, engine.run(WEB1, AUDIT, deadline=deadline)


def test_the_probe_round_trip_collects_and_the_judge_sees_the_servers_domains() -> None:
    # GIVEN a compliant cPanel server hosting a.test, and a judge finding DMARC missing
    judge = FakeJudge(FAILING)
    session, result = run({**MODERN_COMPLIANT, **MAIL}, judge)
    # THEN one round trip, the judge got a.test with its sending IP, HELO and key, and the record has the findings
    assert session.scripts == [PROBE_SCRIPT]
    (collected,) = judge.seen
    (domain,) = collected.domains
    assert (domain.name, domain.sending_ip, domain.helo, domain.dkim_public_key) == (
        "a.test", "192.0.2.1", "web1.example.com", "MIIBIj")
    report = result.to_json()["deliverability"]
    assert result.outcome == Outcome.COMPLIANT
    assert report["judged"] is True
    assert report["domains"][0]["checks"]["dmarc"] == {"status": "missing", "detail": ""}
    assert report["domains"][0]["rules_broken"] == ["bulk-senders"]
    assert report["summary"]["without_dmarc"] == 1
    assert report["summary"]["failing"] == 1
    assert report["counts"]["dmarc:missing"] == 1


def test_a_failing_judge_neither_fails_the_job_nor_hides_the_relay_result() -> None:
    judge = FakeJudge(error=TimeoutError("resolver 127.0.0.1 did not answer"))
    _, result = run({**MODERN_EXPOSED, **MAIL}, judge)
    assert (result.outcome, result.exposed_before) == (Outcome.NONCOMPLIANT, True)
    report = result.deliverability
    assert report is not None
    assert report["judged"] is False
    assert report["domains"][0]["domain"] == "a.test"
    assert "not judged: TimeoutError: resolver 127.0.0.1 did not answer" in report["notes"]


def test_without_a_judge_or_time_the_collection_is_recorded_unjudged() -> None:
    _, result = run({**MODERN_COMPLIANT, **MAIL}, None)
    assert result.deliverability is not None
    assert "not judged: no DNS resolver configured" in result.deliverability["notes"]
    judge = FakeJudge(FAILING)
    _, late = run({**MODERN_COMPLIANT, **MAIL}, judge, deadline=time.monotonic() + 3)
    assert judge.seen == []
    assert late.deliverability is not None
    assert "not judged: the job's deadline leaves no time for DNS" in late.deliverability["notes"]


def test_a_server_without_domains_or_an_incomplete_probe_has_no_deliverability() -> None:
    judge = FakeJudge(FAILING)
    _, plain = run(NOT_CPANEL, judge)
    assert plain.deliverability is None
    session = FakeSession([ok(probe_text({**MODERN_COMPLIANT, **MAIL}, end=False))])
    cut = Engine(FakeConnector(session), FakeBannerCheck(), judge=judge).run(WEB1, Policy())
    assert (cut.outcome, cut.deliverability) == (Outcome.FAILED, None)
    assert judge.seen == []
