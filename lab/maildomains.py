"""The lab's mail domains: one per deliverability case of issue 20, with both sides of each case.

Every case says what a simulated cPanel host holds for the domain (its line in ``/etc/userdomains``,
``/etc/mailips``, ``/etc/mailhelo`` and its DKIM public key file) and what the lab's real DNS server
(``lab/dns.py``) publishes for it, plus the statuses and receiver rules the judge must report
(docs/deliverability.md has the vocabulary). The host side and the DNS side are rendered from the same
table, so a case cannot drift between collection, DNS and the tests.

Addresses live in the lab's reserved ``127.<net>.0.0/16``: hosts use ``127.<net>.0-1.x``, POP clients
``127.<net>.250.x``; the sending IPs of this table are ``127.<net>.251.x`` and the DNS servers listen on
``127.<net>.252.x``. Everything is a pure function of ``net``, so tests on different ranges never clash.

Only public DKIM keys appear: the scan never reads a private key, and nothing in the lab signs mail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relayguard.domain.deliverability import Collected, MailDomain, Source

#: Two fixed 2048-bit RSA public keys (SubjectPublicKeyInfo, base64 DER), generated once with
#: ``openssl genrsa 2048 | openssl rsa -pubout``. Fixed text keeps the zones and tests deterministic.
KEY_A = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAsPNoyMv5XUCp26HmaM2aECoC/YGhio/BZHuhkz8GTpXjG3nHhaAk"
    "HCDidj2aBbzlZLqM729HM5AbAWBeWeee8cCy3WC8CsWdZgJnmCn9zObgLmwYohNpEV8ohn9OKN7kVH4AS64uYwipq0j/ruVg"
    "rTRrtIFZ8b91sPNx1aQpzv9dlLVS7mT+zTxv14/VoixMg++ZxpxORKt1xFxgq5yCulG3OHxlZTC/IN3uqQv3onK/2yylOyNDs"
    "y1QLnSvYie4EfRNdb5UkfhfrCPdnwQQPHNGtU/Kawaw+8m3qyqP+EdAouu2MGfJXl1QsHwNRsrwiJWzhooQ+Cn4BOuqBYvGCw"
    "IDAQAB"
)
KEY_B = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAocrQHVMIjmFc3eBcIADMpY2qv3wIcaZKdC95zGRZ1Ny75Rz8Xail"
    "x6bGKRnVYtbGq0hDkZzxse2LU/6e5Nsq7dD6rtu6nmAZpouono3FiRBk6OYsu+uBt88l1O1LxI6Julc9x8AuBZwPC96xG7vR"
    "COHzN93RExQ3BoCvZjXmeLo4msybws6L0Flb/bN86/ltbOrtIvBKw+B/rH2Jo1Vld9Wm7C4wYHMSodjjRuaZV/tYzbHZezUkb"
    "dak4vXTvBTpgyv8uAQIUhsmpIBdowoADFtCNj0BKqRH1W1kqWXOELpKTGlWwK74xn/Qw2t0CKPVt7hjuhWCDmI/ODXWiDUZow"
    "IDAQAB"
)

#: The provider zone every "good" SPF record includes: one ``include:`` shared by many domains, so the
#: judge's per-job cache is exercised (it must be fetched once however many domains include it).
PROVIDER_ZONE = "provider.test"
SHARED_INCLUDE = f"_spf.{PROVIDER_ZONE}"
#: The zone whose only name server never answers (``lab/dns.py``'s silent peer).
TIMEOUT_ZONE = "timeout.test"
#: The account that owns every lab mail domain in ``/etc/userdomains``.
LAB_USER = "labmail"

#: Sending-IP slots (last octet in 127.<net>.251.x) and what reverse DNS says about each.
IP_MAIN = 1  # PTR mail.host1.test -> A back to the IP: forward-confirmed; the server's main IP
IP_NO_PTR = 2  # no PTR at all
IP_NO_FWD = 3  # PTR mail.nofwd.test, which has no A record
IP_FWD_OTHER = 4  # PTR mail.elsewhere.test, whose A record is another IP (slot 5)
IP_OTHER = 5
IP_HELO = 6  # PTR mail.host6.test -> A back: valid, but a domain on it says another HELO

MAIN_HELO = "mail.host1.test"


def sending_ip(net: int, slot: int) -> str:
    return f"127.{net}.251.{slot}"


def dns_address(net: int) -> str:
    """Where the lab's resolver (the address a judge is pointed at) listens."""
    return f"127.{net}.252.1"


def authoritative_address(net: int) -> str:
    """nsd: authoritative for every lab zone."""
    return f"127.{net}.252.2"


def silent_address(net: int) -> str:
    """The silent peer: reads DNS queries and never answers (the only name server of TIMEOUT_ZONE)."""
    return f"127.{net}.252.3"


def reverse_zone(net: int) -> str:
    return f"251.{net}.127.in-addr.arpa"


@dataclass(frozen=True)
class Case:
    """One lab mail domain: the server's side, the DNS side and what the judge must say."""

    name: str  # short id used in test ids
    domain: str
    ip_slot: int
    helo: str
    #: base64 DER the server's ``/var/cpanel/domain_keys/public/<domain>`` holds; ``None``: no file.
    server_key: str | None
    #: TXT records at the apex / ``default._domainkey`` / ``_dmarc`` (each item is one record).
    spf: tuple[str, ...] = ()
    dkim: tuple[str, ...] = ()
    dmarc: tuple[str, ...] = ()
    #: check name -> expected status (values of docs/deliverability.md's table).
    expect: dict[str, str] = field(default_factory=dict)
    rules_broken: tuple[str, ...] = ()
    #: Rules the judge cannot decide (a DNS error hides an input).
    rules_unknown: tuple[str, ...] = ()
    #: Text the detail of a check must contain, e.g. ``{"dmarc": "p=none"}``.
    detail: dict[str, str] = field(default_factory=dict)
    #: Served by the silent peer: every lookup under the domain times out.
    times_out: bool = False

    def ip(self, net: int) -> str:
        return sending_ip(net, self.ip_slot)


def _dkim(key: str) -> str:
    return f"v=DKIM1; k=rsa; p={key}"


GOOD_SPF = f"v=spf1 include:{SHARED_INCLUDE} -all"
GOOD_DMARC = "v=DMARC1; p=reject; adkim=r; aspf=r"
BULK = ("gmail-bulk-senders", "microsoft-bulk-senders")
ALL_GMAIL = ("gmail-all-senders", "gmail-bulk-senders")
ALL_VALID = {"spf": "valid", "dkim": "valid", "dmarc": "valid", "ptr": "valid", "helo": "valid"}


def _expect(**changes: str) -> dict[str, str]:
    return {**ALL_VALID, **changes}


def cases() -> tuple[Case, ...]:
    """Every case of issue 20 (plus DKIM malformed/no-key, DMARC malformed and a forward mismatch)."""
    spf, dkim, dmarc = (GOOD_SPF,), (_dkim(KEY_A),), (GOOD_DMARC,)
    lookups = " ".join(f"include:l{i}.{PROVIDER_ZONE}" for i in range(1, 12))
    return (
        Case("good", "good.test", IP_MAIN, MAIN_HELO, KEY_A, spf, dkim, dmarc, _expect(),
             detail={"dmarc": "p=reject"}),
        Case("spf-missing", "spf-missing.test", IP_MAIN, MAIN_HELO, KEY_A, (), dkim, dmarc,
             _expect(spf="missing", dmarc="spf-error"), BULK),
        Case("spf-not-covering", "spf-other-ip.test", IP_MAIN, MAIN_HELO, KEY_A,
             ("v=spf1 ip4:192.0.2.10 -all",), dkim, dmarc,
             _expect(spf="ip-not-permitted", dmarc="spf-error"), BULK),
        Case("spf-too-many-lookups", "spf-lookups.test", IP_MAIN, MAIN_HELO, KEY_A,
             (f"v=spf1 {lookups} include:{SHARED_INCLUDE} -all",), dkim, dmarc,
             _expect(spf="too-many-lookups", dmarc="spf-error"), BULK),
        Case("spf-multiple", "spf-two.test", IP_MAIN, MAIN_HELO, KEY_A,
             (GOOD_SPF, "v=spf1 ip4:{ip} -all"), dkim, dmarc,
             _expect(spf="multiple", dmarc="spf-error"), BULK),
        Case("dkim-missing", "dkim-missing.test", IP_MAIN, MAIN_HELO, KEY_A, spf, (), dmarc,
             _expect(dkim="missing", dmarc="dkim-error"), BULK),
        Case("dkim-mismatch", "dkim-mismatch.test", IP_MAIN, MAIN_HELO, KEY_A, spf, (_dkim(KEY_B),), dmarc,
             _expect(dkim="mismatch", dmarc="dkim-error"), BULK),
        Case("dkim-malformed", "dkim-malformed.test", IP_MAIN, MAIN_HELO, KEY_A, spf,
             ("v=DKIM1; k=rsa; p=not*base64",), dmarc, _expect(dkim="malformed", dmarc="dkim-error"), BULK),
        Case("dkim-no-server-key", "dkim-nopub.test", IP_MAIN, MAIN_HELO, None, spf, dkim, dmarc,
             _expect(dkim="nopub", dmarc="dkim-error"), BULK),
        Case("dmarc-missing", "dmarc-missing.test", IP_MAIN, MAIN_HELO, KEY_A, spf, dkim, (),
             _expect(dmarc="missing"), BULK),
        Case("dmarc-none", "dmarc-none.test", IP_MAIN, MAIN_HELO, KEY_A, spf, dkim, ("v=DMARC1; p=none",),
             _expect(), detail={"dmarc": "p=none"}),
        Case("dmarc-malformed", "dmarc-bad.test", IP_MAIN, MAIN_HELO, KEY_A, spf, dkim,
             ("v=DMARC1; p=sometimes",), _expect(dmarc="malformed"), BULK),
        Case("ptr-missing", "ptr-missing.test", IP_NO_PTR, MAIN_HELO, KEY_A, spf, dkim, dmarc,
             _expect(ptr="missing-ptr", helo="unknown"), ALL_GMAIL),
        Case("ptr-no-forward", "ptr-nofwd.test", IP_NO_FWD, "mail.nofwd.test", KEY_A, spf, dkim, dmarc,
             _expect(ptr="missing-fwd", helo="unknown"), ALL_GMAIL),
        Case("ptr-forward-mismatch", "ptr-fwd-other.test", IP_FWD_OTHER, "mail.elsewhere.test", KEY_A,
             spf, dkim, dmarc, _expect(ptr="fwd-mismatch", helo="unknown"), ALL_GMAIL),
        Case("helo-mismatch", "helo-mismatch.test", IP_HELO, "server.helo-mismatch.test", KEY_A,
             spf, dkim, dmarc, _expect(helo="mismatch")),
        Case("dns-timeout", TIMEOUT_ZONE, IP_MAIN, MAIN_HELO, KEY_A, spf, dkim, dmarc,
             _expect(spf="dns-error", dkim="dns-error", dmarc="dns-error"),
             rules_unknown=("gmail-all-senders", "gmail-bulk-senders", "microsoft-bulk-senders"),
             times_out=True),
    )


def case(name: str) -> Case:
    for c in cases():
        if c.name == name:
            return c
    raise KeyError(name)


# --- the server's side ------------------------------------------------------------------------------


def pem(key: str) -> str:
    """``/var/cpanel/domain_keys/public/<domain>``: the key as cPanel writes it (PEM, 64-char lines)."""
    body = "\n".join(key[i : i + 64] for i in range(0, len(key), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


def host_files(net: int, selected: tuple[Case, ...] | None = None, user: str = LAB_USER) -> dict[str, str]:
    """Absolute path -> content of the cPanel files a simulated host needs for ``selected`` cases.

    As ``updateuserdomains`` writes them with per-domain mail IPs on (cpanel.md §10): ``/etc/userdomains``
    sorted with its ``*: nobody`` line; ``/etc/mailips`` a line for each domain not on the main IP, then
    ``*: <main IP>``; ``/etc/mailhelo`` likewise for HELO names, and the touch file
    ``/var/cpanel/per_domain_mailips``. Whether Exim *uses* the two maps is the Exim configuration's
    business (the collector reads it); seed that separately.
    """
    chosen = cases() if selected is None else selected
    main_ip = sending_ip(net, IP_MAIN)
    userdomains = [f"{c.domain}: {user}" for c in sorted(chosen, key=lambda c: c.domain)] + ["*: nobody"]
    mailips = [f"{c.domain}: {c.ip(net)}" for c in chosen if c.ip(net) != main_ip] + [f"*: {main_ip}"]
    mailhelo = [f"{c.domain}: {c.helo}" for c in chosen if c.helo != MAIN_HELO] + [f"*: {MAIN_HELO}"]
    files = {
        "/etc/userdomains": "\n".join(userdomains) + "\n",
        "/etc/mailips": "\n".join(mailips) + "\n",
        "/etc/mailhelo": "\n".join(mailhelo) + "\n",
        "/var/cpanel/per_domain_mailips": "",
    }
    for c in chosen:
        if c.server_key is not None:
            files[f"/var/cpanel/domain_keys/public/{c.domain}"] = pem(c.server_key)
    return files


def collected(net: int, selected: tuple[Case, ...] | None = None) -> Collected:
    """What a correct collector reads from :func:`host_files` (maps in force): the judge's input."""
    chosen = cases() if selected is None else selected
    main_ip = sending_ip(net, IP_MAIN)
    domains = tuple(
        MailDomain(
            name=c.domain,
            sending_ip=c.ip(net),
            helo=c.helo,
            ip_source=Source.DEFAULT if c.ip(net) == main_ip else Source.MAP,
            helo_source=Source.DEFAULT if c.helo == MAIN_HELO else Source.MAP,
            dkim_public_key=c.server_key,
        )
        for c in sorted(chosen, key=lambda c: c.domain)
    )
    return Collected(domains=domains, total_domains=len(domains))


# --- the DNS side -----------------------------------------------------------------------------------


def _txt(value: str) -> str:
    """A TXT RDATA in zone-file syntax: split into <=255-byte strings (DKIM keys are longer)."""
    parts = [value[i : i + 255] for i in range(0, len(value), 255)]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)


def _soa(zone: str, ns_host: str) -> list[str]:
    return [
        f"$ORIGIN {zone}.",
        "$TTL 300",
        f"@ IN SOA {ns_host}. hostmaster.{zone}. 1 3600 600 86400 300",
        f"@ IN NS {ns_host}.",
    ]


BULK_ZONE = "bulk.test"


def bulk_names(n: int) -> list[str]:
    """``d0.bulk.test`` ... : many well-configured domains for load (``bench.deliverability``)."""
    return [f"d{i}.{BULK_ZONE}" for i in range(n)]


def bulk_collected(net: int, n: int) -> Collected:
    """``n`` domains as a server with that many accounts reports them: all on the main IP and HELO."""
    domains = tuple(
        MailDomain(name, sending_ip(net, IP_MAIN), MAIN_HELO, Source.DEFAULT, Source.DEFAULT, KEY_A)
        for name in bulk_names(n)
    )
    return Collected(domains=domains, total_domains=n)


def zones(net: int, bulk: int = 0) -> dict[str, str]:
    """Zone name -> zone file text for the authoritative server (all but the timing-out zone).

    The parent zone ``test.`` delegates every lab zone to the authoritative server (``ns.test``) and
    :data:`TIMEOUT_ZONE` to the silent peer, so a resolver finds each by ordinary iteration, and a name
    outside every zone (``_dmarc.test``, where DMARC's organisational lookup may go) is NXDOMAIN.
    ``bulk`` adds :data:`BULK_ZONE` with that many well-configured domains (one zone, so nsd starts as
    fast with 5,000 domains as with none).
    """
    ns = "ns.test"
    out: dict[str, str] = {}
    for c in cases():
        if c.times_out:
            continue
        lines = _soa(c.domain, ns)
        lines.append(f"@ IN A {c.ip(net)}")
        lines += [f"@ IN TXT {_txt(r.replace('{ip}', c.ip(net)))}" for r in c.spf]
        lines += [f"default._domainkey IN TXT {_txt(r)}" for r in c.dkim]
        lines += [f"_dmarc IN TXT {_txt(r)}" for r in c.dmarc]
        out[c.domain] = "\n".join(lines) + "\n"
    provider = [
        *_soa(PROVIDER_ZONE, ns),
        f"_spf IN TXT {_txt(f'v=spf1 ip4:127.{net}.251.0/24 -all')}",
    ]
    provider += [f"l{i} IN TXT {_txt('v=spf1 -all')}" for i in range(1, 12)]
    out[PROVIDER_ZONE] = "\n".join(provider) + "\n"
    # Hosts named by PTRs and HELOs: each its own zone, as a provider's server names usually are.
    names = {
        "host1.test": [f"mail IN A {sending_ip(net, IP_MAIN)}"],
        "nofwd.test": ["www IN A 192.0.2.80"],  # the zone exists, mail.nofwd.test does not
        "elsewhere.test": [f"mail IN A {sending_ip(net, IP_OTHER)}"],
        "host6.test": [f"mail IN A {sending_ip(net, IP_HELO)}"],
    }
    for zone, records in names.items():
        out[zone] = "\n".join(_soa(zone, ns) + records) + "\n"
    rev = [
        *_soa(reverse_zone(net), ns),
        f"{IP_MAIN} IN PTR mail.host1.test.",
        f"{IP_NO_FWD} IN PTR mail.nofwd.test.",
        f"{IP_FWD_OTHER} IN PTR mail.elsewhere.test.",
        f"{IP_OTHER} IN PTR mail.other.test.",
        f"{IP_HELO} IN PTR mail.host6.test.",
    ]
    out[reverse_zone(net)] = "\n".join(rev) + "\n"
    if bulk:
        records = [*_soa(BULK_ZONE, ns)]
        for name in bulk_names(bulk):
            label = name.removesuffix(f".{BULK_ZONE}")
            records += [f"{label} IN TXT {_txt(GOOD_SPF)}",
                        f"default._domainkey.{label} IN TXT {_txt(_dkim(KEY_A))}",
                        f"_dmarc.{label} IN TXT {_txt(GOOD_DMARC)}"]
        out[BULK_ZONE] = "\n".join(records) + "\n"
    parent = [*_soa("test", ns), f"ns IN A {authoritative_address(net)}"]
    parent += [f"{z.removesuffix('.test')} IN NS {ns}." for z in sorted(out) if z.endswith(".test")]
    parent += [f"{TIMEOUT_ZONE.removesuffix('.test')} IN NS ns.{TIMEOUT_ZONE}.",
               f"ns.{TIMEOUT_ZONE.removesuffix('.test')} IN A {silent_address(net)}"]
    out["test"] = "\n".join(parent) + "\n"
    return out
