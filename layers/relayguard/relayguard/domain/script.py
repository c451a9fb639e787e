"""Remote scripts for a fix, rendered by pure code, and the parser for their step markers.

A fix is at most three round trips on one SSH connection: the probe, :func:`render_disable`
(close the gate; its result is checked in Python before anything else happens), and
:func:`render_finish` (truncate, refresh the reject text, restart Exim once with one ``--hard``
retry, prove refusal with ``exim -bh``, run the post-fix proof of domain/proof.py, then re-probe).
Commands and branches are fixed text; the only values that enter a script are the relay-probe IP
and sender, and the ``/etc/alwaysrelay`` addresses of the post-fix proof, each validated and quoted once.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence

from relayguard.domain.cpanel_paths import (
    CPANEL_CONFIG,
    EXIM,
    GATE_FILE,
    LEGACY_TAILWATCHD,
    MODERN_TAILWATCHD,
    RELAYHOSTS,
    RELAYHOSTSUSERS,
    RESTARTSRV_EXIM,
    RESTARTSRV_TAILWATCHD,
    UPDATE_EXIM_REJECTS,
    WHMAPI1,
)
from relayguard.domain.models import Generation, Plan, StepName, StepResult
from relayguard.domain.probe import PRELUDE, _probe_body, _unhex, parse_kv
from relayguard.domain.proof import rcpt_reply, render_proof
from relayguard.errors import InvalidInput

#: Files the fix may truncate, with the step that does it: fixed names, never taken from the server.
TRUNCATE_STEPS = {RELAYHOSTS: StepName.TRUNCATE_RELAYHOSTS, RELAYHOSTSUSERS: StepName.TRUNCATE_RELAYHOSTSUSERS}
PROBE_RCPT = "relayguard-probe@example.net"
_SENDER = re.compile(r"^[A-Za-z0-9._+-]{1,64}@[A-Za-z0-9.-]{1,253}$")

STEP_HELPERS = r"""
RG_TMO=300
RG_D=$(mktemp -d 2>/dev/null) || { RG_D=/tmp/.relayguard.$$; mkdir -m 700 "$RG_D" || exit 70; }
trap 'rm -rf "$RG_D"' EXIT
run() {
  n=$1; shift
  s=$(now)
  t "$@" >"$RG_D/o" 2>"$RG_D/e"; r=$?
  kv "step.$n.rc" "$r"; kv "step.$n.start" "$s"; kv "step.$n.end" "$(now)"
  printf 'step.%s.out=' "$n"; dd if="$RG_D/o" bs=8192 count=1 2>/dev/null | hex; echo
  printf 'step.%s.err=' "$n"; dd if="$RG_D/e" bs=8192 count=1 2>/dev/null | hex; echo
  return $r
}
truncate_file() { : > "$1"; }
""" + f"""set_skipantirelayd() {{
  c={CPANEL_CONFIG}; n={CPANEL_CONFIG}.relayguard.tmp
  cp -p "$c" "$n" || return 1
  {{ grep -v '^skipantirelayd=' "$c"; echo 'skipantirelayd=1'; }} > "$n" || {{ rm -f "$n"; return 1; }}
  mv -f "$n" "$c"
}}
"""


def _q(argv: tuple[str, ...]) -> str:
    return shlex.join(argv)


def with_fallback(step: StepName, command: str, fallback: StepName, fallback_function: str) -> list[str]:
    """Shell lines running the documented legacy tailwatchd ``command`` as ``step``, or, when that tool is
    missing or fails, ``fallback_function`` (which edits the skip key by hand) and a tailwatchd restart
    so the change takes effect (cpanel.md §6 step 3). The fix and the revert mirror each other here."""
    return [
        f"if [ -x {LEGACY_TAILWATCHD} ] && run {step} {command}; then :; else",
        f"  run {fallback} {fallback_function}",
        f"  run {StepName.RESTART_TAILWATCHD} {RESTARTSRV_TAILWATCHD}",
        "fi",
    ]


def render_disable(plan: Plan, first: str = "") -> str:
    """Round trip 2: close the gate. Empty string when the plan has nothing to disable.

    ``first``: script lines that run before any change (the fix's revert record, domain.revert)."""
    lines: list[str] = []
    for step in plan.steps:
        if step.name == StepName.SET_TWEAK:
            lines.append(f"run {step.name} {_q(step.argv)}")
            lines.append(f"flag file.popbeforesmtp {GATE_FILE}")
        elif step.name == StepName.DISABLE_ANTIRELAYD:
            # set_skipantirelayd writes a temp file and renames it, which keeps owner and mode.
            lines += with_fallback(step.name, _q(step.argv), StepName.SET_SKIPANTIRELAYD, "set_skipantirelayd")
    if not lines:
        return ""
    return PRELUDE + STEP_HELPERS + first + "kv scan.schema 1\n" + "\n".join(lines) + "\nkv scan.end 1\n"


def validate_probe_values(ip: str, sender: str) -> tuple[str, str]:
    """The relay-probe IP (normalised) and sender, or :class:`InvalidInput` before either reaches a script."""
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError as exc:
        raise InvalidInput(f"relay-probe address {ip!r} is not an IP address") from exc
    if not _SENDER.fullmatch(sender):
        raise InvalidInput(f"relay-probe sender {sender!r} is not a plain address")
    return ip, sender


def render_finish(plan: Plan, first: str = "", alwaysrelay: Sequence[str] = ()) -> str:
    """Round trip 3: finish the fix, restart Exim once (``--hard`` once more on failure), verify: the
    relay probe, then the post-fix proof (domain/proof.py) with the ``alwaysrelay`` addresses to prove.

    ``first`` as for :func:`render_disable`, when the fix has no disable round trip."""
    ip, sender = validate_probe_values(plan.verify_ip, plan.verify_sender)
    lines: list[str] = []
    for step in plan.steps:
        if step.name == StepName.DISABLE_TRACKER:
            lines.append(f"run {step.name} {_q(step.argv)}")
    for path in plan.truncate:
        if path not in TRUNCATE_STEPS:
            raise InvalidInput(f"refusing to truncate {path!r}")
        # Truncation follows the modern symlinks: never rm or replace them.
        lines.append(f"if [ -s {path} ]; then run {TRUNCATE_STEPS[path]} truncate_file {path}; fi")
    for step in plan.steps:
        if step.name == StepName.UPDATE_EXIM_REJECTS:
            lines.append(f"run {step.name} {_q(step.argv)}")
    lines += [
        f"if run {StepName.RESTART_EXIM} {RESTARTSRV_EXIM}; then :; "
        f"else run {StepName.RESTART_EXIM_HARD} {RESTARTSRV_EXIM} --hard; fi",
        f"run {StepName.EXIM_STATUS} {RESTARTSRV_EXIM} --status",
        f"run {StepName.EXIM_BV} {EXIM} -bV",
        "printf 'EHLO relayguard.invalid\\r\\nMAIL FROM:<%s>\\r\\nRCPT TO:<%s>\\r\\nQUIT\\r\\n' "
        f"{shlex.quote(sender)} {shlex.quote(PROBE_RCPT)} | run {StepName.RELAY_PROBE} {EXIM} -bh {shlex.quote(ip)}",
        *render_proof(ip, sender, PROBE_RCPT, alwaysrelay),
    ]
    return PRELUDE + STEP_HELPERS + first + "\n".join(lines) + "\n" + _probe_body()


def parse_steps(output: str) -> list[StepResult]:
    """Step markers, in the order the steps ran."""
    kv = parse_kv(output)
    names: list[str] = []
    for line in output.splitlines():
        m = re.match(r"^step\.([a-z0-9-]+)\.rc=", line)
        if m and m.group(1) not in names:
            names.append(m.group(1))
    results = []
    for n in names:
        try:
            duration = float(kv.get(f"step.{n}.end", "0")) - float(kv.get(f"step.{n}.start", "0"))
        except ValueError:
            duration = 0.0
        rc = kv.get(f"step.{n}.rc", "")
        results.append(StepResult(
            name=n,
            rc=int(rc) if rc.lstrip("-").isdigit() else None,
            duration=max(duration, 0.0),
            stdout=_unhex(kv.get(f"step.{n}.out", "")),
            stderr=_unhex(kv.get(f"step.{n}.err", "")),
        ))
    return results




def relay_probe_reply(steps: Sequence[StepResult]) -> tuple[int | None, str]:
    """The RCPT reply of the finish script's relay probe; ``(None, "")`` when the probe did not run."""
    probe = {step.name: step for step in steps}.get(StepName.RELAY_PROBE)
    return rcpt_reply(probe.stdout) if probe is not None else (None, "")


def revert_commands(generation: Generation, disabled_tracker: bool, former_ips: tuple[str, ...],
                    former_users: tuple[str, ...]) -> tuple[str, ...]:
    """Shell commands an operator can run by hand to undo a fix (documented in docs/operations.md)."""
    cmds: list[str] = []
    if generation == Generation.MODERN:
        cmds.append(f"{WHMAPI1} --output=json set_tweaksetting key=popbeforesmtp value=1")
        if disabled_tracker:
            cmds.append(f"{MODERN_TAILWATCHD} --enable=Cpanel::TailWatch::RecentAuthedMailIpTracker")
    elif generation == Generation.LEGACY:
        cmds.append(f"{LEGACY_TAILWATCHD} --enable=Cpanel::TailWatch::Antirelayd")
        ips = [str(ipaddress.ip_address(ip)) for ip in former_ips]
        if ips:
            cmds.append("printf '%s\\n' " + " ".join(shlex.quote(i) for i in ips) + f" > {RELAYHOSTS}")
        if former_users:
            cmds.append("printf '%s\\n' " + " ".join(shlex.quote(u) for u in former_users) + f" > {RELAYHOSTSUSERS}")
    cmds += [UPDATE_EXIM_REJECTS, RESTARTSRV_EXIM]
    return tuple(cmds)
