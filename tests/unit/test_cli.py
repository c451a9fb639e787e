"""The CLI's pure helpers: host specs, options, the exit code and the table."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from relayguard.cli import (
    DEFAULT_CONCURRENCY,
    OUTSIDE_WINDOW,
    exit_code,
    main,
    parse_options,
    policy_at,
    render_table,
    run_fleet,
    run_summary,
    split_host,
    targets_from,
    write_records,
)
from relayguard.domain.models import Mode, Outcome, Policy
from relayguard.domain.probe import PROBE_SCRIPT
from relayguard.domain.rollout import EXCLUDE_TAG, ErrorBudget, MaintenanceWindow, Rollout
from relayguard.domain.server import Server
from relayguard.engine import Engine, ServerResult
from relayguard.errors import Timeout, TransportError
from relayguard.fleet import LocalGate
from relayguard.ports import CommandResult, FixGate

from tests.fakes import FakeBannerCheck, FakeFleetConnector, FakeSession, ok
from tests.unit.samples import MODERN_COMPLIANT, MODERN_EXPOSED, probe_text


def result(name: str, outcome: Outcome, **fields: object) -> ServerResult:
    return ServerResult(name=name, address="203.0.113.10", mode="fix", outcome=outcome, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("spec", "expected"), [
    ("web1.example.com", ("web1.example.com", 22)),
    ("web1.example.com:2222", ("web1.example.com", 2222)),
    ("203.0.113.10:22", ("203.0.113.10", 22)),
    ("[2001:db8::10]:2222", ("2001:db8::10", 2222)),
    ("[2001:db8::10]", ("2001:db8::10", 22)),
    ("2001:db8::10", ("2001:db8::10", 22)),
])
def test_split_host_reads_host_and_port(spec: str, expected: tuple[str, int]) -> None:
    assert split_host(spec) == expected


def test_split_host_refuses_a_non_numeric_port() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        split_host("web1:ssh")


@pytest.mark.parametrize(("outcomes", "code"), [
    ([], 0),
    ([Outcome.COMPLIANT, Outcome.REMEDIATED, Outcome.NOT_CPANEL], 0),
    ([Outcome.COMPLIANT, Outcome.NONCOMPLIANT], 1),
    ([Outcome.FAILED], 2),
    ([Outcome.HOST_KEY_MISMATCH, Outcome.NONCOMPLIANT], 2),
    ([Outcome.NONCOMPLIANT, Outcome.UNREACHABLE], 2),
])
def test_exit_code_ranks_failures_over_exposure(outcomes: list[Outcome], code: int) -> None:
    assert exit_code(result(f"h{i}", o) for i, o in enumerate(outcomes)) == code


def test_render_table_shows_one_aligned_row_per_host() -> None:
    # GIVEN a remediated host with mailboxes and a failed one with a reason
    rows = [
        result("web1", Outcome.REMEDIATED, generation="modern", exposed_before=True, exposed_after=False,
               restarted=True, warnings=["admin-exception:alwaysrelay"], affected_mailboxes=["alice@example.com"]),
        result("old-legacy-2", Outcome.HOST_KEY_MISMATCH, reason="key changed"),
    ]
    # WHEN rendered  THEN columns line up and the detail column carries the reason or warnings
    assert render_table(rows).splitlines() == [
        "HOST          OUTCOME            GEN     EXPOSED  RESTARTED  DETAIL",
        "web1          remediated         modern  yes→no   yes        admin-exception:alwaysrelay; "
        "mailboxes: alice@example.com",
        "old-legacy-2  host-key-mismatch  -       -        no         key changed",
    ]


def test_render_table_puts_the_plan_and_nonzero_spam_signals_under_their_host() -> None:
    # GIVEN an audited exposed host with relay rejects, and a quiet compliant one
    signals = {"window_minutes": 60, "since": "2026-12-01 02:00:00", "queue": 0, "send_limit_hits": 0,
               "relay_rejects": 40, "partial": False}
    rows = [
        result("web1", Outcome.NONCOMPLIANT, generation="modern", exposed_before=True, exposed_after=True,
               plan=["set popbeforesmtp=0", "run update_exim_rejects", "restart exim"], signals=signals),
        result("web2", Outcome.COMPLIANT, generation="modern", exposed_before=False, exposed_after=False,
               signals={**signals, "relay_rejects": 0}),
    ]
    # WHEN rendered  THEN web1's plan and signals follow its row; web2 has neither to show
    assert render_table(rows).splitlines()[1:] == [
        "web1  noncompliant  modern  yes→yes  no         ",
        "  plan: set popbeforesmtp=0; run update_exim_rejects; restart exim",
        "  signals: queue 0, send-limit hits 0, relay rejects 40 in the last 60 min",
        "web2  compliant     modern  no→no    no         ",
    ]


def test_render_table_puts_the_deliverability_counts_under_their_host() -> None:
    summary = {"domains": 12, "judged": 12, "failing": 3, "without_spf": 0, "without_dkim": 1, "without_dmarc": 2,
               "ips": 2, "ips_without_fcrdns": 1, "dns_errors": 0}
    rows = [result("web1", Outcome.COMPLIANT, generation="modern", exposed_before=False, exposed_after=False,
                   deliverability={"judged": True, "summary": summary, "domains": []})]
    assert render_table(rows).splitlines()[2] == (
        "  mail: 12 domains: 3 breaking receiver rules, 1 without DKIM, 2 without DMARC, "
        "1 sending IP without forward-confirmed PTR")


def test_render_table_shows_exposure_without_an_after_value() -> None:
    row = render_table([result("web1", Outcome.NONCOMPLIANT, generation="legacy", exposed_before=True)])
    assert row.splitlines()[1].split()[:4] == ["web1", "noncompliant", "legacy", "yes"]


def test_check_takes_hosts_and_audits() -> None:
    opts = parse_options(["check", "web1", "web2:2222", "--json"])
    assert (opts.command, opts.hosts, opts.json) == ("check", ("web1", "web2:2222"), True)
    assert opts.policy == Policy(mode=Mode.AUDIT)


def test_fix_with_disable_tracker_fixes_and_disables_the_tracker() -> None:
    opts = parse_options(["fix", "web1", "--disable-tracker", "--timeout", "90", "--user", "ops", "--sudo"])
    assert opts.policy == Policy(mode=Mode.FIX, disable_tracker=True)
    assert (opts.timeout, opts.user, opts.sudo) == (90.0, "ops", True)


@pytest.mark.parametrize(("argv", "mode"), [
    (["scan", "--inventory", "fleet.yaml"], Mode.AUDIT),
    (["scan", "--inventory", "fleet.yaml", "--fix"], Mode.FIX),
])
def test_scan_audits_unless_told_to_fix(argv: list[str], mode: Mode) -> None:
    opts = parse_options(argv)
    assert (opts.inventory, opts.hosts, opts.concurrency, opts.policy.mode) == ("fleet.yaml", (), 10, mode)


def test_scan_refuses_a_concurrency_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_options(["scan", "--inventory", "fleet.yaml", "--concurrency", "0"])
    assert info.value.code == 2
    assert "--concurrency must be at least 1" in capsys.readouterr().err


def test_check_without_hosts_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_options(["check"])
    assert info.value.code == 2
    assert "HOST[:PORT]" in capsys.readouterr().err


KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIC"


class ScriptedEngine:
    """Stands in for the engine: an outcome per target name, or an exception to raise."""

    def __init__(self, plan: dict[str, Outcome | Exception]) -> None:
        self.plan = plan
        self.seen: list[tuple[str, Policy]] = []

    def run(self, target: Server, policy: Policy, gate: FixGate | None = None) -> ServerResult:
        self.seen.append((target.name, policy))
        planned = self.plan[target.name]
        if isinstance(planned, Exception):
            raise planned
        return result(target.name, planned)


def test_run_fleet_keeps_every_result_in_order_when_one_host_blows_up() -> None:
    # GIVEN three targets, the middle one raising inside the engine
    engine = ScriptedEngine({"a": Outcome.COMPLIANT, "b": RuntimeError("boom"), "c": Outcome.NONCOMPLIANT})
    targets = [Server(name=n, host=f"203.0.113.{i}") for i, n in enumerate("abc", 1)]
    progress = io.StringIO()
    # WHEN the fleet runs
    results = run_fleet(engine, targets, Policy(mode=Mode.AUDIT), concurrency=3, progress=progress)  # type: ignore[arg-type]
    # THEN every host has its result, in the given order, and the failure is only that host's
    assert [(r.name, r.outcome) for r in results] == [("a", Outcome.COMPLIANT), ("b", Outcome.FAILED),
                                                      ("c", Outcome.NONCOMPLIANT)]
    assert results[1].reason == "internal error: RuntimeError"
    assert sorted(name for name, _ in engine.seen) == ["a", "b", "c"]
    assert sorted(line.split()[0] for line in progress.getvalue().splitlines()) == ["[1/3]", "[2/3]", "[3/3]"]
    assert exit_code(results) == 2


def test_scan_targets_take_user_port_and_keys_from_the_inventory_before_the_command_line(tmp_path: Path) -> None:
    # GIVEN an inventory where web1 sets everything and web2 leaves user and keys out
    inventory = tmp_path / "fleet.json"
    inventory.write_text(json.dumps({"servers": [
        {"name": "web1", "host": "203.0.113.10", "port": 2222, "user": "admin", "host_keys": [KEY1]},
        {"name": "web2", "host": "203.0.113.20"},
    ]}))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"203.0.113.10 {KEY2}\n203.0.113.20 {KEY2}\n")
    opts = parse_options(["scan", "--inventory", str(inventory), "--user", "ops", "--known-hosts", str(known_hosts)])
    # WHEN the targets are built
    web1, web2 = targets_from(opts)
    # THEN the entry's own values win, and the command line fills only the gaps
    assert (web1.name, web1.port, web1.user, web1.host_keys) == ("web1", 2222, "admin", (KEY1,))
    assert (web2.name, web2.port, web2.user, web2.host_keys) == ("web2", 22, "ops", (KEY2,))


def test_check_targets_are_pinned_from_known_hosts_by_name_and_port(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[203.0.113.10]:2222 {KEY1}\n203.0.113.10 {KEY2}\n")
    opts = parse_options(["check", "203.0.113.10:2222", "203.0.113.10", "198.51.100.1",
                          "--known-hosts", str(known_hosts)])
    pinned = [(t.name, t.port, t.host_keys) for t in targets_from(opts)]
    # A host known_hosts does not list gets no pin: the connector refuses it (host-key-unknown).
    assert pinned == [("203.0.113.10:2222", 2222, (KEY1,)), ("203.0.113.10", 22, (KEY2,)), ("198.51.100.1", 22, ())]


# -- fix limits ------------------------------------------------------------------------------------


def test_scan_fix_takes_the_rollout_limits() -> None:
    opts = parse_options(["scan", "--inventory", "fleet.yaml", "--fix", "--max-errors", "10%", "--max-changes", "3",
                          "--canary", "2", "--window", "sat,sun 01:00-05:00 Europe/Berlin"])
    assert opts.rollout == Rollout(max_changes=3, max_errors=ErrorBudget(percent=10), canary=2)
    assert opts.window == MaintenanceWindow.parse("sat,sun 01:00-05:00 Europe/Berlin")


def test_fix_takes_the_same_limits_and_check_and_fix_are_bounded_by_default() -> None:
    opts = parse_options(["fix", "web1", "web2", "--max-errors", "2"])
    assert opts.rollout == Rollout(max_errors=ErrorBudget(count=2))
    assert parse_options(["check", *(f"web{i}" for i in range(50))]).concurrency == DEFAULT_CONCURRENCY
    assert parse_options(["fix", "web1", "--concurrency", "3"]).concurrency == 3
    assert parse_options(["scan", "--inventory", "fleet.yaml"]).concurrency == DEFAULT_CONCURRENCY


@pytest.mark.parametrize(("argv", "message"), [
    (["scan", "--inventory", "f.yaml", "--max-errors", "2"], "--max-errors limit fixing: add --fix"),
    (["scan", "--inventory", "f.yaml", "--canary", "1", "--window", "01:00-02:00 UTC"],
     "--canary, --window limit fixing: add --fix"),
    (["scan", "--inventory", "f.yaml", "--fix", "--max-errors", "0"], "a count must be a whole number"),
    (["scan", "--inventory", "f.yaml", "--fix", "--max-changes", "-1"], "not a whole number of 0 or more"),
    (["fix", "web1", "--window", "whenever"], "expected e.g."),
    (["check", "web1", "--max-errors", "2"], "unrecognized arguments: --max-errors"),
])
def test_limits_are_refused_where_they_would_mean_nothing(argv: list[str], message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_options(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_outside_the_window_a_fix_is_an_audit_with_a_warning() -> None:
    opts = parse_options(["fix", "web1", "--window", "mon 01:00-02:00 UTC"])
    monday = datetime(2025, 6, 2, tzinfo=UTC)
    assert policy_at(opts, monday.replace(hour=1, minute=30)) == (Policy(mode=Mode.FIX), "")
    assert policy_at(opts, monday.replace(hour=3)) == (Policy(mode=Mode.AUDIT), OUTSIDE_WINDOW)
    audit = parse_options(["check", "web1"])
    assert policy_at(audit, monday.replace(hour=3)) == (Policy(mode=Mode.AUDIT), "")


def exposed_session(*fix: CommandResult | TransportError) -> FakeSession:
    return FakeSession([ok(probe_text(MODERN_EXPOSED)), *fix])


def fleet_engine(sessions: dict[str, FakeSession]) -> Engine:
    return Engine(FakeFleetConnector(sessions), FakeBannerCheck(220), timeout=42.0)


def test_a_budget_of_one_lets_exactly_one_fix_fail_and_skips_the_rest_untouched() -> None:
    # GIVEN four exposed servers whose fix would time out, run four at once with --max-errors 1
    sessions = {n: exposed_session(Timeout("disable hung")) for n in ("a", "b", "c", "d")}
    targets = [Server(name=n, host=f"203.0.113.{i}") for i, n in enumerate(sessions, 1)]
    gate = LocalGate(Rollout(max_errors=ErrorBudget(count=1)), targets)
    # WHEN the fleet runs
    results = run_fleet(fleet_engine(sessions), targets, Policy(mode=Mode.FIX), 4, gate=gate)
    # THEN exactly one fix ran and failed; the other three were probed only and report why they were skipped
    outcomes = Counter((r.outcome, r.reason) for r in results)
    assert outcomes == {(Outcome.TIMEOUT, "disable hung"): 1, (Outcome.SKIPPED, "error-budget"): 3}
    for r in results:
        if r.outcome == Outcome.SKIPPED:
            assert (r.exposed_before, r.exposed_after) == (True, True)
            assert sessions[r.name].scripts == [PROBE_SCRIPT]
    assert exit_code(results) == 2
    assert run_summary(gate, results) == ("relayguard: run stopped: --max-errors 1 reached "
                                          "(1 changed, 1 failed, 3 skipped)")


def test_a_failed_canary_is_the_first_exposed_server_and_stops_the_rest() -> None:
    # GIVEN a compliant server, then three exposed ones; the first exposed one's fix times out
    sessions = {"ok": FakeSession([ok(probe_text(MODERN_COMPLIANT))]), "canary": exposed_session(Timeout("hung")),
                "c": exposed_session(), "d": exposed_session()}
    targets = [Server(name=n, host=f"203.0.113.{i}") for i, n in enumerate(sessions, 1)]
    gate = LocalGate(Rollout(canary=1), targets)
    # WHEN they run all at once
    results = run_fleet(fleet_engine(sessions), targets, Policy(mode=Mode.FIX), 4, gate=gate)
    # THEN the canary is the first exposed server of the inventory, and nothing after it was changed
    assert [(r.name, r.outcome, r.reason) for r in results] == [
        ("ok", Outcome.COMPLIANT, ""), ("canary", Outcome.TIMEOUT, "hung"),
        ("c", Outcome.SKIPPED, "canary-failed"), ("d", Outcome.SKIPPED, "canary-failed")]
    for session in sessions.values():
        session.assert_all_consumed()
    assert run_summary(gate, results).startswith("relayguard: run stopped: a canary fix failed (--canary 1;")


def test_a_server_tagged_exclude_is_probed_and_reported_never_fixed() -> None:
    sessions = {"kept": exposed_session(), "web": exposed_session(Timeout("hung"))}
    targets = [Server(name="kept", host="203.0.113.1", tags=("prod", EXCLUDE_TAG)),
               Server(name="web", host="203.0.113.2", tags=("prod",))]
    gate = LocalGate(Rollout(), targets)
    results = run_fleet(fleet_engine(sessions), targets, Policy(mode=Mode.FIX), 2, gate=gate)
    assert [(r.name, r.outcome, r.reason) for r in results] == [
        ("kept", Outcome.EXCLUDED, "excluded"), ("web", Outcome.TIMEOUT, "hung")]
    assert sessions["kept"].scripts == [PROBE_SCRIPT]
    assert gate.tally.started == 1
    assert exit_code(results[:1]) == 1  # exposure left as it is, as the inventory asked


def test_report_renders_a_record_dirs_runs_from_their_files_and_writes_the_page(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "records"
    runs = {"cli-a": [result("web1", Outcome.REMEDIATED), result("web2", Outcome.FAILED, reason="whmapi1-refused")],
            "cli-b": [result("web3", Outcome.COMPLIANT)]}
    for run_id, results in runs.items():
        write_records(str(records), results, run_id, {})
    page = tmp_path / "out" / "fleet.html"
    page.parent.mkdir()
    assert main(["report", "--from", str(records), "--run", "cli-a", "--html", str(page)]) == 0
    assert capsys.readouterr().out == f"{page}\n"
    html = page.read_text()
    assert "<title>RelayGuard fleet report: run cli-a</title>" in html
    assert html.index(">web2<") < html.index(">web1<")  # the failure first
    assert ">web3<" not in html
    assert main(["report", "--from", str(records), "--html", str(page), "--title", "All of it"]) == 0
    assert html.count('class="server"') == 2
    assert page.read_text().count('class="server"') == 3  # replaced by the page of every run
    assert [p.name for p in page.parent.iterdir()] == ["fleet.html"]  # no temporary file left


@pytest.mark.parametrize("argv", [
    ["report", "--html", "x.html"],
    ["report", "--from", "d", "--bucket", "b", "--run", "r", "--html", "x.html"],
    ["report", "--bucket", "b", "--html", "x.html"],
])
def test_report_needs_one_source_and_a_bucket_needs_a_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "give --from DIR, or --run RUN_ID with --bucket BUCKET" in capsys.readouterr().err


def test_report_of_a_missing_directory_or_a_stray_file_fails_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--from", str(tmp_path / "nope"), "--html", str(tmp_path / "x.html")]) == 2
    assert "nope: no such directory of records" in capsys.readouterr().err
    (tmp_path / "notes.json").write_text("{}")
    assert main(["report", "--from", str(tmp_path), "--html", str(tmp_path / "x.html")]) == 2
    assert "notes.json: not a relayguard.record/v1 record" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
