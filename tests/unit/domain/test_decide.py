"""Generation, driver state, list entries, exposure and the plan follow cpanel.md §1, §2 and §6."""

from __future__ import annotations

from dataclasses import replace

import pytest
from relayguard.domain.decide import (
    FALLBACK_PROBE_IP,
    assess,
    decide,
    detect_generation,
    driver_active,
    valid_ip,
    verify_sender,
)
from relayguard.domain.models import Finding, Generation, ListFile, Mode, Plan, Policy
from relayguard.domain.probe import parse_probe

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
WHMAPI1 = "/usr/local/cpanel/bin/whmapi1"

MODERN = Finding(complete=True, version_present=True, version="11.120.0.16", libexec_tailwatchd=True,
                 tracker_module=True, exim_status_rc=0, local_domain="example.com", hostname="web1.example.com")
LEGACY = Finding(complete=True, version_present=True, version="11.40.1.3", bin_tailwatchd=True,
                 antirelayd_module=True, exim_status_rc=0, local_domain="example.org")


def lst(path: str, *lines: str, kind: str = "file") -> ListFile:
    return ListFile(path=path, kind=kind, lines=lines)


def relay(*lines: str) -> dict[str, ListFile]:
    return {"recent_authed_mail_ips": lst("/etc/recent_authed_mail_ips", *lines)}


def legacy_lists(hosts: tuple[str, ...], users: tuple[str, ...] = ()) -> dict[str, ListFile]:
    return {"relayhosts": lst("/etc/relayhosts", *hosts), "relayhostsusers": lst("/etc/relayhostsusers", *users)}


def parsed(facts: dict[str, str]) -> Finding:
    return parse_probe(probe_text(facts))


def plan_for(finding: Finding, policy: Policy) -> Plan:
    return decide(finding, assess(finding), policy)


# --- detect_generation -------------------------------------------------------------------------

@pytest.mark.parametrize(("facts", "expected"), [
    (MODERN_EXPOSED, Generation.MODERN),
    (LEGACY_EXPOSED, Generation.LEGACY),
    (NOT_CPANEL, Generation.NONE),
    (UNKNOWN_GENERATION, Generation.UNKNOWN),
])
def test_detects_the_generation_from_version_and_paths(facts: dict[str, str], expected: Generation) -> None:
    assert detect_generation(parsed(facts)) == expected


def test_version_11_52_is_the_first_modern_release() -> None:
    assert detect_generation(replace(MODERN, version="11.52.0.1")) == Generation.MODERN
    assert detect_generation(replace(LEGACY, version="11.50.0.1")) == Generation.LEGACY


def test_version_alone_decides_when_no_tailwatchd_path_is_present() -> None:
    bare = Finding(complete=True, version_present=True, version="11.36.2.1")
    assert detect_generation(bare) == Generation.LEGACY


def test_an_unparseable_version_is_unknown() -> None:
    assert detect_generation(replace(MODERN, version="")) == Generation.UNKNOWN


# --- driver_active -----------------------------------------------------------------------------

def test_a_driver_is_active_by_default() -> None:
    assert driver_active(MODERN, "RecentAuthedMailIpTracker")


@pytest.mark.parametrize("marker", ["/etc/recentauthedmailiptrackerdisable", "/etc/recentauthedmailiptrackerisevil"])
def test_a_marker_file_makes_the_driver_inactive(marker: str) -> None:
    assert not driver_active(replace(MODERN, markers=frozenset({marker})), "RecentAuthedMailIpTracker")


@pytest.mark.parametrize(("value", "active"), [("1", False), ("0", True), ("", True)])
def test_the_skip_key_makes_the_driver_inactive_when_truthy(value: str, active: bool) -> None:
    f = replace(LEGACY, config={"skipantirelayd": value})
    assert driver_active(f, "Antirelayd") is active


def test_another_drivers_marker_does_not_count() -> None:
    assert driver_active(replace(LEGACY, markers=frozenset({"/etc/recentauthedmailiptrackerdisable"})), "Antirelayd")


# --- valid_ip ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "ip"), [
    ("203.0.113.7", "203.0.113.7"),
    ('"2001:DB8::7"', "2001:db8::7"),
    ("203.0.113.7: alice@example.com, bob@example.com", "203.0.113.7"),
    ("198.51.100.9 carol", "198.51.100.9"),
    ("10.0.0.5=backups", "10.0.0.5"),
    ("  203.0.113.7  ", "203.0.113.7"),
])
def test_valid_ip_takes_the_address_of_a_list_line(entry: str, ip: str) -> None:
    assert valid_ip(entry) == ip


@pytest.mark.parametrize("entry", ["1.2.3.4;touch /tmp/x", "$(reboot)", "", "999.1.1.1", "`id`", "example.com"])
def test_valid_ip_rejects_anything_that_is_not_an_address(entry: str) -> None:
    assert valid_ip(entry) is None


def test_valid_ip_rejects_an_ipv6_scope_id_carrying_shell_text() -> None:
    assert valid_ip('"fe80::1%$(reboot)"') is None


# --- assess ------------------------------------------------------------------------------------

def test_modern_with_the_gate_file_is_exposed() -> None:
    a = assess(parsed(MODERN_EXPOSED))
    assert a.exposed
    assert not a.drift
    assert a.relay_ips == ("203.0.113.7", "2001:db8::7")
    assert a.warnings == ()


def test_modern_with_the_gate_closed_is_compliant_whatever_the_inert_list_holds() -> None:
    a = assess(parsed(MODERN_COMPLIANT))
    assert not a.exposed
    assert a.relay_ips == ("203.0.113.7", "2001:db8::7")


def test_modern_setting_on_without_the_gate_file_is_drift() -> None:
    a = assess(replace(MODERN, config={"popbeforesmtp": "1"}, gate_file=False))
    assert a.drift
    assert a.exposed
    assert "drift:popbeforesmtp-setting-on-without-gate-file" in a.warnings


def test_tracker_status_disagreeing_with_config_is_drift() -> None:
    status = ("tailwatchd is enabled\nRunning, PID 1\n"
              "  Driver (Active: 0) Cpanel::TailWatch::RecentAuthedMailIpTracker\n")
    a = assess(replace(MODERN, tailwatchd_status=status))
    assert "drift:tracker-status-disagrees-with-config" in a.warnings


def test_an_admin_exception_file_with_entries_is_reported() -> None:
    f = replace(MODERN, exceptions={"alwaysrelay": lst("/etc/alwaysrelay", "10.0.0.5: backups"),
                                    "trustedmailhosts": lst("/etc/trustedmailhosts")})
    a = assess(f)
    assert a.warnings == ("admin-exception:alwaysrelay",)
    assert a.exception_ips == frozenset({"10.0.0.5"})


def test_a_non_address_relay_entry_is_reported_and_kept_out_of_the_ips() -> None:
    a = assess(replace(MODERN, lists=relay("203.0.113.7", "1.2.3.4;touch /tmp/x")))
    assert "invalid-relay-entry" in a.warnings
    assert a.relay_ips == ("203.0.113.7",)
    assert a.invalid_entries == ("1.2.3.4;touch /tmp/x",)


def test_exim_already_down_is_reported_before_the_run() -> None:
    assert "exim-down-before-run" in assess(replace(MODERN, exim_status_rc=1)).warnings


def test_exim_down_is_not_reported_for_a_non_cpanel_host() -> None:
    assert assess(parsed(NOT_CPANEL)).warnings == ()


def test_legacy_with_the_driver_active_is_exposed() -> None:
    a = assess(parsed(LEGACY_EXPOSED))
    assert a.exposed
    assert a.antirelayd_active
    assert a.relay_ips == ("198.51.100.9", "10.0.0.5")


def test_legacy_with_the_driver_off_but_stale_entries_is_exposed() -> None:
    f = replace(LEGACY, config={"skipantirelayd": "1"}, lists=legacy_lists(("198.51.100.9",)))
    a = assess(f)
    assert not a.antirelayd_active
    assert a.exposed


def test_legacy_with_the_driver_off_and_only_alwaysrelay_entries_is_compliant() -> None:
    a = assess(parsed(LEGACY_COMPLIANT))
    assert not a.exposed
    assert a.warnings == ("admin-exception:alwaysrelay",)


def test_unknown_generation_is_never_exposed() -> None:
    assert not assess(parsed(UNKNOWN_GENERATION)).exposed


def test_affected_mailboxes_come_from_the_modern_users_file() -> None:
    a = assess(parsed(MODERN_EXPOSED))
    assert a.affected_mailboxes == ("alice@example.com", "bob@example.com")


def test_affected_mailboxes_come_from_the_legacy_users_file() -> None:
    a = assess(parsed(LEGACY_EXPOSED))
    assert a.affected_mailboxes == ("carol", "dave")


def test_affected_mailboxes_from_an_ipv6_users_line() -> None:
    users = lst("/etc/recent_authed_mail_ips_users", '"2001:db8::7": carol@example.com')
    a = assess(replace(MODERN, lists={"recent_authed_mail_ips_users": users}))
    assert a.affected_mailboxes == ("carol@example.com",)


# --- decide ------------------------------------------------------------------------------------

def test_audit_plans_no_steps_even_when_exposed() -> None:
    plan = plan_for(parsed(MODERN_EXPOSED), AUDIT)
    assert plan.exposed
    assert plan.empty


def test_the_plan_follows_the_assessment_it_is_given() -> None:
    # GIVEN an exposed modern finding, but an assessment that judged it closed
    finding = parsed(MODERN_EXPOSED)
    closed = replace(assess(finding), exposed=False)
    # WHEN deciding with that assessment
    plan = decide(finding, closed, FIX)
    # THEN decide trusts the assessment rather than judging the finding again
    assert (plan.exposed, plan.empty) == (False, True)
    assert plan_for(finding, FIX).steps


@pytest.mark.parametrize("facts", [MODERN_COMPLIANT, LEGACY_COMPLIANT])
def test_a_compliant_server_gets_an_empty_plan(facts: dict[str, str]) -> None:
    plan = plan_for(parsed(facts), FIX)
    assert plan.empty
    assert (plan.steps, plan.truncate) == ((), ())


def test_modern_fix_closes_the_gate_refreshes_rejects_and_restarts_exim_only() -> None:
    plan = plan_for(parsed(MODERN_EXPOSED), FIX)
    assert [(s.name, s.argv) for s in plan.steps] == [
        ("set-tweak-popbeforesmtp-0", (WHMAPI1, "--output=json", "set_tweaksetting", "key=popbeforesmtp", "value=0")),
        ("update-exim-rejects", ("/usr/local/cpanel/scripts/update_exim_rejects",)),
        ("restart-exim", ("/usr/local/cpanel/scripts/restartsrv_exim",)),
    ]
    assert not any("tailwatchd" in arg for s in plan.steps for arg in s.argv)
    assert plan.truncate == ()


def test_modern_fix_with_disable_tracker_disables_it_and_truncates_the_lists() -> None:
    plan = plan_for(parsed(MODERN_EXPOSED), Policy(mode=Mode.FIX, disable_tracker=True))
    assert [s.name for s in plan.steps] == [
        "set-tweak-popbeforesmtp-0", "disable-tracker", "update-exim-rejects", "restart-exim"]
    assert plan.steps[1].argv == ("/usr/local/cpanel/libexec/tailwatchd",
                                  "--disable=Cpanel::TailWatch::RecentAuthedMailIpTracker")
    assert plan.truncate == ("/etc/relayhosts", "/etc/relayhostsusers")


def test_modern_disable_tracker_skips_a_tracker_that_is_already_off_and_empty_lists() -> None:
    f = replace(MODERN, gate_file=True, config={"skiprecentauthedmailiptracker": "1"})
    plan = plan_for(f, Policy(mode=Mode.FIX, disable_tracker=True))
    assert [s.name for s in plan.steps] == ["set-tweak-popbeforesmtp-0", "update-exim-rejects", "restart-exim"]
    assert plan.truncate == ()


def test_legacy_fix_disables_an_active_antirelayd_and_truncates_both_files() -> None:
    plan = plan_for(parsed(LEGACY_EXPOSED), FIX)
    assert [(s.name, s.argv) for s in plan.steps] == [
        ("disable-antirelayd", ("/usr/local/cpanel/bin/tailwatchd", "--disable=Cpanel::TailWatch::Antirelayd")),
        ("update-exim-rejects", ("/usr/local/cpanel/scripts/update_exim_rejects",)),
        ("restart-exim", ("/usr/local/cpanel/scripts/restartsrv_exim",)),
    ]
    assert plan.truncate == ("/etc/relayhosts", "/etc/relayhostsusers")


def test_legacy_fix_with_antirelayd_off_only_truncates_the_non_empty_file() -> None:
    f = replace(LEGACY, config={"skipantirelayd": "1"}, lists=legacy_lists(("198.51.100.9",)))
    plan = plan_for(f, FIX)
    assert [s.name for s in plan.steps] == ["update-exim-rejects", "restart-exim"]
    assert plan.truncate == ("/etc/relayhosts",)


@pytest.mark.parametrize("facts", [NOT_CPANEL, UNKNOWN_GENERATION])
def test_unknown_or_non_cpanel_servers_get_an_empty_plan(facts: dict[str, str]) -> None:
    assert plan_for(parsed(facts), FIX).empty


def test_verify_ip_skips_loopback_and_exception_ips() -> None:
    f = replace(MODERN, gate_file=True, lists=relay("127.0.0.1", "10.0.0.5", "198.51.100.9"),
                exceptions={"trustedmailhosts": lst("/etc/trustedmailhosts", "10.0.0.5")})
    assert plan_for(f, FIX).verify_ip == "198.51.100.9"


def test_verify_ip_falls_back_to_a_documentation_address() -> None:
    f = replace(MODERN, gate_file=True, lists=relay("127.0.0.1", '"::1"'))
    assert plan_for(f, FIX).verify_ip == FALLBACK_PROBE_IP == "192.0.2.1"


def test_verify_sender_uses_the_local_domain() -> None:
    assert plan_for(parsed(MODERN_EXPOSED), FIX).verify_sender == "relayguard-probe@example.com"


def test_verify_sender_falls_back_to_the_hostname_then_localhost() -> None:
    assert verify_sender(replace(MODERN, local_domain="")) == "relayguard-probe@web1.example.com"
    assert verify_sender(replace(MODERN, local_domain="x;reboot", hostname="")) == (
        "relayguard-probe@localhost.localdomain")
