"""A fleet of simulated cPanel hosts on loopback: start, inspect, reset and stop them.

Each host is one ``unshare`` process whose forked child (:mod:`lab.nsinit`) is PID 1 of the
host's own PID and mount namespaces. The lab keeps its state in one work directory
(``lab.json``), so the CLI's ``up``/``status``/``down`` work across processes and are idempotent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.cpu import Accounting, CpuTime
from lab.seed import Identity, remove_tree, render_seed
from lab.spec import NONROOT_USER, HostSpec

NSINIT = Path(__file__).with_name("nsinit.py")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
#: Lock files of the loopback ranges that running processes hold (see :func:`reserve_net`).
NET_LOCKS = Path("/tmp/relayguard-lab-nets")


class LabError(RuntimeError):
    """The lab could not bring a host up or down."""


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _listening(address: str, port: int) -> bool:
    want = "".join(f"{int(o):02X}" for o in reversed(address.split("."))) + f":{port:04X}"
    with open("/proc/net/tcp") as fh:
        return any(line.split()[1] == want and line.split()[3] == "0A" for line in fh.readlines()[1:])


def listeners() -> list[tuple[str, int]]:
    """Every listening TCP socket of this network namespace, as (address, port)."""
    found: list[tuple[str, int]] = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            if width == 4:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                addr = socket.inet_ntop(socket.AF_INET6, words)
            found.append((addr, int(hexport, 16)))
    return found


@dataclass
class NetReservation:
    """A ``127.net.0.0/16`` range this process holds until :meth:`release` (or until it exits)."""

    net: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def reserve_net(start: int, first: int = 100, last: int = 249) -> NetReservation:
    """Pick a loopback range no other lab uses, trying ``start`` first and wrapping within ``first..last``.

    Test sessions of several worktrees run on one machine at once, and one session runs several
    labs: a range is taken only if nothing listens in it and no live process holds its lock file.
    The lock is an ``flock`` on an open descriptor, so a crashed holder releases it by dying.
    """
    NET_LOCKS.mkdir(mode=0o700, parents=True, exist_ok=True)
    busy = {int(addr.split(".")[1]) for addr, _port in listeners() if addr.startswith("127.")}
    size = last - first + 1
    for offset in range(size):
        net = first + (start - first + offset) % size
        if net in busy:
            continue
        fd = os.open(NET_LOCKS / f"{net}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return NetReservation(net, fd)
    raise LabError(f"no free loopback range in 127.{first}-{last}.0.0/16")


#: Exim names a queued message by its arrival time: a re-seeded queue has new names every start.
QUEUE_DIRS = ("/var/spool/exim/input/", "/var/spool/exim/msglog/")


def pristine_view(snapshot: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """A snapshot as "pristine" compares it: files are re-seeded at every start, so no mtimes.

    Queued messages compare by count per directory and kind (their names and headers carry the
    time they were queued), PID files by kind and mode (their content is whatever PID came up).
    """
    view: dict[str, tuple[Any, ...]] = {}
    for path, entry in snapshot.items():
        if path.startswith(QUEUE_DIRS):
            directory, name = path.rsplit("/", 1)
            key = f"{directory}/<message>{name[-2:] if name[-2:] in ('-D', '-H') else ''}"
            view[key] = ("queued", view.get(key, ("queued", 0))[1] + 1)
        elif path.endswith(".pid"):
            view[path] = (entry[0], "<pid>", entry[2])
        else:
            view[path] = entry[:3]
    return view


@dataclass
class Host:
    """One running simulated host, as seen from outside its namespace."""

    lab: Lab
    name: str
    address: str
    spec: HostSpec
    unshare_pid: int = 0
    #: The host's cgroup (lab/cpu.py), ``""`` when the machine offers none.
    cgroup: str = ""

    @property
    def dir(self) -> Path:
        return self.lab.workdir / "hosts" / self.name

    @property
    def domain(self) -> str:
        return f"{self.name}.lab.test"

    @property
    def instance_id(self) -> str:
        """A stable, EC2-shaped instance id alias, so alerts can name the host that way."""
        return "i-" + hashlib.sha256(self.name.encode()).hexdigest()[:17]

    @property
    def mailbox(self) -> str:
        return f"box@{self.domain}"

    @property
    def user(self) -> str:
        return NONROOT_USER if "nonroot" in self.spec.switches else "root"

    @property
    def init_pid(self) -> int:
        kids = _children(self.unshare_pid)
        if not kids:
            raise LabError(f"{self.name}: not running")
        return kids[0]

    @property
    def root(self) -> Path:
        """The host's ``/`` as seen from outside (through the init's view of its mount namespace)."""
        return Path(f"/proc/{self.init_pid}/cwd/root")

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def running(self) -> bool:
        return self.unshare_pid > 0 and _alive(self.unshare_pid) and bool(_children(self.unshare_pid))

    def cpu_time(self) -> CpuTime:
        """User and system CPU of everything the host ran since it started; a job's cost is a difference."""
        return Accounting(self.cgroup).cpu_time()

    def journal(self, phase: str | None = "end") -> list[dict[str, Any]]:
        """Commands the simulated tools ran, oldest first (``phase=None`` for every record)."""
        path = self.dir / "journal.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if phase is None or r.get("phase") in (phase, "exec")]

    def sshd_log(self) -> str:
        path = self.dir / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def accepted_logins(self) -> int:
        return sum(1 for line in self.sshd_log().splitlines() if "Accepted publickey" in line)

    def exec_sessions(self) -> int:
        """Commands started over SSH (sshd logs each at ``LogLevel VERBOSE``): one per exec round trip."""
        return sum(1 for line in self.sshd_log().splitlines() if "Starting session: command" in line)

    def snapshot(self, tops: Iterable[str] = ("/etc", "/var/cpanel", "/usr/local/cpanel", "/var/spool/exim"),
                 exclude: Iterable[str] = ("/var/log", "/var/spool/exim/db")) -> dict[str, tuple[Any, ...]]:
        """Hash, mtime, mode and link target of every file under ``tops`` (a test's before/after)."""
        root = self.root
        skip = tuple(exclude)
        out: dict[str, tuple[Any, ...]] = {}
        for top in tops:
            base = root / top.lstrip("/")
            if not base.exists():
                continue
            for dirpath, dirnames, filenames in os.walk(base):
                rel_dir = "/" + str(Path(dirpath).relative_to(root))
                if rel_dir.startswith(skip):
                    dirnames[:] = []
                    continue
                for name in sorted(filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]):
                    p = Path(dirpath) / name
                    rel = f"{rel_dir}/{name}"
                    if rel.startswith(skip):
                        continue
                    st = p.lstat()
                    if p.is_symlink():
                        out[rel] = ("link", os.readlink(p), st.st_mode)
                    elif p.is_file():
                        digest = hashlib.sha256(p.read_bytes()).hexdigest()
                        out[rel] = ("file", digest, st.st_mode, st.st_mtime_ns, st.st_uid)
        return out

    def read(self, absolute: str) -> str:
        return self.path(absolute).read_text()


class Lab:
    """The lab's work directory and the hosts it runs.

    ``net`` is the second octet of the loopback range: host *i* listens on ``127.net.(i//200).(i%200+1)``
    and test clients that play remote POP users bind to ``127.net.250.x``.
    """

    def __init__(self, workdir: Path | str, net: int = 77) -> None:
        self.workdir = Path(workdir)
        self.net = net
        self.hosts: dict[str, Host] = {}
        self._token = secrets.token_hex(4)
        self._load()

    # -- persistent state --------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.workdir / "lab.json"

    def _load(self) -> None:
        if not self.state_file.exists():
            return
        data = json.loads(self.state_file.read_text())
        self.net = data["net"]
        self._token = data["token"]
        for h in data["hosts"]:
            host = Host(self, h["name"], h["address"], HostSpec.from_json(h["spec"]), h["unshare_pid"],
                        h.get("cgroup", ""))
            self.hosts[host.name] = host

    def _save(self) -> None:
        data = {
            "net": self.net,
            "token": self._token,
            "hosts": [
                {"name": h.name, "address": h.address, "spec": h.spec.to_json(), "unshare_pid": h.unshare_pid,
                 "cgroup": h.cgroup}
                for h in self.hosts.values()
            ],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_file)

    # -- shared material ---------------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.workdir / "inventory.json"

    def prepare(self) -> None:
        """Create the work directory, the client key and the TLS certificate (idempotent)."""
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.workdir / "hosts").mkdir(exist_ok=True)
        if not self.client_key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "relayguard-lab", "-f", str(self.client_key)])
        tls = self.workdir / "tls"
        if not (tls / "cert.pem").exists():
            tls.mkdir(exist_ok=True)
            _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
                  "/CN=lab.test", "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")])

    def address_of(self, index: int) -> str:
        return f"127.{self.net}.{index // 200}.{index % 200 + 1}"

    def client_source(self, k: int = 10) -> str:
        """A loopback source address that plays a remote POP/IMAP user (seeded on every list)."""
        return f"127.{self.net}.250.{k}"

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self, specs: dict[str, HostSpec]) -> list[Host]:
        """Start the named hosts (restarting any whose spec changed); leave the rest alone."""
        self.prepare()
        started: list[Host] = []
        for name, spec in specs.items():
            host = self.hosts.get(name)
            if host and host.running() and host.spec == spec:
                continue
            if host:
                self._stop(host)
            if host is None:
                host = Host(self, name, self.address_of(self._free_index()), spec)
                self.hosts[name] = host
            host.spec = spec
            self._launch(host)
            started.append(host)
        self._save()
        self._write_client_files()
        self._wait_ready(started)
        return [self.hosts[n] for n in specs]

    def _free_index(self) -> int:
        used = {h.address for h in self.hosts.values()}
        i = 0
        while self.address_of(i) in used:
            i += 1
        return i

    def reset(self, host: Host, spec: HostSpec | None = None) -> Host:
        """Restart ``host`` from its pristine seed (optionally in another state)."""
        self._stop(host)
        host.spec = spec or host.spec
        self._launch(host)
        self._save()
        self._write_client_files()
        self._wait_ready([host])
        return host

    def _identity(self, host: Host) -> Identity:
        key = host.dir / "ssh_host_ed25519_key"
        if not key.exists():
            host.dir.mkdir(parents=True, exist_ok=True)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key)])
        return Identity(
            name=host.name,
            address=host.address,
            domain=host.domain,
            journal_socket=f"relayguard-lab/{self._token}/{host.name}",
            host_key=key,
            client_public_key=self.client_key.with_suffix(".pub").read_text(),
            tls_dir=self.workdir / "tls",
        )

    def _launch(self, host: Host) -> None:
        ident = self._identity(host)
        for stale in ("seed", "ovl", "root", "journal.jsonl", "sshd.log", "init.log"):
            p = host.dir / stale
            if p.is_dir():
                remove_tree(p)
            elif p.exists():
                p.unlink()
        render_seed(host.dir / "seed", host.spec, ident, self.net)
        accounting = Accounting.create(self._token, host.name)
        host.cgroup = accounting.path
        (host.dir / "ovl").mkdir()
        (host.dir / "root").mkdir()
        boot = {
            "address": host.address,
            "journal_socket": ident.journal_socket,
            "queue_size": host.spec.queue_size,
            "mailbox": host.mailbox,
            "start_exim": "exim_down_at_start" not in host.spec.switches,
            "boot_sim": host.spec.profile != "not-cpanel",
            "cgroup_host": accounting.host_procs,
            "cgroup_init": accounting.init_procs,
        }
        (host.dir / "boot.json").write_text(json.dumps(boot))
        parent_ns = os.readlink("/proc/self/ns/mnt")
        init_log = open(host.dir / "init.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--kill-child",
             sys.executable, "-IS", str(NSINIT), str(host.dir), parent_ns],
            stdin=subprocess.DEVNULL,
            stdout=init_log,
            stderr=init_log,
            start_new_session=True,
            cwd=host.dir,
        )
        init_log.close()
        host.unshare_pid = proc.pid

    @staticmethod
    def _ready(host: Host) -> bool:
        # nsinit starts Exim before sshd but carries on if Exim never listens: a host whose Exim
        # should be up is ready only when it is, so a lab fault never passes for a product one.
        ports = (22,) if "exim_down_at_start" in host.spec.switches else (22, 25, 587)
        if not all(_listening(host.address, port) for port in ports):
            return False
        # sshd may listen before the init has moved itself out of the host's cgroup (lab/cpu.py): until it
        # has, its bookkeeping would be billed to the server, so the host is not ready yet.
        init_procs = Accounting(host.cgroup).init_procs
        return not init_procs or str(host.init_pid) in Path(init_procs).read_text().split()

    def _wait_ready(self, hosts: list[Host]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(hosts)
        while pending and time.monotonic() < deadline:
            pending = [h for h in pending if not self._ready(h)]
            for h in pending:
                if not _alive(h.unshare_pid):
                    raise LabError(f"{h.name} died while starting: {self._init_log(h)}")
            if pending:
                time.sleep(0.02)
        if pending:
            raise LabError(f"hosts not ready after {START_TIMEOUT}s: {[h.name for h in pending]}")

    def _init_log(self, host: Host) -> str:
        path = host.dir / "init.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _stop(self, host: Host) -> None:
        pid = host.unshare_pid
        if pid <= 0 or not _alive(pid) or not self._is_ours(pid, host):
            host.unshare_pid = 0
            self._drop_cgroup(host)
            return
        inits = _children(pid)
        for child in inits:
            # SIGKILL to the namespace's PID 1 takes every process of the host with it.
            os.kill(child, signal.SIGKILL)
        if not inits:
            os.kill(pid, signal.SIGKILL)
        # The kernel kills and reaps every other member of a PID namespace before its PID 1
        # finishes exiting, and `unshare --fork` then reaps that PID 1 and exits: once unshare is
        # gone, no process of the host is left, not even a zombie, and none holds its ports.
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid) and time.monotonic() < deadline + 1:
                time.sleep(0.01)
        survivors = [p for p in (pid, *inits) if _alive(p)]
        if survivors:
            raise LabError(f"{host.name}: pids {survivors} survived SIGKILL for {STOP_TIMEOUT}s")
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        host.unshare_pid = 0
        self._drop_cgroup(host)

    @staticmethod
    def _drop_cgroup(host: Host) -> None:
        # Only once no process of the host is left: a cgroup with members cannot be removed.
        with contextlib.suppress(FileNotFoundError):
            Accounting(host.cgroup).remove()
        host.cgroup = ""

    def _is_ours(self, pid: int, host: Host) -> bool:
        """Never kill a PID the kernel reused for someone else's process."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(NSINIT).encode() in cmdline and str(host.dir).encode() in cmdline

    def stop_host(self, host: Host) -> None:
        self._stop(host)
        self._save()

    def down(self) -> None:
        """Stop every host and remove the work directory. Safe to call twice."""
        for host in list(self.hosts.values()):
            self._stop(host)
        self.hosts.clear()
        # Only ever delete a directory the lab made (it holds lab.json) or an empty one.
        if self.workdir.is_dir() and (self.state_file.exists() or not any(self.workdir.iterdir())):
            remove_tree(self.workdir)

    def status(self) -> list[dict[str, Any]]:
        return [
            {"name": h.name, "address": h.address, "profile": h.spec.profile, "exposed": h.spec.exposed,
             "running": h.running(), "switches": sorted(h.spec.switches)}
            for h in self.hosts.values()
        ]

    # -- files for the product ---------------------------------------------------------------
    def _write_client_files(self) -> None:
        lines = []
        entries = []
        for h in self.hosts.values():
            key = (h.dir / "ssh_host_ed25519_key.pub").read_text().split()
            lines.append(f"{h.address} {key[0]} {key[1]}\n")
            entries.append({
                "name": h.name,
                "host": h.address,
                "port": 22,
                "user": h.user,
                "host_keys": [f"{key[0]} {key[1]}"],
                "tags": [h.spec.profile, "exposed" if h.spec.exposed else "compliant"],
                "aliases": [h.domain, h.instance_id],
            })
        self.known_hosts.write_text("".join(lines))
        self.inventory.write_text(json.dumps({"servers": entries}, indent=1) + "\n")

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())
