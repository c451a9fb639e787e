"""The CLI's pure helpers: host specs, options, the exit code and the table."""

from __future__ import annotations

import pytest
from relayguard.cli import exit_code, parse_options, render_table, split_host
from relayguard.domain.models import Mode, Outcome, Policy
from relayguard.engine import ServerResult


def result(host: str, outcome: Outcome, **fields: object) -> ServerResult:
    return ServerResult(host=host, address="203.0.113.10", mode="fix", outcome=outcome, **fields)  # type: ignore[arg-type]


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
