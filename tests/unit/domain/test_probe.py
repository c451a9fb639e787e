"""The probe's output parses into a Finding; truncated or banner-prefixed output is handled."""

from __future__ import annotations

from relayguard.domain.models import SIGNALS_WINDOW_MINUTES, ListFile, Signals
from relayguard.domain.probe import (
    PROBE_SCRIPT,
    RELAY_REJECT_TEXTS,
    SEND_LIMIT_TEXTS,
    SIGNALS_MAX_LINES,
    parse_probe,
    parse_tailwatchd_status,
)

from tests.unit.samples import (
    LEGACY_COMPLIANT,
    LEGACY_EXPOSED,
    MODERN_COMPLIANT,
    MODERN_EXPOSED,
    NOT_CPANEL,
    UNKNOWN_GENERATION,
    hx,
    probe_text,
)


def test_parses_a_hand_written_modern_probe_into_typed_facts() -> None:
    # GIVEN the probe's output, line by line as the remote script prints it
    output = (
        "scan.schema=1\n"
        "id.uid=0\n"
        "id.hostname=web1.example.com\n"
        "has_timeout=1\n"
        "version.present=1\n"
        "version=11.120.0.16\n"
        "path.libexec_tailwatchd=1\n"
        "module.tracker=1\n"
        "cfg.popbeforesmtp=1\n"
        "file.popbeforesmtp=1\n"
        "marker.antirelayddisable=1\n"
        "list.recent_authed_mail_ips.kind=file\n"
        f"list.recent_authed_mail_ips.hex={hx('203.0.113.7')}\n"
        "exim.status.rc=0\n"
        "exim.queue.rc=0\n"
        f"exim.queue.hex={hx('12')}\n"
        "localdomain=example.com\n"
        "indicator.rejected_relay=4\n"
        "scan.end=1\n"
    )
    # WHEN it is parsed
    f = parse_probe(output)
    # THEN every fact lands in its field
    assert f.complete
    assert (f.uid, f.hostname, f.has_timeout) == (0, "web1.example.com", True)
    assert (f.version_present, f.version, f.libexec_tailwatchd, f.tracker_module) == (True, "11.120.0.16", True, True)
    assert f.config == {"popbeforesmtp": "1"}
    assert f.gate_file
    assert f.markers == frozenset({"/etc/antirelayddisable"})
    assert f.lists["recent_authed_mail_ips"] == ListFile("/etc/recent_authed_mail_ips", "file", "", ("203.0.113.7",))
    assert f.lists["relayhosts"].kind == "missing"
    assert (f.exim_running, f.queue, f.local_domain) == (True, 12, "example.com")
    assert f.indicators == {"rejected_relay": 4}


def test_modern_exposed_output_shows_the_gate_file_and_the_symlinked_lists() -> None:
    f = parse_probe(probe_text(MODERN_EXPOSED))
    assert f.complete
    assert f.gate_file
    assert f.config["popbeforesmtp"] == "1"
    assert f.lists["relayhosts"].kind == "symlink"
    assert f.lists["relayhosts"].target == "/etc/recent_authed_mail_ips"
    assert f.lists["recent_authed_mail_ips"].entries == ("203.0.113.7", '"2001:db8::7"')


def test_modern_compliant_output_shows_no_gate_file_and_the_setting_off() -> None:
    f = parse_probe(probe_text(MODERN_COMPLIANT))
    assert f.complete
    assert not f.gate_file
    assert f.config["popbeforesmtp"] == "0"


def test_legacy_exposed_output_shows_regular_relayhosts_files() -> None:
    f = parse_probe(probe_text(LEGACY_EXPOSED))
    assert (f.bin_tailwatchd, f.antirelayd_module, f.tracker_module) == (True, True, False)
    assert f.lists["relayhosts"].kind == "file"
    assert f.lists["relayhostsusers"].entries == ("198.51.100.9 carol", "10.0.0.5 dave")


def test_legacy_compliant_output_carries_the_alwaysrelay_exception() -> None:
    f = parse_probe(probe_text(LEGACY_COMPLIANT))
    assert f.config["skipantirelayd"] == "1"
    assert f.exceptions["alwaysrelay"].entries == ("10.0.0.5: backups",)
    assert f.lists["relayhosts"].entries == ("10.0.0.5",)


def test_not_cpanel_output_has_no_version_and_no_lists() -> None:
    f = parse_probe(probe_text(NOT_CPANEL))
    assert f.complete
    assert not f.version_present
    assert all(lst.kind == "missing" for lst in f.lists.values())
    assert f.queue is None  # exim -bpc failed: no queue size, not zero


def test_unknown_generation_output_keeps_both_the_version_and_the_legacy_paths() -> None:
    f = parse_probe(probe_text(UNKNOWN_GENERATION))
    assert f.version == "11.120.0.16"
    assert f.bin_tailwatchd
    assert f.antirelayd_module
    assert not f.tracker_module


def test_output_without_the_end_marker_is_incomplete() -> None:
    f = parse_probe(probe_text(MODERN_EXPOSED, end=False))
    assert not f.complete


def test_output_without_the_schema_marker_is_incomplete() -> None:
    f = parse_probe("id.uid=0\nscan.end=1\n")
    assert not f.complete


def test_a_login_banner_before_the_output_is_ignored() -> None:
    # GIVEN an MOTD printed ahead of the probe's own lines
    banner = ("Last login: Mon Jan  1 10:00:00 2024 from 192.0.2.50\n"
              "*** Authorized use only = monitored ***\n"
              "Welcome to web1!\n")
    # WHEN parsed  THEN the banner changes nothing
    assert parse_probe(banner + probe_text(MODERN_EXPOSED)) == parse_probe(probe_text(MODERN_EXPOSED))


def test_a_multi_line_file_round_trips_through_hex_into_its_lines() -> None:
    text = '203.0.113.7: alice@example.com, bob@example.com\n"2001:db8::7": carol@example.com\n# comment\n\n'
    f = parse_probe(probe_text({"list.recent_authed_mail_ips_users.kind": "file",
                                "list.recent_authed_mail_ips_users.hex": hx(text)}))
    lst = f.lists["recent_authed_mail_ips_users"]
    assert lst.lines == tuple(text.splitlines())
    assert lst.entries == ('203.0.113.7: alice@example.com, bob@example.com', '"2001:db8::7": carol@example.com')


def test_malformed_hex_reads_as_an_empty_file() -> None:
    f = parse_probe(probe_text({"list.relayhosts.kind": "file", "list.relayhosts.hex": "zz12"}))
    assert f.lists["relayhosts"].lines == ()


def test_parses_the_documented_tailwatchd_status_block() -> None:
    # GIVEN the cpanel.md §3 `--status` output, verbatim
    text = (
        "tailwatchd is enabled\n"
        "Running, PID 2231\n"
        "  Driver (Active: 1) Cpanel::TailWatch::RecentAuthedMailIpTracker\n"
        "  Driver (Active: 0) Cpanel::TailWatch::<Other>\n"
    )
    # WHEN parsed  THEN daemon state and each driver's flag come back
    assert parse_tailwatchd_status(text) == (True, True, {"RecentAuthedMailIpTracker": True, "<Other>": False})


def test_parses_a_disabled_stopped_tailwatchd() -> None:
    assert parse_tailwatchd_status("tailwatchd is disabled\nNot running\n") == (False, False, {})


def test_empty_tailwatchd_status_is_unknown() -> None:
    assert parse_tailwatchd_status("") == (None, None, {})


def test_spam_signals_parse_with_their_window() -> None:
    # GIVEN the signal lines the probe's awk pass prints after the window's start
    f = parse_probe(probe_text({**MODERN_COMPLIANT, "signals.since": "2026-12-01 02:00:00", "signals.send_limit": "3",
                                "signals.relay_reject": "41", "signals.partial": "1"}))
    # THEN they land in the finding's signals, the window being the probe's
    assert f.signals == Signals(window_minutes=SIGNALS_WINDOW_MINUTES, since="2026-12-01 02:00:00", send_limit_hits=3,
                                relay_rejects=41, partial=True)


def test_spam_signals_without_a_readable_log_or_gnu_date_are_unmeasured_not_zero() -> None:
    f = parse_probe(probe_text(MODERN_COMPLIANT))
    assert (f.signals.since, f.signals.send_limit_hits, f.signals.relay_rejects, f.signals.partial) == (
        "", None, None, False)


def test_the_probe_counts_spam_signals_over_its_window_from_the_servers_clock() -> None:
    # The window's start comes from the server's own clock, the counts from one pass over a bounded tail
    assert f"date -d '-{SIGNALS_WINDOW_MINUTES} minutes' '+%Y-%m-%d %H:%M:%S'" in PROBE_SCRIPT
    assert f"tail -n {SIGNALS_MAX_LINES} /var/log/exim_mainlog |" in PROBE_SCRIPT
    assert all(f'index($0, "{text}")' in PROBE_SCRIPT for text in (*SEND_LIMIT_TEXTS, *RELAY_REJECT_TEXTS))
