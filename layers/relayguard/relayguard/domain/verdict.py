"""Pure verdicts: what a job's observations mean for its outcome, reason and warnings.

The engine gathers the facts over SSH (the probe's finding and assessment, the parsed steps of the
disable and finish scripts, the relay probe's RCPT reply, the SMTP greeting) and asks these
functions how the job ends. Nothing here performs I/O. Every reason code is listed in the
Troubleshooting section of docs/operations.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from relayguard.domain.decide import Assessment
from relayguard.domain.models import Finding, Generation, Mode, Outcome, Plan, Policy, StepName, StepResult
from relayguard.domain.proof import PostFixProof, RelayClass, deferred, relay_class

#: The end of cPanel's own relay refusal text; a 5xx without it means a custom ACL answered.
RELAY_REFUSAL_SUFFIX = "is not permitted to relay through this server without authentication."
#: What ``sudo -n`` prints when it would have to ask for a password.
SUDO_REFUSALS = ("password is required", "not in the sudoers")


@dataclass(frozen=True)
class Verdict:
    """How a job ends: its outcome, the reason code, all its warnings, and exposure after it (None: unknown)."""

    outcome: Outcome
    reason: str = ""
    warnings: tuple[str, ...] = ()
    exposed_after: bool | None = None


def probe_verdict(finding: Finding, probe_stderr: str) -> Verdict | None:
    """Why the probe's output cannot be judged (sudo refused, output cut short), or None when it is complete."""
    if finding.complete:
        return None
    if any(refusal in probe_stderr for refusal in SUDO_REFUSALS):
        return Verdict(Outcome.PERMISSION_DENIED, "sudo -n refused")
    return Verdict(Outcome.FAILED, "probe-incomplete")


def verdict_before_fix(finding: Finding, assessment: Assessment, policy: Policy) -> Verdict | None:
    """The outcome reached without changing anything, or None when the server is to be fixed."""
    warnings = assessment.warnings
    unfit = unfit_for_changes(finding, assessment)
    if unfit is not None:
        return unfit
    if policy.excluded:
        return Verdict(Outcome.EXCLUDED, "excluded", warnings, exposed_after=assessment.exposed)
    if not assessment.exposed:
        return Verdict(Outcome.COMPLIANT, warnings=warnings, exposed_after=False)
    if policy.mode == Mode.AUDIT:
        return Verdict(Outcome.NONCOMPLIANT, warnings=warnings, exposed_after=True)
    return None


def unfit_for_changes(finding: Finding, assessment: Assessment) -> Verdict | None:
    """Not cPanel, a generation RelayGuard cannot tell, or a login that is not root: nothing to judge."""
    warnings = assessment.warnings
    if assessment.generation == Generation.NONE:
        return Verdict(Outcome.NOT_CPANEL, warnings=warnings)
    if assessment.generation == Generation.UNKNOWN:
        return Verdict(Outcome.FAILED, "unknown-generation", warnings)
    if finding.uid != 0:
        return Verdict(Outcome.PERMISSION_DENIED,
                       f"logged in as uid {finding.uid}; cPanel tools need root (use sudo)", warnings)
    return None


def skipped_verdict(assessment: Assessment, reason: str) -> Verdict:
    """An exposed server the run's rollout limits left unfixed (``reason``: a :class:`SkipReason`)."""
    return Verdict(Outcome.SKIPPED, reason, assessment.warnings, exposed_after=assessment.exposed)


def disable_refusal(plan: Plan, steps: Sequence[StepResult], disable_stdout: str) -> str:
    """Why closing the gate did not work, or "" when it did (exit codes, files and API JSON only)."""
    by_name = {step.name: step for step in steps}
    tweak = by_name.get(StepName.SET_TWEAK)
    if tweak is not None:
        try:
            meta = json.loads(tweak.stdout).get("metadata", {})
        except (ValueError, AttributeError):
            meta = {}
        if tweak.rc != 0 or meta.get("result") != 1:
            return f"whmapi1-refused: {meta.get('reason') or tweak.stderr.strip() or f'rc={tweak.rc}'}"
        if "file.popbeforesmtp=1" in disable_stdout.splitlines():
            return "gate-file-still-present"
    if plan.generation == Generation.LEGACY:
        fallback = by_name.get(StepName.SET_SKIPANTIRELAYD)
        primary = by_name.get(StepName.DISABLE_ANTIRELAYD)
        if (primary is None or primary.rc != 0) and (fallback is None or fallback.rc != 0):
            return "antirelayd-disable-failed"
    return ""


def disable_verdict(plan: Plan, before: Assessment, steps: Sequence[StepResult], disable_stdout: str) -> Verdict | None:
    """The failure when closing the gate did not work, or None when the fix may go on."""
    refusal = disable_refusal(plan, steps, disable_stdout)
    return Verdict(Outcome.FAILED, refusal, before.warnings) if refusal else None


def proof_refusal(relay_code: int | None, proof: PostFixProof | None) -> str:
    """Why the proofs after a fix fail, or "": the relay probe must be refused (a 4xx is only deferred),
    then authenticated submission and every probed alwaysrelay address must still work."""
    relay = relay_class(relay_code)
    if relay == RelayClass.ACCEPTED:
        return "relay-probe-accepted"
    if relay == RelayClass.INCONCLUSIVE:
        # A 4xx is a temporary answer (a rate limit, a full spool): neither refusal nor acceptance.
        return "relay-probe-deferred" if deferred(relay_code) else "relay-probe-inconclusive"
    if proof is not None and (broken := proof.auth_problems()):
        return f"auth-submission-broken: {'; '.join(broken)}"
    if proof is not None and (refused := proof.alwaysrelay_refused()):
        return f"alwaysrelay-broken: {', '.join(refused)}"
    return ""


def fix_verdict(before: Assessment, steps: Sequence[StepResult], after_finding: Finding, after: Assessment, *,
                relay_code: int | None, relay_reply: str, smtp_banner: int | None,
                proof: PostFixProof | None = None) -> Verdict:
    """The outcome of a finished fix: remediated only with Exim back up, the gate closed, relaying without
    AUTH refused, and the post-fix ``proof`` showing authenticated submission and every alwaysrelay
    address still working."""
    status = {step.name: step for step in steps}.get(StepName.EXIM_STATUS)
    exim_up = status is not None and status.rc == 0 and "is running" in status.stdout
    warnings = before.warnings
    if relay_code is not None and relay_code >= 500 and RELAY_REFUSAL_SUFFIX not in relay_reply:
        warnings += ("unexpected-reject-text",)
    if proof is not None:
        warnings += proof.warnings()
    exposed_after = after.exposed if after_finding.complete else None
    if not exim_up or smtp_banner != 220:
        was_down = "exim-down-before-run" in before.warnings
        return Verdict(Outcome.FAILED, "exim-down-before-run" if was_down else "exim-restart-failed",
                       warnings, exposed_after)
    if not after_finding.complete or after.exposed:
        return Verdict(Outcome.FAILED, "still-exposed", warnings, exposed_after)
    refusal = proof_refusal(relay_code, proof)
    if refusal:
        return Verdict(Outcome.FAILED, refusal, warnings, exposed_after)
    return Verdict(Outcome.REMEDIATED, "", warnings, exposed_after)
