"""Deliverability collection (issue 20): the probe's read-only section and its parser into a :class:`Collected`.

The section runs inside the relay probe's script, in the same SSH exec round trip. It costs the server
one ``awk`` process whatever the number of domains: ``awk`` itself reads ``/var/cpanel/mainip``,
``/etc/userdomains``, ``/etc/mailips``, ``/etc/mailhelo`` and each domain's DKIM *public* key
(``/var/cpanel/domain_keys/public/<domain>``, opened by ``getline``, no process per domain). Private
keys (``/var/cpanel/domain_keys/private``) are never named. Which Exim Configuration Manager options are
on is read from cPanel's own touch files, with ``[ -e ]`` (a shell builtin): cPanel's
``Whostmgr::TweakSettings::Configure::Mail`` stores the options ``per_domain_mailips``, ``custom_mailips``,
``custom_mailhelo`` and ``use_rdns_for_helo`` as the presence of ``/var/cpanel/<option>`` (cpanel.md §10).

Nothing from the server reaches a shell: the script is fixed text, and ``awk`` prints only names that
match strict patterns (a domain naming a path such as ``../x`` is neither opened nor printed). The
parser validates every value again (IP addresses with :mod:`ipaddress`) before it enters a
:class:`MailDomain`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from relayguard.domain.deliverability import Collected, MailDomain, Source
from relayguard.errors import InvalidInput

USERDOMAINS = "/etc/userdomains"
MAILIPS = "/etc/mailips"
MAILHELO = "/etc/mailhelo"
MAINIP = "/var/cpanel/mainip"
DKIM_PUBLIC_DIR = "/var/cpanel/domain_keys/public"
#: The Exim Configuration Manager options that make Exim read the two maps, as cPanel stores them.
OPTIONS = ("per_domain_mailips", "custom_mailips", "custom_mailhelo", "use_rdns_for_helo")
#: Options under which Exim's remote_smtp transport takes ``interface`` from /etc/mailips ...
MAILIPS_OPTIONS = ("per_domain_mailips", "custom_mailips")
#: ... and ``helo_data`` from /etc/mailhelo (with use_rdns_for_helo, cPanel writes the IPs' PTR names there).
MAILHELO_OPTIONS = ("per_domain_mailips", "custom_mailhelo", "use_rdns_for_helo")
#: Domains carried per server at most (docs/deliverability.md, Limits): a server hosting more is judged on
#: the first ones in /etc/userdomains' order, and the result says how many it has in all. 5000 domains are
#: about 2.2 MB of probe output with 2048-bit keys, and stay within a job's DNS time budget.
MAX_DOMAINS = 5000
#: Lines of one DKIM public key file read at most (a 4096-bit PEM key has 14).
MAX_KEY_LINES = 64

_HOST = r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"^{_HOST}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")

# One pass, one process. The domains come first so that only map lines for carried domains (and the
# ``*`` default, which cPanel writes last) are printed: the output stays bounded by MAX_DOMAINS.
_AWK = (
    "function clean(s) { gsub(/[ \\t\\r]/, \"\", s); return tolower(s) } "
    "function kv(l,   i) { i = index(l, \":\"); if (!i) return 0; "
    "K = clean(substr(l, 1, i - 1)); V = substr(l, i + 1); gsub(/[ \\t\\r]/, \"\", V); return 1 } "
    "function map(f, tag) { while ((getline l < f) > 0) { if (!kv(l)) continue; "
    "if (K != \"*\" && !(K in c)) continue; "
    "if (V !~ /^[A-Za-z0-9.:-]+$/) { bad++; continue } "
    "print \"mail.\" tag \"=\" K \" \" V } close(f) } "
    "BEGIN { "
    "if ((getline m < mainip) > 0) { gsub(/[^0-9A-Fa-f.:]/, \"\", m); print \"mail.mainip=\" m } "
    "while ((getline l < ud) > 0) { if (!kv(l) || K == \"*\") continue; "
    f"if (K !~ /^{_HOST}$/ || index(K, \"..\")) {{ bad++; continue }} "
    "if (K in c) continue; t++; if (t > max) continue; c[K] = 1; "
    "f = kd \"/\" K; p = \"\"; n = 0; "
    "while (n < kl && (getline k < f) > 0) { n++; if (k !~ /^-----/) p = p k } close(f); "
    "gsub(/[^A-Za-z0-9+\\/=]/, \"\", p); print \"mail.domain=\" K \" \" p } "
    "close(ud); map(mi, \"ip\"); map(mh, \"helo\"); "
    "printf \"mail.total=%d\\nmail.bad=%d\\n\", t, bad }"
)


#: The resolver setting that turns the judgement off: the scan then records what it collected only.
RESOLVER_OFF = "off"


def resolver_address(text: str) -> tuple[str, int]:
    """``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or a bare IPv6 address as (address, port); InvalidInput otherwise."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if rest else "53")
    elif text.count(":") == 1:
        host, port = text.split(":")
    address = _ip(host)
    if address is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"{text!r} is not a resolver address (IP or IP:PORT)")
    return address, int(port)


def resolver_setting(text: str) -> str:
    """A resolver setting as given (CLI ``--resolver``, ``RG_DNS_RESOLVER``): empty (the machine's own
    resolver), ``off``, or an address :func:`resolver_address` takes; InvalidInput otherwise."""
    if text not in ("", RESOLVER_OFF):
        try:
            resolver_address(text)
        except InvalidInput as exc:
            raise InvalidInput(f"{exc} (or empty, or {RESOLVER_OFF})") from None
    return text


def collect_lines() -> list[str]:
    """The probe's deliverability section: fixed shell text, printed only on a server with /etc/userdomains."""
    lines = [f"if [ -f {USERDOMAINS} ]; then", "  kv mail.present 1"]
    lines += [f"  flag mail.opt.{option} /var/cpanel/{option}" for option in OPTIONS]
    lines += [f"  flag mail.file.mailips {MAILIPS}", f"  flag mail.file.mailhelo {MAILHELO}"]
    lines += [
        f"  awk -v max={MAX_DOMAINS} -v kl={MAX_KEY_LINES} -v mainip={MAINIP} -v ud={USERDOMAINS} "
        f"-v mi={MAILIPS} -v mh={MAILHELO} -v kd={DKIM_PUBLIC_DIR} '{_AWK}' </dev/null",
        "else kv mail.present 0; fi",
    ]
    return lines


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _pick(domain: str, table: Mapping[str, str], in_force: bool, fallback: str) -> tuple[str, Source]:
    """Exim's ``lsearch*`` as the remote_smtp transport applies it: the domain's line, else ``*``, else the
    server's own value; with the option off the map is not read at all."""
    if in_force and domain in table:
        return table[domain], Source.MAP
    if in_force and "*" in table:
        return table["*"], Source.DEFAULT
    return fallback, Source.SERVER


@dataclass
class _Raw:
    """The section's lines, validated one by one."""

    present: bool = False
    finished: bool = False
    flags: dict[str, bool] = field(default_factory=dict)
    mainip: str = ""
    total: int = 0
    bad: int = 0
    domains: list[tuple[str, str]] = field(default_factory=list)
    ips: dict[str, str] = field(default_factory=dict)
    helos: dict[str, str] = field(default_factory=dict)

    def take(self, key: str, value: str) -> None:
        if key == "mail.present":
            self.present = value == "1"
        elif key.startswith(("mail.opt.", "mail.file.")):
            self.flags[key[5:]] = value == "1"
        elif key == "mail.mainip":
            self.mainip = _ip(value) or ""
        elif key == "mail.total":
            self.total, self.finished = (int(value) if value.isdigit() else 0), True
        elif key == "mail.bad":
            self.bad += int(value) if value.isdigit() else 0  # lines awk refused
        elif key in ("mail.domain", "mail.ip", "mail.helo"):
            self.entry(key, *value.partition(" ")[::2])

    def entry(self, key: str, name: str, rest: str) -> None:
        if name != "*" and not _HOST_RE.match(name):
            self.bad += 1
        elif key == "mail.domain":
            self.domains.append((name, rest))
        elif key == "mail.ip" and (ip := _ip(rest)):
            self.ips[name] = ip
        elif key == "mail.helo" and _HOST_RE.match(rest):
            self.helos[name] = rest.lower()
        else:
            self.bad += 1


def parse_collected(output: str, hostname: str = "") -> Collected | None:
    """The deliverability section of a probe's output as a :class:`Collected`; None when the server has no
    ``/etc/userdomains`` (not cPanel, or the section did not run). ``hostname`` is the probe's ``hostname -f``:
    the HELO name Exim uses when /etc/mailhelo is not in force."""
    raw = _Raw()
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("mail."):
            raw.take(key, value)
    if not raw.present:
        return None
    options = tuple(option for option in OPTIONS if raw.flags.get(f"opt.{option}"))
    mailips_on = raw.flags.get("file.mailips", False) and any(o in options for o in MAILIPS_OPTIONS)
    mailhelo_on = raw.flags.get("file.mailhelo", False) and any(o in options for o in MAILHELO_OPTIONS)
    helo_default = hostname.lower() if _HOST_RE.match(hostname) else ""
    carried = []
    for name, key in raw.domains[:MAX_DOMAINS]:
        ip, ip_source = _pick(name, raw.ips, mailips_on, raw.mainip)
        helo, helo_source = _pick(name, raw.helos, mailhelo_on, helo_default)
        carried.append(MailDomain(name=name, sending_ip=ip, helo=helo, ip_source=ip_source, helo_source=helo_source,
                                  dkim_public_key=key if _KEY_RE.match(key) else None))
    notes = [f"mailips: {'in force' if mailips_on else 'not in force'}; "
             f"mailhelo: {'in force' if mailhelo_on else 'not in force'}; "
             f"options on: {', '.join(options) or 'none'}"]
    total = max(raw.total, len(carried))
    if total > len(carried):
        notes.append(f"truncated: {len(carried)} of {total} domains (at most {MAX_DOMAINS} per server)")
    if not raw.finished:
        notes.append("incomplete: the collection did not finish (awk failed or the output was cut)")
    if not raw.mainip:
        notes.append(f"no main IP in {MAINIP}")
    if raw.bad:
        notes.append(f"skipped {raw.bad} malformed lines in {USERDOMAINS}, {MAILIPS} or {MAILHELO}")
    return Collected(domains=tuple(carried), total_domains=total, notes=tuple(notes), options=options)
