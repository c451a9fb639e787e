"""A whole fleet: loopback only while up, nothing left behind after down, the CLI idempotent."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import HostSpec, Lab, listeners
from lab.remote import ssh
from lab.smtp import banner

pytestmark = pytest.mark.integration

WATCHED = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/hosts")
MUST_NOT_EXIST = ("/scripts", "/usr/local/cpanel", "/var/cpanel", "/etc/sim", "/opt/cpanel-sim",
                  "/etc/popbeforesmtp", "/etc/exim.conf", "/etc/relayhosts", "/root/.ssh/authorized_keys.lab")


def machine_fingerprint() -> dict[str, str]:
    prints = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in WATCHED}
    prints |= {p: str(os.path.lexists(p)) for p in MUST_NOT_EXIST}
    prints["/etc listing"] = ",".join(sorted(os.listdir("/etc")))
    prints["/ listing"] = ",".join(sorted(os.listdir("/")))
    return prints


def mounts_mentioning(text: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if text in line]


def lab_processes(workdir: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(workdir).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def own_lab(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab = Lab(tmp_path / "fleet", net=250 - os.getpid() % 40)
    yield lab
    lab.down()


def test_fifty_hosts_listen_on_loopback_only_and_leave_nothing(own_lab: Lab):
    before_listeners = set(listeners())
    before_machine = machine_fingerprint()
    specs = {f"f{i:02d}": HostSpec(profile=("modern", "legacy", "not-cpanel")[i % 3], exposed=i % 2 == 0)
             for i in range(50)}
    hosts = own_lab.up(specs)

    new = set(listeners()) - before_listeners
    assert {port for _addr, port in new} == {22, 25, 587}
    assert len(new) == 150
    assert all(ipaddress.ip_address(addr) in ipaddress.ip_network("127.0.0.0/8") for addr, _ in new)
    assert ssh(hosts[7], "cat /etc/sim/host.json").rc == 0
    assert banner(hosts[49].address).code == 220

    own_lab.down()
    assert set(listeners()) - before_listeners == set()
    assert lab_processes(own_lab.workdir) == []
    assert mounts_mentioning(str(own_lab.workdir)) == []
    assert not own_lab.workdir.exists()
    assert machine_fingerprint() == before_machine
    own_lab.down()  # idempotent


def test_cli_up_status_down_is_idempotent(tmp_path: Path, repo_root: Path):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    workdir = tmp_path / "cli-lab"
    net = str(200 - os.getpid() % 40)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lab", "--dir", str(workdir), *args], cwd=repo_root,
                              capture_output=True, text=True, timeout=60, check=False)

    up = cli("up", "--hosts", "2", "--profile", "legacy", "--net", net)
    assert up.returncode == 0, up.stderr
    first_pids = sorted(lab_processes(workdir))
    assert cli("up", "--hosts", "2", "--profile", "legacy", "--net", net).returncode == 0
    assert sorted(lab_processes(workdir)) == first_pids  # nothing restarted
    status = cli("status")
    assert '"running": true' in status.stdout
    assert (workdir / "inventory.json").exists()
    assert cli("down").returncode == 0
    assert cli("down").returncode == 0
    assert lab_processes(workdir) == []
    assert not workdir.exists()


def test_refuses_to_mount_in_the_callers_namespace(tmp_path: Path, repo_root: Path):
    """nsinit checks it is PID 1 of a new mount namespace before it mounts anything."""
    hostdir = tmp_path / "h"
    hostdir.mkdir()
    own_ns = os.readlink("/proc/self/ns/mnt")
    res = subprocess.run([sys.executable, "-IS", str(repo_root / "lab" / "nsinit.py"), str(hostdir), own_ns],
                         capture_output=True, text=True, timeout=10, check=False)
    assert res.returncode == 3
    assert "refusing to mount" in res.stderr
    assert mounts_mentioning(str(hostdir)) == []
