"""Revert, as pure functions: the record a fix leaves, the plan and script that restore it, and the verdict."""

from __future__ import annotations

import json
import shlex

import pytest
from relayguard.domain.decide import Assessment, assess, decide
from relayguard.domain.entry import script_of
from relayguard.domain.models import Finding, Generation, Mode, Outcome, Plan, Policy, StepName, StepResult
from relayguard.domain.probe import parse_probe
from relayguard.domain.record import state_of
from relayguard.domain.revert import (
    RECORD_SCHEMA,
    RevertPlan,
    before_from_results,
    plan_revert,
    record_document,
    record_from,
    record_of,
    record_warnings,
    render_revert,
    revert_verdict,
    server_record,
)
from relayguard.domain.script import RECORD_FILE, parse_steps, render_disable
from relayguard.domain.verdict import Verdict
from relayguard.errors import InvalidInput

from tests.unit.samples import (
    EXIM_UP,
    LEGACY_COMPLIANT,
    LEGACY_EXPOSED,
    MODERN_COMPLIANT,
    MODERN_EXPOSED,
    hx,
    probe_text,
    step_text,
)

ACCEPTED = ("220 web1 ESMTP\n250 web1 Hello\n250 OK\n250 Accepted\n221 bye\n")
#: A legacy server after its fix: Antirelayd off, both lists emptied.
LEGACY_FIXED = {**LEGACY_EXPOSED, "cfg.skipantirelayd": "1", "list.relayhosts.hex": "",
                "list.relayhostsusers.hex": ""}


def finding_of(facts: dict[str, str]) -> tuple[Finding, Assessment]:
    finding = parse_probe(probe_text(facts))
    return finding, assess(finding)


def step(name: str, rc: int = 0, out: str = "") -> StepResult:
    return StepResult(name, rc, 0.1, out, "")


def tweak_ok() -> StepResult:
    return step(StepName.SET_TWEAK_ON, out=json.dumps({"metadata": {"result": 1, "reason": "OK"}}))


def exim_ok() -> list[StepResult]:
    return [step(StepName.RESTART_EXIM), step(StepName.EXIM_STATUS, out=EXIM_UP)]


# --- the record -------------------------------------------------------------------------------

def test_a_fix_record_keeps_exactly_what_a_revert_restores() -> None:
    record = record_of(*finding_of(LEGACY_EXPOSED))
    assert (record.generation, record.antirelayd_active, record.popbeforesmtp) == (Generation.LEGACY, True, False)
    assert record.lists == {"relayhosts": ("198.51.100.9", "10.0.0.5"),
                            "relayhostsusers": ("198.51.100.9 carol", "10.0.0.5 dave")}
    # what the fix writes to the server reads back as the same record
    doc = json.loads(record_document(record))
    assert doc["schema"] == RECORD_SCHEMA
    assert record_from(doc["before"]) == record


def test_a_fix_results_before_field_is_a_record_too() -> None:
    finding, assessment = finding_of(MODERN_EXPOSED)
    record = record_from(json.loads(json.dumps(state_of(finding, assessment))))
    assert (record.popbeforesmtp, record.tracker_active) == (True, True)
    assert record.lists["recent_authed_mail_ips"] == ("203.0.113.7", '"2001:db8::7"')
    assert record.relay_ips() == ("203.0.113.7", "2001:db8::7")


def test_server_data_that_is_not_a_list_entry_is_dropped_and_never_rendered() -> None:
    before = {"generation": "legacy", "antirelayd_active": True,
              "lists": {"relayhosts": {"entries": ["198.51.100.9", "1.2.3.4;touch /tmp/x", "$(reboot)"]}}}
    record = record_from(before)
    assert record.lists["relayhosts"] == ("198.51.100.9",)
    assert record.dropped == ("1.2.3.4;touch /tmp/x", "$(reboot)")
    finding, now = finding_of(LEGACY_FIXED)
    op = render_revert(plan_revert(record, finding, now))
    assert op.values("restore_relayhosts") == ("198.51.100.9",)
    text = script_of(op)
    assert "touch" not in text
    assert "reboot" not in text


@pytest.mark.parametrize("before", [{"generation": "none"}, {"generation": "bogus"}, {"generation": "modern",
                                    "lists": []}, "not an object"])
def test_an_unusable_before_state_is_refused(before: object) -> None:
    with pytest.raises(InvalidInput):
        record_from(before)  # type: ignore[arg-type]


def plan_for_legacy() -> Plan:
    finding, assessment = finding_of(LEGACY_EXPOSED)
    return decide(finding, assessment, Policy(mode=Mode.FIX))


def test_the_write_step_passes_the_record_as_one_argument_and_keeps_it_root_only() -> None:
    record = record_of(*finding_of(LEGACY_EXPOSED))
    op = render_disable(plan_for_legacy(), record=record_document(record))
    assert op is not None
    assert op.value("record") == record_document(record)
    text = script_of(op)
    assert f"set -- {shlex.quote('record=' + record_document(record))} " in text
    assert 'run write-revert-record write_record "$RG_record"' in text
    assert "umask 077" in text
    assert f"mv -f {RECORD_FILE}.tmp {RECORD_FILE}" in text


def test_the_record_is_read_back_from_the_revert_probe() -> None:
    doc = record_document(record_of(*finding_of(LEGACY_EXPOSED)))
    output = probe_text(LEGACY_FIXED) + f"revert.record.kind=file\nrevert.record.hex={hx(doc)}\n"
    assert server_record(output) == json.loads(doc)["before"]
    assert server_record(probe_text(LEGACY_FIXED) + "revert.record.kind=missing\n") is None
    with pytest.raises(InvalidInput):
        server_record(f"revert.record.kind=file\nrevert.record.hex={hx('{}')}\n")


def test_a_record_file_picks_the_last_fix_line_of_that_server() -> None:
    lines = [json.dumps({"host": "web1", "address": "203.0.113.10", "mode": "fix", "before": {"n": 1}}),
             json.dumps({"host": "web2", "address": "203.0.113.20", "mode": "fix", "before": {"n": 2}}),
             json.dumps({"host": "web1", "address": "203.0.113.10", "mode": "audit", "before": {"n": 3}}),
             json.dumps({"host": "web1", "address": "203.0.113.10", "mode": "fix", "before": {"n": 4}})]
    assert before_from_results(lines, "web1", "x") == {"n": 4}
    assert before_from_results(lines, "x", "203.0.113.20") == {"n": 2}
    assert before_from_results(lines, "web3", "203.0.113.30") is None


# --- the plan and the script ------------------------------------------------------------------

def test_a_legacy_revert_enables_antirelayd_restores_both_lists_and_restarts_exim_once() -> None:
    record = record_of(*finding_of(LEGACY_EXPOSED))
    plan = plan_revert(record, *finding_of(LEGACY_FIXED))
    assert [s.name for s in plan.steps] == [StepName.ENABLE_ANTIRELAYD, StepName.RESTORE_RELAYHOSTS,
                                            StepName.RESTORE_RELAYHOSTSUSERS, StepName.UPDATE_EXIM_REJECTS,
                                            StepName.RESTART_EXIM]
    assert (plan.verify_ip, plan.temporary_ip) == ("198.51.100.9", False)
    op = render_revert(plan)
    assert op.args == (("enable_antirelayd", "1"), ("restore_relayhosts", "198.51.100.9"),
                       ("restore_relayhosts", "10.0.0.5"), ("restore_relayhostsusers", "198.51.100.9 carol"),
                       ("restore_relayhostsusers", "10.0.0.5 dave"), ("update_exim_rejects", "1"),
                       ("restart_exim", "1"), ("relay_list", "relayhosts"), ("ip", "198.51.100.9"),
                       ("sender", plan.verify_sender))
    text = script_of(op)
    assert (
        'if [ -n "$RG_enable_antirelayd" ]; then\n'
        "if [ -x /usr/local/cpanel/bin/tailwatchd ] && run enable-antirelayd /usr/local/cpanel/bin/tailwatchd "
        "--enable=Cpanel::TailWatch::Antirelayd; then :; else\n"
        "  run unset-skipantirelayd unset_skipantirelayd\n"
        "  run restart-tailwatchd /usr/local/cpanel/scripts/restartsrv_tailwatchd\n"
        "fi\nfi\n"
    ) in text
    assert ('if [ -f "$RG_D/restore_relayhosts" ]; then run restore-relayhosts copy_list /etc/relayhosts '
            '"$RG_D/restore_relayhosts"; fi\n') in text
    assert text.count("restartsrv_exim; then") == 1
    assert '| run relay-probe /usr/sbin/exim -bh "$RG_ip"\n' in text
    assert text.endswith("kv scan.end 1\n")


def test_a_modern_revert_turns_the_tweak_back_on_and_leaves_the_live_lists_alone() -> None:
    record = record_of(*finding_of(MODERN_EXPOSED))
    plan = plan_revert(record, *finding_of(MODERN_COMPLIANT))
    assert [s.name for s in plan.steps] == [StepName.SET_TWEAK_ON, StepName.UPDATE_EXIM_REJECTS,
                                            StepName.RESTART_EXIM]
    assert plan.restored == ()
    op = render_revert(plan)
    assert op.value("set_tweak_on") == "1"
    assert ("run set-tweak-popbeforesmtp-1 /usr/local/cpanel/bin/whmapi1 --output=json set_tweaksetting "
            "key=popbeforesmtp value=1; fi\n") in script_of(op)


def test_a_modern_revert_re_enables_a_tracker_the_fix_disabled_and_refills_its_lists() -> None:
    record = record_of(*finding_of(MODERN_EXPOSED))
    disabled = {**MODERN_COMPLIANT, "cfg.skiprecentauthedmailiptracker": "1",
                "list.recent_authed_mail_ips.hex": "", "list.recent_authed_mail_ips_users.hex": ""}
    plan = plan_revert(record, *finding_of(disabled))
    assert [s.name for s in plan.steps][:4] == [StepName.SET_TWEAK_ON, StepName.ENABLE_TRACKER,
                                                StepName.RESTORE_RECENT_AUTHED_MAIL_IPS,
                                                StepName.RESTORE_RECENT_AUTHED_MAIL_IPS_USERS]
    op = render_revert(plan)
    assert op.values("restore_recent_authed_mail_ips") == ("203.0.113.7", '"2001:db8::7"')
    assert """'restore_recent_authed_mail_ips="2001:db8::7"'""" in script_of(op)


def test_a_server_already_in_its_recorded_state_is_only_verified() -> None:
    record = record_of(*finding_of(LEGACY_EXPOSED))
    plan = plan_revert(record, *finding_of(LEGACY_EXPOSED))
    assert plan.empty
    op = render_revert(plan)
    assert {key for key, _ in op.args} == {"relay_list", "ip", "sender"}


def test_without_a_recorded_relay_address_the_proof_uses_a_documentation_address_and_removes_it() -> None:
    record = record_from({"generation": "legacy", "antirelayd_active": True, "lists": {}})
    plan = plan_revert(record, *finding_of(LEGACY_COMPLIANT))
    assert (plan.verify_ip, plan.temporary_ip) == ("192.0.2.1", True)
    op = render_revert(plan)
    assert (op.value("temporary_ip"), op.value("ip"), op.value("relay_list")) == ("1", "192.0.2.1", "relayhosts")
    text = script_of(op)
    assert "  relayhosts) rg_rl=/etc/relayhosts ;;\n" in text
    add = text.index('run add-probe-ip append_line "$rg_rl" "$RG_ip"')
    probe = text.index("run relay-probe")
    drop = text.index('run remove-probe-ip drop_line "$rg_rl" "$RG_ip"')
    assert add < probe < drop


# --- the verdict ------------------------------------------------------------------------------

def legacy_plan() -> tuple[RevertPlan, Assessment]:
    record = record_of(*finding_of(LEGACY_EXPOSED))
    finding, now = finding_of(LEGACY_FIXED)
    return plan_revert(record, finding, now), now


def verdict(steps: list[StepResult], after: dict[str, str] = LEGACY_EXPOSED, code: int | None = 250,
            banner: int | None = 220) -> Verdict:
    plan, now = legacy_plan()
    after_finding, after_assessment = finding_of(after)
    return revert_verdict(plan, now, steps, after_finding, after_assessment, relay_code=code, smtp_banner=banner)


RESTORED = [step(StepName.ENABLE_ANTIRELAYD), step(StepName.RESTORE_RELAYHOSTS),
            step(StepName.RESTORE_RELAYHOSTSUSERS), *exim_ok()]


def test_a_revert_with_its_state_back_and_relaying_accepted_is_reverted() -> None:
    result = verdict(RESTORED)
    assert (result.outcome, result.reason, result.exposed_after) == (Outcome.REVERTED, "", True)


@pytest.mark.parametrize(("steps", "after", "code", "banner", "reason"), [
    ([step(StepName.ENABLE_ANTIRELAYD, 2), step(StepName.UNSET_SKIPANTIRELAYD, 1), *RESTORED[1:]],
     LEGACY_EXPOSED, 250, 220, "antirelayd-enable-failed"),
    ([*RESTORED[:1], step(StepName.RESTORE_RELAYHOSTS, 1), *RESTORED[2:]], LEGACY_EXPOSED, 250, 220,
     "relay-list-restore-failed"),
    (RESTORED, LEGACY_EXPOSED, 250, None, "exim-restart-failed"),
    (RESTORED, LEGACY_FIXED, 250, 220, "antirelayd-still-inactive"),
    (RESTORED, {**LEGACY_EXPOSED, "list.relayhosts.hex": hx("10.0.0.5\n")}, 250, 220, "relay-list-not-restored"),
    (RESTORED, LEGACY_EXPOSED, 550, 220, "relay-probe-refused"),
    (RESTORED, LEGACY_EXPOSED, None, 220, "relay-probe-inconclusive"),
    (RESTORED, LEGACY_EXPOSED, 451, 220, "relay-probe-deferred"),  # a 4xx is not a refusal
])
def test_a_revert_that_did_not_reopen_relaying_fails_with_its_reason(
        steps: list[StepResult], after: dict[str, str], code: int | None, banner: int | None, reason: str) -> None:
    result = verdict(steps, after, code, banner)
    assert (result.outcome, result.reason) == (Outcome.FAILED, reason)


def test_the_legacy_fallback_counts_when_the_documented_enable_fails() -> None:
    steps = [step(StepName.ENABLE_ANTIRELAYD, 2), step(StepName.UNSET_SKIPANTIRELAYD), *RESTORED[1:]]
    assert verdict(steps).outcome == Outcome.REVERTED


def test_a_refused_tweak_fails_a_modern_revert_with_the_apis_reason() -> None:
    record = record_of(*finding_of(MODERN_EXPOSED))
    finding, now = finding_of(MODERN_COMPLIANT)
    plan = plan_revert(record, finding, now)
    refused = step(StepName.SET_TWEAK_ON, out=json.dumps({"metadata": {"result": 0, "reason": "locked"}}))
    after_finding, after = finding_of(MODERN_COMPLIANT)
    result = revert_verdict(plan, now, [refused, *exim_ok()], after_finding, after, relay_code=550, smtp_banner=220)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "whmapi1-refused: locked")
    ok = revert_verdict(plan, now, [tweak_ok(), *exim_ok()], *finding_of(MODERN_EXPOSED), relay_code=250,
                        smtp_banner=220)
    assert ok.outcome == Outcome.REVERTED


def test_the_revert_scripts_step_markers_parse_back_in_order() -> None:
    output = "".join(step_text(n, 0) for n in ("enable-antirelayd", "restore-relayhosts", "restart-exim"))
    assert [s.name for s in parse_steps(output)] == ["enable-antirelayd", "restore-relayhosts", "restart-exim"]


def test_a_failed_record_write_is_a_warning_of_the_fix() -> None:
    assert record_warnings([step(StepName.WRITE_RECORD, 1)]) == ("revert-record-not-written",)
    assert record_warnings([step(StepName.WRITE_RECORD, 0)]) == ()
