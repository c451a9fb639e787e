"""The remediation service: one server, one SSH connection, probe → decide → fix → verify → record."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from relayguard.domain.decide import Assessment, assess, decide
from relayguard.domain.models import Finding, Generation, Mode, Outcome, Plan, Policy, StepResult
from relayguard.domain.probe import PROBE_SCRIPT, parse_probe
from relayguard.domain.script import parse_steps, rcpt_reply, render_disable, render_finish, revert_commands
from relayguard.domain.server import Server
from relayguard.errors import RelayGuardError, Timeout, TransportError
from relayguard.ports import CommandResult, Connector, Session

RELAY_REFUSAL_SUFFIX = "is not permitted to relay through this server without authentication."
OUTPUT_LIMIT = 2000
FIX_TIMEOUT_FACTOR = 5


class BannerCheck(Protocol):
    """Connects to a server's SMTP port from outside and returns the greeting code (None: no answer)."""

    def __call__(self, host: str) -> int | None: ...


@dataclass
class ServerResult:
    """Everything one job learned and did on one server: enough to audit and to revert by hand."""

    host: str
    address: str
    mode: str
    outcome: Outcome
    reason: str = ""
    generation: str = ""
    exposed_before: bool | None = None
    exposed_after: bool | None = None
    restarted: bool = False
    exim_restarts: int = 0
    warnings: list[str] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    affected_mailboxes: list[str] = field(default_factory=list)
    relay_probe: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    revert: list[str] = field(default_factory=list)
    started_at: str = ""
    duration: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "mode": self.mode,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "generation": self.generation,
            "exposed_before": self.exposed_before,
            "exposed_after": self.exposed_after,
            "restarted": self.restarted,
            "exim_restarts": self.exim_restarts,
            "warnings": self.warnings,
            "steps": [s.to_json() for s in self.steps],
            "affected_mailboxes": self.affected_mailboxes,
            "relay_probe": self.relay_probe,
            "before": self.before,
            "after": self.after,
            "revert": self.revert,
            "started_at": self.started_at,
            "duration": round(self.duration, 3),
        }

    def to_json_line(self) -> str:
        return json.dumps(self.to_json(), sort_keys=False)


def state_of(f: Finding, a: Assessment) -> dict[str, Any]:
    """The before/after record: the facts a reviewer needs, without command noise."""
    return {
        "generation": str(a.generation),
        "version": f.version,
        "exposed": a.exposed,
        "drift": a.drift,
        "gate_file": f.gate_file,
        "config": dict(f.config),
        "tracker_active": a.tracker_active,
        "antirelayd_active": a.antirelayd_active,
        "markers": sorted(f.markers),
        "lists": {k: {"kind": v.kind, "target": v.target, "entries": list(v.entries)} for k, v in f.lists.items()},
        "exceptions": {k: list(v.entries) for k, v in f.exceptions.items() if v.kind != "missing"},
        "exim_running": f.exim_running,
        "exim_status": f.exim_status.strip()[:OUTPUT_LIMIT],
        "exim_config_ok": f.exim_bv_rc == 0,
        "queue": f.queue,
        "reject_text": f.reject_text.strip(),
        "smtp_restrictions": f.smtp_restrictions,
        "indicators": dict(f.indicators),
    }


def _clip(step: StepResult) -> StepResult:
    return StepResult(step.name, step.rc, step.duration, step.stdout[:OUTPUT_LIMIT], step.stderr[:OUTPUT_LIMIT])


class _DeadlineSession:
    """A session whose round trips all end by one deadline."""

    def __init__(self, session: Session, deadline: float) -> None:
        self._session = session
        self._deadline = deadline

    def run(self, script: str, timeout: float) -> CommandResult:
        left = self._deadline - time.monotonic()
        if left < 1:
            raise Timeout("the job's deadline passed before the next round trip")
        return self._session.run(script, min(timeout, left))

    def close(self) -> None:
        self._session.close()


class Engine:
    """Runs jobs through injected ports; holds no per-server state between jobs."""

    def __init__(self, connector: Connector, banner_check: BannerCheck, timeout: float = 60.0) -> None:
        self.connector = connector
        self.banner_check = banner_check
        self.timeout = timeout

    def run(self, target: Server, policy: Policy, deadline: float | None = None) -> ServerResult:
        """One job on one server. ``deadline`` (a ``time.monotonic()`` value) caps every round trip, so a
        Lambda worker ends a hanging job with a ``timeout`` result instead of being killed in the middle."""
        started = time.monotonic()
        result = ServerResult(
            host=target.name, address=target.host, mode=str(policy.mode), outcome=Outcome.FAILED,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            session = self.connector.connect(target)
        except TransportError as exc:
            result.outcome = Outcome(exc.outcome)
            result.reason = str(exc)
            result.duration = time.monotonic() - started
            return result
        if deadline is not None:
            session = _DeadlineSession(session, deadline)
        try:
            self._job(session, target, policy, result)
        except TransportError as exc:
            result.outcome = Outcome(exc.outcome)
            result.reason = str(exc)
        except RelayGuardError as exc:
            result.outcome = Outcome.FAILED
            result.reason = str(exc)
        finally:
            session.close()
            result.duration = time.monotonic() - started
        return result

    def _exec(self, session: Session, name: str, script: str, result: ServerResult) -> CommandResult:
        # Changing round trips may legitimately take long: a tailwatchd stop waits up to 30 s and
        # restartsrv_exim retries internally. The read-only probe gets the plain deadline.
        deadline = self.timeout if name == "probe" else self.timeout * FIX_TIMEOUT_FACTOR
        res = session.run(script, deadline)
        result.steps.append(StepResult(name, res.rc, res.duration, "", res.stderr[:OUTPUT_LIMIT]))
        return res

    def _job(self, session: Session, target: Server, policy: Policy, result: ServerResult) -> None:
        probe = self._exec(session, "probe", PROBE_SCRIPT, result)
        finding = parse_probe(probe.stdout)
        if not finding.complete:
            if "password is required" in probe.stderr or "not in the sudoers" in probe.stderr:
                result.outcome, result.reason = Outcome.PERMISSION_DENIED, "sudo -n refused"
            else:
                result.outcome, result.reason = Outcome.FAILED, "probe-incomplete"
            return
        before = assess(finding)
        result.generation = str(before.generation)
        result.exposed_before = before.exposed
        result.warnings = list(before.warnings)
        result.before = state_of(finding, before)
        result.affected_mailboxes = list(before.affected_mailboxes)
        if before.generation == Generation.NONE:
            result.outcome = Outcome.NOT_CPANEL
            return
        if before.generation == Generation.UNKNOWN:
            result.outcome, result.reason = Outcome.FAILED, "unknown-generation"
            return
        if finding.uid != 0:
            result.outcome = Outcome.PERMISSION_DENIED
            result.reason = f"logged in as uid {finding.uid}; cPanel tools need root (use sudo)"
            return
        plan = decide(finding, policy)
        if not before.exposed:
            result.outcome, result.exposed_after = Outcome.COMPLIANT, False
            return
        if policy.mode == Mode.AUDIT:
            result.outcome, result.exposed_after = Outcome.NONCOMPLIANT, True
            return
        self._fix(session, plan, before, policy, result)

    def _fix(self, session: Session, plan: Plan, before: Assessment, policy: Policy, result: ServerResult) -> None:
        disable = render_disable(plan)
        if disable:
            res = self._exec(session, "disable", disable, result)
            steps = parse_steps(res.stdout)
            result.steps += [_clip(s) for s in steps]
            refusal = _disable_refusal(plan, steps, res.stdout)
            if refusal:
                result.outcome, result.reason = Outcome.FAILED, refusal
                return
        res = self._exec(session, "finish", render_finish(plan), result)
        steps = parse_steps(res.stdout)
        result.steps += [_clip(s) for s in steps]
        restarts = [s for s in steps if s.name in ("restart-exim", "restart-exim-hard")]
        result.exim_restarts = len(restarts)
        result.restarted = bool(restarts)
        after_finding = parse_probe(res.stdout)
        after = assess(after_finding)
        result.after = state_of(after_finding, after)
        result.exposed_after = after.exposed if after_finding.complete else None
        disabled_tracker = any(s.name == "disable-tracker" and s.rc == 0 for s in steps)
        legacy = plan.generation == Generation.LEGACY
        former_users = tuple(result.before["lists"]["relayhostsusers"]["entries"]) if legacy else ()
        result.revert = list(revert_commands(plan.generation, disabled_tracker, before.relay_ips, former_users))
        self._verify(plan, before, steps, after, after_finding=after_finding, result=result)

    def _verify(self, plan: Plan, before: Assessment, steps: list[StepResult], after: Assessment, *,
                after_finding: Finding, result: ServerResult) -> None:
        by_name = {s.name: s for s in steps}
        status = by_name.get("exim-status")
        exim_up = status is not None and status.rc == 0 and "is running" in status.stdout
        code, text = rcpt_reply(by_name["relay-probe"].stdout) if "relay-probe" in by_name else (None, "")
        banner = self.banner_check(result.address)
        result.relay_probe = {"ip": plan.verify_ip, "sender": plan.verify_sender, "code": code, "reply": text,
                              "smtp_banner": banner}
        if code is not None and code >= 500 and RELAY_REFUSAL_SUFFIX not in text:
            result.warnings.append("unexpected-reject-text")
        if not exim_up or banner != 220:
            result.outcome = Outcome.FAILED
            was_down = "exim-down-before-run" in before.warnings
            result.reason = "exim-down-before-run" if was_down else "exim-restart-failed"
            return
        if not after_finding.complete or after.exposed:
            result.outcome, result.reason = Outcome.FAILED, "still-exposed"
            return
        if code is None or code < 500:
            result.outcome = Outcome.FAILED
            result.reason = "relay-probe-accepted" if code else "relay-probe-inconclusive"
            return
        result.outcome = Outcome.REMEDIATED


def _disable_refusal(plan: Plan, steps: list[StepResult], stdout: str) -> str:
    """Why closing the gate did not work, or "" when it did (exit codes, files and API JSON only)."""
    by_name = {s.name: s for s in steps}
    tweak = by_name.get("set-tweak-popbeforesmtp-0")
    if tweak is not None:
        try:
            meta = json.loads(tweak.stdout).get("metadata", {})
        except (ValueError, AttributeError):
            meta = {}
        if tweak.rc != 0 or meta.get("result") != 1:
            return f"whmapi1-refused: {meta.get('reason') or tweak.stderr.strip() or f'rc={tweak.rc}'}"
        if "file.popbeforesmtp=1" in stdout.splitlines():
            return "gate-file-still-present"
    if plan.generation == Generation.LEGACY:
        fallback = by_name.get("set-skipantirelayd")
        primary = by_name.get("disable-antirelayd")
        if (primary is None or primary.rc != 0) and (fallback is None or fallback.rc != 0):
            return "antirelayd-disable-failed"
    return ""
