"""The would-change plan: what a fix runs on a server, as short lines an operator reads in an audit.

The lines are derived from the :class:`Plan` that ``decide`` returns, the same value the fix renders
its scripts from (domain/script.py), so an audit's plan and the fix that follows cannot disagree.
They are listed in the order the fix runs them: the steps of the disable round trip, then in the
finish round trip the tracker, the truncations, the reject text and the Exim restart. The checks
that follow every fix (``exim-status``, ``exim-bv``, ``relay-probe``) and the fallbacks that run
only when a step fails (``set-skipantirelayd``, ``restart-tailwatchd``, ``restart-exim-hard``) are
not plan lines.
"""

from __future__ import annotations

from dataclasses import replace

from relayguard.domain.decide import Assessment, decide
from relayguard.domain.models import Finding, Mode, Plan, Policy, Step, StepName
from relayguard.domain.script import TRUNCATE_STEPS
from relayguard.domain.verdict import unfit_for_changes

#: Remote steps that change something, in the order the fix's scripts run them.
_ORDER = (StepName.SET_TWEAK, StepName.DISABLE_ANTIRELAYD, StepName.DISABLE_TRACKER,
          StepName.TRUNCATE_RELAYHOSTS, StepName.TRUNCATE_RELAYHOSTSUSERS,
          StepName.UPDATE_EXIM_REJECTS, StepName.RESTART_EXIM)


def would_fix(finding: Finding, assessment: Assessment, policy: Policy) -> Plan:
    """The plan a fix would run now, whatever the run's mode: empty when a fix would change nothing
    (not exposed, not cPanel, unknown generation, not root, or excluded by the inventory)."""
    if policy.excluded or unfit_for_changes(finding, assessment) is not None:
        return Plan(generation=assessment.generation, exposed=assessment.exposed, warnings=assessment.warnings)
    return decide(finding, assessment, replace(policy, mode=Mode.FIX))


def _line(step: Step) -> str:
    if step.name == StepName.SET_TWEAK:
        settings = dict(arg.split("=", 1) for arg in step.argv if arg.startswith(("key=", "value=")))
        return f"set {settings['key']}={settings['value']}"
    if step.name in (StepName.DISABLE_TRACKER, StepName.DISABLE_ANTIRELAYD):
        driver = next(arg for arg in step.argv if arg.startswith("--disable=")).rsplit("::", 1)[1]
        return f"disable {driver}"
    if step.name == StepName.RESTART_EXIM:
        return "restart exim"
    return "run " + step.argv[0].rsplit("/", 1)[1]


def plan_steps(plan: Plan) -> tuple[tuple[StepName, str], ...]:
    """Each remote step the fix runs, with its plan line, in the order the fix runs them."""
    steps = [(step.name, _line(step)) for step in plan.steps]
    steps += [(TRUNCATE_STEPS[path], "clear " + path.rsplit("/", 1)[1]) for path in plan.truncate
              if path in TRUNCATE_STEPS]
    return tuple(sorted(steps, key=lambda item: _ORDER.index(item[0])))


def plan_lines(plan: Plan) -> tuple[str, ...]:
    """The plan as an operator reads it, e.g. ``("set popbeforesmtp=0", "run update_exim_rejects",
    "restart exim")``; empty when the fix would change nothing."""
    return tuple(line for _name, line in plan_steps(plan))
