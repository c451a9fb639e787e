"""The deliverability part of a result (issue 20): the record's JSON, its counts and the one-line summaries.

Pure: the engine hands in what the server collected (domain/collect.py) and what the DNS judge made of
it (``ports.DeliverabilityJudge``); the table, the SNS message, the digest and the EMF metrics all read
the ``summary`` computed here, so they never disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from relayguard.domain.deliverability import Check, Collected, Deliverability, DomainFinding, MailDomain

#: Statuses that mean "not known" rather than "wrong" (a DNS timeout): they are not counted as missing.
UNKNOWN_STATUSES = frozenset({"dns-error", "error"})
#: The summary's keys, in the order texts list them: what the digest adds up over a run.
SUMMARY_KEYS = ("domains", "judged", "failing", "without_spf", "without_dkim", "without_dmarc",
                "ips", "ips_without_fcrdns", "dns_errors")


def _domain_json(domain: MailDomain, finding: DomainFinding | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "domain": domain.name,
        "sending_ip": domain.sending_ip,
        "ip_source": str(domain.ip_source),
        "helo": domain.helo,
        "helo_source": str(domain.helo_source),
        "dkim_key_on_server": domain.dkim_public_key is not None,
    }
    if finding is not None:
        out["checks"] = {str(c.check): {"status": c.status, "detail": c.detail} for c in finding.checks}
        out["rules_broken"] = list(finding.rules_broken)
        out["rules_unknown"] = list(finding.rules_unknown)
    return out


def _status(finding: DomainFinding, check: Check) -> str:
    return next((c.status.lower() for c in finding.checks if c.check == check), "")


def summary_of(collected: Collected, findings: Iterable[DomainFinding]) -> dict[str, int]:
    """The counts every view shows: domains hosted and judged, domains breaking a receiver rule, domains
    without SPF, DKIM or DMARC, distinct sending IPs and those without a forward-confirmed PTR, and DNS errors."""
    judged = list(findings)
    ip_ok: dict[str, bool] = {}
    for finding in judged:
        status = _status(finding, Check.PTR)
        if status and status not in UNKNOWN_STATUSES:
            ip_ok[finding.sending_ip] = ip_ok.get(finding.sending_ip, True) and status == "valid"

    def missing(check: Check) -> int:
        return sum(1 for f in judged if _status(f, check) == "missing")

    return {
        "domains": collected.total_domains,
        "judged": len(judged),
        "failing": sum(1 for f in judged if f.rules_broken),
        "without_spf": missing(Check.SPF),
        "without_dkim": missing(Check.DKIM),
        "without_dmarc": missing(Check.DMARC),
        "ips": len({d.sending_ip for d in collected.domains if d.sending_ip}),
        "ips_without_fcrdns": sum(1 for ok in ip_ok.values() if not ok),
        "dns_errors": sum(1 for f in judged if any(c.status.lower() in UNKNOWN_STATUSES for c in f.checks)),
    }


def status_counts(findings: Iterable[DomainFinding]) -> dict[str, int]:
    """``{"spf:valid": 10, "dmarc:missing": 2, "rule:<id>": 3, ...}``: one count per check status and rule."""
    counts: Counter[str] = Counter()
    for finding in findings:
        counts.update(f"{c.check}:{c.status.lower()}" for c in finding.checks)
        counts.update(f"rule:{rule}" for rule in finding.rules_broken)
    return dict(sorted(counts.items()))


def _base(collected: Collected, judged: bool, notes: Iterable[str]) -> dict[str, Any]:
    return {"judged": judged, "total_domains": collected.total_domains, "truncated": collected.truncated,
            "options": list(collected.options), "notes": list(notes)}


def collected_only(collected: Collected, why: str) -> dict[str, Any]:
    """The record of a collection that was not judged (no resolver, no time left, the judge failed): the
    domains with their sending IP, HELO and where each comes from, and ``why`` in the notes."""
    return {**_base(collected, False, (*collected.notes, why)), "counts": {},
            "summary": summary_of(collected, ()), "domains": [_domain_json(d, None) for d in collected.domains]}


def report_json(collected: Collected, report: Deliverability) -> dict[str, Any]:
    """The record of a judged collection: every domain with its checks and broken rules, and the counts."""
    by_name = {f.domain: f for f in report.domains}
    notes = list(dict.fromkeys((*collected.notes, *report.notes)))
    counts = report.counts or status_counts(report.domains)
    return {**_base(collected, True, notes), "counts": dict(counts),
            "summary": summary_of(collected, report.domains),
            "domains": [_domain_json(d, by_name.get(d.name)) for d in collected.domains]}


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def summary_text(summary: Mapping[str, int]) -> str:
    """``12 domains: 3 breaking receiver rules, 2 without DMARC, 1 sending IP without forward-confirmed PTR``."""
    parts = []
    for key, one, many in (("failing", "breaking receiver rules", "breaking receiver rules"),
                           ("without_spf", "without SPF", "without SPF"),
                           ("without_dkim", "without DKIM", "without DKIM"),
                           ("without_dmarc", "without DMARC", "without DMARC"),
                           ("ips_without_fcrdns", "sending IP without forward-confirmed PTR",
                            "sending IPs without forward-confirmed PTR"),
                           ("dns_errors", "with DNS errors", "with DNS errors")):
        if summary.get(key):
            parts.append(_plural(summary[key], one, many))
    head = _plural(summary.get("domains", 0), "domain", "domains")
    if summary.get("judged", 0) < summary.get("domains", 0):
        head += f" ({summary.get('judged', 0)} judged)"
    return f"{head}: {', '.join(parts) if parts else 'no findings'}"


def digest_text(totals: Mapping[str, int], servers: int) -> str:
    """The digest's line: ``37 domains without DMARC, 4 sending IPs without forward-confirmed PTR, across 12
    servers``; "" when no server reported domains."""
    if not servers:
        return ""
    parts = [_plural(totals.get("without_dmarc", 0), "domain", "domains") + " without DMARC",
             _plural(totals.get("ips_without_fcrdns", 0), "sending IP", "sending IPs")
             + " without forward-confirmed PTR"]
    if totals.get("failing"):
        parts.insert(0, _plural(totals["failing"], "domain", "domains") + " breaking receiver rules")
    return f"{', '.join(parts)}, across {_plural(servers, 'server', 'servers')}"
