"""The would-change plan: read off the Plan that decide returns, the same in audit and fix, and exactly
the changing steps the fix's scripts run, in their order."""

from __future__ import annotations

import re

import pytest
from relayguard.domain.decide import assess, decide
from relayguard.domain.entry import OPERATIONS
from relayguard.domain.models import Finding, Mode, Policy, StepName
from relayguard.domain.operation import Operation
from relayguard.domain.plan import plan_lines, plan_steps, would_fix
from relayguard.domain.probe import parse_probe
from relayguard.domain.script import render_disable, render_finish

from tests.unit.samples import (
    LEGACY_COMPLIANT,
    LEGACY_EXPOSED,
    MODERN_COMPLIANT,
    MODERN_EXPOSED,
    NOT_CPANEL,
    UNKNOWN_GENERATION,
    probe_text,
)

FIX = Policy(mode=Mode.FIX)
AUDIT = Policy(mode=Mode.AUDIT)
#: Script steps that check a fix or stand in for a failed step: never plan lines.
NOT_PLANNED = {StepName.SET_SKIPANTIRELAYD, StepName.RESTART_TAILWATCHD, StepName.RESTART_EXIM_HARD,
               StepName.EXIM_STATUS, StepName.EXIM_BV, StepName.RELAY_PROBE,
               # the read-only post-fix proof (domain/proof.py) verifies, it changes nothing
               StepName.EXIM_PORTS, StepName.AUTH_RELAY_PROBE}
#: Proof steps named with a suffix (the port, the address's index).
NOT_PLANNED_PREFIXES = (f"{StepName.AUTH_EHLO}-", f"{StepName.ALWAYSRELAY_PROBE}-")


def parsed(facts: dict[str, str]) -> Finding:
    return parse_probe(probe_text(facts))


@pytest.mark.parametrize(("facts", "policy", "lines"), [
    (MODERN_EXPOSED, AUDIT, ("set popbeforesmtp=0", "run update_exim_rejects", "restart exim")),
    (MODERN_EXPOSED, Policy(mode=Mode.AUDIT, disable_tracker=True),
     ("set popbeforesmtp=0", "disable RecentAuthedMailIpTracker", "clear relayhosts", "clear relayhostsusers",
      "run update_exim_rejects", "restart exim")),
    (LEGACY_EXPOSED, AUDIT,
     ("disable Antirelayd", "clear relayhosts", "clear relayhostsusers", "run update_exim_rejects", "restart exim")),
])
def test_an_exposed_server_gets_the_fix_plan_as_readable_lines(facts: dict[str, str], policy: Policy,
                                                               lines: tuple[str, ...]) -> None:
    finding = parsed(facts)
    assert plan_lines(would_fix(finding, assess(finding), policy)) == lines


def _active(op: Operation) -> str:
    """The body lines ``op``'s flag arguments switch on: unguarded lines, and the lines of each
    ``if [ -n "$RG_<flag>" ]; then`` block whose flag ``op`` gives."""
    given = {key for key, _ in op.args}
    out: list[str] = []
    guard: str | None = None
    for line in OPERATIONS[op.name].body.splitlines():
        opened = re.fullmatch(r'if \[ -n "\$RG_([a-z_]+)" \]; then', line)
        inline = re.match(r'if \[ -n "\$RG_([a-z_]+)" \]; then (.*); fi$', line)
        if inline:
            if inline.group(1) in given:
                out.append(inline.group(2))
        elif opened:
            guard = opened.group(1)
        elif guard is not None and line == "fi":
            guard = None
        elif guard is None or guard in given:
            out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("facts", [MODERN_EXPOSED, LEGACY_EXPOSED])
@pytest.mark.parametrize("disable_tracker", [False, True])
def test_the_audit_plan_is_the_plan_a_fix_runs(facts: dict[str, str], disable_tracker: bool) -> None:
    finding = parsed(facts)
    before = assess(finding)
    audit = would_fix(finding, before, Policy(mode=Mode.AUDIT, disable_tracker=disable_tracker))
    fix = decide(finding, before, Policy(mode=Mode.FIX, disable_tracker=disable_tracker))
    assert audit == fix
    assert audit.steps  # the comparison is not between two empty plans


@pytest.mark.parametrize("facts", [MODERN_EXPOSED, LEGACY_EXPOSED])
@pytest.mark.parametrize("disable_tracker", [False, True])
def test_the_plan_lines_are_the_changing_steps_the_fix_scripts_run_in_order(facts: dict[str, str],
                                                                             disable_tracker: bool) -> None:
    # GIVEN the plan of an exposed server
    finding = parsed(facts)
    plan = decide(finding, assess(finding), Policy(mode=Mode.FIX, disable_tracker=disable_tracker))
    # WHEN the fix's two changing operations are rendered from it
    ops = [op for op in (render_disable(plan), render_finish(plan)) if op is not None]
    ran = [name for op in ops for name in re.findall(r"\brun ([a-z0-9-]+) ", _active(op))
           if name not in NOT_PLANNED and not name.startswith(NOT_PLANNED_PREFIXES)]
    # THEN they run exactly the plan's steps, in the plan's order
    assert ran == [str(name) for name, _line in plan_steps(plan)]


@pytest.mark.parametrize(("facts", "policy"), [
    (MODERN_COMPLIANT, FIX),
    (LEGACY_COMPLIANT, AUDIT),
    (NOT_CPANEL, AUDIT),
    (UNKNOWN_GENERATION, FIX),
    ({**MODERN_EXPOSED, "id.uid": "4242"}, AUDIT),  # not root: a fix would stop before any change
    (MODERN_EXPOSED, Policy(mode=Mode.AUDIT, excluded=True)),
])
def test_a_server_a_fix_would_not_change_has_an_empty_plan(facts: dict[str, str], policy: Policy) -> None:
    finding = parsed(facts)
    plan = would_fix(finding, assess(finding), policy)
    assert (plan.empty, plan_lines(plan)) == (True, ())

