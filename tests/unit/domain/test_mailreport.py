"""The deliverability record, its summary and the texts built from it, on plain data."""

from __future__ import annotations

from relayguard.domain.bounds import DOMAIN_LIMIT, bounded_result
from relayguard.domain.deliverability import (
    Check,
    CheckResult,
    Collected,
    Deliverability,
    DomainFinding,
    MailDomain,
    Source,
)
from relayguard.domain.mailreport import collected_only, digest_text, report_json, summary_text


def _domain(name: str, ip: str) -> MailDomain:
    return MailDomain(name, ip, "web1.example.com", Source.DEFAULT, Source.SERVER, "MIIB")


def _finding(name: str, ip: str, dmarc: str, ptr: str, *rules: str) -> DomainFinding:
    checks = (CheckResult(Check.SPF, "valid"), CheckResult(Check.DKIM, "valid"), CheckResult(Check.DMARC, dmarc),
              CheckResult(Check.PTR, ptr))
    return DomainFinding(name, ip, checks, rules)


COLLECTED = Collected(domains=(_domain("a.test", "192.0.2.1"), _domain("b.test", "192.0.2.1"),
                               _domain("c.test", "192.0.2.9")), total_domains=4, notes=("truncated: 3 of 4",))
REPORT = Deliverability(domains=(
    _finding("a.test", "192.0.2.1", "valid", "valid"),
    _finding("b.test", "192.0.2.1", "missing", "valid", "bulk-senders"),
    _finding("c.test", "192.0.2.9", "missing", "missing_ptr", "all-senders", "bulk-senders"),
), notes=("dns budget used: 0.4 s",))


def test_the_summary_counts_domains_without_dmarc_and_each_sending_ip_without_fcrdns_once() -> None:
    record = report_json(COLLECTED, REPORT)
    assert record["summary"] == {"domains": 4, "judged": 3, "failing": 2, "without_spf": 0, "without_dkim": 0,
                                 "without_dmarc": 2, "ips": 2, "ips_without_fcrdns": 1, "dns_errors": 0}
    assert record["counts"]["rule:bulk-senders"] == 2
    assert record["counts"]["ptr:missing_ptr"] == 1
    assert record["notes"] == ["truncated: 3 of 4", "dns budget used: 0.4 s"]
    assert record["truncated"] is True
    assert summary_text(record["summary"]) == (
        "4 domains (3 judged): 2 breaking receiver rules, 2 without DMARC, "
        "1 sending IP without forward-confirmed PTR")


def test_a_dns_timeout_is_not_counted_as_a_missing_ptr() -> None:
    report = Deliverability(domains=(_finding("c.test", "192.0.2.9", "dns-error", "dns-error"),))
    summary = report_json(COLLECTED, report)["summary"]
    assert (summary["ips_without_fcrdns"], summary["without_dmarc"], summary["dns_errors"]) == (0, 0, 1)


def test_the_record_says_which_rules_a_dns_error_left_undecided() -> None:
    timed_out = DomainFinding("c.test", "192.0.2.9", (CheckResult(Check.SPF, "dns-error"),),
                              rules_unknown=("gmail-all-senders", "gmail-bulk-senders"))
    (_, _, row) = report_json(COLLECTED, Deliverability(domains=(timed_out,)))["domains"]
    assert (row["rules_broken"], row["rules_unknown"]) == ([], ["gmail-all-senders", "gmail-bulk-senders"])


def test_an_unjudged_collection_keeps_its_domains_and_says_why() -> None:
    record = collected_only(COLLECTED, "not judged: no DNS resolver configured")
    assert record["judged"] is False
    assert [d["domain"] for d in record["domains"]] == ["a.test", "b.test", "c.test"]
    assert "checks" not in record["domains"][0]
    assert record["summary"]["judged"] == 0
    assert summary_text(record["summary"]) == "4 domains (0 judged): no findings"


def test_the_digest_line_reads_like_the_issue_asks() -> None:
    assert digest_text({"without_dmarc": 37, "ips_without_fcrdns": 4}, 12) == (
        "37 domains without DMARC, 4 sending IPs without forward-confirmed PTR, across 12 servers")
    assert digest_text({}, 0) == ""


def test_a_bounded_view_lists_failing_domains_first_and_counts_all() -> None:
    many = Collected(domains=tuple(_domain(f"d{i}.test", "192.0.2.1") for i in range(DOMAIN_LIMIT + 50)),
                     total_domains=DOMAIN_LIMIT + 50)
    last = many.domains[-1].name
    report = Deliverability(domains=(_finding(last, "192.0.2.1", "missing", "valid", "bulk-senders"),))
    view = bounded_result({"deliverability": report_json(many, report)})["deliverability"]
    assert len(view["domains"]) == DOMAIN_LIMIT
    assert view["domains_total"] == DOMAIN_LIMIT + 50
    assert view["domains"][0]["domain"] == last
    assert view["summary"]["domains"] == DOMAIN_LIMIT + 50
