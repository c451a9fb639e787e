"""Pure decisions: which generation a server is, whether it is exposed, and what to run.

Nothing here performs I/O. ``assess`` turns a :class:`Finding` into judgements (cpanel.md §1, §2,
§6 step 2); ``decide`` turns the finding, its assessment and a :class:`Policy` into a :class:`Plan`.
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
    """What a finding means: the generation, whether relaying is open, and what the fix must know."""

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
    """The minor number of an ``11.x`` cPanel version (``11.120.0.16`` gives 120), or None."""
    m = re.match(r"^11\.(\d+)(\.|$)", version)
    return int(m.group(1)) if m else None


def detect_generation(finding: Finding) -> Generation:
    """The generation by version (11.52+ is modern), UNKNOWN when the tailwatchd paths disagree."""
    if not finding.version_present:
        return Generation.NONE
    minor = parse_version(finding.version)
    if minor is None:
        return Generation.UNKNOWN
    by_version = Generation.MODERN if minor >= 52 else Generation.LEGACY
    if finding.tracker_module or finding.libexec_tailwatchd:
        by_paths: Generation | None = Generation.MODERN
    elif finding.bin_tailwatchd or finding.antirelayd_module:
        by_paths = Generation.LEGACY
    else:
        by_paths = None
    if by_paths is not None and by_paths != by_version:
        return Generation.UNKNOWN
    return by_version


def _truthy(value: str | None) -> bool:
    return (value or "").strip() not in ("", "0")


def driver_active(finding: Finding, driver: str) -> bool:
    """cpanel.md §2: inactive if ``/etc/Xdisable`` or ``/etc/Xisevil`` exists or ``skipX`` is truthy."""
    lc = driver.lower()
    if f"/etc/{lc}disable" in finding.markers or f"/etc/{lc}isevil" in finding.markers:
        return False
    return not _truthy(finding.config.get(f"skip{lc}"))


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


def _ips(list_file: ListFile) -> tuple[list[str], list[str]]:
    good: list[str] = []
    bad: list[str] = []
    for entry in list_file.entries:
        ip = valid_ip(entry)
        if ip is None:
            bad.append(entry)
        elif ip not in good:
            good.append(ip)
    return good, bad


def _mailboxes(finding: Finding, generation: Generation) -> tuple[str, ...]:
    users: set[str] = set()
    modern = finding.lists.get("recent_authed_mail_ips_users")
    if modern is not None and generation != Generation.LEGACY:
        for line in modern.entries:
            users.update(u.strip() for u in _users_part(line).split(",") if u.strip())
    legacy = finding.lists.get("relayhostsusers")
    if legacy is not None and legacy.kind == "file":
        for line in legacy.entries:
            parts = line.split()
            users.update(parts[1:])
    return tuple(sorted(users))


def assess(finding: Finding) -> Assessment:
    """Judge a finding: generation, exposure, active drivers, relay IPs and warnings (cpanel.md §6 step 2)."""
    generation = detect_generation(finding)
    warnings: list[str] = []
    exception_ips: set[str] = set()
    for name, list_file in finding.exceptions.items():
        if list_file.entries:
            warnings.append(f"admin-exception:{name}")
        exception_ips.update(_ips(list_file)[0])
    list_name = "relayhosts" if generation == Generation.LEGACY else "recent_authed_mail_ips"
    relay_ips, invalid = _ips(finding.lists.get(list_name, ListFile(list_name, "missing")))
    if invalid:
        warnings.append("invalid-relay-entry")
    # Each generation has only its own driver: report the other as inactive rather than guess.
    tracker = generation == Generation.MODERN and driver_active(finding, TRACKER)
    antirelayd = generation == Generation.LEGACY and driver_active(finding, ANTIRELAYD)
    _enabled, _running, status_drivers = parse_tailwatchd_status(finding.tailwatchd_status)
    drift = False
    if generation == Generation.MODERN:
        popbeforesmtp_on = _truthy(finding.config.get("popbeforesmtp"))
        exposed = finding.gate_file or popbeforesmtp_on
        drift = popbeforesmtp_on and not finding.gate_file
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
    if finding.exim_status_rc not in (None, 0) and generation in (Generation.MODERN, Generation.LEGACY):
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
        affected_mailboxes=_mailboxes(finding, generation),
    )


def _verify_ip(assessment: Assessment) -> str:
    """A former relay IP to prove refusal with: not loopback, not on an admin exception list."""
    for ip in assessment.relay_ips:
        addr = ipaddress.ip_address(ip)
        if not addr.is_loopback and ip not in assessment.exception_ips:
            return ip
    return FALLBACK_PROBE_IP


def verify_sender(finding: Finding) -> str:
    """A sender on the server's own domain, so the relay check answers rather than sender checks."""
    for candidate in (finding.local_domain, finding.hostname):
        if candidate and _DOMAIN.match(candidate):
            return f"relayguard-probe@{candidate}"
    return "relayguard-probe@localhost.localdomain"


def _filled_legacy_lists(finding: Finding) -> list[str]:
    """The legacy relay lists that still hold entries: the ones a fix truncates."""
    return [path for path in (RELAYHOSTS, RELAYHOSTSUSERS)
            if finding.lists.get(path.rsplit("/", 1)[1], ListFile(path, "missing")).entries]


def decide(finding: Finding, assessment: Assessment, policy: Policy) -> Plan:
    """What to run on this server, given ``assessment = assess(finding)``.

    An empty plan means: write nothing, restart nothing.
    """
    base = Plan(generation=assessment.generation, exposed=assessment.exposed, warnings=assessment.warnings)
    if (policy.mode == Mode.AUDIT or not assessment.exposed
            or assessment.generation not in (Generation.MODERN, Generation.LEGACY)):
        return base
    steps: list[Step] = []
    truncate: list[str] = []
    if assessment.generation == Generation.MODERN:
        steps.append(Step(StepName.SET_TWEAK,
                          (WHMAPI1, "--output=json", "set_tweaksetting", "key=popbeforesmtp", "value=0")))
        if policy.disable_tracker and assessment.tracker_active:
            steps.append(Step(StepName.DISABLE_TRACKER, (MODERN_TAILWATCHD, f"--disable=Cpanel::TailWatch::{TRACKER}")))
            truncate = _filled_legacy_lists(finding)
    else:
        if assessment.antirelayd_active:
            steps.append(Step(StepName.DISABLE_ANTIRELAYD,
                              (LEGACY_TAILWATCHD, f"--disable=Cpanel::TailWatch::{ANTIRELAYD}")))
        truncate = _filled_legacy_lists(finding)
    steps.append(Step(StepName.UPDATE_EXIM_REJECTS, (UPDATE_EXIM_REJECTS,)))
    steps.append(Step(StepName.RESTART_EXIM, (RESTARTSRV_EXIM,)))
    return Plan(
        generation=assessment.generation,
        exposed=True,
        steps=tuple(steps),
        truncate=tuple(truncate),
        warnings=assessment.warnings,
        verify_ip=_verify_ip(assessment),
        verify_sender=verify_sender(finding),
    )
