"""The remediation service: one server, one SSH connection, probe → decide → fix → verify → record.

The engine only runs the round trips and fills the record; what the observations mean is decided
by the pure functions of ``domain.decide`` and ``domain.verdict``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from relayguard.domain.collect import parse_collected
from relayguard.domain.decide import Assessment, assess
from relayguard.domain.deliverability import Collected
from relayguard.domain.entry import PROBE, REVERT_PROBE, Access
from relayguard.domain.mailreport import collected_only, report_json
from relayguard.domain.models import Finding, Outcome, Plan, Policy, StepName, StepResult
from relayguard.domain.operation import Operation
from relayguard.domain.plan import plan_lines, would_fix
from relayguard.domain.probe import parse_probe
from relayguard.domain.proof import alwaysrelay_targets, post_fix_proof, relay_class
from relayguard.domain.record import (
    exim_restart_attempts,
    exim_restarts,
    relay_probe_record,
    revert_of,
    state_of,
)
from relayguard.domain.revert import (
    plan_revert,
    record_document,
    record_from,
    record_of,
    record_warnings,
    render_revert,
    revert_verdict,
    server_record,
)
from relayguard.domain.rollout import Decision
from relayguard.domain.script import parse_steps, relay_probe_reply, render_disable, render_finish
from relayguard.domain.server import Server
from relayguard.domain.signals import signals_of
from relayguard.domain.verdict import (
    Verdict,
    disable_verdict,
    fix_verdict,
    probe_verdict,
    skipped_verdict,
    unfit_for_changes,
    verdict_before_fix,
)
from relayguard.errors import FixDeferred, InvalidInput, RelayGuardError, Timeout, TransportError
from relayguard.ports import CommandResult, Connector, DeliverabilityJudge, FixGate, Session

FIX_TIMEOUT_FACTOR = 5
#: Seconds a deliverability judgement may take at most (the DNS judge bounds itself to it, and the engine
#: skips judging when the job's deadline leaves less): docs/deliverability.md, Limits.
JUDGE_BUDGET = 60.0


class BannerCheck(Protocol):
    """Connects to a server's SMTP port from outside and returns the greeting code (None: no answer)."""

    def __call__(self, host: str) -> int | None: ...


@dataclass
class ServerResult:
    """Everything one job learned and did on one server: enough to audit and to revert by hand.

    ``name`` is the server's inventory name; ``to_json`` keeps it under the documented key ``host``.
    """

    name: str
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
    #: The steps a fix runs (audit: would run) on this server, as domain.plan renders them; empty: no change.
    plan: list[str] = field(default_factory=list)
    #: Spam signals the first probe counted (domain.signals); None when the probe did not finish.
    signals: dict[str, Any] | None = None
    #: Restarts tried, successful or not; ``exim_restarts`` counts the ones that succeeded.
    exim_restart_attempts: int = 0
    #: The post-fix proof (domain/proof.py); empty when no fix reached the finish round trip.
    post_fix: dict[str, Any] = field(default_factory=dict)
    #: How the job reached the server (domain.entry.Access.to_json); empty when it did not.
    access: dict[str, Any] = field(default_factory=dict)
    #: The deliverability scan (issue 20, domain/mailreport.py): per-domain findings and counts; None when
    #: the server hosts no domains (not cPanel) or the probe did not finish.
    deliverability: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The result record: the documented JSON the CLI prints and the worker stores and notifies from."""
        return {
            "host": self.name,
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
            "plan": self.plan,
            "signals": self.signals,
            "exim_restart_attempts": self.exim_restart_attempts,
            "post_fix": self.post_fix,
            "access": self.access,
            "deliverability": self.deliverability,
        }

    def to_json_line(self) -> str:
        """The record as one JSON line (``--json`` output)."""
        return json.dumps(self.to_json(), sort_keys=False)


class _DeadlineSession:
    """A session whose round trips all end by one deadline."""

    def __init__(self, session: Session, deadline: float) -> None:
        self._session = session
        self._deadline = deadline

    def run(self, op: Operation, timeout: float) -> CommandResult:
        left = self._deadline - time.monotonic()
        if left < 1:
            raise Timeout("the job's deadline passed before the next round trip")
        return self._session.run(op, min(timeout, left))

    def close(self) -> None:
        self._session.close()


class Engine:
    """Runs jobs through injected ports; holds no per-server state between jobs."""

    def __init__(self, connector: Connector, banner_check: BannerCheck, timeout: float = 60.0,
                 judge: DeliverabilityJudge | None = None, judge_budget: float = JUDGE_BUDGET) -> None:
        self.connector = connector
        self.banner_check = banner_check
        self.timeout = timeout
        #: Judges the domains the probe collected against DNS; None: the record carries what was collected.
        self.judge = judge
        #: Seconds of the job's deadline the judgement needs: with less left, it is skipped and said so.
        self.judge_budget = judge_budget

    def run(self, target: Server, policy: Policy, deadline: float | None = None,
            gate: FixGate | None = None) -> ServerResult:
        """One job on one server. ``deadline`` (a ``time.monotonic()`` value) caps every round trip, so a
        Lambda worker ends a hanging job with a ``timeout`` result instead of being killed in the middle.

        ``gate`` is the run's rollout policy: asked once the probe shows a fix is due, and told how an
        admitted fix ended, whatever ended it. When it says wait, :class:`FixDeferred` propagates with
        nothing changed on the server."""
        ticket = _Ticket(gate, target)
        collected: list[Collected] = []
        result = self._in_session(target, str(policy.mode), deadline,
                                  lambda session, result: self._job(session, policy, result, ticket, collected),
                                  ticket)
        if collected:
            # After the session closed and the relay result is final: DNS never holds the SSH connection,
            # and nothing here can change the outcome.
            result.deliverability = self._judge(collected[0], deadline)
        return result

    def _judge(self, collected: Collected, deadline: float | None) -> dict[str, Any]:
        """The deliverability record of ``collected``: judged when a judge is wired and time is left; a
        judge that fails anyway leaves the collection in the record with the reason in its notes."""
        if self.judge is None:
            return collected_only(collected, "not judged: no DNS resolver configured")
        if deadline is not None and deadline - time.monotonic() < self.judge_budget:
            return collected_only(collected, "not judged: the job's deadline leaves no time for DNS")
        try:
            return report_json(collected, self.judge.judge(collected))
        except Exception as exc:
            return collected_only(collected, f"not judged: {type(exc).__name__}: {exc}")

    def _in_session(self, target: Server, mode: str, deadline: float | None,
                    job: Callable[[Session, ServerResult], None], ticket: _Ticket | None = None) -> ServerResult:
        """Connect, run ``job`` on the session, and turn a transport or RelayGuard error into the result's
        outcome; the session is closed and an admitted fix's ticket closed, whatever happened."""
        started = time.monotonic()
        result = ServerResult(
            name=target.name, address=target.host, mode=mode, outcome=Outcome.FAILED,
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
            job(session, result)
        except FixDeferred:
            raise
        except TransportError as exc:
            result.outcome = Outcome(exc.outcome)
            result.reason = str(exc)
        except RelayGuardError as exc:
            result.outcome = Outcome.FAILED
            result.reason = str(exc)
        finally:
            session.close()
            # After the verdict, whose warnings are the job's complete list: how the server was reached.
            for warning in _access_warnings(result.access):
                if warning not in result.warnings:
                    result.warnings.append(warning)
            result.duration = time.monotonic() - started
            if ticket is not None:
                ticket.close(result.outcome)
        return result

    def _change(self, session: Session, name: StepName, op: Operation,
                result: ServerResult) -> tuple[list[StepResult], Finding, Assessment]:
        """A changing round trip whose script ends with a probe (finish, revert): its steps, Exim restarts
        and after-state go into the record; returns the parsed steps and the after-state.

        ``restarted`` is true only when a restart exited 0: a failed attempt left Exim not restarted."""
        res = self._exec(session, name, op, result)
        steps = parse_steps(res.stdout)
        result.steps += steps  # whole: the record keeps all, views clip (domain.bounds)
        result.exim_restarts = exim_restarts(steps)
        result.exim_restart_attempts = exim_restart_attempts(steps)
        result.restarted = result.exim_restarts > 0
        after_finding = parse_probe(res.stdout)
        after = assess(after_finding)
        result.after = state_of(after_finding, after)
        return steps, after_finding, after

    def _exec(self, session: Session, name: StepName, op: Operation, result: ServerResult) -> CommandResult:
        # Changing round trips may legitimately take long: a tailwatchd stop waits up to 30 s and
        # restartsrv_exim retries internally. The read-only probe gets the plain deadline.
        deadline = self.timeout if name == StepName.PROBE else self.timeout * FIX_TIMEOUT_FACTOR
        res = session.run(op, deadline)
        if res.access is not None:
            result.access = res.access.to_json()
        result.steps.append(StepResult(name, res.rc, res.duration, "", res.stderr))
        return res

    def _job(self, session: Session, policy: Policy, result: ServerResult, ticket: _Ticket,
             collected: list[Collected]) -> None:
        probe = self._exec(session, StepName.PROBE, PROBE, result)
        finding = parse_probe(probe.stdout)
        unreadable = probe_verdict(finding, probe.stderr)
        if unreadable is not None:
            _record(result, unreadable)
            return
        mail = parse_collected(probe.stdout, finding.hostname)
        if mail is not None:
            collected.append(mail)
        before = assess(finding)
        result.generation = str(before.generation)
        result.exposed_before = before.exposed
        result.warnings = list(before.warnings)
        result.before = state_of(finding, before)
        result.affected_mailboxes = list(before.affected_mailboxes)
        result.signals = signals_of(finding)
        # Pure, so an audit computes it too and reports what a fix would run; a fix runs this very plan.
        plan = would_fix(finding, before, policy)
        result.plan = list(plan_lines(plan))
        settled = verdict_before_fix(finding, before, policy)
        if settled is not None:
            _record(result, settled)
            return
        skip_reason = ticket.admit()
        if skip_reason:
            _record(result, skipped_verdict(before, skip_reason))
            return
        self._fix(session, plan, finding, before, result)

    def _fix(self, session: Session, plan: Plan, finding: Finding, before: Assessment, result: ServerResult) -> None:
        # The revert record goes on the server with the first script that changes anything.
        record = record_document(record_of(finding, before))
        disable = render_disable(plan, record=record)
        if disable is not None:
            res = self._exec(session, StepName.DISABLE, disable, result)
            steps = parse_steps(res.stdout)
            result.steps += steps  # whole: the record keeps all, views clip (domain.bounds)
            refused = disable_verdict(plan, before, steps, res.stdout)
            if refused is not None:
                _record(result, refused)
                return
        alwaysrelay, not_probed = alwaysrelay_targets(finding)
        finish = render_finish(plan, record="" if disable is not None else record, alwaysrelay=alwaysrelay)
        steps, after_finding, after = self._change(session, StepName.FINISH, finish, result)
        result.revert = list(revert_of(plan, finding, before, steps))
        code, reply = relay_probe_reply(steps)
        banner = self.banner_check(result.address)
        result.relay_probe = relay_probe_record(plan, code, reply, banner)
        proof = post_fix_proof(steps, alwaysrelay, unauthenticated_relay=code, not_probed=not_probed)
        result.post_fix = proof.to_json()
        _record(result, fix_verdict(before, steps, after_finding, after,
                                    relay_code=code, relay_reply=reply, smtp_banner=banner, proof=proof))
        result.warnings += record_warnings(result.steps)

    def revert(self, target: Server, before: Mapping[str, Any] | None = None,
               deadline: float | None = None) -> ServerResult:
        """Undo the last fix on one server: restore the before-state recorded on the server (or ``before``,
        a fix result's ``before`` field), restart Exim once, and prove POP-before-SMTP relaying works again.

        Never part of a sweep: only an operator's ``relayguard revert`` or revert request runs it."""
        return self._in_session(target, "revert", deadline,
                                lambda session, result: self._revert(session, before, result))

    def _revert(self, session: Session, given: Mapping[str, Any] | None, result: ServerResult) -> None:
        probe = self._exec(session, StepName.PROBE, REVERT_PROBE, result)
        finding = parse_probe(probe.stdout)
        unreadable = probe_verdict(finding, probe.stderr)
        if unreadable is not None:
            _record(result, unreadable)
            return
        now = assess(finding)
        result.generation = str(now.generation)
        result.exposed_before = now.exposed
        result.warnings = list(now.warnings)
        result.before = state_of(finding, now)
        result.signals = signals_of(finding)
        unfit = unfit_for_changes(finding, now)
        if unfit is not None:
            _record(result, unfit)
            return
        try:
            recorded = given if given is not None else server_record(probe.stdout)
            if recorded is None:
                _record(result, Verdict(Outcome.FAILED, "no-revert-record", now.warnings, now.exposed))
                return
            record = record_from(recorded)
        except InvalidInput as exc:
            _record(result, Verdict(Outcome.FAILED, f"invalid-revert-record: {exc}", now.warnings, now.exposed))
            return
        if record.generation != now.generation:
            _record(result, Verdict(Outcome.FAILED, "revert-record-generation-mismatch", now.warnings, now.exposed))
            return
        plan = plan_revert(record, finding, now)
        steps, after_finding, after = self._change(session, StepName.REVERT, render_revert(plan), result)
        code, reply = relay_probe_reply(steps)
        banner = self.banner_check(result.address)
        result.relay_probe = {"ip": plan.verify_ip, "sender": plan.verify_sender, "code": code, "reply": reply,
                              "verdict": str(relay_class(code)), "smtp_banner": banner}
        _record(result, revert_verdict(plan, now, steps, after_finding, after, relay_code=code, smtp_banner=banner))


class _Ticket:
    """One server's admission by the run's gate: asked at most once, and closed exactly once if granted."""

    def __init__(self, gate: FixGate | None, server: Server) -> None:
        self._gate = gate
        self._server = server
        self._granted = False

    def admit(self) -> str:
        """"" to go on with the fix, or the skip reason; raises :class:`FixDeferred` on wait."""
        if self._gate is None:
            return ""
        answer = self._gate.admit(self._server)
        if answer.decision == Decision.WAIT:
            raise FixDeferred(f"the run's rollout policy holds the fix of {self._server.name} for now")
        if answer.decision == Decision.SKIP:
            return answer.reason
        self._granted = True
        return ""

    def close(self, outcome: Outcome) -> None:
        if self._gate is not None and self._granted:
            self._granted = False
            self._gate.finished(self._server, outcome)


def _access_warnings(access: Mapping[str, Any]) -> tuple[str, ...]:
    if not access:
        return ()
    return Access(str(access.get("mode", "")), access.get("entry_version"),
                  str(access.get("entry_digest") or "")).warnings()


def _record(result: ServerResult, verdict: Verdict) -> None:
    """Write the verdict into the record; the verdict's warnings are the job's complete list."""
    result.outcome = verdict.outcome
    result.reason = verdict.reason
    result.warnings = list(verdict.warnings)
    result.exposed_after = verdict.exposed_after
