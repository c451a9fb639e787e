"""The engine's revert: one session, the record from the server or the operator, one restart, a relay proof."""

from __future__ import annotations

from relayguard.domain.decide import assess
from relayguard.domain.entry import REVERT_PROBE
from relayguard.domain.models import Outcome
from relayguard.domain.probe import parse_probe
from relayguard.domain.record import state_of
from relayguard.domain.revert import plan_revert, record_document, record_of, render_revert
from relayguard.domain.server import Server
from relayguard.engine import FIX_TIMEOUT_FACTOR, Engine, ServerResult

from tests.fakes import FakeBannerCheck, FakeConnector, FakeSession, ok
from tests.unit.samples import EXIM_UP, LEGACY_EXPOSED, MODERN_EXPOSED, hx, probe_text, step_text

OLD1 = Server(name="old1", host="198.51.100.40")
ACCEPTED = "220 old1 ESMTP\n250 old1 Hello\n250 OK\n250 Accepted\n221 bye\n"
LEGACY_FIXED = {**LEGACY_EXPOSED, "cfg.skipantirelayd": "1", "list.relayhosts.hex": "",
                "list.relayhostsusers.hex": ""}
BEFORE = record_of(parse_probe(probe_text(LEGACY_EXPOSED)), assess(parse_probe(probe_text(LEGACY_EXPOSED))))


def probe_with_record(record: str | None) -> str:
    tail = f"revert.record.kind=file\nrevert.record.hex={hx(record)}\n" if record else "revert.record.kind=missing\n"
    return probe_text(LEGACY_FIXED) + tail


def revert_output(reply: str = ACCEPTED) -> str:
    return (step_text("enable-antirelayd", 0) + step_text("restore-relayhosts", 0)
            + step_text("restore-relayhostsusers", 0) + step_text("update-exim-rejects", 0)
            + step_text("restart-exim", 0) + step_text("exim-status", 0, out=EXIM_UP + "\n")
            + step_text("exim-bv", 0) + step_text("relay-probe", 0, out=reply) + probe_text(LEGACY_EXPOSED))


def revert(session: FakeSession, before: dict[str, object] | None = None) -> ServerResult:
    return Engine(FakeConnector(session), FakeBannerCheck(220), timeout=30.0).revert(OLD1, before)


def test_revert_restores_the_record_on_the_server_restarts_exim_once_and_proves_relaying() -> None:
    # GIVEN a fixed legacy server that holds its fix's record
    session = FakeSession([ok(probe_with_record(record_document(BEFORE))), ok(revert_output())])
    # WHEN reverting
    result = revert(session)
    # THEN it is reverted, with exactly the rendered scripts and one Exim restart
    assert (result.outcome, result.reason, result.mode) == (Outcome.REVERTED, "", "revert")
    assert (result.restarted, result.exim_restarts) == (True, 1)
    assert (result.exposed_before, result.exposed_after) == (False, True)
    fixed = parse_probe(probe_with_record(None))
    assert session.operations == [REVERT_PROBE, render_revert(plan_revert(BEFORE, fixed, assess(fixed)))]
    assert session.timeouts == [30.0, 30.0 * FIX_TIMEOUT_FACTOR]
    assert (result.relay_probe["ip"], result.relay_probe["code"]) == ("198.51.100.9", 250)
    session.assert_all_consumed()


def test_without_a_record_nothing_is_changed() -> None:
    session = FakeSession([ok(probe_with_record(None))])
    result = revert(session)
    assert (result.outcome, result.reason, result.restarted) == (Outcome.FAILED, "no-revert-record", False)
    assert len(session.scripts) == 1
    session.assert_all_consumed()


def test_an_operators_saved_before_state_wins_over_the_servers_record() -> None:
    finding = parse_probe(probe_text(LEGACY_EXPOSED))
    before = state_of(finding, assess(finding))
    session = FakeSession([ok(probe_with_record(None)), ok(revert_output())])
    assert revert(session, before).outcome == Outcome.REVERTED


def test_a_record_of_another_generation_is_refused_before_any_change() -> None:
    modern = parse_probe(probe_text(MODERN_EXPOSED))
    session = FakeSession([ok(probe_with_record(record_document(record_of(modern, assess(modern)))))])
    result = revert(session)
    assert (result.outcome, result.reason) == (Outcome.FAILED, "revert-record-generation-mismatch")
    assert len(session.scripts) == 1


def test_relaying_still_refused_after_the_restore_fails_the_revert() -> None:
    refused = "220 old1 ESMTP\n250 old1 Hello\n250 OK\n550 relay not permitted\n221 bye\n"
    session = FakeSession([ok(probe_with_record(record_document(BEFORE))), ok(revert_output(refused))])
    result = revert(session)
    assert (result.outcome, result.reason, result.restarted) == (Outcome.FAILED, "relay-probe-refused", True)
