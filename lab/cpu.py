"""Per-host CPU accounting: one cgroup per lab host, so a benchmark can read what a job cost the server.

Every lab host gets a cgroup ``relayguard-lab-<token>-<host>`` under the cgroup the lab runs in, with
two leaves:

- ``host``: everything the host runs (Exim, sshd, the simulated tools, every SSH session and what
  it starts). Processes inherit their cgroup at fork, so nothing escapes it, orphans included.
- ``init``: the lab's own init (``lab/nsinit.py``) once it has started the host's daemons, so its
  journal bookkeeping and reaping are not billed to the server.

The kernel counts the user and system CPU time of every task in the cgroup, including tasks that have
exited, in nanoseconds (cgroup v2 ``cpu.stat`` in microseconds; cgroup v1 ``cpuacct``). That is the
"user + system of everything the job ran on the host" that issue 20 asks for, without timing anything
and without the 10 ms ticks of ``/proc/<pid>/stat``. The cgroup is removed when the host stops.

The cgroup v2 hierarchy is used where it is mounted and writable (pure v2 or the ``unified`` mount of
a hybrid machine; its ``cpu.stat`` counts CPU time without the ``cpu`` controller); otherwise v1's
``cpuacct``. Without either the host runs unaccounted and :meth:`Accounting.cpu_time` says why.
Nothing here is used by the product: it is the lab's view of the simulated servers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "relayguard-lab-"
LEAVES = ("host", "init")


@dataclass(frozen=True)
class CpuTime:
    """User and system CPU seconds; subtract two readings for what happened in between."""

    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: CpuTime) -> CpuTime:
        return CpuTime(self.user - other.user, self.system - other.system)


class AccountingUnavailable(RuntimeError):
    """This machine offers the lab no writable cgroup hierarchy with CPU accounting."""


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) from this process's mountinfo."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and len(rfields) >= 3:
            out.append((fields[4].replace("\\040", " "), rfields[0], set(rfields[2].split(","))))
    return out


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per hierarchy: ``""`` for v2, the controller list for v1."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _hid, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def find_base() -> Path | None:
    """The writable cgroup directory lab hosts' cgroups are made in, or None."""
    own = _own_cgroups()
    candidates: list[Path] = []
    for mountpoint, fstype, options in _mounts():
        if fstype == "cgroup2" and "" in own:
            candidates.insert(0, Path(mountpoint) / own[""].lstrip("/"))
        elif fstype == "cgroup" and "cpuacct" in options:
            path = next((p for c, p in own.items() if "cpuacct" in c.split(",")), "/")
            candidates.append(Path(mountpoint) / path.lstrip("/"))
    for base in candidates:
        if base.is_dir() and os.access(base, os.W_OK):
            return base
    return None


@dataclass(frozen=True)
class Accounting:
    """One host's cgroup (``path``); ``""`` when the machine has none to offer."""

    path: str

    @classmethod
    def create(cls, token: str, host: str) -> Accounting:
        base = find_base()
        if base is None:
            return cls("")
        group = base / f"{PREFIX}{token}-{host}"
        try:
            for leaf in LEAVES:
                (group / leaf).mkdir(parents=True, exist_ok=True)
        except OSError:
            return cls("")
        return cls(str(group))

    @property
    def host_procs(self) -> str:
        """The file the host's init writes ``0`` to at start (itself, so all it forks follows)."""
        return f"{self.path}/host/cgroup.procs" if self.path else ""

    @property
    def init_procs(self) -> str:
        """The file the init moves itself to once the daemons run."""
        return f"{self.path}/init/cgroup.procs" if self.path else ""

    def cpu_time(self) -> CpuTime:
        """User and system CPU of everything the host ran since it started (exited processes included)."""
        if not self.path:
            raise AccountingUnavailable("no writable cgroup v2 or v1 cpuacct hierarchy: the lab hosts run "
                                        "unaccounted on this machine")
        leaf = Path(self.path) / "host"
        stat = leaf / "cpu.stat"
        if stat.exists():
            values = dict(line.split() for line in stat.read_text().splitlines() if line.strip())
            return CpuTime(int(values["user_usec"]) / 1e6, int(values["system_usec"]) / 1e6)
        user = int((leaf / "cpuacct.usage_user").read_text())
        system = int((leaf / "cpuacct.usage_sys").read_text())
        return CpuTime(user / 1e9, system / 1e9)

    def remove(self, timeout: float = 2.0) -> None:
        """Remove the cgroup once the host's processes are gone (the kernel may lag their exit a little)."""
        if not self.path:
            return
        group = Path(self.path)
        deadline = time.monotonic() + timeout
        for leaf in (*(group / leaf for leaf in LEAVES), group):
            while True:
                try:
                    leaf.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


def leftovers(token: str) -> list[Path]:
    """Cgroups of this lab (by token) that still exist: none once every host is stopped."""
    base = find_base()
    if base is None:
        return []
    with contextlib.suppress(OSError):
        return sorted(base.glob(f"{PREFIX}{token}-*"))
    return []
