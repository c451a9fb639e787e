"""The engine runs probe → decide → fix → verify through fake ports and records one outcome per server."""

from __future__ import annotations

import json
import time

import pytest
from relayguard.domain.decide import assess, decide
from relayguard.domain.entry import PROBE
from relayguard.domain.models import Mode, Outcome, Policy
from relayguard.domain.probe import PROBE_SCRIPT, parse_probe
from relayguard.domain.revert import record_document, record_of
from relayguard.domain.rollout import Admission, Decision, SkipReason
from relayguard.domain.script import render_disable, render_finish
from relayguard.domain.server import Server
from relayguard.engine import FIX_TIMEOUT_FACTOR, Engine, ServerResult
from relayguard.errors import (
    AuthFailed,
    FixDeferred,
    HostKeyMismatch,
    HostKeyUnknown,
    Timeout,
    TransportError,
    Unreachable,
)

from tests.fakes import FakeBannerCheck, FakeConnector, FakeGate, FakeSession, ok
from tests.unit.samples import (
    EHLO_WITHOUT_AUTH,
    EXIM_UP,
    LEGACY_EXPOSED,
    MODERN_COMPLIANT,
    MODERN_EXPOSED,
    NOT_CPANEL,
    RELAY_ACCEPTED,
    RELAY_REFUSED,
    UNKNOWN_GENERATION,
    hx,
    probe_text,
    proof_steps,
    rcpt_dialogue,
    step_text,
)

WEB1 = Server(name="web1", host="203.0.113.10")
FIX = Policy(mode=Mode.FIX)
AUDIT = Policy(mode=Mode.AUDIT)
TWEAK = "set-tweak-popbeforesmtp-0"


def whmapi1(result: int, reason: str) -> str:
    return json.dumps({"data": {}, "metadata": {"command": "set_tweaksetting", "result": result,
                                                "reason": reason, "version": 1}})


def disable_output(result: int = 1, reason: str = "OK", gate: str = "0") -> str:
    return f"scan.schema=1\n{step_text(TWEAK, 0, out=whmapi1(result, reason))}file.popbeforesmtp={gate}\nscan.end=1\n"


def finish_output(reply: str = RELAY_REFUSED, after: dict[str, str] = MODERN_COMPLIANT, *,
                  restarts: str = step_text("restart-exim", 0), proof: str = proof_steps()) -> str:
    return (
        step_text("update-exim-rejects", 0)
        + restarts
        + step_text("exim-status", 0, out=EXIM_UP + "\n")
        + step_text("exim-bv", 0, out="Exim version 4.98 #2\nConfiguration file is /etc/exim.conf\n")
        + step_text("relay-probe", 0, out=reply)
        + proof
        + probe_text(after)
    )


def run(session: FakeSession, policy: Policy = FIX, banner: int | None = 220) -> ServerResult:
    engine = Engine(FakeConnector(session), FakeBannerCheck(banner), timeout=42.0)
    return engine.run(WEB1, policy)


@pytest.mark.parametrize(("error", "outcome"), [
    (Unreachable("connect refused"), Outcome.UNREACHABLE),
    (Timeout("banner timed out"), Outcome.TIMEOUT),
    (HostKeyMismatch("key changed"), Outcome.HOST_KEY_MISMATCH),
    (HostKeyUnknown("no pinned key"), Outcome.HOST_KEY_UNKNOWN),
    (AuthFailed("key refused"), Outcome.AUTH_FAILED),
])
def test_a_transport_error_becomes_its_outcome_and_no_script_runs(error: TransportError, outcome: Outcome) -> None:
    # GIVEN a connector that fails with a transport leaf
    connector = FakeConnector(error=error)
    # WHEN the engine runs the job
    result = Engine(connector, FakeBannerCheck()).run(WEB1, FIX)
    # THEN the outcome is the leaf's and nothing was sent
    assert (result.outcome, result.reason) == (outcome, str(error))
    assert connector.targets == [WEB1]
    assert connector.session.scripts == []


def test_an_incomplete_probe_fails_the_job() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED, end=False))])
    result = run(session)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "probe-incomplete")
    assert session.scripts == [PROBE_SCRIPT]
    assert session.closed


def test_sudo_refusing_without_a_password_is_permission_denied() -> None:
    session = FakeSession([ok("", "sudo: a password is required\n", rc=1)])
    assert run(session).outcome == Outcome.PERMISSION_DENIED


def test_a_non_root_login_is_permission_denied_before_any_change() -> None:
    session = FakeSession([ok(probe_text({**MODERN_EXPOSED, "id.uid": "1000"}))])
    result = run(session)
    assert result.outcome == Outcome.PERMISSION_DENIED
    assert "uid 1000" in result.reason
    assert session.scripts == [PROBE_SCRIPT]


def test_a_server_without_cpanel_only_gets_the_probe() -> None:
    session = FakeSession([ok(probe_text(NOT_CPANEL))])
    assert run(session).outcome == Outcome.NOT_CPANEL
    assert session.scripts == [PROBE_SCRIPT]
    session.assert_all_consumed()


def test_an_unknown_generation_fails_without_a_change() -> None:
    session = FakeSession([ok(probe_text(UNKNOWN_GENERATION))])
    result = run(session)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "unknown-generation")
    assert session.scripts == [PROBE_SCRIPT]


def test_a_compliant_server_only_gets_the_probe() -> None:
    session = FakeSession([ok(probe_text(MODERN_COMPLIANT))])
    result = run(session)
    assert (result.outcome, result.exposed_before, result.exposed_after) == (Outcome.COMPLIANT, False, False)
    assert session.scripts == [PROBE_SCRIPT]
    assert not result.restarted


def test_an_audit_of_an_exposed_server_reports_noncompliant_and_changes_nothing() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED))])
    result = run(session, AUDIT)
    assert (result.outcome, result.exposed_before) == (Outcome.NONCOMPLIANT, True)
    assert result.affected_mailboxes == ["alice@example.com", "bob@example.com"]
    assert session.scripts == [PROBE_SCRIPT]


def test_an_audit_reports_the_plan_a_fix_would_run_and_the_fix_reports_and_runs_the_same() -> None:
    # GIVEN an exposed modern server, audited and then fixed
    audit_session = FakeSession([ok(probe_text(MODERN_EXPOSED))])
    audit = run(audit_session, AUDIT)
    fix = run(FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output())]))
    # THEN the audit names the fix's steps while running only the probe, and the fix carries the same plan
    assert audit.plan == ["set popbeforesmtp=0", "run update_exim_rejects", "restart exim"]
    assert audit_session.scripts == [PROBE_SCRIPT]
    assert fix.outcome == Outcome.REMEDIATED
    assert fix.plan == audit.plan
    assert audit.to_json()["plan"] == audit.plan


def test_a_compliant_server_has_no_plan_and_reports_its_spam_signals() -> None:
    facts = {**MODERN_COMPLIANT, "signals.since": "2026-12-01 02:00:00", "signals.send_limit": "2",
             "signals.relay_reject": "7", "signals.partial": "0"}
    result = run(FakeSession([ok(probe_text(facts))]))
    assert result.plan == []
    assert result.to_json()["signals"] == {"window_minutes": 60, "since": "2026-12-01 02:00:00", "queue": 3,
                                           "send_limit_hits": 2, "relay_rejects": 7, "partial": False}


def test_a_job_whose_probe_did_not_finish_has_no_signals() -> None:
    result = run(FakeSession([ok(probe_text(MODERN_EXPOSED, end=False))]))
    assert (result.outcome, result.signals, result.plan) == (Outcome.FAILED, None, [])


def test_whmapi1_refusing_the_tweak_fails_the_job_before_the_finish_script() -> None:
    # GIVEN whmapi1 answers result 0 inside a zero exit status
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)),
                           ok(disable_output(result=0, reason="Permission denied", gate="1"))])
    # WHEN fixing
    result = run(session)
    # THEN the job fails on the API's verdict and the finish script is never sent
    assert result.outcome == Outcome.FAILED
    assert result.reason.startswith("whmapi1-refused")
    assert result.reason == "whmapi1-refused: Permission denied"
    assert len(session.scripts) == 2
    assert not any("relay-probe" in s for s in session.scripts)
    assert not result.restarted
    session.assert_all_consumed()


def test_the_gate_file_surviving_the_tweak_fails_the_job() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output(gate="1"))])
    result = run(session)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "gate-file-still-present")
    assert len(session.scripts) == 2


def test_a_full_modern_fix_closes_the_gate_restarts_exim_once_and_proves_refusal() -> None:
    # GIVEN an exposed modern server whose tools all succeed
    finding = parse_probe(probe_text(MODERN_EXPOSED))
    plan = decide(finding, assess(finding), FIX)
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output())])
    banner = FakeBannerCheck(220)
    # WHEN fixing
    result = Engine(FakeConnector(session), banner, timeout=42.0).run(WEB1, FIX)
    # THEN the server is remediated with one Exim restart, and the scripts were exactly the rendered ones
    assert result.outcome == Outcome.REMEDIATED, result.reason
    assert (result.restarted, result.exim_restarts, result.exim_restart_attempts) == (True, 1, 1)
    assert (result.exposed_before, result.exposed_after) == (True, False)
    assert result.warnings == []  # the post-fix proof found nothing inconclusive
    assert result.post_fix["auth_advertised"] == {"587": True, "465": True}
    # the revert record goes out with the first changing script, before anything changes
    record = record_document(record_of(finding, assess(finding)))
    assert session.operations == [PROBE, render_disable(plan, record=record), render_finish(plan)]
    assert session.scripts[0] == PROBE_SCRIPT
    assert session.scripts[1].index("run write-revert-record") < session.scripts[1].index("run set-tweak")
    # the read-only probe gets the plain deadline; the changing round trips get FIX_TIMEOUT_FACTOR times it
    assert session.timeouts == [42.0, 42.0 * FIX_TIMEOUT_FACTOR, 42.0 * FIX_TIMEOUT_FACTOR]
    assert result.relay_probe["code"] == 550
    assert result.relay_probe["ip"] == "203.0.113.7"
    assert result.relay_probe["smtp_banner"] == 220
    assert banner.asked == ["203.0.113.10"]
    assert "unexpected-reject-text" not in result.warnings
    assert result.revert[0].endswith("set_tweaksetting key=popbeforesmtp value=1")
    session.assert_all_consumed()
    assert session.closed


def test_a_fix_records_its_post_fix_proof_and_fails_when_auth_submission_broke() -> None:
    # GIVEN a fix after which EHLO no longer offers AUTH and authenticated relay is refused
    proof = proof_steps(ehlo=EHLO_WITHOUT_AUTH, authenticated=RELAY_REFUSED)
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output(proof=proof))])
    # WHEN fixing
    result = run(session)
    # THEN the gate is closed but the job failed with the precise reason, and the record holds the evidence
    assert (result.outcome, result.exposed_after) == (Outcome.FAILED, False)
    assert result.reason == "auth-submission-broken: no AUTH on 587; no AUTH on 465; authenticated relay refused (550)"
    record = result.to_json()
    assert record["post_fix"]["auth_advertised"] == {"587": False, "465": False}
    assert record["post_fix"]["authenticated_relay"]["code"] == 550
    assert record["post_fix"]["unauthenticated_relay"] == {"code": 550, "verdict": "refused"}
    assert record["relay_probe"]["verdict"] == "refused"


def test_every_alwaysrelay_address_is_proven_and_one_refused_fails_the_fix() -> None:
    # GIVEN a server with two admin alwaysrelay addresses, one of which stops relaying after the fix
    before = {**MODERN_EXPOSED, "exc.alwaysrelay.kind": "file",
              "exc.alwaysrelay.hex": hx("192.0.2.77: backups\n127.0.0.1\n198.51.100.4\n")}
    finding = parse_probe(probe_text(before))
    plan = decide(finding, assess(finding), FIX)
    proof = proof_steps(alwaysrelay=(RELAY_ACCEPTED, RELAY_REFUSED))
    session = FakeSession([ok(probe_text(before)), ok(disable_output()), ok(finish_output(proof=proof))])
    # WHEN fixing
    result = run(session)
    # THEN the finish script proved exactly the non-loopback addresses, in file order
    assert session.operations[2] == render_finish(plan, alwaysrelay=("192.0.2.77", "198.51.100.4"))
    assert result.post_fix["alwaysrelay"] == {"192.0.2.77": 250, "198.51.100.4": 550}
    assert result.post_fix["alwaysrelay_not_probed"] == 1
    assert (result.outcome, result.reason) == (Outcome.FAILED, "alwaysrelay-broken: 198.51.100.4")


def test_a_deferred_relay_probe_fails_the_fix_as_deferred_not_accepted() -> None:
    reply = rcpt_dialogue("451 Temporary local problem - please try later")
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output(reply))])
    result = run(session)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "relay-probe-deferred")
    assert (result.relay_probe["code"], result.relay_probe["verdict"]) == (451, "inconclusive")


def test_restarted_counts_only_a_restart_that_succeeded_and_attempts_count_apart() -> None:
    # GIVEN a restart and its --hard retry that both exit non-zero
    failing = step_text("restart-exim", 1) + step_text("restart-exim-hard", 1)
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output(restarts=failing))])
    result = run(session)
    # THEN Exim was not restarted, twice tried
    assert (result.restarted, result.exim_restarts, result.exim_restart_attempts) == (False, 0, 2)
    # AND a --hard retry that works is one restart after two attempts
    retried = step_text("restart-exim", 1) + step_text("restart-exim-hard", 0)
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output(restarts=retried))])
    result = run(session)
    assert (result.restarted, result.exim_restarts, result.exim_restart_attempts) == (True, 1, 2)
    assert result.to_json()["exim_restart_attempts"] == 2


def test_a_550_without_cpanels_text_still_remediates_but_warns() -> None:
    reply = "220 web1 ESMTP\n250 web1 Hello\n250 OK\n550 relay not permitted\n221 bye\n"
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output(reply))])
    result = run(session)
    assert result.outcome == Outcome.REMEDIATED
    assert "unexpected-reject-text" in result.warnings


def test_no_smtp_banner_after_the_restart_fails_the_job() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output())])
    result = run(session, banner=None)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "exim-restart-failed")
    assert result.relay_probe["smtp_banner"] is None


def test_a_relay_probe_that_is_accepted_fails_the_job() -> None:
    reply = "220 web1 ESMTP\n250 web1 Hello\n250 OK\n250 Accepted\n221 bye\n"
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output(reply))])
    result = run(session)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "relay-probe-accepted")


def test_a_still_exposed_server_after_the_fix_fails_the_job() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()),
                           ok(finish_output(after=MODERN_EXPOSED))])
    result = run(session)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "still-exposed")


def test_a_legacy_disable_failing_with_its_fallback_fails_the_job() -> None:
    disable = ("scan.schema=1\n" + step_text("disable-antirelayd", 255, err="Failed to load\n")
               + step_text("set-skipantirelayd", 1) + step_text("restart-tailwatchd", 0) + "scan.end=1\n")
    session = FakeSession([ok(probe_text(LEGACY_EXPOSED)), ok(disable)])
    result = run(session)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "antirelayd-disable-failed")
    session.assert_all_consumed()


def test_exim_down_before_the_run_is_not_blamed_on_the_fix() -> None:
    before = {**MODERN_EXPOSED, "exim.status.rc": "1"}
    session = FakeSession([ok(probe_text(before)), ok(disable_output()), ok(finish_output())])
    result = run(session, banner=None)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "exim-down-before-run")


def test_a_legacy_fix_records_revert_commands_for_the_former_lists() -> None:
    finish = (step_text("truncate-relayhosts", 0) + step_text("restart-exim", 0)
              + step_text("exim-status", 0, out=EXIM_UP) + step_text("relay-probe", 0, out=RELAY_REFUSED)
              + probe_text({**LEGACY_EXPOSED, "cfg.skipantirelayd": "1", "list.relayhosts.hex": "",
                            "list.relayhostsusers.hex": ""}))
    disable = "scan.schema=1\n" + step_text("disable-antirelayd", 0) + "scan.end=1\n"
    session = FakeSession([ok(probe_text(LEGACY_EXPOSED)), ok(disable), ok(finish)])
    result = run(session)
    assert result.outcome == Outcome.REMEDIATED, result.reason
    assert "printf '%s\\n' 198.51.100.9 10.0.0.5 > /etc/relayhosts" in result.revert
    assert "printf '%s\\n' '198.51.100.9 carol' '10.0.0.5 dave' > /etc/relayhostsusers" in result.revert


def test_a_job_deadline_caps_every_round_trip() -> None:
    session = FakeSession([ok(probe_text(MODERN_COMPLIANT))])
    engine = Engine(FakeConnector(session), FakeBannerCheck(), timeout=60.0)
    result = engine.run(WEB1, AUDIT, deadline=time.monotonic() + 5)
    assert result.outcome == Outcome.COMPLIANT
    assert 0 < session.timeouts[0] <= 5


def test_a_passed_deadline_ends_the_job_as_a_timeout_before_the_next_round_trip() -> None:
    session = FakeSession()
    result = Engine(FakeConnector(session), FakeBannerCheck()).run(WEB1, FIX, deadline=time.monotonic() - 1)
    assert result.outcome == Outcome.TIMEOUT
    assert "deadline" in result.reason
    assert session.scripts == []
    assert session.closed


# -- the run's rollout gate ---------------------------------------------------------------------


def gated(session: FakeSession, gate: FakeGate, policy: Policy = FIX) -> ServerResult:
    return Engine(FakeConnector(session), FakeBannerCheck(220), timeout=42.0).run(WEB1, policy, gate=gate)


def test_a_fix_the_gate_skips_changes_nothing_and_reports_the_reason() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED))])
    gate = FakeGate(Admission(Decision.SKIP, SkipReason.ERROR_BUDGET))
    result = gated(session, gate)
    assert (result.outcome, result.reason, result.exposed_before, result.exposed_after) == (
        Outcome.SKIPPED, "error-budget", True, True)
    assert session.scripts == [PROBE_SCRIPT]
    assert (gate.asked, gate.ended) == (["web1"], [])


def test_a_fix_the_gate_holds_raises_deferred_with_nothing_changed_and_the_session_closed() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED))])
    gate = FakeGate(Admission(Decision.WAIT))
    with pytest.raises(FixDeferred):
        gated(session, gate)
    assert session.scripts == [PROBE_SCRIPT]
    assert session.closed
    assert gate.ended == []


def test_an_admitted_fix_tells_the_gate_how_it_ended_once() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), ok(disable_output()), ok(finish_output())])
    gate = FakeGate(Admission(Decision.START))
    result = gated(session, gate)
    assert result.outcome == Outcome.REMEDIATED
    assert gate.ended == [("web1", Outcome.REMEDIATED)]


def test_an_admitted_fix_cut_short_by_the_transport_still_tells_the_gate_it_ended() -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED)), Timeout("the disable round trip passed its deadline")])
    gate = FakeGate(Admission(Decision.START))
    result = gated(session, gate)
    assert result.outcome == Outcome.TIMEOUT
    assert gate.ended == [("web1", Outcome.TIMEOUT)]


@pytest.mark.parametrize("mode", [Mode.AUDIT, Mode.FIX])
def test_an_excluded_server_is_probed_and_reported_excluded_and_the_gate_is_never_asked(mode: Mode) -> None:
    session = FakeSession([ok(probe_text(MODERN_EXPOSED))])
    gate = FakeGate()
    result = gated(session, gate, Policy(mode=mode, excluded=True))
    assert (result.outcome, result.reason, result.exposed_before, result.exposed_after) == (
        Outcome.EXCLUDED, "excluded", True, True)
    assert session.scripts == [PROBE_SCRIPT]
    assert gate.asked == []


def test_compliant_and_audited_servers_never_ask_the_gate() -> None:
    for probe, policy in ((MODERN_COMPLIANT, FIX), (MODERN_EXPOSED, AUDIT)):
        gate = FakeGate()
        gated(FakeSession([ok(probe_text(probe))]), gate, policy)
        assert gate.asked == []
