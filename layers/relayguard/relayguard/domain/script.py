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
from relayguard.domain.models import Generation, Plan, Step, StepName, StepResult
from relayguard.domain.operation import (
    FLAG,
    IP_CHARS,
    RECORD_CHARS,
    SENDER_CHARS,
    Arg,
    Operation,
    OperationSpec,
    check,
    parse_args_lines,
)
from relayguard.domain.probe import PRELUDE, _probe_body, _unhex, parse_kv
from relayguard.domain.proof import ALWAYSRELAY_LIMIT, alwaysrelay_args, proof_lines, rcpt_reply
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
"""
RECORD_DIR = "/var/lib/relayguard"
#: Written by every fix before it changes anything; read by ``relayguard revert``.
RECORD_FILE = f"{RECORD_DIR}/last-fix.json"
# A subshell body: the umask must not leak into the tools the fix runs after it.
_WRITE_RECORD_HELPER = f"""write_record() (
  umask 077
  mkdir -p {RECORD_DIR} && chmod 700 {RECORD_DIR} || exit 1
  printf '%s\\n' "$1" > {RECORD_FILE}.tmp && mv -f {RECORD_FILE}.tmp {RECORD_FILE}
)
""" + f"""set_skipantirelayd() {{
  c={CPANEL_CONFIG}; n={CPANEL_CONFIG}.relayguard.tmp
  cp -p "$c" "$n" || return 1
  {{ grep -v '^skipantirelayd=' "$c"; echo 'skipantirelayd=1'; }} > "$n" || {{ rm -f "$n"; return 1; }}
  mv -f "$n" "$c"
}}
"""


#: The one command line of each step a fix may run: the bodies below embed these, and the renderers
#: refuse a plan whose step says anything else (decide.py and this file cannot drift apart).
FIXED_ARGV = {
    StepName.SET_TWEAK: (WHMAPI1, "--output=json", "set_tweaksetting", "key=popbeforesmtp", "value=0"),
    StepName.DISABLE_TRACKER: (MODERN_TAILWATCHD, "--disable=Cpanel::TailWatch::RecentAuthedMailIpTracker"),
    StepName.DISABLE_ANTIRELAYD: (LEGACY_TAILWATCHD, "--disable=Cpanel::TailWatch::Antirelayd"),
    StepName.UPDATE_EXIM_REJECTS: (UPDATE_EXIM_REJECTS,),
    StepName.RESTART_EXIM: (RESTARTSRV_EXIM,),
}
#: The list files a fix may truncate, by argument key: fixed names, never taken from the server.
TRUNCATE_ARGS = {RELAYHOSTS: "truncate_relayhosts", RELAYHOSTSUSERS: "truncate_relayhostsusers"}


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


def _guard(key: str, lines: Sequence[str]) -> list[str]:
    """``lines`` run only when the flag argument ``key`` was given."""
    return [f'if [ -n "$RG_{key}" ]; then', *(f"  {line}" for line in lines), "fi"]


#: The record step: writes the revert record (an argument) before the operation changes anything.
_RECORD_LINES = _WRITE_RECORD_HELPER + (
    f'if [ -n "$RG_record" ]; then run {StepName.WRITE_RECORD} write_record "$RG_record"; fi\n')
_RECORD_ARG = {"record": Arg(RECORD_CHARS, 4 * 1024 * 1024)}

_DISABLE_ARGS = {**_RECORD_ARG, "set_tweak": FLAG, "disable_antirelayd": FLAG}
DISABLE_SPEC = OperationSpec("disable", PRELUDE + STEP_HELPERS + parse_args_lines(_DISABLE_ARGS) + _RECORD_LINES
                             + "\n".join([
    "kv scan.schema 1",
    *_guard("set_tweak", [f"run {StepName.SET_TWEAK} {_q(FIXED_ARGV[StepName.SET_TWEAK])}",
                          f"flag file.popbeforesmtp {GATE_FILE}"]),
    *_guard("disable_antirelayd", with_fallback(
        StepName.DISABLE_ANTIRELAYD, _q(FIXED_ARGV[StepName.DISABLE_ANTIRELAYD]),
        StepName.SET_SKIPANTIRELAYD, "set_skipantirelayd")),
    "kv scan.end 1",
]) + "\n", _DISABLE_ARGS)


def _fixed(step: Step) -> Step:
    if FIXED_ARGV.get(step.name) != step.argv:
        raise InvalidInput(f"step {step.name} is not the fixed command a fix runs")
    return step


def render_disable(plan: Plan, record: str = "") -> Operation | None:
    """Round trip 2: close the gate. None when the plan has nothing to disable.

    ``record``: the fix's revert record (domain.revert.record_document), written before any change."""
    args: list[tuple[str, str]] = []
    for step in plan.steps:
        if step.name == StepName.SET_TWEAK:
            args.append(("set_tweak", "1"))
        elif step.name == StepName.DISABLE_ANTIRELAYD:
            args.append(("disable_antirelayd", "1"))
        else:
            continue
        _fixed(step)
    if not args:
        return None
    return check(Operation("disable", (*((("record", record),) if record else ()), *args)), DISABLE_SPEC)


def validate_probe_values(ip: str, sender: str) -> tuple[str, str]:
    """The relay-probe IP (normalised) and sender, or :class:`InvalidInput` before either reaches a script."""
    try:
        ip = str(ipaddress.ip_address(ip))
    except ValueError as exc:
        raise InvalidInput(f"relay-probe address {ip!r} is not an IP address") from exc
    if not _SENDER.fullmatch(sender):
        raise InvalidInput(f"relay-probe sender {sender!r} is not a plain address")
    return ip, sender


#: The relay probe: the unauthenticated RCPT from the probe address, which must now be refused.
RELAY_PROBE_LINE = ("printf 'EHLO relayguard.invalid\\r\\nMAIL FROM:<%s>\\r\\nRCPT TO:<%s>\\r\\nQUIT\\r\\n' "
                    f'"$RG_sender" {shlex.quote(PROBE_RCPT)} | run {StepName.RELAY_PROBE} {EXIM} -bh "$RG_ip"')
PROBE_VALUE_ARGS = {"ip": Arg(IP_CHARS, 45), "sender": Arg(SENDER_CHARS, 318)}

_FINISH_ARGS = {
    **_RECORD_ARG, "disable_tracker": FLAG, "truncate_relayhosts": FLAG, "truncate_relayhostsusers": FLAG,
    "update_exim_rejects": FLAG, **PROBE_VALUE_ARGS, "alwaysrelay": Arg(IP_CHARS, 45, ALWAYSRELAY_LIMIT)}
FINISH_SPEC = OperationSpec("finish", PRELUDE + STEP_HELPERS + parse_args_lines(_FINISH_ARGS) + _RECORD_LINES
                            + "\n".join([
    *_guard("disable_tracker", [f"run {StepName.DISABLE_TRACKER} {_q(FIXED_ARGV[StepName.DISABLE_TRACKER])}"]),
    # Truncation follows the modern symlinks: never rm or replace them.
    *(line for path, key in TRUNCATE_ARGS.items() for line in _guard(
        key, [f"if [ -s {path} ]; then run {TRUNCATE_STEPS[path]} truncate_file {path}; fi"])),
    *_guard("update_exim_rejects",
            [f"run {StepName.UPDATE_EXIM_REJECTS} {_q(FIXED_ARGV[StepName.UPDATE_EXIM_REJECTS])}"]),
    f"if run {StepName.RESTART_EXIM} {RESTARTSRV_EXIM}; then :; "
    f"else run {StepName.RESTART_EXIM_HARD} {RESTARTSRV_EXIM} --hard; fi",
    f"run {StepName.EXIM_STATUS} {RESTARTSRV_EXIM} --status",
    f"run {StepName.EXIM_BV} {EXIM} -bV",
    RELAY_PROBE_LINE,
    *proof_lines(PROBE_RCPT),
]) + "\n" + _probe_body(), _FINISH_ARGS)


def render_finish(plan: Plan, record: str = "", alwaysrelay: Sequence[str] = ()) -> Operation:
    """Round trip 3: finish the fix, restart Exim once (``--hard`` once more on failure), verify: the
    relay probe, then the post-fix proof (domain/proof.py) with the ``alwaysrelay`` addresses to prove.

    ``record`` as for :func:`render_disable`, when the fix has no disable round trip."""
    ip, sender = validate_probe_values(plan.verify_ip, plan.verify_sender)
    args: list[tuple[str, str]] = [("record", record)] if record else []
    for step in plan.steps:
        if step.name == StepName.DISABLE_TRACKER:
            args.append(("disable_tracker", "1"))
        elif step.name == StepName.UPDATE_EXIM_REJECTS:
            args.append(("update_exim_rejects", "1"))
        elif step.name not in (StepName.RESTART_EXIM, StepName.SET_TWEAK, StepName.DISABLE_ANTIRELAYD):
            raise InvalidInput(f"a fix's finish cannot run step {step.name}")
        else:
            continue
        _fixed(step)
    for path in plan.truncate:
        if path not in TRUNCATE_ARGS:
            raise InvalidInput(f"refusing to truncate {path!r}")
        args.append((TRUNCATE_ARGS[path], "1"))
    args += [("ip", ip), ("sender", sender)]
    args += [("alwaysrelay", address) for address in alwaysrelay_args(alwaysrelay)]
    return check(Operation("finish", tuple(args)), FINISH_SPEC)


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
