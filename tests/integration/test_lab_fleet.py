"""A whole fleet: loopback only while up, nothing left behind after down, the CLI idempotent."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from lab import HostSpec, Lab, listeners, reserve_net
from lab.remote import ssh
from lab.smtp import banner

pytestmark = pytest.mark.integration

WATCHED = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/hosts", "/etc/sudoers")
MUST_NOT_EXIST = ("/scripts", "/usr/local/cpanel", "/var/cpanel", "/etc/sim", "/opt/cpanel-sim",
                  "/etc/popbeforesmtp", "/etc/exim.conf", "/etc/relayhosts", "/etc/recent_authed_mail_ips",
                  "/etc/eximrejects", "/etc/sudoers.d/cpuser", "/home/cpuser", "/var/lib/cpanel-sim",
                  "/run/sshd.pid", "/var/spool/exim")
#: Where a leak into the machine's own root would land: every directory's mtime and entry count
#: (a new or removed entry changes both), every file under /etc by hash. Caches, logs and package
#: state are left out: other work on the shared machine changes them.
TREES = ("/etc", "/var", "/run", "/opt", "/srv", "/home", "/usr/local", "/root/.ssh")
SKIP = ("/var/log", "/var/cache", "/var/tmp", "/var/lib/apt", "/var/lib/dpkg", "/var/lib/PackageKit",
        "/var/lib/systemd", "/var/lib/sudo", "/var/lib/postgresql", "/run/sudo", "/run/user", "/run/lock",
        "/run/postgresql", "/run/systemd", "/etc/ld.so.cache")


def machine_fingerprint() -> dict[str, object]:
    prints: dict[str, object] = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in WATCHED
                                 if os.path.exists(p)}
    prints |= {p: os.path.lexists(p) for p in MUST_NOT_EXIST}
    prints["/ listing"] = sorted(os.listdir("/"))
    prints["/root listing"] = sorted(os.listdir("/root"))
    for top in TREES:
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath.startswith(SKIP):
                dirnames[:] = []
                continue
            st = os.lstat(dirpath)
            prints[dirpath] = (st.st_mtime_ns, len(dirnames) + len(filenames))
            if dirpath.startswith("/etc"):
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    if not path.startswith(SKIP) and os.path.isfile(path) and not os.path.islink(path):
                        prints[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return prints


def changed(before: dict[str, object], after: dict[str, object]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def machine_mounts() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount in this, the machine's, mount namespace."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        out.append((fields[4], fields[fields.index("-") + 1]))
    return sorted(out)


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


def pid_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def processes_in(namespaces: set[str]) -> list[int]:
    """Every process of the machine whose PID namespace is one of ``namespaces``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") in namespaces:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def started(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the PID, it names one process for good."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def sockets_of(pids: Iterable[int]) -> list[tuple[str, str, int, str]]:
    """(protocol, address, port, state) of every TCP/UDP socket those processes hold open."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = []
    for proto, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6),
                          ("udp", socket.AF_INET), ("udp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            raw = raw[::-1] if family == socket.AF_INET else b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
            found.append((proto, socket.inet_ntop(family, raw), int(hexport, 16), fields[3]))
    return found


def on_loopback(address: str) -> bool:
    addr = ipaddress.ip_address(address)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr in ipaddress.ip_network("127.0.0.0/8")


@pytest.fixture
def free_net() -> Iterator[int]:
    reservation = reserve_net(start=150 + os.getpid() % 100)
    yield reservation.net
    reservation.release()


@pytest.fixture
def own_lab(tmp_path: Path, free_net: int):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab = Lab(tmp_path / "fleet", net=free_net)
    yield lab
    lab.down()


def test_fifty_hosts_listen_on_loopback_only_and_leave_nothing(own_lab: Lab):
    before_listeners = set(listeners())
    before_mounts = machine_mounts()
    before_machine = machine_fingerprint()
    specs = {f"f{i:02d}": HostSpec(profile=("modern", "legacy", "not-cpanel")[i % 3], exposed=i % 2 == 0)
             for i in range(50)}
    hosts = own_lab.up(specs)
    assert all(h.running() for h in hosts)
    assert ssh(hosts[7], "cat /etc/sim/host.json").rc == 0
    assert banner(hosts[49].address).code == 220

    # Every socket any process of the 50 hosts holds (sshd, Exim, anything they started) is on
    # loopback; the listening ones are exactly each host's own address on 22, 25 and 587.
    namespaces = {pid_namespace(h.init_pid) for h in hosts}
    assert len(namespaces) == 50
    held = sockets_of(processes_in(namespaces))
    assert [s for s in held if not on_loopback(s[1])] == []
    listening = {(addr, port) for proto, addr, port, state in held if proto.startswith("tcp") and state == "0A"}
    assert listening == {(h.address, port) for h in hosts for port in (22, 25, 587)}
    # Nothing on the machine started listening outside loopback meanwhile, and no mount appeared
    # in the machine's namespace: every host mounts inside its own.
    assert [x for x in set(listeners()) - before_listeners if not on_loopback(x[0])] == []
    assert machine_mounts() == before_mounts

    # Namespace inodes are reused by the next namespace anyone makes, so after `down` the hosts'
    # processes are looked for by PID and start time, not by namespace.
    # A daemon started over SSH and detached from its session belongs to its host all the same.
    assert ssh(hosts[3], "setsid sleep 3601 </dev/null >/dev/null 2>&1 &").rc == 0
    members = {(pid, started(pid)) for pid in processes_in(namespaces)}
    assert len(members) >= 3 * 50  # at least nsinit, sshd and Exim per host (and tailwatchd on cPanel ones)
    detached = [pid for pid, _ in members if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x003601\x00"]
    assert len(detached) == 1
    own_lab.down()
    assert [pid for pid, start in members if started(pid) == start] == []
    assert lab_processes(own_lab.workdir) == []
    assert [x for x in listeners() if x[0].startswith(f"127.{own_lab.net}.")] == []
    assert machine_mounts() == before_mounts
    assert mounts_mentioning(str(own_lab.workdir)) == []
    assert not own_lab.workdir.exists()
    assert changed(before_machine, machine_fingerprint()) == []
    own_lab.down()  # idempotent


def test_a_lab_never_takes_a_range_that_is_in_use(free_net: int):
    # GIVEN two ranges reserved by this process and a third that someone listens in
    held = reserve_net(start=free_net + 1)
    squatted = reserve_net(start=held.net + 1)
    squatted.release()
    squatter = socket.socket()
    squatter.bind((f"127.{squatted.net}.0.1", 0))
    squatter.listen(1)
    try:
        # WHEN another lab asks for each of them first  THEN it gets a range of its own every time
        for wanted in (free_net, held.net, squatted.net):
            got = reserve_net(start=wanted)
            got.release()
            assert got.net not in (free_net, held.net, squatted.net)
    finally:
        squatter.close()
        held.release()


def test_cli_up_status_down_is_idempotent(tmp_path: Path, repo_root: Path, free_net: int):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    workdir = tmp_path / "cli-lab"
    net = str(free_net)

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
