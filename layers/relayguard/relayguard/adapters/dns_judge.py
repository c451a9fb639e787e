"""DnsJudge: judges a server's collected mail domains against DNS (issue 20, ADR 0007).

dnspython does the lookups through one resolver (the ``resolver`` setting, ``IP[:port]``, or the
machine's own); checkdmarc fetches and parses SPF (syntax, the RFC 7208 10-lookup limit, includes
resolved) and DMARC (tags, organisational-domain fallback). The rules that turn those facts into
statuses are pure, in :mod:`relayguard.domain.mailauth`.

Bounded: every query has a lifetime (``timeout``), at most ``workers`` domains are judged at once,
and the whole job stops at ``budget`` seconds — domains not judged by then are left out and a note
says how many. Every lookup is made once per job (:class:`_OncePerJob`): many domains share a
sending IP's PTR and their provider's ``include:``. DNS trouble becomes ``dns-error``, never an
exception.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

import checkdmarc.dmarc
import checkdmarc.spf
import checkdmarc.utils
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from relayguard.domain import mailauth
from relayguard.domain.deliverability import Collected, Deliverability, DomainFinding, MailDomain
from relayguard.domain.mailauth import DmarcLookup, ReverseLookup, SpfLookup, SpfRecord, SpfTerm

#: What a lookup that could not be answered raises (timeouts, SERVFAIL, network errors).
_DNS_TROUBLE = (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.YXDOMAIN, OSError)


class _OncePerJob(dns.resolver.Resolver):
    """A resolver that asks each (name, type) once per job, even when threads ask at the same time.

    The first caller queries; the others wait for its outcome. Answers and negative outcomes
    (NXDOMAIN, no answer, timeouts) are all replayed, so a name that timed out costs its lifetime
    once, not once per domain that refers to it.
    """

    def __init__(self, nameserver: str | None, port: int, lifetime: float) -> None:
        super().__init__(configure=nameserver is None)
        if nameserver is not None:
            self.nameservers = [nameserver]
            self.port = port
        self.lifetime = lifetime
        self.timeout = min(1.0, lifetime)  # per try, so one lost datagram is retried within the lifetime
        self._lock = threading.Lock()
        self._outcomes: dict[tuple[str, int], concurrent.futures.Future[dns.resolver.Answer]] = {}
        self.queries = 0

    def resolve(self, qname: Any, rdtype: Any = dns.rdatatype.A, *args: Any, **kwargs: Any) -> dns.resolver.Answer:
        key = (dns.name.from_text(str(qname)).to_text().lower(), int(dns.rdatatype.RdataType.make(rdtype)))
        with self._lock:
            outcome = self._outcomes.get(key)
            mine = outcome is None
            if outcome is None:
                outcome = self._outcomes[key] = concurrent.futures.Future()
                self.queries += 1
        if mine:
            try:
                kwargs["lifetime"] = self.lifetime
                outcome.set_result(super().resolve(qname, rdtype, *args, **kwargs))
            except BaseException as exc:
                outcome.set_exception(exc)
        return outcome.result()


def _trouble(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: checkdmarc re-raises its own types) is DNS trouble."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _DNS_TROUBLE):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _txt(resolver: _OncePerJob, name: str) -> tuple[str, ...] | None:
    """TXT strings at ``name`` (each record's strings joined); ``()`` if none; ``None`` on DNS trouble."""
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return ()
    except _DNS_TROUBLE:
        return None
    return tuple(b"".join(r.strings).decode("utf-8", "replace") for r in answer)


def _spf_record(parsed: dict[str, Any]) -> SpfRecord:
    """checkdmarc's parsed SPF (``parsed`` of parse_spf_record) as the domain's plain values."""
    terms = []
    for m in parsed.get("mechanisms", ()):
        addresses = list(m.get("addresses") or ())
        for host in m.get("hosts") or ():
            addresses += host.get("addresses") or () if isinstance(host, dict) else ()
        include = m.get("parsed") if m.get("mechanism") == "include" else None
        terms.append(
            SpfTerm(
                qualifier=str(m.get("action", "pass")),
                kind=str(m.get("mechanism", "")),
                value=str(m.get("value", "")),
                addresses=tuple(str(a) for a in addresses),
                include=_spf_record(include) if isinstance(include, dict) else None,
            )
        )
    redirect = parsed.get("redirect")
    target = redirect.get("parsed") if isinstance(redirect, dict) else None
    return SpfRecord(
        terms=tuple(terms),
        all=parsed.get("all") if parsed.get("all") not in (None, "") else None,
        redirect=_spf_record(target) if isinstance(target, dict) else None,
    )


class DnsJudge:
    """The :class:`relayguard.ports.DeliverabilityJudge` over real DNS."""

    def __init__(
        self,
        resolver: str | None = None,
        *,
        timeout: float = 2.0,
        budget: float = 60.0,
        workers: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nameserver: str | None = None
        self.port = 53
        if resolver:
            self.nameserver, self.port = mailauth.parse_resolver(resolver)
        self.timeout = timeout
        self.budget = budget
        self.workers = workers
        self.clock = clock
        #: Queries the last job sent (each (name, type) at most once); for tests and benchmarks.
        self.last_queries = 0

    def judge(self, collected: Collected) -> Deliverability:
        deadline = self.clock() + self.budget
        resolver = _OncePerJob(self.nameserver, self.port, self.timeout)
        # checkdmarc keeps a process-wide answer cache (30 min); a warm Lambda must not judge this
        # job by another job's answers. Our per-job resolver is the cache that counts.
        checkdmarc.utils.DNS_CACHE.clear()
        notes = list(collected.notes)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dns-judge")
        try:
            ips = sorted({d.sending_ip for d in collected.domains})
            reverse_jobs = {ip: pool.submit(self._reverse, resolver, ip) for ip in ips}
            domain_jobs = [
                pool.submit(self._domain, resolver, d, reverse_jobs[d.sending_ip]) for d in collected.domains
            ]
            done, pending = concurrent.futures.wait(domain_jobs, timeout=max(0.0, deadline - self.clock()))
            findings: list[DomainFinding] = [f.result() for f in domain_jobs if f in done]
            if pending:
                notes.append(f"time budget {self.budget:g}s: judged {len(findings)} of {len(domain_jobs)} domains")
        finally:
            # In-flight lookups end within their lifetime; nothing queued starts.
            pool.shutdown(wait=False, cancel_futures=True)
        self.last_queries = resolver.queries
        return mailauth.report(findings, max(collected.total_domains, len(collected.domains)), notes)

    def _reverse(self, resolver: _OncePerJob, ip: str) -> ReverseLookup:
        try:
            names = tuple(
                r.target.to_text().rstrip(".") for r in resolver.resolve(dns.reversename.from_address(ip), "PTR")
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return ReverseLookup(ip, ())
        except _DNS_TROUBLE:
            return ReverseLookup(ip, None)
        rdtype = "AAAA" if ":" in ip else "A"
        forward: dict[str, tuple[str, ...] | None] = {}
        for name in names:
            try:
                forward[name] = tuple(r.address for r in resolver.resolve(name, rdtype))
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                forward[name] = ()
            except _DNS_TROUBLE:
                forward[name] = None
        return ReverseLookup(ip, names, forward)

    def _domain(
        self, resolver: _OncePerJob, domain: MailDomain, reverse: concurrent.futures.Future[ReverseLookup]
    ) -> DomainFinding:
        spf = mailauth.judge_spf(self._spf(resolver, domain.name), domain.sending_ip)
        dkim = mailauth.judge_dkim(_txt(resolver, f"default._domainkey.{domain.name}"), domain.dkim_public_key)
        dmarc = mailauth.judge_dmarc(self._dmarc(resolver, domain.name), spf, dkim)
        rev = reverse.result()
        ptr = mailauth.judge_ptr(rev)
        helo = mailauth.judge_helo(domain.helo, rev, ptr)
        return mailauth.finding(domain.name, domain.sending_ip, (spf, dkim, dmarc, ptr, helo))

    def _spf(self, resolver: _OncePerJob, name: str) -> SpfLookup:
        try:
            result = checkdmarc.spf.get_spf_record(name, resolver=resolver, timeout=self.timeout, retries=0)
        except checkdmarc.spf.SPFTooManyDNSLookups as exc:
            return SpfLookup("too-many-lookups", detail=str(exc))
        except checkdmarc.spf.MultipleSPFRTXTRecords as exc:
            return SpfLookup("multiple", detail=str(exc))
        except checkdmarc.spf.SPFRecordNotFound as exc:
            return SpfLookup(mailauth.DNS_ERROR if _trouble(exc) else "missing", detail=str(exc))
        except (checkdmarc.spf.SPFError, dns.exception.DNSException, OSError) as exc:
            # Syntax errors, include/redirect loops, a DNS error inside an include.
            return SpfLookup(mailauth.DNS_ERROR if _trouble(exc) else "malformed", detail=str(exc)[:300])
        return SpfLookup(
            record=_spf_record(result["parsed"]), text=str(result.get("record", "")),
            lookups=int(result.get("dns_lookups", 0)),
        )

    def _dmarc(self, resolver: _OncePerJob, name: str) -> DmarcLookup:
        try:
            found = checkdmarc.dmarc.query_dmarc_record(name, resolver=resolver, timeout=self.timeout, retries=0)
            parsed = checkdmarc.dmarc.parse_dmarc_record(
                found["record"], name, resolver=resolver, timeout=self.timeout, retries=0
            )
        except checkdmarc.dmarc.DMARCRecordNotFound as exc:
            return DmarcLookup(mailauth.DNS_ERROR if _trouble(exc) else "missing", detail=str(exc))
        except (checkdmarc.dmarc.DMARCError, dns.exception.DNSException, OSError) as exc:
            return DmarcLookup(mailauth.DNS_ERROR if _trouble(exc) else "malformed", detail=str(exc)[:300])
        tags = parsed["tags"]

        def tag(key: str, default: str) -> str:
            item = tags.get(key)
            return str(item["value"]) if isinstance(item, dict) and "value" in item else default

        location = str(found.get("location") or "")
        return DmarcLookup(
            policy=tag("p", ""), adkim=tag("adkim", "r"), aspf=tag("aspf", "r"),
            location=location if location != name else "",
        )
