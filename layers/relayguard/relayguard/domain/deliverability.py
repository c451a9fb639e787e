"""Deliverability (issue 20): what a server says about the domains it sends for, and how DNS judges them.

This module is the contract between the two halves of the deliverability scan:

- **collection** (on the server, read-only, in the probe's round trip) turns cPanel's files —
  ``/etc/userdomains``, ``/etc/mailips``, ``/etc/mailhelo``, ``/var/cpanel/domain_keys/public/<domain>``
  and the Exim Configuration Manager options that say whether the two maps are in force — into a
  :class:`Collected`;
- **judgement** (outside the server, by DNS) turns a :class:`Collected` into a :class:`Deliverability`
  report through the :class:`relayguard.ports.DeliverabilityJudge` port.

Both sides meet only in these values, so each is tested with plain data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Source(enum.StrEnum):
    """Where a domain's sending IP or HELO name comes from, as Exim on the server applies it."""

    MAP = "map"  # /etc/mailips or /etc/mailhelo, with the Exim option that reads it on
    DEFAULT = "default"  # the map's ``*`` line, with the option on
    SERVER = "server"  # the option is off (or the map has no line): the server's main IP / hostname


@dataclass(frozen=True)
class MailDomain:
    """One domain the server hosts and sends mail for."""

    name: str
    sending_ip: str
    helo: str
    ip_source: Source
    helo_source: Source
    #: The ``p=`` value (base64 DER) of ``/var/cpanel/domain_keys/public/<domain>``; ``None`` without a file.
    dkim_public_key: str | None = None


@dataclass(frozen=True)
class Collected:
    """What the server said, bounded: at most a configured number of domains are carried."""

    domains: tuple[MailDomain, ...] = ()
    #: Domains the server hosts in all; more than ``len(domains)`` when the collection was truncated.
    total_domains: int = 0
    #: Why the collection is partial or missing (e.g. ``"truncated: 5000 of 7123 domains"``), else empty.
    notes: tuple[str, ...] = ()
    #: The Exim Configuration Manager options found on (``per_domain_mailips``, ``use_rdns_for_helo``, ...):
    #: why each domain's IP and HELO come from the maps or from the server.
    options: tuple[str, ...] = ()

    @property
    def truncated(self) -> bool:
        return self.total_domains > len(self.domains)


class Check(enum.StrEnum):
    """One check per domain, as cPanel's Email Deliverability page lists them (plus HELO)."""

    SPF = "spf"
    DKIM = "dkim"
    DMARC = "dmarc"
    PTR = "ptr"
    HELO = "helo"


@dataclass(frozen=True)
class CheckResult:
    """One check's status (a value from the table in docs/deliverability.md) and a one-line detail."""

    check: Check
    status: str
    detail: str = ""


@dataclass(frozen=True)
class DomainFinding:
    """One domain's checks and the receiver rules (ids from docs/deliverability.md) it breaks."""

    domain: str
    sending_ip: str
    checks: tuple[CheckResult, ...]
    rules_broken: tuple[str, ...] = ()
    #: Rules a DNS error keeps from being decided (neither kept nor broken).
    rules_unknown: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deliverability:
    """A server's deliverability report: per-domain findings plus what bounded it."""

    domains: tuple[DomainFinding, ...] = ()
    total_domains: int = 0
    notes: tuple[str, ...] = ()
    #: ``{"spf:missing": 3, "dkim:valid": 10, "rule:gmail-all-senders": 2, ...}``
    counts: dict[str, int] = field(default_factory=dict)
