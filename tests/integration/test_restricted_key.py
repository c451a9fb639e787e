"""The restricted fleet key on the lab (real OpenSSH sshd and client, real Exim): enroll, then the fleet key
does RelayGuard's job and nothing else (issue 21). One small module-scoped fleet: a modern and a legacy
server logged into as root, and a modern server logged into as ``cpuser`` through sudo.

The tests run in file order and build on each other: enrol, use, refuse, rotate."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from relayguard.domain.entry import ENTRY_PATH, ENTRY_VERSION, REFUSED_RC, SUDOERS_PATH

from lab import Host, Lab
from lab.remote import ssh
from lab.smtp import relay_attempt
from lab.spec import NONROOT_USER, HostSpec

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
#: What a refused or forbidden action must leave alone on a server.
TOPS = ("/etc", "/var/cpanel", "/usr/local/cpanel", "/usr/local/sbin", "/root/.ssh", f"/home/{NONROOT_USER}",
        "/var/lib/relayguard")


class Fleet:
    def __init__(self, lab: Lab, hosts: dict[str, Host], keys: Path) -> None:
        self.lab = lab
        self.modern = hosts["rk-modern"]
        self.legacy = hosts["rk-legacy"]
        self.sudo = hosts["rk-sudo"]
        self.keys = keys
        self.fleet_key = keys / "fleet"
        self.new_key = keys / "fleet2"

    @property
    def root_hosts(self) -> list[Host]:
        return [self.modern, self.legacy]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True,
                   timeout=30)
    return path


@pytest.fixture(scope="module")
def fleet(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    specs = {"rk-modern": HostSpec(profile="modern"), "rk-legacy": HostSpec(profile="legacy"),
             "rk-sudo": HostSpec(profile="modern", sudo=True)}
    hosts = lab.up(specs)
    keys = tmp_path_factory.mktemp("fleet-keys")
    keygen(keys / "fleet")
    keygen(keys / "fleet2")
    try:
        yield Fleet(lab, dict(zip(specs, hosts, strict=True)), keys)
    finally:
        for host in hosts:
            lab.stop_host(host)
            lab.hosts.pop(host.name, None)


def rg(fleet: Fleet, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RELAYGUARD, *argv], capture_output=True, text=True, timeout=timeout, check=False)


def enroll(fleet: Fleet, hosts: list[Host], *extra: str, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    return rg(fleet, "enroll", "--identity", str(fleet.lab.client_key), "--known-hosts", str(fleet.lab.known_hosts),
              "--fleet-key", str(key or fleet.fleet_key) + ".pub", "--from", "127.0.0.1", *extra,
              *(h.address for h in hosts))


def jobs(fleet: Fleet, command: str, hosts: list[Host], *extra: str, key: Path | None = None) -> list[dict[str, Any]]:
    proc = rg(fleet, command, "--json", "--identity", str(key or fleet.fleet_key), "--known-hosts",
              str(fleet.lab.known_hosts), *extra, *(h.address for h in hosts))
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(hosts), proc.stderr
    return results


def openssh(fleet: Fleet, host: Host, *argv: str, user: str = "root", key: Path | None = None,
            source: str | None = None, stdin: str = "", tty: bool = False) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client with the fleet key, pinned host keys, nothing from ~/.ssh or an agent."""
    options = ["-F", "/dev/null", "-i", str(key or fleet.fleet_key), "-o", "IdentitiesOnly=yes",
               "-o", "IdentityAgent=none", "-o", f"UserKnownHostsFile={fleet.lab.known_hosts}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if source:
        options += ["-b", source]
    if tty:
        options.append("-tt")
    return subprocess.run(["ssh", *options, f"{user}@{host.address}", *argv], input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)


def files(host: Host) -> dict[str, tuple[Any, ...]]:
    return host.snapshot(tops=TOPS, exclude=("/var/log", "/var/spool/exim/db", "/usr/local/cpanel/logs"))


# --- enrolment ----------------------------------------------------------------------------------

def test_a_dry_run_reports_what_it_would_write_and_writes_nothing(fleet: Fleet) -> None:
    before = {h.name: files(h) for h in fleet.root_hosts}
    proc = enroll(fleet, fleet.root_hosts, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("program would-install, key would-add") == 2, proc.stdout
    assert f'restrict,command="{ENTRY_PATH}",from="127.0.0.1/32" ssh-ed25519 ' in proc.stderr
    assert {h.name: files(h) for h in fleet.root_hosts} == before
    # --print connects nowhere: the line for providers who push authorized_keys themselves
    printed = rg(fleet, "enroll", "--fleet-key", f"{fleet.fleet_key}.pub", "--from", "127.0.0.1", "--print", "line")
    key = (fleet.keys / "fleet.pub").read_text().strip()
    assert printed.stdout == f'restrict,command="{ENTRY_PATH}",from="127.0.0.1/32" {key}\n'


def test_enroll_installs_the_program_and_the_line_and_a_second_run_changes_nothing(fleet: Fleet) -> None:
    first = enroll(fleet, fleet.root_hosts)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("program installed, key added") == 2, first.stdout
    for host in fleet.root_hosts:
        program = host.root / ENTRY_PATH.lstrip("/")
        assert (program.stat().st_mode & 0o7777, program.stat().st_uid) == (0o755, 0)
        keys = host.read("/root/.ssh/authorized_keys").splitlines()
        assert keys[0] == (fleet.lab.client_key.with_suffix(".pub")).read_text().strip()  # the operator's stays
        assert keys[1].startswith(f'restrict,command="{ENTRY_PATH}",from="127.0.0.1/32" ssh-ed25519 ')
    before = {h.name: files(h) for h in fleet.root_hosts}
    second = enroll(fleet, fleet.root_hosts)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("nothing changed") == 2, second.stdout
    assert {h.name: files(h) for h in fleet.root_hosts} == before


# --- the fleet key does RelayGuard's job --------------------------------------------------------

def test_the_fleet_key_fixes_a_modern_and_a_legacy_server_and_the_relay_probe_proves_it(fleet: Fleet) -> None:
    for host in fleet.root_hosts:
        assert relay_attempt(host.address, fleet.lab.client_source()).code == 250
    results = jobs(fleet, "fix", fleet.root_hosts)
    for res in results:
        assert res["outcome"] == "remediated", res["reason"]
        assert res["relay_probe"]["verdict"] == "refused"
        assert res["access"]["mode"] == "restricted"
        assert res["access"]["entry_version"] == ENTRY_VERSION
        assert "unrestricted-key" not in res["warnings"]
        assert "entry-program-outdated" not in res["warnings"]
    for host in fleet.root_hosts:
        assert relay_attempt(host.address, fleet.lab.client_source()).code == 550


def test_check_scan_fix_and_revert_work_with_the_fleet_key(fleet: Fleet, tmp_path: Path) -> None:
    checked = jobs(fleet, "check", fleet.root_hosts)
    assert [r["outcome"] for r in checked] == ["compliant", "compliant"]
    reverted = jobs(fleet, "revert", [fleet.modern])
    assert reverted[0]["outcome"] == "reverted", reverted[0]["reason"]
    assert reverted[0]["access"]["mode"] == "restricted"
    inventory = tmp_path / "inventory.json"
    servers = [s for s in json.loads(fleet.lab.inventory.read_text())["servers"]
               if s["host"] in (fleet.modern.address, fleet.legacy.address)]
    inventory.write_text(json.dumps({"servers": servers}))
    proc = rg(fleet, "scan", "--fix", "--json", "--inventory", str(inventory), "--identity", str(fleet.fleet_key))
    outcomes = {r["address"]: r["outcome"] for r in map(json.loads, proc.stdout.splitlines())}
    assert outcomes == {fleet.modern.address: "remediated", fleet.legacy.address: "compliant"}, proc.stderr


# --- ... and nothing else -----------------------------------------------------------------------

#: The lab hosts have no syslog daemon (and must not reach the machine's): a stand-in ``logger`` earlier on
#: the entry program's PATH, inside the host's own root, records how it was called.
LOGGER = "#!/bin/sh\nprintf '%s|' \"$@\" >> /var/tmp/relayguard-syslog\necho >> /var/tmp/relayguard-syslog\n"


def test_the_fleet_key_cannot_run_a_command_log_in_upload_or_inject(fleet: Fleet, tmp_path: Path) -> None:
    host = fleet.modern
    stand_in = host.root / "usr/local/bin/logger"
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text(LOGGER)
    stand_in.chmod(0o755)
    before = files(host)
    shadow = openssh(fleet, host, "cat /etc/shadow")
    assert (shadow.returncode, "root:" in shadow.stdout) == (REFUSED_RC, False)
    assert "refused: not a RelayGuard operation" in shadow.stderr
    interactive = openssh(fleet, host)  # a login shell: no command
    assert interactive.returncode == REFUSED_RC
    assert "refused: no operation" in interactive.stderr
    upload = tmp_path / "evil"
    upload.write_text("#!/bin/sh\nid\n")
    common = ["-F", "/dev/null", "-i", str(fleet.fleet_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
              "-o", f"UserKnownHostsFile={fleet.lab.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    for legacy_protocol in ([], ["-O"]):
        scp = subprocess.run(["scp", *common, *legacy_protocol, str(upload), f"root@{host.address}:/root/.ssh/evil"],
                             capture_output=True, text=True, timeout=60, check=False)
        assert scp.returncode != 0
    sftp = subprocess.run(["sftp", *common, "-b", "-", f"root@{host.address}"], input="put " + str(upload) + "\n",
                          capture_output=True, text=True, timeout=60, check=False)
    assert sftp.returncode != 0
    # a shell metacharacter in the operation, and in an argument: refused before anything runs
    injected = openssh(fleet, host, f"{ENTRY_PATH} probe;touch /root/.ssh/pwned")
    assert injected.returncode == REFUSED_RC
    argument = openssh(fleet, host, f"{ENTRY_PATH} finish",
                       stdin="ip=203.0.113.7;touch /root/.ssh/pwned\nsender=a@example.com\n")
    assert argument.returncode == REFUSED_RC
    assert "refused: argument not accepted" in argument.stderr
    assert files(host) == before
    # every refusal left a syslog line (auth facility), with what was asked in printable characters only
    syslog = host.read("/var/tmp/relayguard-syslog").splitlines()
    assert len(syslog) == 5  # cat, the login, scp -O, the operation, the argument (sftp never reaches it)
    assert syslog[0] == ("-p|auth.warning|-t|relayguard-entry|refused: not a RelayGuard operation: "
                         "'cat /etc/shadow' from 127.0.0.1 uid 0|")
    assert "refused: no operation (an interactive login or a subsystem): ''" in syslog[1]
    assert "refused: not a RelayGuard operation: 'scp -t /root/.ssh/evil'" in syslog[2]
    assert f"refused: not a RelayGuard operation: '{ENTRY_PATH} probe?touch /root/.ssh/pwned'" in syslog[3]
    assert "refused: argument not accepted: 'finish ip=203.0.113.7?touch /root/.ssh/pwned'" in syslog[4]
    # A login with a terminal: restrict means no-pty. Last, because OpenSSH's client pipelines its shell
    # request behind the refused pty request, so the entry program sometimes sees that shell request (and
    # logs one more refusal) and sometimes not: measured once in 30 attempts on the lab.
    terminal = openssh(fleet, host, tty=True)
    assert terminal.returncode == 255
    assert "PTY allocation request failed" in terminal.stderr
    assert files(host) == before


def test_forwarding_is_refused(fleet: Fleet) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    forward = subprocess.Popen(
        ["ssh", "-F", "/dev/null", "-i", str(fleet.fleet_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={fleet.lab.known_hosts}", "-o", "StrictHostKeyChecking=yes",
         "-N", "-L", f"127.0.0.1:{port}:{fleet.modern.address}:22", f"root@{fleet.modern.address}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the forwarding client never listened"
                time.sleep(0.1)
        with conn:
            conn.settimeout(5)
            # through a working forward the server's SSH banner would arrive; sshd refuses the channel
            assert conn.recv(64) == b""
    finally:
        forward.terminate()
        _, err = forward.communicate(timeout=10)
    assert "prohibited" in err or "open failed" in err


def test_a_connection_from_outside_the_from_list_is_refused(fleet: Fleet) -> None:
    outside = openssh(fleet, fleet.modern, f"{ENTRY_PATH} probe", source=fleet.lab.client_source())
    assert outside.returncode == 255
    assert "Permission denied" in outside.stderr
    inside = openssh(fleet, fleet.modern, f"{ENTRY_PATH} probe")
    assert inside.returncode == 0
    assert inside.stdout.startswith(f"entry.version={ENTRY_VERSION}\n")


def test_an_older_entry_program_serves_what_it_knows_and_enroll_upgrades_it(fleet: Fleet) -> None:
    host = fleet.legacy
    # GIVEN an older build: protocol version 0, another digest, and no revert operation
    older = ssh(host, "sed -i -e 's/^RG_ENTRY_VERSION=.*/RG_ENTRY_VERSION=0/' -e 's/^RG_ENTRY_DIGEST=.*/"
                      f"RG_ENTRY_DIGEST=older/' -e 's/|revert) ;;/) ;;/' {ENTRY_PATH}")
    assert older.rc == 0, older.err
    # WHEN jobs run: the scan is served with a warning; the revert it lacks runs nothing
    checked = jobs(fleet, "check", [host])[0]
    assert checked["outcome"] == "compliant"
    assert checked["access"] == {"mode": "restricted", "entry_version": 0, "entry_digest": "older"}
    assert "entry-program-outdated" in checked["warnings"]
    before = files(host)
    reverted = jobs(fleet, "revert", [host])[0]
    assert reverted["outcome"] == "failed"
    assert "refused revert: unknown operation (entry-program-outdated" in reverted["reason"]
    assert files(host) == before
    # THEN enroll upgrades it, and the warning is gone
    upgraded = enroll(fleet, [host])
    assert "program installed, key unchanged" in upgraded.stdout, upgraded.stderr
    again = jobs(fleet, "check", [host])[0]
    assert again["access"]["entry_version"] == ENTRY_VERSION
    assert "entry-program-outdated" not in again["warnings"]


# --- the sudo variant ---------------------------------------------------------------------------

def test_the_sudo_variant_fixes_as_a_non_root_user_and_allows_nothing_else(fleet: Fleet) -> None:
    host = fleet.sudo
    sudo_args = ("--user", NONROOT_USER, "--sudo")
    # before enrolment: the unrestricted path, and every result says so
    unrestricted = jobs(fleet, "check", [host], *sudo_args, key=fleet.lab.client_key)
    assert unrestricted[0]["access"]["mode"] == "unrestricted"
    assert "unrestricted-key" in unrestricted[0]["warnings"]
    proc = enroll(fleet, [host], *sudo_args)
    assert proc.returncode == 0, proc.stderr
    assert "program installed, sudoers installed, key added" in proc.stdout
    assert host.read(SUDOERS_PATH) == f"# RelayGuard (relayguard enroll --sudo): {NONROOT_USER} may run the entry " \
        f"program as root, nothing else.\nDefaults!{ENTRY_PATH} !requiretty\n{NONROOT_USER} ALL=(root) NOPASSWD: " \
        f"{ENTRY_PATH}\n"
    # the lab's own broad rule goes: from now on the drop-in is the user's only sudo right
    assert ssh(host, f"rm /etc/sudoers.d/{NONROOT_USER}").rc == 0
    fixed = jobs(fleet, "fix", [host], *sudo_args)
    assert fixed[0]["outcome"] == "remediated", fixed[0]["reason"]
    assert fixed[0]["access"]["mode"] == "restricted"
    before = files(host)
    for command in ("sudo -n sh", "sudo -n cat /etc/shadow"):
        refused = openssh(fleet, host, command, user=NONROOT_USER)
        assert refused.returncode == REFUSED_RC, refused
        assert "root:" not in refused.stdout
    # and even with a shell as the user, sudo allows the entry program only
    for command in ("sudo -n sh -c id", "sudo -n cat /etc/shadow"):
        shell = ssh(host, command, user=NONROOT_USER)
        assert shell.rc != 0
        assert "root:" not in shell.out
    assert files(host) == before


# --- rotation -----------------------------------------------------------------------------------

def test_rotating_the_fleet_key_fails_no_job_and_the_old_key_is_refused_at_the_end(fleet: Fleet) -> None:
    hosts = fleet.root_hosts
    outcomes: list[str] = []
    # 1. the new key is enrolled beside the old one; jobs with the old key go on meanwhile
    outcomes += [r["outcome"] for r in jobs(fleet, "check", hosts)]
    assert enroll(fleet, hosts, key=fleet.new_key).returncode == 0
    # 2. the secret switches: jobs run with the new key
    outcomes += [r["outcome"] for r in jobs(fleet, "check", hosts, key=fleet.new_key)]
    outcomes += [r["outcome"] for r in jobs(fleet, "check", hosts)]  # a job still holding the old key
    # 3. the old key is removed
    revoked = enroll(fleet, hosts, "--revoke")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.count("key removed") == 2
    outcomes += [r["outcome"] for r in jobs(fleet, "check", hosts, key=fleet.new_key)]
    assert set(outcomes) == {"compliant"}, outcomes
    old = jobs(fleet, "check", hosts)
    assert [r["outcome"] for r in old] == ["auth-failed", "auth-failed"]
    assert openssh(fleet, fleet.modern, f"{ENTRY_PATH} probe").returncode == 255
