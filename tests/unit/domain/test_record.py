"""The record keeps the facts a reviewer compares and the commands that undo a fix, built from plain data."""

from __future__ import annotations

from relayguard.domain.bounds import OUTPUT_LIMIT
from relayguard.domain.decide import assess
from relayguard.domain.models import Finding, Generation, ListFile, Plan, StepName, StepResult
from relayguard.domain.record import (
    exim_restart_attempts,
    exim_restarts,
    relay_probe_record,
    revert_of,
    state_of,
)

LEGACY = Finding(
    complete=True, uid=0, version_present=True, version="11.40.1.3", bin_tailwatchd=True, antirelayd_module=True,
    exim_status_rc=0, exim_status="x" * (OUTPUT_LIMIT + 10), exim_bv_rc=0, queue=3,
    lists={"relayhosts": ListFile("/etc/relayhosts", "file", lines=("198.51.100.9", "# old", "10.0.0.5")),
           "relayhostsusers": ListFile("/etc/relayhostsusers", "file", lines=("198.51.100.9 carol",))},
    exceptions={"alwaysrelay": ListFile("/etc/alwaysrelay", "missing"),
                "trustedmailhosts": ListFile("/etc/trustedmailhosts", "file", lines=("10.0.0.5",))},
)
MODERN_PLAN = Plan(Generation.MODERN, True, verify_ip="203.0.113.7", verify_sender="relayguard-probe@example.com")


def step(name: str, rc: int = 0) -> StepResult:
    return StepResult(name=name, rc=rc, duration=1.0)


def test_the_state_keeps_judgements_entries_and_the_whole_status_but_not_missing_exceptions() -> None:
    state = state_of(LEGACY, assess(LEGACY))
    assert (state["generation"], state["exposed"], state["antirelayd_active"]) == ("legacy", True, True)
    assert state["lists"]["relayhosts"] == {"kind": "file", "target": "", "entries": ["198.51.100.9", "10.0.0.5"]}
    assert state["exceptions"] == {"trustedmailhosts": ["10.0.0.5"]}
    assert state["exim_status"] == "x" * (OUTPUT_LIMIT + 10)  # whole: only bounded views clip it
    assert (state["exim_running"], state["exim_config_ok"], state["queue"]) == (True, True, 3)


def test_the_hard_retry_is_a_second_attempt_but_only_a_successful_restart_counts_as_one() -> None:
    retried = [step(StepName.RESTART_EXIM, rc=1), step(StepName.RESTART_EXIM_HARD)]
    assert (exim_restart_attempts(retried), exim_restarts(retried)) == (2, 1)
    failed = [step(StepName.RESTART_EXIM, rc=1), step(StepName.RESTART_EXIM_HARD, rc=1)]
    assert (exim_restart_attempts(failed), exim_restarts(failed)) == (2, 0)
    untouched = [step(StepName.UPDATE_EXIM_REJECTS), step(StepName.EXIM_STATUS)]
    assert (exim_restart_attempts(untouched), exim_restarts(untouched)) == (0, 0)


def test_the_relay_probe_record_names_the_probed_ip_sender_reply_and_greeting() -> None:
    assert relay_probe_record(MODERN_PLAN, 550, "550 denied", 220) == {
        "ip": "203.0.113.7", "sender": "relayguard-probe@example.com", "code": 550, "reply": "550 denied",
        "verdict": "refused", "smtp_banner": 220,
    }


def test_a_deferred_relay_probe_is_recorded_inconclusive_never_accepted_or_refused() -> None:
    assert relay_probe_record(MODERN_PLAN, 451, "451 try later", 220)["verdict"] == "inconclusive"
    assert relay_probe_record(MODERN_PLAN, None, "", 220)["verdict"] == "inconclusive"
    assert relay_probe_record(MODERN_PLAN, 250, "250 Accepted", 220)["verdict"] == "accepted"


def test_a_legacy_revert_restores_the_former_lists() -> None:
    plan = Plan(Generation.LEGACY, True, verify_ip="198.51.100.9", verify_sender="relayguard-probe@example.org")
    revert = revert_of(plan, LEGACY, assess(LEGACY), [step(StepName.DISABLE_ANTIRELAYD)])
    assert "printf '%s\\n' 198.51.100.9 10.0.0.5 > /etc/relayhosts" in revert
    assert "printf '%s\\n' '198.51.100.9 carol' > /etc/relayhostsusers" in revert


def test_a_modern_revert_re_enables_the_tracker_only_when_the_fix_disabled_it() -> None:
    finding = Finding(complete=True, version_present=True, version="11.120.0.16", gate_file=True)
    tracker_on = "/usr/local/cpanel/libexec/tailwatchd --enable=Cpanel::TailWatch::RecentAuthedMailIpTracker"
    kept = revert_of(MODERN_PLAN, finding, assess(finding), [step(StepName.DISABLE_TRACKER, rc=1)])
    disabled = revert_of(MODERN_PLAN, finding, assess(finding), [step(StepName.DISABLE_TRACKER)])
    assert tracker_on not in kept
    assert tracker_on in disabled
    assert kept[0] == "/usr/local/cpanel/bin/whmapi1 --output=json set_tweaksetting key=popbeforesmtp value=1"
