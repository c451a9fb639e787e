"""Pure decisions: which generation a server is, whether it is exposed, and what to run.

Nothing here performs I/O. ``assess`` turns a :class:`Finding` into judgements (cpanel.md §1, §2,
§6 step 2); ``decide`` turns those and a :class:`Policy` into a :class:`Plan`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from relayguard.domain.cpanel_paths import (
    LEGACY_TAILWATCHD,
    MODERN_TAILWATCHD,
    RELAYHOSTS,
    RELAYHOSTSUSERS,
    RESTARTSRV_EXIM,
    UPDATE_EXIM_REJECTS,
    WHMAPI1,
)
from relayguard.domain.models import Finding, Generation, ListFile, Mode, Plan, Policy, Step, StepName
from relayguard.domain.probe import parse_tailwatchd_status

TRACKER = "RecentAuthedMailIpTracker"
ANTIRELAYD = "Antirelayd"
#: A documentation address (RFC 5737) used for the relay proof when the server listed nobody.
FALLBACK_PROBE_IP = "192.0.2.1"
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")


@dataclass(frozen=True)
class Assessment:
    generation: Generation
    exposed: bool
    tracker_active: bool
    antirelayd_active: bool
    drift: bool
    warnings: tuple[str, ...]
    relay_ips: tuple[str, ...]  # valid IPs on the POP-before-SMTP list(s)
    invalid_entries: tuple[str, ...]
    exception_ips: frozenset[str]
    affected_mailboxes: tuple[str, ...]


def parse_version(version: str) -> int | None:
    m = re.match(r"^11\.(\d+)(\.|$)", version)
    return int(m.group(1)) if m else None


def detect_generation(f: Finding) -> Generation:
    if not f.version_present:
        return Generation.NONE
    minor = parse_version(f.version)
    if minor is None:
        return Generation.UNKNOWN
    by_version = Generation.MODERN if minor >= 52 else Generation.LEGACY
    if f.tracker_module or f.libexec_tailwatchd:
        by_paths: Generation | None = Generation.MODERN
    elif f.bin_tailwatchd or f.antirelayd_module:
        by_paths = Generation.LEGACY
    else:
        by_paths = None
    if by_paths is not None and by_paths != by_version:
        return Generation.UNKNOWN
    return by_version


def _truthy(value: str | None) -> bool:
    return (value or "").strip() not in ("", "0")


def driver_active(f: Finding, driver: str) -> bool:
    """cpanel.md §2: inactive if ``/etc/Xdisable`` or ``/etc/Xisevil`` exists or ``skipX`` is truthy."""
    lc = driver.lower()
    if f"/etc/{lc}disable" in f.markers or f"/etc/{lc}isevil" in f.markers:
        return False
    return not _truthy(f.config.get(f"skip{lc}"))


_IPV4_HEAD = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3})(?=$|[\s:=])")


def valid_ip(entry: str) -> str | None:
    """The IP of a list line (``ip``, ``"ipv6"``, ``ip: user``, ``ip user``), or None if it is not one.

    Anything else (``1.2.3.4;touch /tmp/x``) is rejected: list contents are server data and only
    a value that parses as an address may ever reach a command.
    """
    text = entry.strip()
    if text.startswith('"'):
        candidate = text[1:].split('"', 1)[0]
    elif m := _IPV4_HEAD.match(text):
        candidate = m.group(1)
    else:
        candidate = text
    if "%" in candidate:  # ipaddress accepts any text as an IPv6 scope id; relay lists never carry one
        return None
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _users_part(line: str) -> str:
    """The part after the address in an ``ip: user1, user2`` line (IPv6 addresses are quoted)."""
    text = line.strip()
    if text.startswith('"'):
        return text[1:].split('"', 1)[1].lstrip(" :") if '"' in text[1:] else ""
    return text.partition(":")[2]


def _ips(lst: ListFile) -> tuple[list[str], list[str]]:
    good: list[str] = []
    bad: list[str] = []
    for entry in lst.entries:
        ip = valid_ip(entry)
        if ip is None:
            bad.append(entry)
        elif ip not in good:
            good.append(ip)
    return good, bad


def _mailboxes(f: Finding, generation: Generation) -> tuple[str, ...]:
    users: set[str] = set()
    modern = f.lists.get("recent_authed_mail_ips_users")
    if modern is not None and generation != Generation.LEGACY:
        for line in modern.entries:
            users.update(u.strip() for u in _users_part(line).split(",") if u.strip())
    legacy = f.lists.get("relayhostsusers")
    if legacy is not None and legacy.kind == "file":
        for line in legacy.entries:
            parts = line.split()
            users.update(parts[1:])
    return tuple(sorted(users))


def assess(f: Finding) -> Assessment:
    generation = detect_generation(f)
    warnings: list[str] = []
    exception_ips: set[str] = set()
    for name, lst in f.exceptions.items():
        if lst.entries:
            warnings.append(f"admin-exception:{name}")
        exception_ips.update(_ips(lst)[0])
    list_name = "relayhosts" if generation == Generation.LEGACY else "recent_authed_mail_ips"
    relay_ips, invalid = _ips(f.lists.get(list_name, ListFile(list_name, "missing")))
    if invalid:
        warnings.append("invalid-relay-entry")
    # Each generation has only its own driver: report the other as inactive rather than guess.
    tracker = generation == Generation.MODERN and driver_active(f, TRACKER)
    antirelayd = generation == Generation.LEGACY and driver_active(f, ANTIRELAYD)
    _enabled, _running, status_drivers = parse_tailwatchd_status(f.tailwatchd_status)
    drift = False
    if generation == Generation.MODERN:
        popbeforesmtp_on = _truthy(f.config.get("popbeforesmtp"))
        exposed = f.gate_file or popbeforesmtp_on
        drift = popbeforesmtp_on and not f.gate_file
        if drift:
            warnings.append("drift:popbeforesmtp-setting-on-without-gate-file")
        if status_drivers.get(TRACKER, tracker) != tracker:
            warnings.append("drift:tracker-status-disagrees-with-config")
    elif generation == Generation.LEGACY:
        stale = [ip for ip in relay_ips if ip not in exception_ips]
        exposed = antirelayd or bool(stale)
        if status_drivers.get(ANTIRELAYD, antirelayd) != antirelayd:
            warnings.append("drift:antirelayd-status-disagrees-with-config")
    else:
        exposed = False
    if f.exim_status_rc not in (None, 0) and generation in (Generation.MODERN, Generation.LEGACY):
        warnings.append("exim-down-before-run")
    return Assessment(
        generation=generation,
        exposed=exposed,
        tracker_active=tracker,
        antirelayd_active=antirelayd,
        drift=drift,
        warnings=tuple(warnings),
        relay_ips=tuple(relay_ips),
        invalid_entries=tuple(invalid),
        exception_ips=frozenset(exception_ips),
        affected_mailboxes=_mailboxes(f, generation),
    )


def _verify_ip(a: Assessment) -> str:
    """A former relay IP to prove refusal with: not loopback, not on an admin exception list."""
    for ip in a.relay_ips:
        addr = ipaddress.ip_address(ip)
        if not addr.is_loopback and ip not in a.exception_ips:
            return ip
    return FALLBACK_PROBE_IP


def verify_sender(f: Finding) -> str:
    """A sender on the server's own domain, so the relay check answers rather than sender checks."""
    for candidate in (f.local_domain, f.hostname):
        if candidate and _DOMAIN.match(candidate):
            return f"relayguard-probe@{candidate}"
    return "relayguard-probe@localhost.localdomain"


def decide(f: Finding, policy: Policy) -> Plan:
    """What to run on this server. An empty plan means: write nothing, restart nothing."""
    a = assess(f)
    base = Plan(generation=a.generation, exposed=a.exposed, warnings=a.warnings)
    if policy.mode == Mode.AUDIT or not a.exposed or a.generation not in (Generation.MODERN, Generation.LEGACY):
        return base
    steps: list[Step] = []
    truncate: list[str] = []
    if a.generation == Generation.MODERN:
        steps.append(Step(StepName.SET_TWEAK,
                          (WHMAPI1, "--output=json", "set_tweaksetting", "key=popbeforesmtp", "value=0")))
        if policy.disable_tracker and a.tracker_active:
            steps.append(Step(StepName.DISABLE_TRACKER, (MODERN_TAILWATCHD, f"--disable=Cpanel::TailWatch::{TRACKER}")))
            truncate = [p for p in (RELAYHOSTS, RELAYHOSTSUSERS)
                        if f.lists.get(p.rsplit("/", 1)[1], ListFile(p, "missing")).entries]
    else:
        if a.antirelayd_active:
            steps.append(Step(StepName.DISABLE_ANTIRELAYD,
                              (LEGACY_TAILWATCHD, f"--disable=Cpanel::TailWatch::{ANTIRELAYD}")))
        truncate = [p for p in (RELAYHOSTS, RELAYHOSTSUSERS)
                    if f.lists.get(p.rsplit("/", 1)[1], ListFile(p, "missing")).entries]
    steps.append(Step(StepName.UPDATE_EXIM_REJECTS, (UPDATE_EXIM_REJECTS,)))
    steps.append(Step(StepName.RESTART_EXIM, (RESTARTSRV_EXIM,)))
    return Plan(
        generation=a.generation,
        exposed=True,
        steps=tuple(steps),
        truncate=tuple(truncate),
        warnings=a.warnings,
        verify_ip=_verify_ip(a),
        verify_sender=verify_sender(f),
    )
