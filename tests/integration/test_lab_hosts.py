"""The simulated cPanel hosts behave as cpanel.md §3/§9 say, over real SSH, with a real Exim deciding."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from lab import Host, HostSpec
from lab.fleet import pristine_view
from lab.remote import ssh
from lab.smtp import authenticated_attempt, banner, relay_attempt

pytestmark = pytest.mark.integration

STATUS_RE = re.compile(r"^  Driver \(Active: ([01])\) (Cpanel::TailWatch::\S+)$")
TRACKER = "Cpanel::TailWatch::RecentAuthedMailIpTracker"
ANTIRELAYD = "Cpanel::TailWatch::Antirelayd"
REJECT_SUFFIX = "is not permitted to relay through this server without authentication."
MODERN_TW = "/usr/local/cpanel/libexec/tailwatchd"
LEGACY_TW = "/usr/local/cpanel/bin/tailwatchd"
WHMAPI = "/usr/local/cpanel/bin/whmapi1 --output=json"
RESTART_EXIM = "/usr/local/cpanel/scripts/restartsrv_exim"


def drivers(status_text: str) -> dict[str, int]:
    found = {}
    for line in status_text.splitlines():
        m = STATUS_RE.match(line)
        if m:
            found[m.group(2)] = int(m.group(1))
    return found


def exim_pid(status_text: str) -> int:
    """The Exim daemon's PID in ``restartsrv_exim --status`` output."""
    match = re.search(r"with PID (\d+)", status_text)
    assert match, status_text
    return int(match.group(1))


def bh_rcpt_reply(host: Host, ip: str) -> str:
    """The RCPT reply of ``exim -bh`` run on the host over SSH: the daemon's decision, no delivery."""
    dialogue = (
        f"printf 'EHLO probe.example\\r\\nMAIL FROM:<{host.mailbox}>\\r\\n"
        f"RCPT TO:<x@example.net>\\r\\nQUIT\\r\\n' | /usr/sbin/exim -bh {ip}"
    )
    res = ssh(host, dialogue)
    assert res.rc == 0, res.err
    replies = [line for line in res.out.splitlines() if re.match(r"^\d{3} ", line)]
    # Final reply lines: banner, EHLO, MAIL, RCPT, QUIT.
    return replies[3]


@pytest.mark.parametrize(("profile", "path", "driver"), [("modern", MODERN_TW, TRACKER),
                                                         ("legacy", LEGACY_TW, ANTIRELAYD)])
def test_tailwatchd_status_reports_daemon_and_drivers(make_host, profile, path, driver):
    host = make_host(profile=profile)
    res = ssh(host, f"{path} --status")
    assert res.rc == 0
    lines = res.out.splitlines()
    assert lines[0] == "tailwatchd is enabled"
    assert re.fullmatch(r"Running, PID \d+", lines[1])
    assert drivers(res.out)[driver] == 1
    assert all(STATUS_RE.match(line) for line in lines[2:])


@pytest.mark.parametrize(("profile", "seeded"), [("modern", 1), ("legacy", 0)])
def test_whmapi1_reads_and_sets_the_popbeforesmtp_tweak(make_host, profile, seeded):
    host = make_host(profile=profile)
    got = json.loads(ssh(host, f"{WHMAPI} get_tweaksetting key=popbeforesmtp").out)
    assert got["metadata"] == {"command": "get_tweaksetting", "result": 1, "reason": "OK", "version": 1}
    assert got["data"]["tweaksetting"] == {"key": "popbeforesmtp", "value": seeded}

    res = ssh(host, f"{WHMAPI} set_tweaksetting key=popbeforesmtp value=1")
    assert json.loads(res.out)["metadata"] == {"command": "set_tweaksetting", "result": 1, "reason": "OK",
                                               "version": 1}
    assert host.path("/etc/popbeforesmtp").exists()
    res = ssh(host, f"{WHMAPI} set_tweaksetting key=popbeforesmtp value=0")
    assert json.loads(res.out)["metadata"]["result"] == 1
    assert not host.path("/etc/popbeforesmtp").exists()
    assert "popbeforesmtp=0" in host.read("/var/cpanel/cpanel.config").splitlines()
    got = json.loads(ssh(host, f"{WHMAPI} get_tweaksetting key=popbeforesmtp").out)
    assert got["data"]["tweaksetting"]["value"] == 0


def test_modern_tracker_disable_sets_skip_key_and_empties_the_lists(modern):
    assert modern.read("/etc/recent_authed_mail_ips").strip()
    res = ssh(modern, f"{MODERN_TW} --disable={TRACKER}")
    assert res.rc == 0
    assert "skiprecentauthedmailiptracker=1" in modern.read("/var/cpanel/cpanel.config").splitlines()
    assert modern.read("/etc/recent_authed_mail_ips") == ""
    assert modern.read("/etc/recent_authed_mail_ips_users") == ""
    assert modern.path("/etc/relayhosts").is_symlink()
    assert drivers(ssh(modern, f"{MODERN_TW} --status").out)[TRACKER] == 0


def test_modern_rejects_the_legacy_driver_name(modern):
    res = ssh(modern, f"{MODERN_TW} --disable={ANTIRELAYD}")
    assert res.rc != 0
    assert res.err.startswith(f"Failed to load {ANTIRELAYD}: No such file or directory")
    res = ssh(modern, f"{LEGACY_TW} --disable={ANTIRELAYD}")
    assert res.rc == 127


def test_legacy_antirelayd_disable_sets_skip_key_and_leaves_relayhosts(legacy):
    before = legacy.read("/etc/relayhosts")
    assert before.strip()
    assert ssh(legacy, f"{LEGACY_TW} --disable={ANTIRELAYD}").rc == 0
    assert "skipantirelayd=1" in legacy.read("/var/cpanel/cpanel.config").splitlines()
    assert legacy.read("/etc/relayhosts") == before
    assert drivers(ssh(legacy, f"{LEGACY_TW} --status").out)[ANTIRELAYD] == 0


@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_restartsrv_exim_status_stop_and_restart(make_host, profile):
    host = make_host(profile=profile)
    up = ssh(host, f"{RESTART_EXIM} --status")
    assert up.rc == 0
    pid = exim_pid(up.out)
    # A restart of a running Exim replaces the daemon.
    assert ssh(host, RESTART_EXIM).rc == 0
    restarted = ssh(host, f"{RESTART_EXIM} --status")
    assert restarted.rc == 0
    assert exim_pid(restarted.out) != pid
    pid = exim_pid(restarted.out)
    assert ssh(host, f"{RESTART_EXIM} --stop").rc == 0
    down = ssh(host, f"{RESTART_EXIM} --status")
    assert down.rc == 1
    assert "The “exim” service is down." in down.err
    assert ssh(host, RESTART_EXIM).rc == 0
    again = ssh(host, f"{RESTART_EXIM} --status")
    assert again.rc == 0
    assert exim_pid(again.out) != pid
    assert "ESMTP" in banner(host.address).text


def reject_text(host: Host, source: str) -> str:
    """The 550 text the host's Exim should give ``source``: /etc/eximrejects as it is now, expanded."""
    line = host.read("/etc/eximrejects").split("host_accept_relay:", 1)[1]
    return " ".join(line.replace("$sender_fullhost", f"(client.example) [{source}]").split())


def test_modern_relay_verdicts_follow_the_tweak_setting(lab, modern):
    source = lab.client_source()
    assert source in modern.read("/etc/recent_authed_mail_ips").split()
    assert modern.path("/etc/popbeforesmtp").exists()
    assert relay_attempt(modern.address, source).code == 250
    assert bh_rcpt_reply(modern, source).startswith("250")
    assert authenticated_attempt(modern.address, source, modern.mailbox).code == 250

    assert ssh(modern, f"{WHMAPI} set_tweaksetting key=popbeforesmtp value=0").rc == 0
    denied = relay_attempt(modern.address, source)
    assert denied.code == 550
    # Exim folds long replies over several lines: compare the words, not the line breaks.
    assert " ".join(denied.text.split()) == reject_text(modern, source)
    assert bh_rcpt_reply(modern, source).startswith("550")
    assert authenticated_attempt(modern.address, source, modern.mailbox).code == 250

    # update_exim_rejects drops the POP/IMAP hint; the live reply follows the file.
    ssh(modern, "/usr/local/cpanel/scripts/update_exim_rejects")
    denied = relay_attempt(modern.address, source)
    assert " ".join(denied.text.split()) == reject_text(modern, source)
    assert "Please turn on SMTP Authentication in your mail client." in denied.text
    assert "IMAP/POP3" not in denied.text
    assert REJECT_SUFFIX in " ".join(denied.text.split())
    assert authenticated_attempt(modern.address, source, modern.mailbox).code == 250


def test_legacy_driver_disable_alone_leaves_stale_entries_relaying(lab, legacy):
    source = lab.client_source()
    assert relay_attempt(legacy.address, source).code == 250
    assert ssh(legacy, f"{LEGACY_TW} --disable={ANTIRELAYD}").rc == 0
    # The disable took effect: the relay still works only because /etc/relayhosts is stale.
    assert drivers(ssh(legacy, f"{LEGACY_TW} --status").out)[ANTIRELAYD] == 0
    assert source in legacy.read("/etc/relayhosts").split()
    assert relay_attempt(legacy.address, source).code == 250


def test_legacy_disable_then_truncate_closes_relaying(lab, legacy):
    source = lab.client_source()
    ssh(legacy, f"{LEGACY_TW} --disable={ANTIRELAYD}")
    ssh(legacy, ": > /etc/relayhosts; : > /etc/relayhostsusers")
    ssh(legacy, f"{LEGACY_TW} --status")  # any simulated command runs the tracker hook
    assert legacy.read("/etc/relayhosts") == ""
    assert relay_attempt(legacy.address, source).code == 550


def test_legacy_truncate_alone_is_undone_by_the_running_tracker(lab, legacy):
    source = lab.client_source()
    ssh(legacy, ": > /etc/relayhosts")
    assert relay_attempt(legacy.address, source).code == 550
    ssh(legacy, f"{LEGACY_TW} --status")  # the next tracker pass re-adds the logins
    assert source in legacy.read("/etc/relayhosts").split()
    assert relay_attempt(legacy.address, source).code == 250


def test_modern_tracker_keeps_re_adding_until_it_is_disabled_with_a_restart(lab, modern):
    source = lab.client_source()
    listed = "/etc/recent_authed_mail_ips"
    ssh(modern, f": > {listed}")
    ssh(modern, f"{MODERN_TW} --status")  # the next tracker pass re-adds the logins
    assert source in modern.read(listed).split()
    # The skip key set by hand changes nothing: the running daemon read its drivers when it started.
    sed = "s/^skiprecentauthedmailiptracker=0$/skiprecentauthedmailiptracker=1/"
    assert ssh(modern, f"sed -i '{sed}' /var/cpanel/cpanel.config").rc == 0
    ssh(modern, f": > {listed}")
    ssh(modern, f"{MODERN_TW} --status")
    assert source in modern.read(listed).split()
    # The documented disable restarts tailwatchd; after it the list stays empty.
    assert ssh(modern, f"{MODERN_TW} --disable={TRACKER}").rc == 0
    ssh(modern, f": > {listed}")
    ssh(modern, f"{MODERN_TW} --status")
    assert modern.read(listed).split() == []


def tailwatchd_pid(host: Host, path: str = MODERN_TW) -> int:
    return int(ssh(host, f"{path} --status").out.splitlines()[1].removeprefix("Running, PID "))


def test_tailwatchd_disable_with_restart_0_leaves_the_running_tracker_re_adding(lab, modern):
    source = lab.client_source()
    pid = tailwatchd_pid(modern)
    assert ssh(modern, f"{MODERN_TW} --disable={TRACKER} --restart=0").rc == 0
    assert "skiprecentauthedmailiptracker=1" in modern.read("/var/cpanel/cpanel.config").splitlines()
    assert tailwatchd_pid(modern) == pid  # not restarted ...
    assert source in modern.read("/etc/recent_authed_mail_ips").split()  # ... so its next pass re-added them
    # --enable undoes the disable and restarts the daemon, whose snapshot has the driver active again.
    assert ssh(modern, f"{MODERN_TW} --enable={TRACKER}").rc == 0
    assert "skiprecentauthedmailiptracker=0" in modern.read("/var/cpanel/cpanel.config").splitlines()
    assert tailwatchd_pid(modern) != pid
    assert drivers(ssh(modern, f"{MODERN_TW} --status").out)[TRACKER] == 1


@pytest.mark.parametrize(("profile", "path"), [("modern", MODERN_TW), ("legacy", LEGACY_TW)])
def test_tailwatchd_help_and_restartsrv_tailwatchd(make_host, profile, path):
    host = make_host(profile=profile)
    usage = ssh(host, f"{path} --help")
    assert usage.rc == 0
    assert "--disable" in usage.out
    for other in ("", "--no-such-flag"):  # no argument, or an unknown flag: the help text, exit 0
        res = ssh(host, f"{path} {other}")
        assert (res.rc, res.out) == (0, usage.out)
    pid = tailwatchd_pid(host, path)
    assert ssh(host, "/usr/local/cpanel/scripts/restartsrv_tailwatchd").rc == 0
    assert tailwatchd_pid(host, path) != pid


def test_restartsrv_exim_check_and_help(modern):
    check = ssh(modern, f"{RESTART_EXIM} --check")
    assert check.rc == 0
    assert check.out.startswith("The 'exim' service passed the check: ")
    assert ssh(modern, f"{RESTART_EXIM} --help").rc == 0
    assert ssh(modern, f"{RESTART_EXIM} --stop").rc == 0
    assert ssh(modern, f"{RESTART_EXIM} --check").rc == 1


def test_whmapi1_servicestatus_and_the_configureservice_pitfall(modern):
    status = json.loads(ssh(modern, f"{WHMAPI} servicestatus service=exim").out)
    assert status["metadata"]["result"] == 1
    (exim,) = status["data"]["service"]
    assert exim["name"] == "exim"
    assert {"name", "display_name", "enabled", "installed", "monitored", "running"} <= set(exim)
    assert exim["running"] == 1
    assert ssh(modern, f"{RESTART_EXIM} --stop").rc == 0
    (down,) = json.loads(ssh(modern, f"{WHMAPI} servicestatus service=exim").out)["data"]["service"]
    assert down["running"] == 0
    # Drivers are not services: the copied 'configureservice service=antirelayd' changes nothing.
    before = modern.read("/var/cpanel/cpanel.config")
    res = json.loads(ssh(modern, f"{WHMAPI} configureservice service=antirelayd enabled=0 monitored=0").out)
    assert res["metadata"]["result"] == 0
    assert res["metadata"]["reason"] == "Specified service does not exist or was not specified."
    assert modern.read("/var/cpanel/cpanel.config") == before


def test_smtpmailgidonly_status_and_usage(modern):
    res = ssh(modern, "/usr/local/cpanel/scripts/smtpmailgidonly status")
    assert (res.rc, res.out.strip()) == (0, "Protection is: on")
    bare = ssh(modern, "/usr/local/cpanel/scripts/smtpmailgidonly")
    assert bare.rc == 1
    assert bare.out == ""
    assert bare.err.strip()


def test_two_hosts_keep_their_own_files_and_journals(make_host):
    a = make_host(profile="modern")
    b = make_host(profile="modern", exposed=False)
    # Different states at the same paths: the gate file exists on one host only.
    assert ssh(a, "test -e /etc/popbeforesmtp").rc == 0
    assert ssh(b, "test -e /etc/popbeforesmtp").rc == 1
    token = secrets.token_hex(4)
    dirs = ("/etc", "/var/cpanel", "/tmp", "/root")
    for host, other in ((a, b), (b, a)):
        marker = f"marker-{host.name}-{token}"
        paths = " ".join(f"{d}/{marker}" for d in dirs)
        assert ssh(host, f"for p in {paths}; do echo {host.name} > $p || exit 1; done; cat {paths}").out == (
            f"{host.name}\n" * len(dirs))
        # The other host, and the machine's own root, see nothing at those paths.
        assert ssh(other, f"for p in {paths}; do test -e $p && echo $p; done; true").out == ""
        assert [d for d in dirs if Path(d, marker).exists()] == []

    ssh(a, f"{MODERN_TW} --status")
    ssh(b, f"{WHMAPI} get_tweaksetting key=popbeforesmtp")
    assert [r["argv"][1:] for r in a.journal()] == [["--status"]]
    assert [r["argv"][1:] for r in b.journal()] == [["--output=json", "get_tweaksetting", "key=popbeforesmtp"]]
    record = a.journal()[0]
    assert record["tool"] == "tailwatchd"
    assert record["argv"][0] == MODERN_TW
    assert record["uid"] == 0
    assert record["rc"] == 0
    assert record["end"] >= record["start"]


def test_reset_restores_the_pristine_tree(lab, make_host):
    host = make_host(profile="legacy")
    pristine = pristine_view(host.snapshot())
    ssh(host, f"{LEGACY_TW} --disable={ANTIRELAYD}; : > /etc/relayhosts; touch /etc/alwaysrelay.bak")
    assert pristine_view(host.snapshot()) != pristine
    lab.reset(host)
    assert pristine_view(host.snapshot()) == pristine
    assert host.journal() == []


def test_seedable_state_reaches_the_host(lab, make_host):
    spec = HostSpec(profile="modern", alwaysrelay=("192.0.2.44",), trustedmailhosts=("192.0.2.55",),
                    queue_size=3, mainlog_lines=("2026-11-25 10:00:00 seeded line",))
    host = make_host(spec)
    assert "192.0.2.44" in host.read("/etc/recent_authed_mail_ips").split()
    assert host.read("/etc/trustedmailhosts") == "192.0.2.55\n"
    assert ssh(host, "/usr/sbin/exim -bpc").out.strip() == "3"
    assert "seeded line" in host.read("/var/log/exim_mainlog")
    assert "alice@" in host.read("/etc/recent_authed_mail_ips_users")


def test_a_reused_host_is_reset_and_checked_pristine(lab, host_pool, monkeypatch):
    spec = HostSpec(profile="legacy", queue_size=2)  # a spec no other test uses: this test owns the host
    host = host_pool.take(spec)
    try:
        ssh(host, f"{LEGACY_TW} --disable={ANTIRELAYD}; : > /etc/relayhosts; touch /etc/stray")
        host_pool.give_back(host)
        again = host_pool.take(spec)
        assert again is host
        assert not host.path("/etc/stray").exists()
        assert host.journal() == []
        assert lab.client_source() in host.read("/etc/relayhosts").split()
        assert relay_attempt(host.address, lab.client_source()).code == 250

        # The pristine check is live: a host handed out again without its reset is refused.
        ssh(host, "touch /etc/stray")
        host_pool.give_back(host)
        monkeypatch.setattr(lab, "reset", lambda h, spec=None: h)
        with pytest.raises(AssertionError, match="not pristine"):
            host_pool.take(spec)
    finally:
        monkeypatch.undo()
        lab.stop_host(host)
        lab.hosts.pop(host.name, None)
