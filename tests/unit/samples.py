"""Probe and step output written by hand, the way the remote scripts print it (cpanel.md §5)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: A well-formed pinned host key line, for servers of the unit tests.
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
#: The stack's RG_* environment, as template.yaml gives the functions (names and ARNs are made up).
STACK_ENV = {
    "RG_INVENTORY_BUCKET": "inv", "RG_WORK_QUEUE_URL": "https://sqs/q/work", "RG_URGENT_QUEUE_URL": "https://sqs/q/urgent",
    "RG_RUNS_TABLE": "runs", "RG_STATE_TABLE": "state", "RG_LOCKS_TABLE": "locks", "RG_IDEMPOTENCY_TABLE": "idem",
    "RG_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:results", "RG_RECORDS_BUCKET": "records",
}
#: The published notification schema (docs/schemas/ links to the package's copy).
NOTIFICATION_SCHEMA: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "docs" / "schemas" / "notification.v1.json").read_text())


def hx(text: str) -> str:
    """A blob as the probe prints it: hex of the UTF-8 bytes."""
    return text.encode().hex()


def probe_text(facts: Mapping[str, str], *, end: bool = True) -> str:
    """``scan.schema=1``, the facts as ``key=value`` lines, then ``scan.end=1`` unless truncated."""
    lines = ["scan.schema=1", *(f"{k}={v}" for k, v in facts.items())]
    if end:
        lines.append("scan.end=1")
    return "\n".join(lines) + "\n"


def step_text(name: str, rc: int, *, out: str = "", err: str = "", start: str = "812.40", end: str = "813.65") -> str:
    """The marker lines the scripts' ``run`` helper prints for one step."""
    return (f"step.{name}.rc={rc}\nstep.{name}.start={start}\nstep.{name}.end={end}\n"
            f"step.{name}.out={hx(out)}\nstep.{name}.err={hx(err)}\n")


MODERN_STATUS = (
    "tailwatchd is enabled\n"
    "Running, PID 2231\n"
    "  Driver (Active: 1) Cpanel::TailWatch::RecentAuthedMailIpTracker\n"
    "  Driver (Active: 1) Cpanel::TailWatch::ChkServd\n"
)
LEGACY_STATUS = (
    "tailwatchd is enabled\n"
    "Running, PID 1187\n"
    "  Driver (Active: 1) Cpanel::TailWatch::Antirelayd\n"
    "  Driver (Active: 1) Cpanel::TailWatch::Eximstats\n"
)
EXIM_UP = "exim (/usr/sbin/exim -bd -q1h) is running as mailnull with PID 812 (systemd+/proc check method)."
REJECT_OFF = ("host_accept_relay: Please turn on SMTP Authentication in your mail client.  "
              "$sender_fullhost is not permitted to relay through this server without authentication.\n")

_NO_MARKERS = {f"marker.{d}{m}": "0" for d in ("recentauthedmailiptracker", "antirelayd", "tailwatchd")
               for m in ("disable", "isevil")}
_NO_EXCEPTIONS = {"exc.alwaysrelay.kind": "missing", "exc.trustedmailhosts.kind": "missing",
                  "exc.skipsmtpcheckhosts.kind": "missing"}
_SERVICES = {
    "exim.status.rc": "0", "exim.status.hex": hx(EXIM_UP),
    "exim.bv.rc": "0",
    "exim.bv.hex": hx("Exim version 4.98 #2 built 01-Jan-2024\nConfiguration file is /etc/exim.conf"),
    "exim.queue.rc": "0", "exim.queue.hex": hx("3\n"),
    "eximrejects.kind": "file", "eximrejects.hex": hx(REJECT_OFF),
    "localdomain": "example.com",
    "smtpmailgidonly.rc": "0", "smtpmailgidonly.hex": hx("Protection is: on\n"),
    "indicator.rejected_relay": "4", "indicator.dovecot_auth": "17",
}

#: cPanel 11.120, gate file present, tracker running and listing two IPs.
MODERN_EXPOSED: dict[str, str] = {
    "id.uid": "0", "id.hostname": "web1.example.com", "has_timeout": "1",
    "version.present": "1", "version": "11.120.0.16",
    "path.libexec_tailwatchd": "1", "path.bin_tailwatchd": "0", "module.tracker": "1", "module.antirelayd": "0",
    "cfg.popbeforesmtp": "1", "cfg.skiprecentauthedmailiptracker": "0", "cfg.maxemailsperhour": "200",
    "file.popbeforesmtp": "1", "file.eximpopbeforesmtpwarning": "0",
    **_NO_MARKERS,
    "list.recent_authed_mail_ips.kind": "file",
    "list.recent_authed_mail_ips.hex": hx('203.0.113.7\n"2001:db8::7"\n'),
    "list.recent_authed_mail_ips_users.kind": "file",
    "list.recent_authed_mail_ips_users.hex": hx("203.0.113.7: alice@example.com, bob@example.com\n"),
    "list.relayhosts.kind": "symlink", "list.relayhosts.target": "/etc/recent_authed_mail_ips",
    "list.relayhosts.hex": hx('203.0.113.7\n"2001:db8::7"\n'),
    "list.relayhostsusers.kind": "symlink", "list.relayhostsusers.target": "/etc/recent_authed_mail_ips_users",
    "list.relayhostsusers.hex": hx("203.0.113.7: alice@example.com, bob@example.com\n"),
    **_NO_EXCEPTIONS,
    "tailwatchd.status.rc": "0", "tailwatchd.status.hex": hx(MODERN_STATUS),
    **_SERVICES,
}

#: The same server with the gate closed; the tracker's inert list is still there.
MODERN_COMPLIANT: dict[str, str] = {**MODERN_EXPOSED, "cfg.popbeforesmtp": "0", "file.popbeforesmtp": "0"}

#: cPanel 11.40: Antirelayd active, regular relayhosts files.
LEGACY_EXPOSED: dict[str, str] = {
    "id.uid": "0", "id.hostname": "old1.example.org", "has_timeout": "0",
    "version.present": "1", "version": "11.40.1.3",
    "path.libexec_tailwatchd": "0", "path.bin_tailwatchd": "1", "module.tracker": "0", "module.antirelayd": "1",
    "cfg.skipantirelayd": "0",
    "file.popbeforesmtp": "0", "file.eximpopbeforesmtpwarning": "0",
    **_NO_MARKERS,
    "list.recent_authed_mail_ips.kind": "missing", "list.recent_authed_mail_ips_users.kind": "missing",
    "list.relayhosts.kind": "file", "list.relayhosts.hex": hx("198.51.100.9\n10.0.0.5\n"),
    "list.relayhostsusers.kind": "file", "list.relayhostsusers.hex": hx("198.51.100.9 carol\n10.0.0.5 dave\n"),
    **_NO_EXCEPTIONS,
    "tailwatchd.status.rc": "0", "tailwatchd.status.hex": hx(LEGACY_STATUS),
    **_SERVICES, "localdomain": "example.org",
}

#: Antirelayd switched off by its skip key; the list holds only the admin's alwaysrelay entry.
LEGACY_COMPLIANT: dict[str, str] = {
    **LEGACY_EXPOSED,
    "cfg.skipantirelayd": "1",
    "list.relayhosts.hex": hx("10.0.0.5\n"),
    "list.relayhostsusers.hex": hx(""),
    "exc.alwaysrelay.kind": "file", "exc.alwaysrelay.hex": hx("10.0.0.5: backups\n"),
    "tailwatchd.status.hex": hx(LEGACY_STATUS.replace("(Active: 1) Cpanel::TailWatch::Antirelayd",
                                                      "(Active: 0) Cpanel::TailWatch::Antirelayd")),
}

#: A plain Linux box: no version file, no cPanel paths.
NOT_CPANEL: dict[str, str] = {
    "id.uid": "0", "id.hostname": "db1.example.com", "has_timeout": "1",
    "version.present": "0", "version": "",
    "path.libexec_tailwatchd": "0", "path.bin_tailwatchd": "0", "module.tracker": "0", "module.antirelayd": "0",
    "file.popbeforesmtp": "0", **_NO_MARKERS,
    "list.recent_authed_mail_ips.kind": "missing", "list.recent_authed_mail_ips_users.kind": "missing",
    "list.relayhosts.kind": "missing", "list.relayhostsusers.kind": "missing", **_NO_EXCEPTIONS,
    "exim.status.rc": "1", "exim.status.hex": "", "exim.bv.rc": "127", "exim.queue.rc": "127",
}

#: Version says modern but the paths are legacy ones: report, change nothing.
UNKNOWN_GENERATION: dict[str, str] = {
    **LEGACY_EXPOSED, "version": "11.120.0.16",
}

RELAY_REFUSED = (
    "\n**** SMTP testing session as if from host 203.0.113.7\n"
    "**** but without any ident (RFC 1413) callback.\n"
    "**** This is not for real!\n\n"
    "220-web1.example.com ESMTP Exim 4.98 #2 Mon, 01 Jan 2024 10:00:00 +0000\n"
    "220-We do not authorize the use of this system to transport unsolicited,\n"
    "220 and/or bulk e-mail.\n"
    "250-web1.example.com Hello relayguard.invalid [203.0.113.7]\n"
    "250-SIZE 52428800\n"
    "250-8BITMIME\n"
    "250-PIPELINING\n"
    "250-STARTTLS\n"
    "250 HELP\n"
    "250 OK\n"
    "550-Please turn on SMTP Authentication in your mail client.  relayguard.invalid\n"
    "550-[203.0.113.7] is not permitted to relay through this server without\n"
    "550 authentication.\n"
    "221 web1.example.com closing connection\n"
)

# -- the post-fix proof (domain/proof.py): what each exim -bh session of the finish script prints -------------

_BH_HEAD = ("\n**** SMTP testing session as if from host 127.0.0.1\n**** This is not for real!\n\n"
            "220-web1.example.com ESMTP Exim 4.98 #2 Mon, 01 Jan 2024 10:00:00 +0000\n"
            "220 and/or bulk e-mail.\n")
#: EHLO from loopback on a cPanel server: the dovecot authenticators are offered.
EHLO_WITH_AUTH = (_BH_HEAD + "250-web1.example.com Hello relayguard.invalid [127.0.0.1]\n250-SIZE 52428800\n"
                  "250-PIPELINING\n250-AUTH PLAIN LOGIN\n250-STARTTLS\n250 HELP\n221 web1.example.com closing\n")
#: The same EHLO after a change lost the authenticators.
EHLO_WITHOUT_AUTH = EHLO_WITH_AUTH.replace("250-AUTH PLAIN LOGIN\n", "")
#: ``exim -bP daemon_smtp_ports tls_on_connect_ports`` on a stock cPanel server.
CPANEL_PORTS = "daemon_smtp_ports = 25 : 465 : 587\ntls_on_connect_ports = 465\n"


def rcpt_dialogue(rcpt_reply: str) -> str:
    """An ``exim -bh`` relay dialogue whose RCPT got ``rcpt_reply`` (one line, code first)."""
    return (_BH_HEAD + "250-web1.example.com Hello relayguard.invalid [203.0.113.7]\n250 HELP\n250 OK\n"
            f"{rcpt_reply}\n221 web1.example.com closing connection\n")


RELAY_ACCEPTED = rcpt_dialogue("250 Accepted")


def proof_steps(*, ports: str = CPANEL_PORTS, ehlo: str = EHLO_WITH_AUTH, authenticated: str = RELAY_ACCEPTED,
                alwaysrelay: tuple[str, ...] = ()) -> str:
    """The step markers of the post-fix proof: ports, EHLO on 587 and 465, the authenticated relay, then one
    relay dialogue per alwaysrelay address (in the order the script was given them)."""
    return (step_text("exim-ports", 0, out=ports) + step_text("auth-ehlo-587", 0, out=ehlo)
            + step_text("auth-ehlo-465", 0, out=ehlo) + step_text("auth-relay-probe", 0, out=authenticated)
            + "".join(step_text(f"alwaysrelay-probe-{i}", 0, out=out) for i, out in enumerate(alwaysrelay, 1)))
