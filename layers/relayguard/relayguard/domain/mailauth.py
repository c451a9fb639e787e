"""Mail authentication rules (issue 20): DNS facts in, per-check statuses and broken receiver rules out.

Pure: the DNS adapter (``adapters/dns_judge.py``) looks things up and hands plain values here. Every
status is a row of the table in docs/deliverability.md, which also names the cPanel Email
Deliverability state each one corresponds to (:data:`CPANEL_STATE` is that table, for code and tests),
and every receiver rule cites its source there.

DNS trouble is never a failure of the check: it is the status ``dns-error``, and a receiver rule whose
verdict would depend on such a check is *unknown*, not broken.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from relayguard.domain.deliverability import Check, CheckResult, Deliverability, DomainFinding

VALID = "valid"
DNS_ERROR = "dns-error"

#: (check, status) -> the state cPanel's Email Deliverability (EmailAuth API) shows for it.
CPANEL_STATE: dict[tuple[Check, str], str] = {
    (Check.SPF, VALID): "VALID",
    (Check.SPF, "missing"): "INVALID (no record)",
    (Check.SPF, "multiple"): "INVALID (multiple records)",
    (Check.SPF, "malformed"): "INVALID (syntax)",
    (Check.SPF, "too-many-lookups"): "INVALID (over 10 lookups)",
    (Check.SPF, "ip-not-permitted"): "INVALID (sending IP not permitted)",
    (Check.SPF, DNS_ERROR): "ERROR",
    (Check.DKIM, VALID): "VALID",
    (Check.DKIM, "missing"): "MISSING",
    (Check.DKIM, "mismatch"): "MISMATCH",
    (Check.DKIM, "malformed"): "MALFORMED",
    (Check.DKIM, "multiple"): "MULTIPLE",
    (Check.DKIM, "nopub"): "NOPUB",
    (Check.DKIM, DNS_ERROR): "ERROR",
    (Check.DMARC, VALID): "VALID",
    (Check.DMARC, "missing"): "MISSING",
    (Check.DMARC, "malformed"): "MALFORMED",
    (Check.DMARC, "dkim-spf-error"): "DKIM_SPF_ERROR",
    (Check.DMARC, "dkim-error"): "DKIM_ERROR",
    (Check.DMARC, "spf-error"): "SPF_ERROR",
    (Check.DMARC, DNS_ERROR): "DNS_ERROR",
    (Check.PTR, VALID): "VALID (PTR name VALID)",
    (Check.PTR, "missing-ptr"): "MISSING_PTR",
    (Check.PTR, "missing-fwd"): "PTR name MISSING_FWD",
    (Check.PTR, "fwd-mismatch"): "PTR name FWD_MISMATCH",
    (Check.PTR, DNS_ERROR): "ERROR",
    (Check.HELO, VALID): "(not shown: HELO matches)",
    (Check.HELO, "mismatch"): "PTR_MISMATCH (HELO shown)",
    (Check.HELO, "unknown"): "(no forward-confirmed PTR to compare)",
    (Check.HELO, DNS_ERROR): "ERROR",
}

GMAIL_ALL = "gmail-all-senders"
GMAIL_BULK = "gmail-bulk-senders"
MICROSOFT_BULK = "microsoft-bulk-senders"
#: Receiver rules, in report order (docs/deliverability.md cites the source of each).
RULES = (GMAIL_ALL, GMAIL_BULK, MICROSOFT_BULK)

# --- SPF ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpfTerm:
    """One mechanism of an SPF record as the parser resolved it.

    ``kind`` is the mechanism (``ip4 ip6 a mx include ptr exists``); ``addresses`` what an ``a``/``mx``
    mechanism resolved to (networks for ``ip4``/``ip6`` come from ``value``); ``include`` the
    included record, parsed.
    """

    qualifier: str  # pass fail softfail neutral
    kind: str
    value: str
    addresses: tuple[str, ...] = ()
    include: SpfRecord | None = None


@dataclass(frozen=True)
class SpfRecord:
    terms: tuple[SpfTerm, ...] = ()
    all: str | None = None  # the qualifier of ``all``, if present
    redirect: SpfRecord | None = None


@dataclass(frozen=True)
class SpfLookup:
    """The outcome of fetching and parsing a domain's SPF record.

    ``problem`` is empty when ``record`` was parsed, else one of ``missing multiple malformed
    too-many-lookups dns-error``.
    """

    problem: str = ""
    record: SpfRecord | None = None
    text: str = ""
    lookups: int = 0
    detail: str = ""


def _matches(term: SpfTerm, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool | None:  # noqa: PLR0911 one return per mechanism
    """Whether ``term`` matches ``ip``; ``None`` for mechanisms this evaluation does not run."""
    if term.kind in ("ip4", "ip6"):
        try:
            return ip in ipaddress.ip_network(term.value, strict=False)
        except ValueError:
            return False
    if term.kind in ("a", "mx"):
        if "/" in term.value:  # a/24, mx:host/24: a CIDR on resolved addresses
            return None
        return any(_same_ip(a, ip) for a in term.addresses)
    if term.kind == "include":
        if term.include is None:
            return False
        return spf_result(term.include, str(ip)) == "pass"
    return None  # ptr, exists and macros need the SMTP session's data


def _same_ip(text: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def spf_result(record: SpfRecord, ip: str) -> str:
    """RFC 7208 check_host() over a parsed record: ``pass fail softfail neutral`` for ``ip``.

    Mechanisms are tried in order; the first match gives its qualifier; then ``redirect=``; then
    ``neutral`` (§4.7). Mechanisms that need the SMTP session (``ptr``, ``exists``, macros) are
    skipped: a domain whose only permission for its IP lies there is reported as not permitted.
    """
    address = ipaddress.ip_address(ip)
    for term in record.terms:
        if _matches(term, address):
            return term.qualifier
    if record.all is not None:
        return record.all
    if record.redirect is not None:
        return spf_result(record.redirect, ip)
    return "neutral"


def judge_spf(lookup: SpfLookup, sending_ip: str) -> CheckResult:
    if lookup.problem:
        return CheckResult(Check.SPF, lookup.problem, lookup.detail)
    if lookup.record is None:
        return CheckResult(Check.SPF, "missing", lookup.detail)
    result = spf_result(lookup.record, sending_ip)
    if result != "pass":
        return CheckResult(Check.SPF, "ip-not-permitted", f"{result} for {sending_ip}: {lookup.text}"[:300])
    return CheckResult(Check.SPF, VALID, f"pass for {sending_ip} ({lookup.lookups} DNS lookups)")


# --- DKIM --------------------------------------------------------------------------------------------


def dkim_tags(record: str) -> dict[str, str] | None:
    """RFC 6376 §3.2 tag-list; ``None`` when it is not one (a tag without ``=``, or a repeated tag)."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name or name in tags:
            return None
        tags[name] = "".join(value.split())  # folding whitespace is not part of the value
    return tags


def _der(key: str) -> bytes | None:
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return None


def judge_dkim(records: tuple[str, ...] | None, server_key: str | None) -> CheckResult:  # noqa: PLR0911 one per state
    """``records``: TXT records at ``default._domainkey.<domain>`` (``None``: the lookup failed)."""
    if records is None:
        return CheckResult(Check.DKIM, DNS_ERROR, "default._domainkey lookup failed")
    if server_key is None:
        return CheckResult(Check.DKIM, "nopub", "no /var/cpanel/domain_keys/public file on the server")
    if not records:
        return CheckResult(Check.DKIM, "missing", "no TXT record at default._domainkey")
    if len(records) > 1:
        return CheckResult(Check.DKIM, "multiple", f"{len(records)} TXT records at default._domainkey")
    tags = dkim_tags(records[0])
    if tags is None or tags.get("v", "DKIM1") != "DKIM1" or tags.get("k", "rsa") not in ("rsa", "ed25519"):
        return CheckResult(Check.DKIM, "malformed", "not a DKIM key record")
    published = _der(tags.get("p", ""))
    if not published:
        return CheckResult(Check.DKIM, "malformed", "p= is empty or not base64")
    if published != _der("".join(server_key.split())):
        return CheckResult(Check.DKIM, "mismatch", "the published key is not the server's key")
    return CheckResult(Check.DKIM, VALID, "default._domainkey matches the server's key")


# --- DMARC -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmarcLookup:
    """``problem``: empty, or ``missing malformed dns-error``; tags of a parsed record otherwise."""

    problem: str = ""
    policy: str = ""
    adkim: str = "r"
    aspf: str = "r"
    location: str = ""
    detail: str = ""


def judge_dmarc(lookup: DmarcLookup, spf: CheckResult, dkim: CheckResult) -> CheckResult:
    """As cPanel: VALID needs a valid record *and* SPF and DKIM valid (they make alignment possible).

    cPanel sends mail with the domain as envelope sender and DKIM ``d=``, so a passing SPF or DKIM
    check for the domain is an aligned one under either alignment mode.
    """
    if lookup.problem:
        return CheckResult(Check.DMARC, lookup.problem, lookup.detail)
    detail = f"p={lookup.policy}; adkim={lookup.adkim}; aspf={lookup.aspf}"
    if lookup.location:
        detail += f" (record at {lookup.location})"
    spf_ok, dkim_ok = spf.status == VALID, dkim.status == VALID
    if spf_ok and dkim_ok:
        return CheckResult(Check.DMARC, VALID, detail)
    if not spf_ok and not dkim_ok:
        return CheckResult(Check.DMARC, "dkim-spf-error", detail)
    return CheckResult(Check.DMARC, "spf-error" if not spf_ok else "dkim-error", detail)


# --- reverse DNS and HELO ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReverseLookup:
    """What DNS says about one sending IP: its PTR names and each name's forward addresses.

    ``ptr_names`` is ``None`` when the PTR lookup failed; ``forward[name]`` is ``None`` when that
    name's A/AAAA lookup failed (and ``()`` when it has none).
    """

    ip: str
    ptr_names: tuple[str, ...] | None
    forward: dict[str, tuple[str, ...] | None] = field(default_factory=dict)

    def confirmed(self) -> tuple[str, ...]:
        """PTR names that resolve back to the IP (forward-confirmed reverse DNS)."""
        return tuple(n for n in self.ptr_names or () if self.ip in (self.forward.get(n) or ()))


def judge_ptr(rev: ReverseLookup) -> CheckResult:
    if rev.ptr_names is None:
        return CheckResult(Check.PTR, DNS_ERROR, f"PTR lookup for {rev.ip} failed")
    if not rev.ptr_names:
        return CheckResult(Check.PTR, "missing-ptr", f"{rev.ip} has no PTR record")
    confirmed = rev.confirmed()
    if confirmed:
        return CheckResult(Check.PTR, VALID, f"{rev.ip} -> {confirmed[0]} -> {rev.ip}")
    names = ", ".join(rev.ptr_names)
    if any(rev.forward.get(n) is None for n in rev.ptr_names):
        return CheckResult(Check.PTR, DNS_ERROR, f"forward lookup of {names} failed")
    if all(not rev.forward.get(n) for n in rev.ptr_names):
        return CheckResult(Check.PTR, "missing-fwd", f"{rev.ip} -> {names}, which has no address")
    return CheckResult(Check.PTR, "fwd-mismatch", f"{rev.ip} -> {names}, which resolves elsewhere")


def _name(host: str) -> str:
    return host.rstrip(".").lower()


def judge_helo(helo: str, rev: ReverseLookup, ptr: CheckResult) -> CheckResult:
    """The HELO name should be the sending IP's forward-confirmed PTR name (cPanel's PTR_MISMATCH)."""
    if ptr.status == DNS_ERROR:
        return CheckResult(Check.HELO, DNS_ERROR, ptr.detail)
    if ptr.status != VALID:
        return CheckResult(Check.HELO, "unknown", f"HELO {helo}: {rev.ip} has no forward-confirmed PTR")
    confirmed = [_name(n) for n in rev.confirmed()]
    if _name(helo) in confirmed:
        return CheckResult(Check.HELO, VALID, f"HELO {helo} is the PTR name")
    return CheckResult(Check.HELO, "mismatch", f"HELO {helo}, PTR {', '.join(confirmed)}")


# --- receiver rules ----------------------------------------------------------------------------------


def _passes(result: CheckResult) -> bool | None:
    """Three-valued: ``None`` when DNS trouble hides the answer."""
    if result.status == DNS_ERROR:
        return None
    return result.status == VALID


def _all(values: Iterable[bool | None]) -> bool | None:
    values = list(values)
    if False in values:
        return False
    return None if None in values else True


def _any(values: Iterable[bool | None]) -> bool | None:
    values = list(values)
    if True in values:
        return True
    return None if None in values else False


def _dmarc_present(result: CheckResult) -> bool | None:
    if result.status == DNS_ERROR:
        return None
    return result.status not in ("missing", "malformed")


def rule_verdicts(checks: dict[Check, CheckResult]) -> dict[str, bool | None]:
    """Each receiver rule: ``True`` kept, ``False`` broken, ``None`` unknown (DNS error).

    - gmail-all-senders: SPF or DKIM passes, and the sending IP has forward-confirmed reverse DNS;
    - gmail-bulk-senders: all-senders, plus SPF and DKIM pass and DMARC is published (``p=none`` is
      enough) and aligned — a passing SPF or DKIM for the domain is aligned (see :func:`judge_dmarc`);
    - microsoft-bulk-senders: SPF and DKIM pass, DMARC published (at least ``p=none``) and aligned.
    TLS, spam rate and one-click unsubscribe are not visible in DNS and are not judged.
    """
    spf, dkim, ptr = (_passes(checks[c]) for c in (Check.SPF, Check.DKIM, Check.PTR))
    dmarc = _all([_dmarc_present(checks[Check.DMARC]), _any([spf, dkim])])
    all_senders = _all([_any([spf, dkim]), ptr])
    bulk = _all([spf, dkim, dmarc])
    return {GMAIL_ALL: all_senders, GMAIL_BULK: _all([all_senders, bulk]), MICROSOFT_BULK: bulk}


def finding(domain: str, sending_ip: str, checks: Iterable[CheckResult]) -> DomainFinding:
    by_check = {c.check: c for c in checks}
    verdicts = rule_verdicts(by_check)
    return DomainFinding(
        domain=domain,
        sending_ip=sending_ip,
        checks=tuple(by_check[c] for c in Check if c in by_check),
        rules_broken=tuple(r for r in RULES if verdicts[r] is False),
        rules_unknown=tuple(r for r in RULES if verdicts[r] is None),
    )


def counts(findings: Iterable[DomainFinding]) -> dict[str, int]:
    """``{"spf:missing": 3, "rule:gmail-all-senders": 2, "ips:ptr:missing-ptr": 1, ...}``.

    ``ips:ptr:<status>`` counts distinct sending IPs, the unit reverse DNS is fixed in.
    """
    tally: Counter[str] = Counter()
    ips: dict[str, str] = {}
    for f in findings:
        for c in f.checks:
            tally[f"{c.check.value}:{c.status}"] += 1
            if c.check is Check.PTR:
                ips[f.sending_ip] = c.status
        for rule in f.rules_broken:
            tally[f"rule:{rule}"] += 1
        for rule in f.rules_unknown:
            tally[f"rule-unknown:{rule}"] += 1
    for status in ips.values():
        tally[f"ips:ptr:{status}"] += 1
    return dict(sorted(tally.items()))


def report(findings: Iterable[DomainFinding], total_domains: int, notes: Iterable[str] = ()) -> Deliverability:
    found = tuple(findings)
    return Deliverability(domains=found, total_domains=total_domains, notes=tuple(notes), counts=counts(found))


def parse_resolver(setting: str) -> tuple[str, int]:
    """``"IP"``, ``"IP:port"`` or ``"[IPv6]:port"`` -> (address, port); ``ValueError`` otherwise."""
    text = setting.strip()
    port = 53
    if text.startswith("["):
        address, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"resolver {setting!r}: expected [IPv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        address, port_text = text.split(":")
    else:
        address, port_text = text, ""
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"resolver {setting!r}: bad port")
        port = int(port_text)
    try:
        return str(ipaddress.ip_address(address)), port
    except ValueError:
        raise ValueError(f"resolver {setting!r}: expected an IP address, optionally with :port") from None
