"""The lab's per-host CPU accounting (lab/cpu.py) counts what runs on that host, and only there.

A sanity test of the counter bench.costs reads, not a timing test of the product: a burner run over
real SSH reports its own CPU time (from the kernel, ``os.times``), and that much must appear on its
host's counter and not on its neighbour's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import HostSpec
from lab.cpu import find_base
from lab.remote import ssh

pytestmark = pytest.mark.integration

# Busy-loops until the process has used BURN seconds of user CPU, then prints what it used in all.
BURN = 0.4
BURNER = (
    "python3 -IS -c 'import os\n"
    f"while os.times().user < {BURN}: pass\n"
    "t = os.times(); print(t.user + t.system)'"
)


def test_cpu_time_counts_a_known_burn_on_its_own_host_only(make_fleet):
    if find_base() is None:
        pytest.skip("no writable cgroup hierarchy: the lab runs hosts unaccounted here")
    busy, idle = make_fleet({"cpu-busy": HostSpec(profile="modern"), "cpu-idle": HostSpec(profile="modern")})
    assert busy.cgroup
    assert idle.cgroup
    assert busy.cgroup != idle.cgroup
    before = {h.name: h.cpu_time() for h in (busy, idle)}

    res = ssh(busy, BURNER)

    assert res.rc == 0, res.err
    burned = float(res.out)
    assert burned >= BURN
    spent = {h.name: h.cpu_time() - before[h.name] for h in (busy, idle)}
    # The burner itself, plus the SSH session around it on the same host.
    assert spent["cpu-busy"].total >= burned
    assert spent["cpu-busy"].user >= BURN
    # Its neighbour only idled (Exim's and the simulated tailwatchd's timers).
    assert spent["cpu-idle"].total < burned / 4


def test_a_stopped_host_leaves_no_cgroup(lab, make_fleet):
    if find_base() is None:
        pytest.skip("no writable cgroup hierarchy: the lab runs hosts unaccounted here")
    (host,) = make_fleet({"cpu-gone": HostSpec(profile="legacy")})
    group = Path(host.cgroup)
    assert (group / "host").is_dir()
    assert (group / "init").is_dir()
    members = (group / "host" / "cgroup.procs").read_text().split()
    assert host.init_pid not in map(int, members)  # the init moved out: the lab's bookkeeping is not billed
    assert len(members) >= 2  # sshd, Exim (and the simulated tailwatchd)

    lab.stop_host(host)

    assert not group.exists()
    assert host.cgroup == ""
