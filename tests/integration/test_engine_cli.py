"""The engine through the installed ``relayguard`` entry point, against lab hosts (real sshd, real Exim)."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab import Host, HostSpec, Lab, Login
from lab.remote import ssh
from lab.smtp import authenticated_attempt, relay_attempt

DOCS = Path(__file__).resolve().parents[2] / "docs"

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
TRACKER = "Cpanel::TailWatch::RecentAuthedMailIpTracker"


def rg(lab: Lab, command: str, *hosts: Host, extra: tuple[str, ...] = (), known_hosts: Path | None = None,
       identity: Path | None = None, timeout: float = 120) -> tuple[int, list[dict[str, Any]], str]:
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


#: The only simulated-tool calls that change nothing: what the probe and the re-probe run.
READ_ONLY = {("tailwatchd", ("--status",)), ("restartsrv_exim", ("--status",)), ("exim", ("-bV",)),
             ("exim", ("-bpc",)), ("smtpmailgidonly", ("status",))}


def writes(records: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Journal records of calls that may change something (``exim -bh`` only simulates a session, ``-bP`` reads)."""
    return [(r["tool"], r["argv"][1:]) for r in records
            if (r["tool"], tuple(r["argv"][1:])) not in READ_ONLY and r["argv"][1:2] not in (["-bh"], ["-bP"])]


def fingerprint(public_key: Path) -> str:
    """``SHA256:...`` as sshd logs a key it was offered."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[1]


def new_key(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_fix_closes_a_modern_server_and_proves_it(lab, modern):
    source = lab.client_source()
    assert relay_attempt(modern.address, source).code == 250
    code, (res,), _ = rg(lab, "fix", modern)
    assert code == 0
    assert (res["host"], res["outcome"], res["generation"]) == (modern.address, "remediated", "modern")
    assert (res["exposed_before"], res["exposed_after"], res["restarted"]) == (True, False, True)
    assert relay_attempt(modern.address, source).code == 550
    assert len(restarts(modern)) == 1
    # Default policy: tailwatchd is never changed, not even run: the probe and the re-probe read its status
    # from the files `tailwatchd --status` reads (issue 20: the scan's cost on the server).
    assert [argv for tool, argv in tools(modern) if tool == "tailwatchd"] == []
    assert res["before"]["gate_file"] is True
    assert res["after"]["gate_file"] is False
    assert res["relay_probe"]["code"] == 550
    assert res["affected_mailboxes"] == sorted(f"{u}@{modern.domain}" for u in ("alice", "bob", "carol", "dave"))
    assert os.readlink(modern.path("/etc/relayhosts")) == "/etc/recent_authed_mail_ips"
    assert os.readlink(modern.path("/etc/relayhostsusers")) == "/etc/recent_authed_mail_ips_users"
    assert {s["name"] for s in res["steps"]} >= {"probe", "set-tweak-popbeforesmtp-0", "restart-exim", "relay-probe"}
    for step in res["steps"]:
        assert isinstance(step["rc"], int)
        assert step["duration"] >= 0


def test_disable_tracker_policy_also_turns_the_tracker_off(lab, make_host):
    host = make_host(HostSpec(profile="modern", alwaysrelay=("192.0.2.77",)))
    code, (res,), _ = rg(lab, "fix", host, extra=("--disable-tracker",))
    assert code == 0, res
    assert res["outcome"] == "remediated"
    assert changing_tailwatchd_calls(host) == [[f"--disable={TRACKER}"]]
    status = ssh(host, "/usr/local/cpanel/libexec/tailwatchd --status").out
    assert f"  Driver (Active: 0) {TRACKER}" in status.splitlines()
    # Only the admin's alwaysrelay entry may stay listed; the seeded logins and their users are gone.
    assert set(host.read("/etc/recent_authed_mail_ips").split()) <= {"192.0.2.77"}
    assert host.read("/etc/recent_authed_mail_ips_users").split() == []
    # Captured before the lists were cleared: the lists no longer hold them.
    assert res["affected_mailboxes"] == sorted(f"{u}@{host.domain}" for u in ("alice", "bob", "carol", "dave"))
    assert host.path("/etc/relayhosts").is_symlink()
    assert host.path("/etc/relayhostsusers").is_symlink()
    assert relay_attempt(host.address, lab.client_source()).code == 550


def test_fix_closes_a_legacy_server_disable_then_truncate_then_restart(lab, legacy):
    source = lab.client_source()
    assert relay_attempt(legacy.address, source).code == 250
    code, (res,), _ = rg(lab, "fix", legacy)
    assert code == 0, res
    assert res["outcome"] == "remediated"
    assert relay_attempt(legacy.address, source).code == 550
    names = [s["name"] for s in res["steps"]]
    assert names.index("disable-antirelayd") < names.index("truncate-relayhosts") < names.index("restart-exim")
    assert writes(legacy.journal()) == [("tailwatchd", ["--disable=Cpanel::TailWatch::Antirelayd"]),
                                        ("update_exim_rejects", []), ("restartsrv_exim", [])]
    # Truncation is a shell redirect, not a journaled tool: its time is the file's mtime, which
    # falls after the disable ended and before the restart began (10 ms for the kernel's coarse clock).
    (disable,) = [r for r in legacy.journal() if r["tool"] == "tailwatchd" and r["argv"][1] != "--status"]
    (restart,) = [r for r in legacy.journal() if r["tool"] == "restartsrv_exim" and r["argv"][1:] == []]
    truncated = legacy.path("/etc/relayhosts").stat().st_mtime
    assert disable["end"] - 0.01 <= truncated <= restart["start"] + 0.01
    assert legacy.read("/etc/relayhosts") == ""
    assert legacy.read("/etc/relayhostsusers") == ""
    # Captured before the truncation emptied the only place they were recorded.
    assert res["affected_mailboxes"] == sorted(f"{u}@{legacy.domain}" for u in ("alice", "bob", "carol", "dave"))


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
    seen = {h.name: len(h.journal()) for h in (compliant, fixed)}
    sessions = {h.name: h.exec_sessions() for h in (compliant, fixed)}
    code, results, _ = rg(lab, "fix", compliant, fixed)
    assert code == 0
    assert [r["outcome"] for r in results] == ["compliant", "compliant"]
    assert all(not r["restarted"] for r in results)
    for h in (compliant, fixed):
        assert h.snapshot() == snapshots[h.name]  # hash, mtime, mode, owner and link target
        assert h.exec_sessions() > sessions[h.name], "the probe ran"
        assert writes(h.journal()[seen[h.name]:]) == []


@pytest.mark.parametrize("profile", ["modern", "legacy", "not-cpanel", "unknown"])
def test_check_changes_nothing_and_exits_1_when_exposed(lab, make_host, profile):
    host = make_host(profile=profile)
    before = host.snapshot()
    code, (res,), _ = rg(lab, "check", host)
    assert host.snapshot() == before
    assert writes(host.journal()) == []
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
    assert writes(host.journal()) == []
    assert [s["name"] for s in res["steps"]] == ["probe"]


def test_a_hostile_relay_list_entry_is_never_executed(lab, make_host):
    hostile = "1.2.3.4;touch /tmp/pwned"
    host = make_host(HostSpec(profile="legacy", logins=(Login(hostile), Login("198.51.100.9", ("eve@x.test",)))))
    assert hostile in host.read("/etc/relayhosts")
    _, (res,), _ = rg(lab, "fix", host)
    assert res["outcome"] == "remediated"
    assert "invalid-relay-entry" in res["warnings"]
    assert res["relay_probe"]["ip"] == "198.51.100.9"
    assert not any("touch" in command for command in res["revert"])
    assert not any("touch" in " ".join(r["argv"]) for r in host.journal(phase=None))
    assert ssh(host, "test -e /tmp/pwned").rc == 1
    assert not host.path("/tmp/pwned").exists()
    assert not Path("/tmp/pwned").exists()
    # The check above can see a file the host made in its /tmp.
    ssh(host, "touch /tmp/control")
    assert host.path("/tmp/control").exists()


@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_documented_manual_revert_reopens_relaying(lab, make_host, profile, tmp_path):
    host = make_host(profile=profile)
    _, (res,), _ = rg(lab, "fix", host)
    assert res["outcome"] == "remediated"
    assert relay_attempt(host.address, lab.client_source()).code == 550
    assert res["revert"]
    record = tmp_path / "web1.json"
    record.write_text(json.dumps(res))
    # The command of docs/operations.md "Manual revert", read from the doc (so the doc cannot drift),
    # with the lab's interpreter, record path and an OpenSSH client pinned to the lab's host key.
    block = DOCS.joinpath("operations.md").read_text().split("## Manual revert", 1)[1]
    documented = block.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    ssh_cmd = (f"ssh -i {lab.client_key} -o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes "
               f"-o BatchMode=yes root@{host.address}")
    pipeline = documented
    for doc_text, here in ((".venv/bin/python", sys.executable), ("web1.json", str(record)),
                           ("ssh root@web1.example.com", ssh_cmd)):
        assert doc_text in pipeline, f"docs/operations.md's revert command no longer has {doc_text!r}"
        pipeline = pipeline.replace(doc_text, here)
    assert pipeline.rstrip().endswith("sh -ex"), documented
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert relay_attempt(host.address, lab.client_source()).code == 250
    assert rg(lab, "check", host)[1][0]["outcome"] == "noncompliant"


# -- transport failures -------------------------------------------------------------------------


def test_wrong_pinned_key_is_a_mismatch_before_authentication(lab, modern, tmp_path):
    pub = new_key(tmp_path / "other").with_suffix(".pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{modern.address} {pub[0]} {pub[1]}\n")
    code, (res,), _ = rg(lab, "fix", modern, known_hosts=kh)
    assert (code, res["outcome"]) == (2, "host-key-mismatch")
    assert res["steps"] == []
    # sshd (LogLevel VERBOSE) logs every key a client offers; ours was never offered, let alone accepted.
    time.sleep(0.2)
    log = modern.sshd_log()
    assert fingerprint(lab.client_key.with_suffix(".pub")) not in log
    assert modern.accepted_logins() == 0
    assert modern.journal() == []
    assert modern.path("/etc/popbeforesmtp").exists()


def test_unknown_host_is_refused_without_trusting_it(lab, modern, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(lab.known_hosts.read_text().replace(f"{modern.address} ", "203.0.113.250 "))
    log = modern.sshd_log()
    code, (res,), _ = rg(lab, "check", modern, known_hosts=kh)
    assert (code, res["outcome"]) == (2, "host-key-unknown")
    # Refused before any TCP connect: sshd (LogLevel VERBOSE logs every connection) saw nothing.
    time.sleep(0.2)
    assert modern.sshd_log() == log


def test_wrong_client_key_is_auth_failed(lab, modern, tmp_path):
    key = new_key(tmp_path / "stranger")
    code, (res,), _ = rg(lab, "check", modern, identity=key)
    assert (code, res["outcome"]) == (2, "auth-failed")
    # The server saw the key offered and refused it (the counterpart of the mismatch test above).
    time.sleep(0.2)
    assert fingerprint(key.with_suffix(".pub")) in modern.sshd_log()
    assert modern.accepted_logins() == 0
    assert modern.journal() == []


def pinned_elsewhere(host: Host, address: str, port: int, path: Path) -> Path:
    """A known_hosts file that pins ``host``'s real key for another address and port."""
    key = (host.dir / "ssh_host_ed25519_key.pub").read_text().split()
    name = address if port == 22 else f"[{address}]:{port}"
    path.write_text(f"{name} {key[0]} {key[1]}\n")
    return path


def test_closed_port_is_unreachable(lab, modern, tmp_path):
    sock = socket.socket()
    sock.bind((lab.client_source(31), 0))  # bound, never listening: connects are refused
    address, port = sock.getsockname()
    try:
        kh = pinned_elsewhere(modern, address, port, tmp_path / "kh")
        with kh.open("a") as fh:
            fh.write(lab.known_hosts.read_text())
        # With an exposed host in the same run: the failure's exit code 2 beats the audit's 1.
        code, (res, other), _ = rg(lab, "check", modern, known_hosts=kh, extra=("--timeout", "3", f"{address}:{port}"))
    finally:
        sock.close()
    assert (code, res["outcome"], res["host"]) == (2, "unreachable", f"{address}:{port}")
    assert "connect" in res["reason"]
    assert other["outcome"] == "noncompliant"


def test_listener_that_never_sends_a_banner_is_unreachable(lab, modern, tmp_path):
    silent = socket.socket()
    silent.bind((lab.client_source(30), 0))
    silent.listen(4)  # the kernel completes the handshake; nobody ever writes a byte
    address, port = silent.getsockname()
    try:
        kh = pinned_elsewhere(modern, address, port, tmp_path / "kh")
        started = time.monotonic()
        code, (res,), _ = rg(lab, "check", known_hosts=kh, extra=("--timeout", "3", f"{address}:{port}"))
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert (code, res["outcome"]) == (2, "unreachable")
    assert "banner" in res["reason"]
    assert elapsed < 30  # bounded by --timeout, not by the listener


def test_hanging_command_times_out_long_before_the_hang_ends(lab, make_host):
    host = make_host(profile="modern", switches={"hang": ""})
    started = time.monotonic()
    # The probe runs no cPanel tool (it reads files); the fix's first tool call, whmapi1, hangs.
    code, (res,), _ = rg(lab, "fix", host, extra=("--timeout", "2"))
    assert (code, res["outcome"]) == (2, "timeout")
    # The hang lasts an hour and the probe's own `timeout` wrapper 30 s: only the SSH deadline ends it.
    assert time.monotonic() - started < 15


# -- server-side failures -----------------------------------------------------------------------


def test_exim_restart_failing_once_is_retried_hard(lab, make_host):
    host = make_host(profile="modern", switches={"exim_restart_fail_once": ""})
    _, (res,), _ = rg(lab, "fix", host)
    assert res["outcome"] == "remediated"
    # two attempts, one restart: the first attempt left Exim stopped, the --hard retry restarted it
    assert (res["restarted"], res["exim_restarts"], res["exim_restart_attempts"]) == (True, 1, 2)
    assert restarts(host) == [[], ["--hard"]]


def test_exim_restart_failing_always_is_failed_with_evidence(lab, make_host):
    host = make_host(profile="modern", switches={"exim_restart_fail": ""})
    code, (res,), _ = rg(lab, "fix", host)
    assert (code, res["outcome"], res["reason"]) == (2, "failed", "exim-restart-failed")
    assert restarts(host) == [[], ["--hard"]]
    # both attempts exited non-zero and left Exim down: not restarted
    assert (res["restarted"], res["exim_restarts"], res["exim_restart_attempts"]) == (False, 0, 2)
    steps = {s["name"]: s for s in res["steps"]}
    assert steps["restart-exim"]["rc"] != 0
    assert "failed to restart" in steps["restart-exim-hard"]["stderr"]
    # The evidence cpanel.md §6 asks for: --status says down, and exim -bV ran.
    assert steps["exim-status"]["rc"] == 1
    assert "is down" in steps["exim-status"]["stderr"]
    assert "exim-bv" in steps
    assert res["relay_probe"]["smtp_banner"] is None
    assert res["after"]["exim_running"] is False
    assert res["exposed_after"] is False  # the gate itself did close


def test_whmapi_refusal_fails_without_truncating_or_restarting(lab, make_host):
    host = make_host(profile="modern", switches={"whmapi_fail": ""}, alwaysrelay=("192.0.2.5",))
    before = host.read("/etc/recent_authed_mail_ips")
    code, (res,), _ = rg(lab, "fix", host, extra=("--disable-tracker",))
    assert (code, res["outcome"]) == (2, "failed")
    assert res["reason"].startswith("whmapi1-refused")
    assert res["revert"] == []  # nothing changed, nothing to undo
    assert writes(host.journal()) == [("whmapi1", ["--output=json", "set_tweaksetting", "key=popbeforesmtp",
                                                   "value=0"])]
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
    before = host.snapshot()
    code, (res,), _ = rg(lab, "fix", host, extra=("--user", "cpuser"))
    assert (code, res["outcome"]) == (2, "permission-denied")
    assert [s["name"] for s in res["steps"]] == ["probe"]
    assert host.snapshot() == before
    assert host.path("/etc/popbeforesmtp").exists()
    code, (res,), _ = rg(lab, "fix", host, extra=("--user", "cpuser", "--sudo"))
    assert (code, res["outcome"]) == (2, "permission-denied")


def test_nonroot_with_sudo_fixes_a_legacy_server(lab, make_host):
    host = make_host(profile="legacy", switches={"nonroot": ""}, sudo=True)
    code, (res,), _ = rg(lab, "fix", host, extra=("--user", "cpuser", "--sudo"))
    assert (code, res["outcome"]) == (0, "remediated"), res
    assert "truncate-relayhosts" in {s["name"] for s in res["steps"]}
    assert host.read("/etc/relayhosts") == ""
    assert relay_attempt(host.address, lab.client_source()).code == 550
    # Logged in as cpuser, every cPanel tool ran as root through sudo.
    assert {r["uid"] for r in host.journal()} == {0}
    assert "Accepted publickey for cpuser" in host.sshd_log()


def test_probe_works_without_coreutils_timeout(lab, make_host):
    host = make_host(profile="legacy", switches={"no_timeout": ""})
    assert ssh(host, "command -v timeout").rc != 0
    code, (res,), _ = rg(lab, "check", host)
    assert (code, res["outcome"], res["generation"]) == (1, "noncompliant", "legacy")
    assert res["before"]["antirelayd_active"] is True
    assert lab.client_source() in res["before"]["lists"]["relayhosts"]["entries"]


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


def key_lines(key_text: str) -> list[str]:
    return [line for line in key_text.splitlines() if len(line) >= 16 and not line.startswith("-----")]


def test_key_given_as_text_is_never_printed(lab, modern, legacy, tmp_path):
    key_text = lab.client_key.read_text()
    env = {**os.environ, "RELAYGUARD_SSH_KEY": key_text}
    base = [RELAYGUARD, "check", "--known-hosts", str(lab.known_hosts)]

    # A table with progress (two hosts, no --json), JSON results, and a refused login.
    table = subprocess.run([*base, modern.address, legacy.address], capture_output=True, text=True, timeout=60,
                           check=False, env=env)
    assert table.returncode == 1, table.stderr
    rows = [row for row in table.stdout.splitlines() if not row.startswith(" ")]  # without plan/signals lines
    assert rows[0].split() == ["HOST", "OUTCOME", "GEN", "EXPOSED", "RESTARTED", "DETAIL"]
    assert sorted(r.split()[:3] for r in rows[1:]) == sorted([[modern.address, "noncompliant", "modern"],
                                                             [legacy.address, "noncompliant", "legacy"]])
    assert sorted(line.split()[0] for line in table.stderr.splitlines()) == ["[1/2]", "[2/2]"]
    as_json = subprocess.run([*base, "--json", modern.address], capture_output=True, text=True, timeout=60,
                             check=False, env=env)
    assert json.loads(as_json.stdout)["outcome"] == "noncompliant"
    stranger = new_key(tmp_path / "stranger").read_text()
    refused = subprocess.run([*base, "--json", modern.address], capture_output=True, text=True, timeout=60,
                             check=False, env={**os.environ, "RELAYGUARD_SSH_KEY": stranger})
    assert json.loads(refused.stdout)["outcome"] == "auth-failed"
    broken = stranger.replace(key_lines(stranger)[1], key_lines(stranger)[1][::-1])
    unusable = subprocess.run([*base, modern.address], capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "RELAYGUARD_SSH_KEY": broken})
    assert unusable.returncode == 2
    assert "could not load the SSH private key" in unusable.stderr

    for proc, secret in ((table, key_text), (as_json, key_text), (refused, stranger), (unusable, broken)):
        for line in key_lines(secret):
            assert line not in proc.stdout
            assert line not in proc.stderr
