"""The post-fix proof: that closing POP-before-SMTP broke nothing customers notice (issue 13).

It runs in the finish round trip, right after the relay probe, so the restart, the refusal and this
proof come from the same moment. Every check is an ``exim -bh`` session: Exim's own ACLs and
authenticators answer, nothing is delivered, and no password is needed or stored.

* **AUTH offered on submission:** an EHLO on 587 (and 465 where Exim listens on it) from loopback.
  cPanel's ``require_secure_auth=1`` advertises AUTH only after TLS or to loopback, and ``-bh`` cannot
  do TLS, so the loopback session is the one that shows whether the authenticators are offered.
* **Authenticated relay accepted:** from the relay-probe address, as an authenticated client
  (``-oMaa``/``-oMai`` set the authenticator and id without an AUTH exchange), RCPT to an external
  recipient must get 2xx, while the same address without AUTH gets the relay probe's 5xx.
* **Every ``/etc/alwaysrelay`` entry still relays:** RCPT from each address gets 2xx.

Pure: the finish script's lines, the parser of their step output, and the problems they show.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relayguard.domain.cpanel_paths import EXIM
from relayguard.domain.decide import valid_ip
from relayguard.domain.models import Finding, StepName, StepResult
from relayguard.errors import InvalidInput

#: Submission ports whose EHLO must offer AUTH; 465 only where Exim is configured to listen on it.
SUBMISSION_PORT = 587
SMTPS_PORT = 465
#: The authenticator name a cPanel session records (``A=dovecot_login:<user>`` in exim_mainlog).
PROOF_AUTHENTICATOR = "dovecot_login"
#: At most this many alwaysrelay addresses are probed, one ``exim -bh`` each, so a long exception
#: list cannot stretch the finish round trip; the rest are counted as not probed.
ALWAYSRELAY_LIMIT = 16
EHLO_ONLY = "printf 'EHLO relayguard.invalid\\r\\nQUIT\\r\\n'"
_PORT_NAMES = {"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465, "urd": 465}


class RelayClass(enum.StrEnum):
    """What a RCPT reply says about relaying: 2xx accepted, 5xx refused, anything else unknown."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    INCONCLUSIVE = "inconclusive"  # a 4xx (deferred) or no RCPT reply at all: neither accepted nor refused


def relay_class(code: int | None) -> RelayClass:
    """Classify a RCPT reply code; a 4xx is a temporary answer and proves nothing either way."""
    if code is not None and 200 <= code < 300:
        return RelayClass.ACCEPTED
    if code is not None and 500 <= code < 600:
        return RelayClass.REFUSED
    return RelayClass.INCONCLUSIVE


def deferred(code: int | None) -> bool:
    """A 4xx: the server said "try again later" rather than yes or no."""
    return code is not None and 400 <= code < 500


def alwaysrelay_targets(finding: Finding) -> tuple[tuple[str, ...], int]:
    """The ``/etc/alwaysrelay`` addresses to prove (normalised, unique, at most :data:`ALWAYSRELAY_LIMIT`)
    and how many entries are not probed: loopback (cPanel's ACL never lets loopback relay by this
    list), networks, lines that are not an address, and entries past the limit."""
    exceptions = finding.exceptions.get("alwaysrelay")
    entries = exceptions.entries if exceptions is not None else ()
    ips: list[str] = []
    skipped = 0
    for entry in entries:
        ip = valid_ip(entry)
        if ip is not None and ip in ips:
            continue
        if ip is None or ipaddress.ip_address(ip).is_loopback or len(ips) >= ALWAYSRELAY_LIMIT:
            skipped += 1
        else:
            ips.append(ip)
    return tuple(ips), skipped


def auth_ehlo_step(port: int) -> str:
    """The step name of the EHLO session on ``port``."""
    return f"{StepName.AUTH_EHLO}-{port}"


def alwaysrelay_step(index: int) -> str:
    """The step name of the relay session from the ``index``-th (1-based) alwaysrelay address."""
    return f"{StepName.ALWAYSRELAY_PROBE}-{index}"


def alwaysrelay_args(alwaysrelay: Sequence[str]) -> tuple[str, ...]:
    """The alwaysrelay addresses as the finish operation's arguments: each parsed again here, because it
    is server data, and normalised."""
    addresses = []
    for entry in alwaysrelay:
        try:
            addresses.append(str(ipaddress.ip_address(entry)))
        except ValueError as exc:
            raise InvalidInput(f"alwaysrelay address {entry!r} is not an IP address") from exc
    return tuple(addresses)


def proof_lines(rcpt: str) -> list[str]:
    """Finish-body lines of the proof. The relay-probe address and sender come from the operation's
    arguments (``$RG_ip``, ``$RG_sender``, validated before), the alwaysrelay addresses from its list
    argument file ``$RG_D/alwaysrelay``, one per line, in the order :func:`alwaysrelay_args` gave them."""
    dialogue = ("printf 'EHLO relayguard.invalid\\r\\nMAIL FROM:<%s>\\r\\nRCPT TO:<%s>\\r\\nQUIT\\r\\n' "
                f'"$RG_sender" {shlex.quote(rcpt)}')
    lines = [f"run {StepName.EXIM_PORTS} {EXIM} -bP daemon_smtp_ports tls_on_connect_ports"]
    # -oMi sets the receiving interface and port, so a config that decides by $received_port answers as it would.
    lines += [f"{EHLO_ONLY} | run {auth_ehlo_step(port)} {EXIM} -bh 127.0.0.1 -oMi 127.0.0.1.{port}"
              for port in (SUBMISSION_PORT, SMTPS_PORT)]
    lines.append(f'{dialogue} | run {StepName.AUTH_RELAY_PROBE} {EXIM} -bh "$RG_ip" '
                 f'-oMaa {PROOF_AUTHENTICATOR} -oMai "$RG_sender"')
    lines += [
        'if [ -s "$RG_D/alwaysrelay" ]; then',
        "  rg_i=0",
        "  while IFS= read -r rg_ar; do",
        "    rg_i=$((rg_i + 1))",
        f'    {dialogue} | run "{StepName.ALWAYSRELAY_PROBE}-$rg_i" {EXIM} -bh "$rg_ar"',
        '  done < "$RG_D/alwaysrelay"',
        "fi",
    ]
    return lines


def rcpt_reply(exim_bh_stdout: str) -> tuple[int | None, str]:
    """The reply to RCPT in an ``exim -bh`` dialogue: banner, EHLO, MAIL, then RCPT."""
    replies: list[list[str]] = []
    current: list[str] = []
    for line in exim_bh_stdout.splitlines():
        m = re.match(r"^(\d{3})([ -])(.*)$", line)
        if not m:
            continue
        current.append(m.group(3).strip())
        if m.group(2) == " ":  # "NNN text" ends a reply; "NNN-text" lines continue it
            replies.append([m.group(1), " ".join(current)])
            current = []
    if len(replies) < 4:
        return None, " | ".join(" ".join(r) for r in replies)
    code, text = replies[3]
    return int(code), f"{code} {text}"


def configured_ports(bp_output: str) -> tuple[int, ...]:
    """The ports of ``daemon_smtp_ports`` and ``tls_on_connect_ports`` in ``exim -bP`` output, sorted."""
    ports: set[int] = set()
    for line in bp_output.splitlines():
        key, sep, value = line.partition("=")
        if not sep or key.strip() not in ("daemon_smtp_ports", "tls_on_connect_ports"):
            continue
        for item in re.split(r"[:\s,]+", value.strip()):
            if item.isdigit():
                ports.add(int(item))
            elif item in _PORT_NAMES:
                ports.add(_PORT_NAMES[item])
    return tuple(sorted(ports))


def ehlo_offers_auth(exim_bh_stdout: str) -> bool | None:
    """Whether the EHLO reply of an ``exim -bh`` session lists AUTH; None when there was no EHLO reply."""
    ehlo: list[str] = []
    replies = 0
    for line in exim_bh_stdout.splitlines():
        m = re.match(r"^(\d{3})([ -])(.*)$", line)
        if not m:
            continue
        if replies == 1:  # the banner is reply 0, the EHLO reply is reply 1
            ehlo.append(m.group(3))
        if m.group(2) == " ":
            replies += 1
            if replies == 2:
                break
    if replies < 2 or not ehlo:
        return None
    return any(re.match(r"^AUTH(\s|$)", text.strip(), re.I) for text in ehlo[1:])


@dataclass(frozen=True)
class PostFixProof:
    """What the proof observed. ``auth_advertised`` holds the ports judged: 587 always, 465 when configured."""

    ports: tuple[int, ...] = ()
    auth_advertised: Mapping[int, bool | None] = field(default_factory=dict)
    authenticated_relay: int | None = None
    authenticated_reply: str = ""
    unauthenticated_relay: int | None = None
    alwaysrelay: Mapping[str, int | None] = field(default_factory=dict)
    alwaysrelay_not_probed: int = 0

    def auth_problems(self) -> tuple[str, ...]:
        """Why authenticated submission is broken, in check order; only definite failures (a missing AUTH
        capability in an EHLO reply, a 5xx to the authenticated RCPT), never a check that got no answer."""
        problems = [f"no AUTH on {port}" for port, offered in self.auth_advertised.items() if offered is False]
        if relay_class(self.authenticated_relay) == RelayClass.REFUSED:
            problems.append(f"authenticated relay refused ({self.authenticated_relay})")
        return tuple(problems)

    def alwaysrelay_refused(self) -> tuple[str, ...]:
        """The alwaysrelay addresses whose relay attempt got a 5xx."""
        return tuple(ip for ip, code in self.alwaysrelay.items() if relay_class(code) == RelayClass.REFUSED)

    def warnings(self) -> tuple[str, ...]:
        """Checks that answered nothing definite (no reply, or a 4xx): reported, never a failure."""
        found = [f"post-fix-auth-inconclusive:{port}" for port, offered in self.auth_advertised.items()
                 if offered is None]
        if relay_class(self.authenticated_relay) == RelayClass.INCONCLUSIVE:
            found.append("post-fix-authenticated-relay-inconclusive")
        found += [f"post-fix-alwaysrelay-inconclusive:{ip}" for ip, code in self.alwaysrelay.items()
                  if relay_class(code) == RelayClass.INCONCLUSIVE]
        return tuple(found)

    def to_json(self) -> dict[str, Any]:
        """The ``post_fix`` field of a result record (docs/operations.md, The post-fix proof)."""
        return {
            "ports": list(self.ports),
            "auth_advertised": {str(port): offered for port, offered in self.auth_advertised.items()},
            "authenticated_relay": {"code": self.authenticated_relay, "reply": self.authenticated_reply,
                                    "verdict": str(relay_class(self.authenticated_relay))},
            "unauthenticated_relay": {"code": self.unauthenticated_relay,
                                      "verdict": str(relay_class(self.unauthenticated_relay))},
            "alwaysrelay": dict(self.alwaysrelay),
            "alwaysrelay_not_probed": self.alwaysrelay_not_probed,
        }


def post_fix_proof(steps: Sequence[StepResult], alwaysrelay: Sequence[str], *, unauthenticated_relay: int | None,
                   not_probed: int = 0) -> PostFixProof:
    """Parse the proof's steps. ``alwaysrelay`` is the list :func:`render_proof` was given, in its order."""
    by_name = {step.name: step for step in steps}
    ports_step = by_name.get(StepName.EXIM_PORTS)
    ports = configured_ports(ports_step.stdout) if ports_step is not None and ports_step.rc == 0 else ()
    judged = [SUBMISSION_PORT] + ([SMTPS_PORT] if SMTPS_PORT in ports else [])
    advertised: dict[int, bool | None] = {}
    for port in judged:
        ehlo = by_name.get(auth_ehlo_step(port))
        advertised[port] = ehlo_offers_auth(ehlo.stdout) if ehlo is not None else None
    auth = by_name.get(StepName.AUTH_RELAY_PROBE)
    auth_code, auth_reply = rcpt_reply(auth.stdout) if auth is not None else (None, "")
    codes: dict[str, int | None] = {}
    for index, ip in enumerate(alwaysrelay, start=1):
        probe = by_name.get(alwaysrelay_step(index))
        codes[ip] = rcpt_reply(probe.stdout)[0] if probe is not None else None
    return PostFixProof(ports=ports, auth_advertised=advertised, authenticated_relay=auth_code,
                        authenticated_reply=auth_reply, unauthenticated_relay=unauthenticated_relay,
                        alwaysrelay=codes, alwaysrelay_not_probed=not_probed)
