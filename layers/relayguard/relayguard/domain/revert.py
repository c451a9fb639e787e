"""Revert a fix: the before-state record a fix leaves on the server, the revert plan, its script and verdict.

A fix writes :data:`RECORD_FILE` (root-owned, 0600) with its first changing script: the part of the
before-state a revert needs (generation, the popbeforesmtp gate, whether the tracking driver was
active, the relay-list lines). The same shape is the ``before`` field of a fix's ``--json`` result,
so an operator can hand a saved result line in instead. Every line read back from either source is
server data: only lines that parse as a relay-list entry are restored, quoted once.

A revert is two round trips on one SSH connection: :data:`REVERT_PROBE_SCRIPT` (the read-only probe
plus the record) and :func:`render_revert` (restore, refresh the reject text, restart Exim once with
one ``--hard`` retry, prove with ``exim -bh`` that a POP-before-SMTP address relays again, re-probe).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relayguard.domain.cpanel_paths import (
    CPANEL_CONFIG,
    EXIM,
    LEGACY_TAILWATCHD,
    LISTS,
    MODERN_TAILWATCHD,
    RESTARTSRV_EXIM,
    UPDATE_EXIM_REJECTS,
    WHMAPI1,
)
from relayguard.domain.decide import ANTIRELAYD, FALLBACK_PROBE_IP, TRACKER, Assessment, valid_ip, verify_sender
from relayguard.domain.models import Finding, Generation, Outcome, Step, StepName, StepResult
from relayguard.domain.operation import (
    FLAG,
    LINE_CHARS,
    WORD_CHARS,
    Arg,
    Operation,
    OperationSpec,
    check,
    parse_args_lines,
)
from relayguard.domain.probe import PRELUDE, PROBE_SCRIPT, _probe_body, _unhex, parse_kv
from relayguard.domain.proof import RelayClass, deferred, relay_class
from relayguard.domain.script import (
    PROBE_VALUE_ARGS,
    RECORD_FILE,
    RELAY_PROBE_LINE,
    STEP_HELPERS,
    validate_probe_values,
    with_fallback,
)
from relayguard.domain.verdict import Verdict
from relayguard.errors import InvalidInput

RECORD_SCHEMA = "relayguard.fix-record/v1"
#: The lists a fix may empty, per generation: the ones a revert may write back. On modern servers
#: ``/etc/relayhosts*`` are symlinks to these two, so writing them here restores both names.
RESTORABLE = {
    Generation.MODERN: ("recent_authed_mail_ips", "recent_authed_mail_ips_users"),
    Generation.LEGACY: ("relayhosts", "relayhostsusers"),
}
RESTORE_STEPS = {
    "recent_authed_mail_ips": StepName.RESTORE_RECENT_AUTHED_MAIL_IPS,
    "recent_authed_mail_ips_users": StepName.RESTORE_RECENT_AUTHED_MAIL_IPS_USERS,
    "relayhosts": StepName.RESTORE_RELAYHOSTS,
    "relayhostsusers": StepName.RESTORE_RELAYHOSTSUSERS,
}
#: The list Exim's POP-before-SMTP clause looks the client address up in.
RELAY_LIST = {Generation.MODERN: "recent_authed_mail_ips", Generation.LEGACY: "relayhosts"}
#: A relay-list line RelayGuard will write back: an address, optionally quoted, then mailbox names.
#: The character set excludes every shell and Exim lookup metacharacter besides the quote.
_LINE = re.compile(r'^[A-Za-z0-9.:@_+,"\- ]{1,512}$')

REVERT_PROBE_SCRIPT = PROBE_SCRIPT + f"listfile revert.record {RECORD_FILE}\n"

_REVERT_HELPERS = f"""copy_list() {{ cat "$2" > "$1"; }}
append_line() {{ printf '%s\\n' "$2" >> "$1"; }}
drop_line() {{
  n="$1.relayguard.tmp"
  grep -v -x -F -e "$2" "$1" > "$n"
  [ $? -le 1 ] || {{ rm -f "$n"; return 1; }}
  cat "$n" > "$1"; r=$?; rm -f "$n"; return $r
}}
unset_skipantirelayd() {{
  c={CPANEL_CONFIG}; n={CPANEL_CONFIG}.relayguard.tmp
  cp -p "$c" "$n" || return 1
  {{ grep -v '^skipantirelayd=' "$c"; echo 'skipantirelayd=0'; }} > "$n" || {{ rm -f "$n"; return 1; }}
  mv -f "$n" "$c"
}}
"""

@dataclass(frozen=True)
class RevertRecord:
    """The before-state a revert restores; every list line already validated."""

    generation: Generation
    popbeforesmtp: bool  # modern: the Tweak Setting (and its gate file) was on
    tracker_active: bool
    antirelayd_active: bool
    lists: Mapping[str, tuple[str, ...]]
    dropped: tuple[str, ...] = ()  # lines refused as not being relay-list entries

    def relay_ips(self) -> tuple[str, ...]:
        """The addresses of the list Exim's POP-before-SMTP clause reads, in order."""
        ips = (valid_ip(line) for line in self.lists.get(RELAY_LIST[self.generation], ()))
        return tuple(dict.fromkeys(ip for ip in ips if ip is not None))


def restorable_line(line: str) -> bool:
    """Whether a relay-list line may be written back: an address first, then only plain mailbox text."""
    return bool(_LINE.fullmatch(line)) and valid_ip(line) is not None


def _truthy(value: object) -> bool:
    return str(value if value is not None else "").strip() not in ("", "0")


def record_from(before: Mapping[str, Any]) -> RevertRecord:
    """Read a before-state (the server's record or a fix result's ``before``); :class:`InvalidInput` if unusable."""
    if not isinstance(before, Mapping):
        raise InvalidInput("the before-state is not an object")
    try:
        generation = Generation(str(before.get("generation", "")))
    except ValueError as exc:
        raise InvalidInput(f"unknown generation {before.get('generation')!r}") from exc
    if generation not in RESTORABLE:
        raise InvalidInput(f"nothing to revert on generation {generation}")
    config = before.get("config", {})
    lists_in = before.get("lists", {})
    if not isinstance(config, Mapping) or not isinstance(lists_in, Mapping):
        raise InvalidInput("config and lists must be objects")
    lists: dict[str, tuple[str, ...]] = {}
    dropped: list[str] = []
    for name in RESTORABLE[generation]:
        entry = lists_in.get(name) or {}
        lines = entry.get("entries", []) if isinstance(entry, Mapping) else []
        if not isinstance(lines, list):
            raise InvalidInput(f"lists.{name}.entries must be a list")
        kept: list[str] = []
        for line in lines:
            text = str(line).strip()
            (kept if restorable_line(text) else dropped).append(text)
        lists[name] = tuple(kept)
    return RevertRecord(
        generation=generation,
        popbeforesmtp=bool(before.get("gate_file")) or _truthy(config.get("popbeforesmtp")),
        tracker_active=before.get("tracker_active") is True,
        antirelayd_active=before.get("antirelayd_active") is True,
        lists=lists,
        dropped=tuple(dropped),
    )


def record_of(finding: Finding, assessment: Assessment) -> RevertRecord:
    """The record a fix of this server leaves: its before-state, restorable lines only."""
    lists = {name: {"entries": list(lst.entries)} for name, lst in finding.lists.items()}
    return record_from({
        "generation": str(assessment.generation), "gate_file": finding.gate_file,
        "config": {"popbeforesmtp": finding.config.get("popbeforesmtp", "")},
        "tracker_active": assessment.tracker_active, "antirelayd_active": assessment.antirelayd_active,
        "lists": lists,
    })


def record_document(record: RevertRecord) -> str:
    """The record as the fix writes it to :data:`RECORD_FILE`: one JSON line, readable by :func:`record_from`."""
    before = {
        "generation": str(record.generation),
        "gate_file": record.popbeforesmtp,
        "config": {"popbeforesmtp": "1" if record.popbeforesmtp else "0"},
        "tracker_active": record.tracker_active,
        "antirelayd_active": record.antirelayd_active,
        "lists": {name: {"entries": list(lines)} for name, lines in record.lists.items()},
    }
    return json.dumps({"schema": RECORD_SCHEMA, "before": before}, sort_keys=True, separators=(",", ":"))


def server_record(probe_output: str) -> dict[str, Any] | None:
    """The ``before`` of the record :data:`REVERT_PROBE_SCRIPT` read, or None when there is none.

    :class:`InvalidInput` when the file exists but is not a record."""
    kv = parse_kv(probe_output)
    if kv.get("revert.record.kind") != "file":
        return None
    try:
        doc = json.loads(_unhex(kv.get("revert.record.hex", "")))
    except ValueError as exc:
        raise InvalidInput(f"{RECORD_FILE} is not JSON") from exc
    if not isinstance(doc, dict) or doc.get("schema") != RECORD_SCHEMA or not isinstance(doc.get("before"), dict):
        raise InvalidInput(f"{RECORD_FILE} is not a {RECORD_SCHEMA} record")
    return dict(doc["before"])


def before_from_results(lines: Iterable[str], name: str, address: str) -> dict[str, Any] | None:
    """The ``before`` of the last fix result for this server among saved ``--json`` lines, or None."""
    found: dict[str, Any] | None = None
    for line in lines:
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise InvalidInput("a --record line is not JSON") from exc
        if not isinstance(doc, dict) or doc.get("mode") != "fix" or not isinstance(doc.get("before"), dict):
            continue
        if doc.get("host") == name or doc.get("address") == address:
            found = dict(doc["before"])
    return found


@dataclass(frozen=True)
class RevertPlan:
    """What a revert runs on one server, from its record and what the probe shows now."""

    record: RevertRecord
    steps: tuple[Step, ...]
    restored: tuple[str, ...]  # names of the lists written back
    verify_ip: str
    verify_sender: str
    temporary_ip: bool  # verify_ip is put on the relay list for the proof only, then taken off

    @property
    def empty(self) -> bool:
        """True when the server already is in the recorded state: nothing written, Exim not restarted."""
        return not self.steps


def plan_revert(record: RevertRecord, finding: Finding, assessment: Assessment) -> RevertPlan:
    """The steps that bring the server back to ``record``; only what differs now is changed.

    A list is written back only when it is empty now (the fix emptied it): a list the tracker has
    refilled since holds current logins, which a revert must not replace."""
    steps: list[Step] = []
    if record.generation == Generation.MODERN:
        if record.popbeforesmtp and not (finding.gate_file and _truthy(finding.config.get("popbeforesmtp"))):
            steps.append(Step(StepName.SET_TWEAK_ON, (WHMAPI1, "--output=json", "set_tweaksetting",
                                                            "key=popbeforesmtp", "value=1")))
        if record.tracker_active and not assessment.tracker_active:
            steps.append(Step(StepName.ENABLE_TRACKER,
                                    (MODERN_TAILWATCHD, f"--enable=Cpanel::TailWatch::{TRACKER}")))
    elif record.antirelayd_active and not assessment.antirelayd_active:
        steps.append(Step(StepName.ENABLE_ANTIRELAYD,
                                (LEGACY_TAILWATCHD, f"--enable=Cpanel::TailWatch::{ANTIRELAYD}")))
    restored: list[str] = []
    for name in RESTORABLE[record.generation]:
        lines = record.lists.get(name, ())
        current = finding.lists.get(name)
        if lines and current is not None and current.kind == "file" and not current.entries:
            steps.append(Step(RESTORE_STEPS[name], ("write_list", LISTS[name], *lines)))
            restored.append(name)
    usable = [ip for ip in record.relay_ips()
              if not ipaddress.ip_address(ip).is_loopback and ip not in assessment.exception_ips]
    if steps:
        steps.append(Step(StepName.UPDATE_EXIM_REJECTS, (UPDATE_EXIM_REJECTS,)))
        steps.append(Step(StepName.RESTART_EXIM, (RESTARTSRV_EXIM,)))
    return RevertPlan(record=record, steps=tuple(steps), restored=tuple(restored),
                      verify_ip=usable[0] if usable else FALLBACK_PROBE_IP, verify_sender=verify_sender(finding),
                      temporary_ip=not usable)


#: The one command line of each revert step; :func:`render_revert` refuses a plan that says otherwise.
_REVERT_ARGV = {
    StepName.SET_TWEAK_ON: (WHMAPI1, "--output=json", "set_tweaksetting", "key=popbeforesmtp", "value=1"),
    StepName.ENABLE_TRACKER: (MODERN_TAILWATCHD, f"--enable=Cpanel::TailWatch::{TRACKER}"),
    StepName.ENABLE_ANTIRELAYD: (LEGACY_TAILWATCHD, f"--enable=Cpanel::TailWatch::{ANTIRELAYD}"),
    StepName.UPDATE_EXIM_REJECTS: (UPDATE_EXIM_REJECTS,),
    StepName.RESTART_EXIM: (RESTARTSRV_EXIM,),
}
_FLAG_KEYS = {StepName.SET_TWEAK_ON: "set_tweak_on", StepName.ENABLE_TRACKER: "enable_tracker",
              StepName.ENABLE_ANTIRELAYD: "enable_antirelayd", StepName.UPDATE_EXIM_REJECTS: "update_exim_rejects",
              StepName.RESTART_EXIM: "restart_exim"}
#: A relay list holds at most this many lines for a revert to write back.
RESTORE_LIMIT = 65536
_REVERT_ARGS = {
    **{key: FLAG for key in _FLAG_KEYS.values()},
    **{f"restore_{name}": Arg(LINE_CHARS, 512, RESTORE_LIMIT) for name in RESTORE_STEPS},
    "relay_list": Arg(WORD_CHARS, 32), "temporary_ip": FLAG, **PROBE_VALUE_ARGS,
}


def _revert_body() -> str:
    lines = [
        *_flag("set_tweak_on", f"run {StepName.SET_TWEAK_ON} {shlex.join(_REVERT_ARGV[StepName.SET_TWEAK_ON])}"),
        *_flag("enable_tracker", f"run {StepName.ENABLE_TRACKER} {shlex.join(_REVERT_ARGV[StepName.ENABLE_TRACKER])}"),
        'if [ -n "$RG_enable_antirelayd" ]; then',
        *with_fallback(StepName.ENABLE_ANTIRELAYD, shlex.join(_REVERT_ARGV[StepName.ENABLE_ANTIRELAYD]),
                       StepName.UNSET_SKIPANTIRELAYD, "unset_skipantirelayd"),
        "fi",
    ]
    lines += [f'if [ -f "$RG_D/restore_{name}" ]; then run {step} copy_list {LISTS[name]} "$RG_D/restore_{name}"; fi'
              for name, step in RESTORE_STEPS.items()]
    lines += _flag("update_exim_rejects", f"run {StepName.UPDATE_EXIM_REJECTS} {UPDATE_EXIM_REJECTS}")
    lines += _flag("restart_exim", f"if run {StepName.RESTART_EXIM} {RESTARTSRV_EXIM}; then :; "
                                   f"else run {StepName.RESTART_EXIM_HARD} {RESTARTSRV_EXIM} --hard; fi")
    lines.append('case $RG_relay_list in')
    lines += [f"  {name}) rg_rl={LISTS[name]} ;;" for name in sorted(set(RELAY_LIST.values()))]
    lines += ["  *) rg_rl= ;;", "esac"]
    lines += _flag("temporary_ip", f'run {StepName.ADD_PROBE_IP} append_line "$rg_rl" "$RG_ip"')
    lines += [
        f"run {StepName.EXIM_STATUS} {RESTARTSRV_EXIM} --status",
        f"run {StepName.EXIM_BV} {EXIM} -bV",
        RELAY_PROBE_LINE,
    ]
    lines += _flag("temporary_ip", f'run {StepName.REMOVE_PROBE_IP} drop_line "$rg_rl" "$RG_ip"')
    return (PRELUDE + STEP_HELPERS + _REVERT_HELPERS + parse_args_lines(_REVERT_ARGS) + "\n".join(lines) + "\n"
            + _probe_body())


def _flag(key: str, line: str) -> list[str]:
    return [f'if [ -n "$RG_{key}" ]; then {line}; fi']


REVERT_SPEC = OperationSpec("revert", _revert_body(), _REVERT_ARGS)


def render_revert(plan: RevertPlan) -> Operation:
    """The revert round trip: restore, refresh the reject text, restart Exim once (``--hard`` once more on
    failure), prove relaying for a listed address with ``exim -bh``, then re-probe."""
    ip, sender = validate_probe_values(plan.verify_ip, plan.verify_sender)
    args: list[tuple[str, str]] = []
    restores = {step: name for name, step in RESTORE_STEPS.items()}
    for step in plan.steps:
        if step.name in restores:
            name = restores[step.name]
            if step.argv[:2] != ("write_list", LISTS[name]):
                raise InvalidInput(f"step {step.name} does not write {LISTS[name]}")
            args += [(f"restore_{name}", line) for line in step.argv[2:]]
        elif _REVERT_ARGV.get(step.name) == step.argv:
            args.append((_FLAG_KEYS[step.name], "1"))
        else:
            raise InvalidInput(f"step {step.name} is not the fixed command a revert runs")
    args += [("relay_list", RELAY_LIST[plan.record.generation]), ("ip", ip), ("sender", sender)]
    if plan.temporary_ip:
        args.append(("temporary_ip", "1"))
    return check(Operation("revert", tuple(args)), REVERT_SPEC)


def _whmapi_refusal(step: StepResult) -> str:
    try:
        meta = json.loads(step.stdout).get("metadata", {})
    except (ValueError, AttributeError):
        meta = {}
    if step.rc != 0 or meta.get("result") != 1:
        return f"whmapi1-refused: {meta.get('reason') or step.stderr.strip() or f'rc={step.rc}'}"
    return ""


def _step_refusal(plan: RevertPlan, steps: Sequence[StepResult]) -> str:
    by_name = {step.name: step for step in steps}
    for planned in plan.steps:
        ran = by_name.get(planned.name)
        if planned.name == StepName.SET_TWEAK_ON:
            refusal = _whmapi_refusal(ran) if ran is not None else "whmapi1-refused: did not run"
            if refusal:
                return refusal
        elif planned.name == StepName.ENABLE_TRACKER and (ran is None or ran.rc != 0):
            return "tracker-enable-failed"
        elif planned.name == StepName.ENABLE_ANTIRELAYD:
            fallback = by_name.get(StepName.UNSET_SKIPANTIRELAYD)
            if (ran is None or ran.rc != 0) and (fallback is None or fallback.rc != 0):
                return "antirelayd-enable-failed"
        elif planned.name in RESTORE_STEPS.values() and (ran is None or ran.rc != 0):
            return "relay-list-restore-failed"
    return ""


def _not_restored(plan: RevertPlan, after_finding: Finding, after: Assessment) -> str:
    """What of the recorded state the re-probe does not show, or ""."""
    record = plan.record
    if record.generation == Generation.MODERN:
        if record.popbeforesmtp and not after_finding.gate_file:
            return "gate-still-closed"
        if record.tracker_active and not after.tracker_active:
            return "tracker-still-inactive"
    elif record.antirelayd_active and not after.antirelayd_active:
        return "antirelayd-still-inactive"
    for name in plan.restored:
        now = after_finding.lists.get(name)
        if now is None or not set(record.lists[name]) <= set(now.entries):
            return "relay-list-not-restored"
    return ""


def _exim_problem(before: Assessment, steps: Sequence[StepResult], smtp_banner: int | None) -> str:
    status = {step.name: step for step in steps}.get(StepName.EXIM_STATUS)
    if status is not None and status.rc == 0 and "is running" in status.stdout and smtp_banner == 220:
        return ""
    return "exim-down-before-run" if "exim-down-before-run" in before.warnings else "exim-restart-failed"


def _relay_problem(relay_code: int | None) -> str:
    relay = relay_class(relay_code)
    if relay == RelayClass.INCONCLUSIVE:
        # A 4xx is a temporary answer: it neither proves relaying open again nor refused.
        return "relay-probe-deferred" if deferred(relay_code) else "relay-probe-inconclusive"
    return "" if relay == RelayClass.ACCEPTED else "relay-probe-refused"


def revert_verdict(plan: RevertPlan, before: Assessment, steps: Sequence[StepResult], after_finding: Finding,
                   after: Assessment, *, relay_code: int | None, smtp_banner: int | None) -> Verdict:
    """The outcome of a revert: ``reverted`` only with every restoring step done, Exim up, the recorded
    state back and a POP-before-SMTP address accepted for relaying (RCPT answered 2xx)."""
    warnings = before.warnings + tuple(f"revert-dropped-invalid-entry:{line}"[:120] for line in plan.record.dropped)
    if plan.temporary_ip:
        warnings += ("revert-probe-ip-added-temporarily",)
    exposed_after = after.exposed if after_finding.complete else None
    reason = (_step_refusal(plan, steps) or _exim_problem(before, steps, smtp_banner)
              or ("probe-incomplete" if not after_finding.complete else _not_restored(plan, after_finding, after))
              or _relay_problem(relay_code))
    if reason:
        return Verdict(Outcome.FAILED, reason, warnings, exposed_after)
    return Verdict(Outcome.REVERTED, "" if plan.steps else "nothing-to-revert", warnings, exposed_after)


def record_warnings(steps: Sequence[StepResult]) -> tuple[str, ...]:
    """``revert-record-not-written`` when a fix's record step ran and failed: revert then needs ``--record``."""
    return tuple("revert-record-not-written" for step in steps if step.name == StepName.WRITE_RECORD and step.rc != 0)
