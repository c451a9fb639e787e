"""A job's outcome, reason and warnings follow from what it observed, judged with plain data (no SSH)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

import pytest
from relayguard.domain.decide import assess
from relayguard.domain.models import Finding, Generation, ListFile, Mode, Outcome, Plan, Policy, StepName, StepResult
from relayguard.domain.proof import PostFixProof
from relayguard.domain.verdict import (
    Verdict,
    disable_refusal,
    disable_verdict,
    fix_verdict,
    probe_verdict,
    verdict_before_fix,
)

EXIM_UP = "exim (/usr/sbin/exim -bd -q1h) is running as mailnull with PID 812"
CPANEL_REFUSAL = ("Please turn on SMTP Authentication in your mail client. [203.0.113.7] "
                  "is not permitted to relay through this server without authentication.")

MODERN_OPEN = Finding(complete=True, uid=0, version_present=True, version="11.120.0.16", libexec_tailwatchd=True,
                      tracker_module=True, gate_file=True, config={"popbeforesmtp": "1"}, exim_status_rc=0)
MODERN_CLOSED = replace(MODERN_OPEN, gate_file=False, config={"popbeforesmtp": "0"})
LEGACY_OPEN = Finding(complete=True, uid=0, version_present=True, version="11.40.1.3", bin_tailwatchd=True,
                      antirelayd_module=True, exim_status_rc=0)
MODERN_PLAN = Plan(Generation.MODERN, True, verify_ip="203.0.113.7", verify_sender="relayguard-probe@example.com")
LEGACY_PLAN = replace(MODERN_PLAN, generation=Generation.LEGACY)
FIX = Policy(mode=Mode.FIX)
AUDIT = Policy(mode=Mode.AUDIT)


def step(name: str, rc: int | None = 0, stdout: str = "", stderr: str = "") -> StepResult:
    return StepResult(name=name, rc=rc, duration=0.5, stdout=stdout, stderr=stderr)


def whmapi1(result: int, reason: str = "OK") -> str:
    return json.dumps({"metadata": {"command": "set_tweaksetting", "result": result, "reason": reason}})


FINISHED = (step(StepName.UPDATE_EXIM_REJECTS), step(StepName.RESTART_EXIM), step(StepName.EXIM_STATUS, stdout=EXIM_UP))


def finished(before: Finding = MODERN_OPEN, after: Finding = MODERN_CLOSED, *, steps: Sequence[StepResult] = FINISHED,
             code: int | None = 550, reply: str = f"550 {CPANEL_REFUSAL}", banner: int | None = 220,
             proof: PostFixProof | None = None) -> Verdict:
    return fix_verdict(assess(before), steps, after, assess(after), relay_code=code, relay_reply=reply,
                       smtp_banner=banner, proof=proof)


#: What the post-fix proof sees on a server the fix left working.
HEALTHY = PostFixProof(ports=(25, 465, 587), auth_advertised={587: True, 465: True}, authenticated_relay=250,
                       unauthenticated_relay=550, alwaysrelay={"192.0.2.77": 250})


# --- probe_verdict -----------------------------------------------------------------------------

def test_a_complete_probe_leaves_the_verdict_open() -> None:
    assert probe_verdict(MODERN_OPEN, "") is None


@pytest.mark.parametrize("stderr", ["sudo: a password is required\n",
                                    "relay is not in the sudoers file.  This incident will be reported.\n"])
def test_sudo_refusing_to_run_the_probe_is_permission_denied(stderr: str) -> None:
    assert probe_verdict(Finding(complete=False), stderr) == Verdict(Outcome.PERMISSION_DENIED, "sudo -n refused")


def test_a_probe_cut_short_fails_as_incomplete() -> None:
    assert probe_verdict(Finding(complete=False), "Connection reset\n") == Verdict(Outcome.FAILED, "probe-incomplete")


# --- verdict_before_fix ------------------------------------------------------------------------

def test_a_server_without_cpanel_is_not_cpanel_with_no_reason() -> None:
    server = Finding(complete=True, uid=0)
    assert verdict_before_fix(server, assess(server), FIX) == Verdict(Outcome.NOT_CPANEL)


def test_a_version_contradicting_the_paths_fails_as_unknown_generation() -> None:
    confused = replace(LEGACY_OPEN, version="11.120.0.16")
    verdict = verdict_before_fix(confused, assess(confused), FIX)
    assert verdict is not None
    assert (verdict.outcome, verdict.reason) == (Outcome.FAILED, "unknown-generation")


def test_a_non_root_login_is_permission_denied_even_on_an_exposed_server() -> None:
    user = replace(MODERN_OPEN, uid=1000)
    verdict = verdict_before_fix(user, assess(user), FIX)
    assert verdict is not None
    assert verdict.outcome == Outcome.PERMISSION_DENIED
    assert verdict.reason == "logged in as uid 1000; cPanel tools need root (use sudo)"


def test_a_closed_gate_is_compliant_and_stays_closed_with_the_warnings_of_the_assessment() -> None:
    # GIVEN a closed modern server whose admin keeps an alwaysrelay exception
    exception = ListFile("/etc/alwaysrelay", "file", lines=("10.0.0.5",))
    closed = replace(MODERN_CLOSED, exceptions={"alwaysrelay": exception})
    # WHEN judging it before any change, even under a fix policy
    verdict = verdict_before_fix(closed, assess(closed), FIX)
    # THEN it is compliant, known to be closed after the job, and the warning travels with it
    assert verdict == Verdict(Outcome.COMPLIANT, warnings=("admin-exception:alwaysrelay",), exposed_after=False)


def test_an_audit_of_an_open_gate_is_noncompliant_and_still_exposed() -> None:
    verdict = verdict_before_fix(MODERN_OPEN, assess(MODERN_OPEN), AUDIT)
    assert verdict == Verdict(Outcome.NONCOMPLIANT, exposed_after=True)


def test_a_fix_of_an_open_gate_leaves_the_verdict_to_the_fix() -> None:
    assert verdict_before_fix(MODERN_OPEN, assess(MODERN_OPEN), FIX) is None
    assert verdict_before_fix(LEGACY_OPEN, assess(LEGACY_OPEN), FIX) is None


# --- disable_refusal / disable_verdict ---------------------------------------------------------

def test_whmapi1_accepting_the_tweak_and_the_gate_file_gone_is_no_refusal() -> None:
    steps = [step(StepName.SET_TWEAK, stdout=whmapi1(1))]
    assert disable_refusal(MODERN_PLAN, steps, "file.popbeforesmtp=0\n") == ""
    assert disable_verdict(MODERN_PLAN, assess(MODERN_OPEN), steps, "file.popbeforesmtp=0\n") is None


@pytest.mark.parametrize(("tweak", "reason"), [
    (step(StepName.SET_TWEAK, stdout=whmapi1(0, "Permission denied")), "whmapi1-refused: Permission denied"),
    (step(StepName.SET_TWEAK, rc=255, stdout="not json", stderr="whmapi1: not found\n"),
     "whmapi1-refused: whmapi1: not found"),
    (step(StepName.SET_TWEAK, rc=2), "whmapi1-refused: rc=2"),
])
def test_whmapi1_refusing_the_tweak_names_whms_reason(tweak: StepResult, reason: str) -> None:
    assert disable_refusal(MODERN_PLAN, [tweak], "file.popbeforesmtp=1\n") == reason


def test_the_gate_file_surviving_an_accepted_tweak_is_a_refusal() -> None:
    steps = [step(StepName.SET_TWEAK, stdout=whmapi1(1))]
    assert disable_refusal(MODERN_PLAN, steps, "scan.schema=1\nfile.popbeforesmtp=1\n") == "gate-file-still-present"


@pytest.mark.parametrize(("steps", "reason"), [
    ([step(StepName.DISABLE_ANTIRELAYD)], ""),
    ([step(StepName.DISABLE_ANTIRELAYD, rc=255), step(StepName.SET_SKIPANTIRELAYD)], ""),
    ([step(StepName.DISABLE_ANTIRELAYD, rc=255), step(StepName.SET_SKIPANTIRELAYD, rc=1)], "antirelayd-disable-failed"),
    ([], "antirelayd-disable-failed"),
])
def test_legacy_needs_the_driver_disabled_or_its_skip_key_set(steps: list[StepResult], reason: str) -> None:
    assert disable_refusal(LEGACY_PLAN, steps, "") == reason


def test_a_refused_disable_fails_the_job_with_the_warnings_found_before() -> None:
    before = assess(replace(MODERN_OPEN, exim_status_rc=1))
    verdict = disable_verdict(MODERN_PLAN, before, [step(StepName.SET_TWEAK, rc=1)], "")
    assert verdict == Verdict(Outcome.FAILED, "whmapi1-refused: rc=1", ("exim-down-before-run",))


# --- fix_verdict -------------------------------------------------------------------------------

def test_exim_up_the_gate_closed_and_relaying_refused_is_remediated() -> None:
    assert finished() == Verdict(Outcome.REMEDIATED, "", (), exposed_after=False)


def test_a_5xx_without_cpanels_refusal_text_still_remediates_but_warns() -> None:
    verdict = finished(reply="550 relay not permitted")
    assert (verdict.outcome, verdict.warnings) == (Outcome.REMEDIATED, ("unexpected-reject-text",))


@pytest.mark.parametrize(("steps", "banner"), [
    (FINISHED, None),
    ((*FINISHED[:2], step(StepName.EXIM_STATUS, rc=1, stdout="exim is not running")), 220),
    (FINISHED[:2], 220),
])
def test_exim_not_confirmed_up_after_the_restart_fails_the_fix(steps: Sequence[StepResult], banner: int | None) -> None:
    verdict = finished(steps=steps, banner=banner)
    assert (verdict.outcome, verdict.reason, verdict.exposed_after) == (Outcome.FAILED, "exim-restart-failed", False)


def test_exim_down_before_the_run_is_not_blamed_on_the_fix() -> None:
    verdict = finished(before=replace(MODERN_OPEN, exim_status_rc=3), banner=None)
    assert (verdict.outcome, verdict.reason) == (Outcome.FAILED, "exim-down-before-run")
    assert verdict.warnings == ("exim-down-before-run",)


def test_a_gate_still_open_after_the_fix_fails_as_still_exposed() -> None:
    verdict = finished(after=MODERN_OPEN)
    assert verdict == Verdict(Outcome.FAILED, "still-exposed", (), exposed_after=True)


def test_an_unreadable_re_probe_fails_as_still_exposed_with_exposure_unknown() -> None:
    verdict = finished(after=Finding(complete=False))
    assert verdict == Verdict(Outcome.FAILED, "still-exposed", (), exposed_after=None)


@pytest.mark.parametrize(("code", "reason"), [(250, "relay-probe-accepted"), (None, "relay-probe-inconclusive")])
def test_a_relay_probe_that_is_not_refused_fails_the_fix(code: int | None, reason: str) -> None:
    verdict = finished(code=code, reply="" if code is None else "250 Accepted")
    assert (verdict.outcome, verdict.reason, verdict.exposed_after) == (Outcome.FAILED, reason, False)


@pytest.mark.parametrize("code", [421, 450, 451, 452])
def test_a_4xx_relay_probe_is_deferred_neither_accepted_nor_refused(code: int) -> None:
    # GIVEN a fix whose relay probe got a temporary answer, with everything else proven
    verdict = finished(code=code, reply=f"{code} Temporary local problem - please try later", proof=HEALTHY)
    # THEN it is not remediated (refusal is unproven) and not "accepted" either: its own reason
    assert (verdict.outcome, verdict.reason) == (Outcome.FAILED, "relay-probe-deferred")
    assert "unexpected-reject-text" not in verdict.warnings


def test_a_fix_with_a_healthy_post_fix_proof_is_remediated() -> None:
    assert finished(proof=HEALTHY) == Verdict(Outcome.REMEDIATED, "", (), exposed_after=False)


def test_lost_auth_after_the_change_fails_the_fix_as_auth_submission_broken() -> None:
    proof = replace(HEALTHY, auth_advertised={587: False, 465: True}, authenticated_relay=550)
    verdict = finished(proof=proof)
    assert (verdict.outcome, verdict.reason) == (
        Outcome.FAILED, "auth-submission-broken: no AUTH on 587; authenticated relay refused (550)")


def test_an_alwaysrelay_address_refused_after_the_change_fails_the_fix_naming_it() -> None:
    proof = replace(HEALTHY, alwaysrelay={"192.0.2.77": 550, "192.0.2.78": 250, "192.0.2.79": 550})
    verdict = finished(proof=proof)
    assert (verdict.outcome, verdict.reason) == (Outcome.FAILED, "alwaysrelay-broken: 192.0.2.77, 192.0.2.79")


def test_the_relay_probe_and_a_failed_restart_come_before_the_post_fix_proof() -> None:
    broken = replace(HEALTHY, auth_advertised={587: False})
    assert finished(code=250, reply="250 Accepted", proof=broken).reason == "relay-probe-accepted"
    assert finished(banner=None, proof=broken).reason == "exim-restart-failed"


def test_an_inconclusive_post_fix_check_is_a_warning_not_a_failure() -> None:
    proof = replace(HEALTHY, auth_advertised={587: None}, alwaysrelay={"192.0.2.77": 451})
    verdict = finished(proof=proof)
    assert verdict.outcome == Outcome.REMEDIATED
    assert verdict.warnings == ("post-fix-auth-inconclusive:587", "post-fix-alwaysrelay-inconclusive:192.0.2.77")
