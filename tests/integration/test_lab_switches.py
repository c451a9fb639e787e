"""Each failure switch of cpanel.md §9 shows its observable behaviour over real SSH."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from lab import HostSpec
from lab.remote import ssh
from lab.smtp import banner, relay_attempt

pytestmark = pytest.mark.integration

MODERN_TW = "/usr/local/cpanel/libexec/tailwatchd"
LEGACY_TW = "/usr/local/cpanel/bin/tailwatchd"
RESTART_EXIM = "/usr/local/cpanel/scripts/restartsrv_exim"
WHMAPI = "/usr/local/cpanel/bin/whmapi1 --output=json"


def test_not_cpanel_host_has_no_cpanel_paths(make_host):
    host = make_host(profile="not-cpanel")
    res = ssh(host, "/usr/local/cpanel/bin/whmapi1 --output=json get_tweaksetting key=popbeforesmtp")
    assert res.rc == 127
    assert "No such file or directory" in res.err
    assert ssh(host, "test -e /usr/local/cpanel/version").rc == 1
    assert banner(host.address).code == 220


def test_unknown_generation_has_a_modern_version_and_legacy_paths(make_host):
    host = make_host(profile="unknown")
    assert host.read("/usr/local/cpanel/version").startswith("11.120.")
    assert host.path(LEGACY_TW).exists()
    assert not host.path(MODERN_TW).exists()


def test_no_tailwatchd_leaves_both_paths_missing(make_host):
    host = make_host(profile="legacy", switches={"no_tailwatchd": ""})
    res = ssh(host, f"{LEGACY_TW} --disable=Cpanel::TailWatch::Antirelayd")
    assert res.rc == 127
    assert ssh(host, f"{MODERN_TW} --status").rc == 127


def test_nonroot_without_sudo_is_refused(make_host):
    host = make_host(profile="modern", switches={"nonroot": ""})
    res = ssh(host, f"{WHMAPI} get_tweaksetting key=popbeforesmtp", user="cpuser")
    assert res.rc == 126
    assert "Permission denied" in res.err
    res = ssh(host, "sudo -n true", user="cpuser")
    assert res.rc == 1
    assert "a password is required" in res.err
    assert ssh(host, "cat /etc/recent_authed_mail_ips", user="cpuser").rc == 0


def test_nonroot_with_sudo_runs_root_tools(make_host):
    host = make_host(profile="modern", switches={"nonroot": ""}, sudo=True)
    res = ssh(host, f"sudo -n {WHMAPI} set_tweaksetting key=popbeforesmtp value=0", user="cpuser")
    assert res.rc == 0, res.err
    assert json.loads(res.out)["metadata"]["result"] == 1
    assert ssh(host, "sudo -n truncate -s 0 /etc/recent_authed_mail_ips", user="cpuser").rc == 0
    (record,) = [r for r in host.journal() if r["tool"] == "whmapi1"]
    assert record["uid"] == 0


def test_exim_restart_fails_once_then_works(make_host):
    host = make_host(profile="modern", switches={"exim_restart_fail_once": ""})
    first = ssh(host, RESTART_EXIM)
    assert first.rc != 0
    assert "failed to restart" in first.err
    assert ssh(host, f"{RESTART_EXIM} --status").rc == 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host.address, 25), timeout=2).close()
    assert ssh(host, f"{RESTART_EXIM} --hard").rc == 0
    assert ssh(host, f"{RESTART_EXIM} --status").rc == 0


def test_exim_restart_fails_always(make_host):
    host = make_host(profile="modern", switches={"exim_restart_fail": ""})
    for attempt in (RESTART_EXIM, f"{RESTART_EXIM} --hard", f"{RESTART_EXIM} --restart"):
        res = ssh(host, attempt)
        assert res.rc == 1
        assert "failed to restart" in res.err
    assert ssh(host, f"{RESTART_EXIM} --status").rc == 1
    for port in (25, 587):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host.address, port), timeout=2).close()


def test_exim_down_at_start(make_host):
    host = make_host(profile="modern", switches={"exim_down_at_start": ""})
    res = ssh(host, f"{RESTART_EXIM} --status")
    assert res.rc == 1
    assert "is down" in res.err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host.address, 25), timeout=2).close()


def test_exim_bad_config_fails_bv(make_host):
    host = make_host(profile="modern", switches={"exim_bad_config": ""})
    res = ssh(host, "/usr/sbin/exim -bV")
    assert res.rc == 1
    assert "configuration error" in (res.out + res.err).lower()


def test_whmapi_refusal_changes_nothing(make_host):
    host = make_host(profile="modern", switches={"whmapi_fail": ""})
    res = ssh(host, f"{WHMAPI} set_tweaksetting key=popbeforesmtp value=0")
    meta = json.loads(res.out)["metadata"]
    assert meta["result"] == 0
    assert meta["reason"]
    assert host.path("/etc/popbeforesmtp").exists()
    assert "popbeforesmtp=1" in host.read("/var/cpanel/cpanel.config").splitlines()


def test_tailwatchd_not_running(make_host):
    host = make_host(profile="modern", switches={"tailwatchd_not_running": ""})
    status = ssh(host, f"{MODERN_TW} --status").out.splitlines()
    assert status[:2] == ["tailwatchd is enabled", "Not running"]
    res = ssh(host, f"{MODERN_TW} --restart")
    assert "No PID in /var/run/tailwatchd.pid" in res.out + res.err
    assert ssh(host, f"{MODERN_TW} --status").out.splitlines()[1].startswith("Running, PID ")


def test_tailwatchd_globally_disabled_never_starts(make_host):
    host = make_host(profile="legacy", switches={"tailwatchd_globally_disabled": ""})
    status = ssh(host, f"{LEGACY_TW} --status").out.splitlines()
    assert status[:2] == ["tailwatchd is disabled", "Not running"]
    res = ssh(host, f"{LEGACY_TW} --restart")
    assert "tailwatchd is disabled" in res.out
    assert ssh(host, f"{LEGACY_TW} --status").out.splitlines()[1] == "Not running"
    # No daemon, no repopulation: a truncated list stays empty.
    ssh(host, ": > /etc/relayhosts")
    ssh(host, f"{LEGACY_TW} --status")
    assert host.read("/etc/relayhosts") == ""


def test_hanging_command_outlives_a_client_deadline(make_host):
    host = make_host(profile="modern", switches={"hang": ""})
    with pytest.raises((TimeoutError, socket.timeout, paramiko.SSHException)):
        ssh(host, f"{MODERN_TW} --status", timeout=2)
    starts = [r for r in host.journal(phase="start") if r["tool"] == "tailwatchd"]
    assert starts
    assert starts[0]["rc"] is None


def test_slow_command_answers_late_but_answers(make_host):
    host = make_host(profile="modern", switches={"slow_whmapi1": "1.5"})
    res = ssh(host, f"{WHMAPI} get_tweaksetting key=popbeforesmtp", timeout=20)
    assert json.loads(res.out)["metadata"]["result"] == 1
    (record,) = host.journal()
    assert record["end"] - record["start"] >= 1.5


def test_timeout_missing_from_path(make_host):
    host = make_host(HostSpec(profile="legacy", switches={"no_timeout": ""}))
    assert ssh(host, "command -v timeout").rc != 0
    assert ssh(host, "test -e /usr/bin/timeout").rc == 1
    assert ssh(host, f"{LEGACY_TW} --status").rc == 0


def test_stale_repopulate_off_leaves_a_truncated_list_empty(lab, make_host):
    # The switch is on by default (HostSpec.tracker_repopulates); this is the same host with it off.
    host = make_host(HostSpec(profile="legacy", tracker_repopulates=False))
    assert not host.path("/etc/sim/fail/stale_repopulate").exists()
    assert relay_attempt(host.address, lab.client_source()).code == 250
    ssh(host, ": > /etc/relayhosts")
    ssh(host, f"{LEGACY_TW} --status")  # with the switch on, this pass would re-add the logins
    assert host.read("/etc/relayhosts") == ""
    assert relay_attempt(host.address, lab.client_source()).code == 550


def test_simulated_tools_refuse_to_run_on_the_machines_own_root(repo_root):
    """Outside a lab host (no /etc/sim/host.json) every tool exits 70 and writes nothing."""
    assert not Path("/etc/sim/host.json").exists()
    sim = repo_root / "lab" / "sim"
    for code in ('sys.argv = ["whmapi1", "set_tweaksetting", "key=popbeforesmtp", "value=1"]; '
                 'sys.exit(simlib.main("whmapi1"))', "simlib.boot()"):
        res = subprocess.run([sys.executable, "-ISB", "-c", f"import sys; sys.path.insert(0, {str(sim)!r}); "
                              f"import simlib; {code}"], capture_output=True, text=True, timeout=30, check=False)
        assert res.returncode == 70, res.stderr
        assert "not a RelayGuard lab host" in res.stderr
    assert not Path("/etc/popbeforesmtp").exists()
    assert not Path("/var/lib/cpanel-sim").exists()
