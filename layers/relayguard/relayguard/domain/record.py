"""The pure parts of a job's record: the state a reviewer compares, and what an operator needs to undo a fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relayguard.domain.decide import Assessment
from relayguard.domain.models import Finding, Generation, Plan, StepName, StepResult
from relayguard.domain.proof import relay_class
from relayguard.domain.script import revert_commands


def state_of(finding: Finding, assessment: Assessment) -> dict[str, Any]:
    """The before/after record: the facts a reviewer needs, without command noise."""
    return {
        "generation": str(assessment.generation),
        "version": finding.version,
        "exposed": assessment.exposed,
        "drift": assessment.drift,
        "gate_file": finding.gate_file,
        "config": dict(finding.config),
        "tracker_active": assessment.tracker_active,
        "antirelayd_active": assessment.antirelayd_active,
        "markers": sorted(finding.markers),
        "lists": {name: {"kind": lst.kind, "target": lst.target, "entries": list(lst.entries)}
                  for name, lst in finding.lists.items()},
        "exceptions": {name: list(lst.entries) for name, lst in finding.exceptions.items() if lst.kind != "missing"},
        "exim_running": finding.exim_running,
        "exim_status": finding.exim_status.strip(),
        "exim_config_ok": finding.exim_bv_rc == 0,
        "queue": finding.queue,
        "reject_text": finding.reject_text.strip(),
        "smtp_restrictions": finding.smtp_restrictions,
        "indicators": dict(finding.indicators),
    }


_RESTART_STEPS = (StepName.RESTART_EXIM, StepName.RESTART_EXIM_HARD)


def exim_restart_attempts(steps: Sequence[StepResult]) -> int:
    """How many restarts a changing script tried (the ``--hard`` retry counts as a second attempt)."""
    return sum(1 for step in steps if step.name in _RESTART_STEPS)


def exim_restarts(steps: Sequence[StepResult]) -> int:
    """How many restarts succeeded: a restart that exited non-zero did not restart Exim (0 or 1, as the
    ``--hard`` retry runs only after a failed first attempt)."""
    return sum(1 for step in steps if step.name in _RESTART_STEPS and step.rc == 0)


def relay_probe_record(plan: Plan, code: int | None, reply: str, smtp_banner: int | None) -> dict[str, Any]:
    """The relay proof as recorded: who was probed as whom, the RCPT reply, what it says (``verdict``:
    accepted, refused or inconclusive, a 4xx being inconclusive) and the SMTP greeting."""
    return {"ip": plan.verify_ip, "sender": plan.verify_sender, "code": code, "reply": reply,
            "verdict": str(relay_class(code)), "smtp_banner": smtp_banner}


def revert_of(plan: Plan, before_finding: Finding, before: Assessment, steps: Sequence[StepResult]) -> tuple[str, ...]:
    """Shell commands that undo this fix by hand, restoring the lists the fix emptied."""
    disabled_tracker = any(step.name == StepName.DISABLE_TRACKER and step.rc == 0 for step in steps)
    former_users: tuple[str, ...] = ()
    if plan.generation == Generation.LEGACY:
        users = before_finding.lists.get("relayhostsusers")
        former_users = users.entries if users is not None else ()
    return revert_commands(plan.generation, disabled_tracker, before.relay_ips, former_users)
