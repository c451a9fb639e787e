"""The DNS judge against the lab's real DNS (nsd authoritative, unbound resolving, a silent peer): every
case of lab/maildomains.py gets the statuses and receiver rules its row says, shared lookups reach the
server once per job, and DNS that times out or a dead resolver give ``dns-error``, never an exception;
end to end, a lab host's files read over real sshd and judged give every case its row too.
Nothing is mocked at the DNS level: the judge sends real queries to a real resolver on loopback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from relayguard.adapters.dns_judge import DnsJudge
from relayguard.bootstrap import build_engine
from relayguard.domain.deliverability import Collected, Deliverability
from relayguard.domain.models import Policy
from relayguard.domain.server import Server

from lab import HostSpec, maildomains
from lab.dns import LabDns

pytestmark = pytest.mark.integration

#: Short lifetimes keep the timeout case to a few seconds; real jobs use the default (2 s).
TIMEOUT = 1.0


def unbound_queries(dns: LabDns) -> list[str]:
    """``name. TYPE`` of every query unbound received (its ``log-queries`` lines)."""
    log = Path(dns.workdir / "unbound.log").read_text()
    return re.findall(r"info: \S+ (\S+ \S+) IN$", log, re.M)


@pytest.fixture(scope="module")
def judged(lab_dns: LabDns) -> tuple[Deliverability, list[str], int]:
    before = len(unbound_queries(lab_dns))
    judge = DnsJudge(lab_dns.resolver, timeout=TIMEOUT, budget=30, workers=8)
    report = judge.judge(maildomains.collected(lab_dns.net))
    return report, unbound_queries(lab_dns)[before:], judge.last_queries


@pytest.mark.parametrize("case", maildomains.cases(), ids=lambda c: c.name)
def test_every_case_gets_its_statuses_and_rules(judged, case):
    report, _, _ = judged
    (found,) = [f for f in report.domains if f.domain == case.domain]
    assert {c.check.value: c.status for c in found.checks} == case.expect, found.checks
    assert found.rules_broken == case.rules_broken
    assert found.rules_unknown == case.rules_unknown
    assert found.sending_ip == case.ip(judged_net(report))
    details = {c.check.value: c.detail for c in found.checks}
    for check, text in case.detail.items():
        assert text in details[check]


def judged_net(report: Deliverability) -> int:
    return int(report.domains[0].sending_ip.split(".")[1])


def test_report_counts_and_nothing_left_out(judged):
    report, _, _ = judged
    assert len(report.domains) == report.total_domains == len(maildomains.cases())
    assert report.notes == ()
    assert report.counts["spf:valid"] == sum(c.expect["spf"] == "valid" for c in maildomains.cases())
    # Five sending IPs: one valid-PTR IP shared by most domains, one per reverse-DNS failure, one for HELO.
    assert report.counts["ips:ptr:missing-ptr"] == 1
    assert report.counts["rule:gmail-all-senders"] == 3


def test_shared_lookups_reach_the_resolver_once_per_job(judged, lab_dns):
    _, queries, sent = judged
    net = lab_dns.net
    main_ptr = f"{maildomains.IP_MAIN}.{maildomains.reverse_zone(net)}. PTR"
    users_of_main_ip = sum(c.ip_slot == maildomains.IP_MAIN for c in maildomains.cases())
    assert users_of_main_ip > 10
    assert queries.count(main_ptr) == 1
    assert queries.count(f"{maildomains.MAIN_HELO}. A") == 1
    # Twelve domains include the provider's SPF; the include is fetched once.
    assert sum(maildomains.SHARED_INCLUDE in " ".join(c.spf) for c in maildomains.cases()) > 10
    assert queries.count(f"{maildomains.SHARED_INCLUDE}. TXT") == 1
    assert len(queries) == len(set(queries)) == sent  # no (name, type) twice


def test_a_dead_resolver_gives_dns_errors_not_exceptions(lab_dns):
    # Nothing listens on .252.9 of the lab's range: every query fails.
    dead = DnsJudge(f"127.{lab_dns.net}.252.9", timeout=0.5, budget=10)
    good = maildomains.case("good")
    report = dead.judge(maildomains.collected(lab_dns.net, (good,)))
    (found,) = report.domains
    assert {c.status for c in found.checks} == {"dns-error"}
    assert found.rules_broken == ()
    assert set(found.rules_unknown) == {"gmail-all-senders", "gmail-bulk-senders", "microsoft-bulk-senders"}


def test_the_time_budget_cuts_the_job_and_says_so(lab_dns):
    slow = maildomains.case("dns-timeout")
    judge = DnsJudge(lab_dns.resolver, timeout=2.0, budget=0.2)
    collected = maildomains.collected(lab_dns.net, (slow,))
    report = judge.judge(Collected(collected.domains, total_domains=3, notes=("truncated: 1 of 3 domains",)))
    assert report.domains == ()
    assert report.total_domains == 3
    assert report.notes == ("truncated: 1 of 3 domains", "time budget 0.2s: judged 0 of 1 domains")


def test_end_to_end_over_sshd_every_case(lab, lab_dns, make_host):
    """A lab host seeded with every case's files (real sshd, cPanel's paths), scanned in audit mode by the
    engine with the DNS judge: the collection read over SSH, judged against the real DNS, gives each case
    its row's statuses and rules."""
    host = make_host(HostSpec(profile="modern", mail_cases=tuple(c.name for c in maildomains.cases())))
    engine = build_engine(key_path=str(lab.client_key), timeout=30)
    engine.judge = DnsJudge(lab_dns.resolver, timeout=TIMEOUT, budget=30)
    pin = " ".join((host.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    result = engine.run(Server(name=host.name, host=host.address, port=22, host_keys=(pin,)), Policy())
    record = result.deliverability
    assert record is not None
    assert record["judged"] is True, record["notes"]
    by_name = {d["domain"]: d for d in record["domains"]}
    for case in maildomains.cases():
        got = by_name[case.domain]
        assert got["sending_ip"] == case.ip(lab.net), case.name
        assert {check: v["status"] for check, v in got["checks"].items()} == case.expect, case.name
        assert tuple(got["rules_broken"]) == case.rules_broken, case.name
