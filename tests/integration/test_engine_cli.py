"""The engine through the installed ``relayguard`` entry point, against lab hosts (real sshd, real Exim)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lab import Host, HostSpec, Lab, Login
from lab.remote import ssh
from lab.smtp import authenticated_attempt, relay_attempt

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
TRACKER = "Cpanel::TailWatch::RecentAuthedMailIpTracker"


def rg(lab: Lab, command: str, *hosts: Host, extra: tuple[str, ...] = (), known_hosts: Path | None = None,
       identity: Path | None = None, timeout: float = 120) -> tuple[int, list[dict], str]:
    argv = [RELAYGUARD, command, "--json", "--identity", str(identity or lab.client_key),
            "--known-hosts", str(known_hosts or lab.known_hosts), *extra, *(h.address for h in hosts)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, results, proc.stderr


def tools(host: Host) -> list[tuple[str, list[str]]]:
    return [(r["tool"], r["argv"][1:]) for r in host.journal()]


def restarts(host: Host) -> list[list[str]]:
    return [argv for tool, argv in tools(host) if tool == "restartsrv_exim" and "--status" not in argv]


def changing_tailwatchd_calls(host: Host) -> list[list[str]]:
    return [argv for tool, argv in tools(host) if tool == "tailwatchd" and argv != ["--status"]]


def test_fix_closes_a_modern_server_and_proves_it(lab, modern):
    source = lab.client_source()
    assert relay_attempt(modern.address, source).code == 250
    code, (res,), _ = rg(lab, "fix", modern)
    assert code == 0
    assert res["outcome"] == "remediated"
    assert (res["exposed_before"], res["exposed_after"], res["restarted"]) == (True, False, True)
    assert relay_attempt(modern.address, source).code == 550
    assert len(restarts(modern)) == 1
    assert changing_tailwatchd_calls(modern) == []
    assert res["before"]["gate_file"] is True
    assert res["after"]["gate_file"] is False
    assert res["relay_probe"]["code"] == 550
    assert res["affected_mailboxes"] == sorted(f"{u}@{modern.domain}" for u in ("alice", "bob", "carol", "dave"))
    assert modern.path("/etc/relayhosts").is_symlink()
    assert {s["name"] for s in res["steps"]} >= {"probe", "set-tweak-popbeforesmtp-0", "restart-exim", "relay-probe"}


def test_disable_tracker_policy_also_turns_the_tracker_off(lab, make_host):
    host = make_host(HostSpec(profile="modern", alwaysrelay=("192.0.2.77",)))
    code, (res,), _ = rg(lab, "fix", host, extra=("--disable-tracker",))
    assert code == 0, res
    assert res["outcome"] == "remediated"
    status = ssh(host, "/usr/local/cpanel/libexec/tailwatchd --status").out
    assert f"  Driver (Active: 0) {TRACKER}" in status.splitlines()
    assert set(host.read("/etc/recent_authed_mail_ips").split()) <= {"192.0.2.77"}
    assert host.path("/etc/relayhosts").is_symlink()
    assert host.path("/etc/relayhostsusers").is_symlink()


def test_fix_closes_a_legacy_server_disable_then_truncate_then_restart(lab, legacy):
    source = lab.client_source()
    assert relay_attempt(legacy.address, source).code == 250
    code, (res,), _ = rg(lab, "fix", legacy)
    assert code == 0, res
    assert res["outcome"] == "remediated"
    assert relay_attempt(legacy.address, source).code == 550
    names = [s["name"] for s in res["steps"]]
    assert names.index("disable-antirelayd") < names.index("truncate-relayhosts") < names.index("restart-exim")
    journal = tools(legacy)
    disable = journal.index(("tailwatchd", ["--disable=Cpanel::TailWatch::Antirelayd"]))
    assert journal.index(("restartsrv_exim", []), disable) > disable
    assert len(restarts(legacy)) == 1
    assert legacy.read("/etc/relayhosts") == ""


def test_fix_keeps_authenticated_submission_and_admin_exceptions(lab, make_host):
    keeper = lab.client_source(20)
    host = make_host(HostSpec(profile="modern", alwaysrelay=(keeper,)))
    before = host.path("/etc/alwaysrelay").read_bytes()
    _, (res,), _ = rg(lab, "fix", host)
    assert res["outcome"] == "remediated"
    assert "admin-exception:alwaysrelay" in res["warnings"]
    assert authenticated_attempt(host.address, lab.client_source(), host.mailbox).code == 250
    assert relay_attempt(host.address, keeper).code == 250
    assert host.path("/etc/alwaysrelay").read_bytes() == before
    # The relay proof never uses an exception-list address.
    assert res["relay_probe"]["ip"] != keeper


@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_compliant_and_just_fixed_servers_are_left_untouched(lab, make_host, profile):
    compliant = make_host(profile=profile, exposed=False)
    fixed = make_host(profile=profile)
    assert rg(lab, "fix", fixed)[1][0]["outcome"] == "remediated"
    snapshots = {h.name: h.snapshot() for h in (compliant, fixed)}
    journals = {h.name: len(restarts(h)) for h in (compliant, fixed)}
    code, results, _ = rg(lab, "fix", compliant, fixed)
    assert code == 0
    assert [r["outcome"] for r in results] == ["compliant", "compliant"]
    assert all(not r["restarted"] for r in results)
    for h in (compliant, fixed):
        assert h.snapshot() == snapshots[h.name]
        assert len(restarts(h)) == journals[h.name]
        assert changing_tailwatchd_calls(h) == ([] if h is compliant or profile == "modern" else
                                                [["--disable=Cpanel::TailWatch::Antirelayd"]])


@pytest.mark.parametrize("profile", ["modern", "legacy", "not-cpanel", "unknown"])
def test_check_changes_nothing_and_exits_1_when_exposed(lab, make_host, profile):
    host = make_host(profile=profile)
    before = host.snapshot()
    code, (res,), _ = rg(lab, "check", host)
    assert host.snapshot() == before
    assert restarts(host) == []
    expected = {"modern": (1, "noncompliant"), "legacy": (1, "noncompliant"), "not-cpanel": (0, "not-cpanel"),
                "unknown": (2, "failed")}[profile]
    assert (code, res["outcome"]) == expected


def test_not_cpanel_runs_nothing_beyond_the_probe(lab, make_host):
    host = make_host(profile="not-cpanel")
    _, (res,), _ = rg(lab, "fix", host)
    assert res["outcome"] == "not-cpanel"
    assert [s["name"] for s in res["steps"]] == ["probe"]
    assert {tool for tool, _ in tools(host)} <= {"exim"}
    assert all(argv[0] in ("-bV", "-bpc") for _, argv in tools(host))


def test_unknown_generation_fails_and_changes_nothing(lab, make_host):
    host = make_host(profile="unknown")
    before = host.snapshot()
    code, (res,), _ = rg(lab, "fix", host)
    assert (code, res["outcome"], res["reason"]) == (2, "failed", "unknown-generation")
    assert host.snapshot() == before


def test_a_hostile_relay_list_entry_is_never_executed(lab, make_host):
    hostile = "1.2.3.4;touch /tmp/pwned"
    host = make_host(HostSpec(profile="legacy", logins=(Login(hostile), Login("198.51.100.9", ("eve@x.test",)))))
    assert hostile in host.read("/etc/relayhosts")
    _, (res,), _ = rg(lab, "fix", host)
    assert "invalid-relay-entry" in res["warnings"]
    assert res["relay_probe"]["ip"] == "198.51.100.9"
    assert not host.path("/tmp/pwned").exists()
    assert not Path("/tmp/pwned").exists()
    assert res["outcome"] == "remediated"


@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_documented_manual_revert_reopens_relaying(lab, make_host, profile):
    host = make_host(profile=profile)
    _, (res,), _ = rg(lab, "fix", host)
    assert relay_attempt(host.address, lab.client_source()).code == 550
    assert res["revert"]
    for command in res["revert"]:
        assert ssh(host, command).rc == 0, command
    assert relay_attempt(host.address, lab.client_source()).code == 250


# -- transport failures -------------------------------------------------------------------------


def test_wrong_pinned_key_is_a_mismatch_before_authentication(lab, modern, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = other.with_suffix(".pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{modern.address} {pub[0]} {pub[1]}\n")
    code, (res,), _ = rg(lab, "fix", modern, known_hosts=kh)
    assert (code, res["outcome"]) == (2, "host-key-mismatch")
    assert modern.accepted_logins() == 0
    assert modern.path("/etc/popbeforesmtp").exists()


def test_unknown_host_is_refused_without_trusting_it(lab, modern, tmp_path):
    kh = tmp_path / "empty_known_hosts"
    kh.write_text("")
    code, (res,), _ = rg(lab, "check", modern, known_hosts=kh)
    assert (code, res["outcome"]) == (2, "host-key-unknown")
    assert "Accepted" not in modern.sshd_log()


def test_wrong_client_key_is_auth_failed(lab, modern, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    code, (res,), _ = rg(lab, "check", modern, identity=key)
    assert (code, res["outcome"]) == (2, "auth-failed")


def test_closed_port_and_silent_listener_are_unreachable(lab, modern, tmp_path):
    silent = socket.socket()
    silent.bind((lab.client_source(30), 0))
    silent.listen(1)
    port = silent.getsockname()[1]
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        key = (modern.dir / "ssh_host_ed25519_key.pub").read_text().split()
        kh = tmp_path / "kh"
        pinned = f"{key[0]} {key[1]}"
        kh.write_text(f"[{lab.client_source(30)}]:{port} {pinned}\n{lab.client_source(31)} {pinned}\n")
        argv = [RELAYGUARD, "check", "--json", "--timeout", "3", "--identity", str(lab.client_key),
                "--known-hosts", str(kh), f"{lab.client_source(30)}:{port}", lab.client_source(31)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        outcomes = [json.loads(line)["outcome"] for line in proc.stdout.splitlines()]
        assert (proc.returncode, outcomes) == (2, ["unreachable", "unreachable"])
    finally:
        stop.set()
        t.join(5)
        for conn in accepted:
            conn.close()
        silent.close()


def test_hanging_command_times_out_long_before_the_hang_ends(lab, make_host):
    host = make_host(profile="modern", switches={"hang": ""})
    started = time.monotonic()
    code, (res,), _ = rg(lab, "check", host, extra=("--timeout", "2"))
    assert (code, res["outcome"]) == (2, "timeout")
    assert time.monotonic() - started < 30  # the simulated hang lasts an hour


# -- server-side failures -----------------------------------------------------------------------


def test_exim_restart_failing_once_is_retried_hard(lab, make_host):
    host = make_host(profile="modern", switches={"exim_restart_fail_once": ""})
    _, (res,), _ = rg(lab, "fix", host)
    assert res["outcome"] == "remediated"
    assert res["exim_restarts"] == 2
    assert restarts(host) == [[], ["--hard"]]


def test_exim_restart_failing_always_is_failed_with_evidence(lab, make_host):
    host = make_host(profile="modern", switches={"exim_restart_fail": ""})
    code, (res,), _ = rg(lab, "fix", host)
    assert (code, res["outcome"], res["reason"]) == (2, "failed", "exim-restart-failed")
    steps = {s["name"]: s for s in res["steps"]}
    assert steps["restart-exim"]["rc"] != 0
    assert "failed to restart" in steps["restart-exim-hard"]["stderr"]
    assert steps["exim-status"]["rc"] == 1
    assert res["exposed_after"] is False  # the gate itself did close


def test_whmapi_refusal_fails_without_truncating_or_restarting(lab, make_host):
    host = make_host(profile="modern", switches={"whmapi_fail": ""}, alwaysrelay=("192.0.2.5",))
    before = host.read("/etc/recent_authed_mail_ips")
    code, (res,), _ = rg(lab, "fix", host, extra=("--disable-tracker",))
    assert (code, res["outcome"]) == (2, "failed")
    assert res["reason"].startswith("whmapi1-refused")
    assert restarts(host) == []
    assert changing_tailwatchd_calls(host) == []
    assert host.read("/etc/recent_authed_mail_ips") == before


def test_exim_down_before_the_run_is_reported_as_pre_existing(lab, make_host):
    host = make_host(profile="modern", switches={"exim_down_at_start": ""})
    _, (res,), _ = rg(lab, "fix", host)
    assert "exim-down-before-run" in res["warnings"]
    assert res["before"]["exim_running"] is False
    assert res["outcome"] == "remediated"
    assert res["after"]["exim_running"] is True


def test_nonroot_without_sudo_is_permission_denied(lab, make_host):
    host = make_host(profile="modern", switches={"nonroot": ""})
    code, (res,), _ = rg(lab, "fix", host, extra=("--user", "cpuser"))
    assert (code, res["outcome"]) == (2, "permission-denied")
    assert host.path("/etc/popbeforesmtp").exists()
    code, (res,), _ = rg(lab, "fix", host, extra=("--user", "cpuser", "--sudo"))
    assert (code, res["outcome"]) == (2, "permission-denied")


def test_nonroot_with_sudo_fixes_a_legacy_server(lab, make_host):
    host = make_host(profile="legacy", switches={"nonroot": ""}, sudo=True)
    code, (res,), _ = rg(lab, "fix", host, extra=("--user", "cpuser", "--sudo"))
    assert (code, res["outcome"]) == (0, "remediated"), res
    assert host.read("/etc/relayhosts") == ""
    assert relay_attempt(host.address, lab.client_source()).code == 550


def test_probe_works_without_coreutils_timeout(lab, make_host):
    host = make_host(profile="legacy", switches={"no_timeout": ""})
    code, (res,), _ = rg(lab, "check", host)
    assert (code, res["outcome"], res["generation"]) == (1, "noncompliant", "legacy")


# -- fleets ---------------------------------------------------------------------------------------


def test_scan_of_a_mixed_fleet_reports_every_host_concurrently(lab, make_fleet, tmp_path):
    kinds = [
        HostSpec(profile="modern"), HostSpec(profile="legacy"), HostSpec(profile="modern", exposed=False),
        HostSpec(profile="not-cpanel"), HostSpec(profile="unknown"),
        HostSpec(profile="modern", switches={"exim_restart_fail": ""}),
        HostSpec(profile="legacy", exposed=False), HostSpec(profile="modern", switches={"whmapi_fail": ""}),
    ]
    specs = {f"scan{i:02d}": kinds[i % len(kinds)] for i in range(20)}
    hosts = make_fleet(specs)
    inventory = json.loads(lab.inventory.read_text())
    inventory["servers"] = [s for s in inventory["servers"] if s["name"] in specs]
    inv = tmp_path / "inventory.json"
    inv.write_text(json.dumps(inventory))
    argv = [RELAYGUARD, "scan", "--inventory", str(inv), "--fix", "--concurrency", "8", "--json",
            "--identity", str(lab.client_key)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    results = {r["host"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(results) == set(specs)
    assert proc.returncode == 2
    expected = {0: "remediated", 1: "remediated", 2: "compliant", 3: "not-cpanel", 4: "failed",
                5: "failed", 6: "compliant", 7: "failed"}
    for i, name in enumerate(specs):
        assert results[name]["outcome"] == expected[i % len(kinds)], (name, results[name]["reason"])
    for h in hosts:
        assert h.accepted_logins() == 1, h.name
    windows = sorted((min(r["start"] for r in h.journal()), max(r["end"] or r["start"] for r in h.journal()))
                     for h in hosts if h.journal())
    assert any(b[0] < a[1] for a, b in itertools.pairwise(windows)), "no two hosts overlapped"


def test_key_given_as_text_is_never_printed(lab, modern):
    key_text = lab.client_key.read_text()
    env = {**os.environ, "RELAYGUARD_SSH_KEY": key_text}
    argv = [RELAYGUARD, "check", "--known-hosts", str(lab.known_hosts), modern.address]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 1, proc.stderr
    body = key_text.splitlines()[1]
    assert body not in proc.stdout
    assert body not in proc.stderr
    assert "noncompliant" in proc.stdout
