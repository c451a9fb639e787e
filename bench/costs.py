"""Per-server cost of a job, counted on the servers: CPU time, SSH connections, exec round trips, Exim restarts.

    sudo .venv/bin/python -m bench.costs                          # 3 rounds
    sudo .venv/bin/python -m bench.costs --repeat 5 --baseline REV  # also relayguard as of REV, same run

A fleet of one host per case (modern and legacy, exposed and compliant, plus a non-cPanel host) gets
three jobs in turn, from a freshly reset fleet in every round: ``relayguard scan`` (audit),
``relayguard scan --fix``, and ``scan --fix`` again (now everything is compliant). Each variant (the
current code, and each ``--baseline`` revision, its package extracted with ``git archive``) runs its
own rounds, in rotated order. After each job the lab's own records are read per host:

- server CPU: user + system CPU time of everything the job ran on the host (the SSH session, the
  probe's shell and every command it started, the simulated cPanel tools, Exim runs, sshd's own
  work for the connection), from the host's cgroup (``lab/cpu.py``);
- connections: sshd's ``Accepted publickey`` lines (one per authenticated connection);
- exec round trips: sshd's ``Starting session: command`` lines (the lab's sshd logs at VERBOSE);
- Exim restarts: ``restartsrv_exim`` calls in the command journal whose action restarts Exim
  (default, ``--restart``, ``--hard``, ``--graceful``, ``--reload``).

The hosts' idle CPU (Exim's and the simulated tailwatchd's timers) over the same time is measured
between jobs and reported, not subtracted.

Targets (issue 6): one connection per server per job; a scan is one exec round trip; a fix at most
three; no Exim restart on a compliant server. Issue 20: one audit scan costs a server at most 0.1
CPU-s (printed as a finding, not an exit status).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import VENV, log, machine, need_root, python, run_timed

CASES = {
    "modern-exposed": {"profile": "modern", "exposed": True},
    "legacy-exposed": {"profile": "legacy", "exposed": True},
    "modern-compliant": {"profile": "modern", "exposed": False},
    "legacy-compliant": {"profile": "legacy", "exposed": False},
    "not-cpanel": {"profile": "not-cpanel", "exposed": False},
}
JOBS = (("scan", ()), ("fix", ("--fix",)), ("fix again", ("--fix",)))
NOT_RESTARTS = {"--status", "--check", "--stop", "--start", "--help"}
#: Issue 20: one audit scan (relay probe and deliverability collection) costs a server at most this.
SCAN_CPU_TARGET = 0.1
_ROW = re.compile(r"^(\S+)\s+(\S+)\s", re.M)


def exim_restarts(host: Any) -> int:
    return sum(1 for r in host.journal() if r["tool"] == "restartsrv_exim"
               and not NOT_RESTARTS.intersection(a.split("=", 1)[0] for a in r["argv"][1:]))


def counters(host: Any) -> tuple[float, int, int, int]:
    return host.cpu_time().total, host.accepted_logins(), host.exec_sessions(), exim_restarts(host)


@dataclass
class Variant:
    """One version of ``relayguard scan``: the current code or an older revision's package."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    #: (job, server) -> one (outcome, server CPU s, connections, exec round trips, Exim restarts) per round.
    rows: dict[tuple[str, str], list[tuple[str, float, int, int, int]]] = field(default_factory=dict)

    def cpu(self, job: str, server: str) -> float:
        return statistics.median(r[1] for r in self.rows[(job, server)])


def current(lab: Any) -> Variant:
    return Variant("current", [str(VENV / "bin" / "relayguard"), "scan", "--inventory", str(lab.inventory),
                               "--identity", str(lab.client_key)])


def baseline(rev: str, lab: Any, work: Path) -> Variant:
    """``relayguard scan`` as of ``rev``: its package from ``git archive``, on the current venv."""
    from bench.fleet import package_at  # noqa: PLC0415 - only a baseline run needs it

    env = package_at(rev, work)
    return Variant(f"@{rev}", [python(VENV), "-m", "relayguard.cli", "scan", "--inventory", str(lab.inventory),
                               "--identity", str(lab.client_key)], env)


#: Execs an unenrolled server sees before the shell path (issue 21's entry-program attempt).
ENTRY_ATTEMPT = 1
#: After a job's client exits, sshd's session process may still be finishing its teardown on the host.
SETTLE = 0.2


def exec_cost(host: Any, script: str) -> float:
    """Server CPU of one SSH connection that runs ``script`` on ``sh -s``, as RelayGuard sends a probe."""
    import paramiko  # noqa: PLC0415 - keeps `--help` light

    before = host.cpu_time().total
    client = paramiko.SSHClient()
    client.load_host_keys(str(host.lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host.address, username=host.user, key_filename=str(host.lab.client_key), look_for_keys=False,
                       allow_agent=False, timeout=30)
        stdin, stdout, _stderr = client.exec_command("sh -s", timeout=60)
        stdin.write(script)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        stdout.channel.recv_exit_status()
    finally:
        client.close()
    if script and "scan.end=1" not in out:
        raise SystemExit(f"{host.name}: the probe did not finish:\n{out[-2000:]}")
    time.sleep(SETTLE)
    return host.cpu_time().total - before


def sections(host: Any, repeat: int) -> dict[str, float]:
    """Median server CPU of a bare connection, the relay probe alone, and the probe with the deliverability
    collection (what a scan runs): the deliverability part's share of a scan, measured on one host."""
    from relayguard.domain.probe import PRELUDE, PROBE_SCRIPT, _probe_body  # noqa: PLC0415

    parts = {"SSH connection running nothing": "",
             "relay probe without the deliverability section": PRELUDE + _probe_body(deliverability=False),
             "relay probe + deliverability collection (a scan's script)": PROBE_SCRIPT}
    exec_cost(host, PROBE_SCRIPT)  # warm-up: a fresh host's first session pays for cold caches
    runs: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(repeat):
        for name, script in parts.items():
            runs[name].append(exec_cost(host, script))
    return {name: statistics.median(values) for name, values in runs.items()}


def fresh_fleet(lab: Any, specs: dict[str, Any]) -> list[Any]:
    """Every host restarted from its pristine seed (a fix changes it), all at once."""
    for host in list(lab):
        lab.stop_host(host)
    return lab.up(specs)


def idle_cpu(hosts: list[Any], seconds: float) -> float:
    """The largest CPU any host spent doing nothing for ``seconds`` (its daemons' timers)."""
    before = {h.name: h.cpu_time().total for h in hosts}
    time.sleep(seconds)
    return max(h.cpu_time().total - before[h.name] for h in hosts)


def round_of(variant: Variant, lab: Any, specs: dict[str, Any]) -> float:
    """One round of the three jobs on a fresh fleet; returns the longest job's wall time."""
    hosts = fresh_fleet(lab, specs)
    longest = 0.0
    for job, extra in JOBS:
        before = {h.name: counters(h) for h in hosts}
        run = run_timed([*variant.argv, *extra], env=variant.env)
        longest = max(longest, run.wall)
        time.sleep(SETTLE)
        outcomes = dict(_ROW.findall(run.stdout))
        for h in hosts:
            after = counters(h)
            cpu, *counts = (a - b for a, b in zip(after, before[h.name], strict=True))
            variant.rows.setdefault((job, h.name), []).append(
                (outcomes.get(h.name, "?"), cpu, *(int(c) for c in counts)))  # type: ignore[arg-type]
    return longest


def report(variants: list[Variant], idle: float, job_wall: float) -> list[tuple[str, bool]]:
    now = variants[0]
    print("\n### Per-server cost (counted on the lab hosts)\n")
    print("Server CPU: user + system seconds of everything the job ran on the host, median of the rounds.\n")
    heads = " | ".join(f"server CPU {v.name} (ms)" for v in variants)
    ratios = " | ".join(f"{v.name} / current" for v in variants[1:])
    print(f"| job | server | outcome | {heads} |{' ' + ratios + ' |' if ratios else ''} SSH connections | "
          "exec round trips | Exim restarts |")
    print("|---|---|---|" + "---:|" * (len(variants) * 2 - 1 + 3))
    for (job, server), runs in now.rows.items():
        cpu = [v.cpu(job, server) for v in variants]
        ratio = [f"{c / cpu[0]:.2f}×" if cpu[0] else "-" for c in cpu[1:]]
        outcome, _cpu, conns, execs, restarts = runs[0]
        cells = [f"{c * 1000:.0f}" for c in cpu] + ratio + [str(conns), str(execs), str(restarts)]
        print(f"| {job} | {server} | {outcome} | " + " | ".join(cells) + " |")
    print(f"\nIdle: at most {idle * 1000:.1f} ms of CPU per host over {job_wall:.1f} s (the longest job's wall "
          "time) with no job running: included in the figures above, not subtracted.")
    scans = [r for (job, server), runs in now.rows.items() if job == "scan" and server != "not-cpanel"
             for r in runs]
    worst = max(now.cpu("scan", s) for (j, s) in now.rows if j == "scan" and s != "not-cpanel")
    every = [r for runs in now.rows.values() for r in runs]
    # Issue 21: on a server without the entry program (the lab's hosts are not enrolled) the session's first
    # exec tries /usr/local/sbin/relayguard-entry and falls back to sh -s: one exec more, not a round trip of work.
    extra = ENTRY_ATTEMPT
    return [
        ("one SSH connection per server per job", all(r[2] == 1 for r in every)),
        ("a scan is one exec round trip (+1 entry-program attempt, not enrolled)",
         all(r[3] <= 1 + extra for r in scans)),
        ("a fix is at most three exec round trips (+1 entry-program attempt, not enrolled)",
         all(r[3] <= 3 + extra for (job, _s), runs in now.rows.items() if job != "scan" for r in runs)),
        ("no Exim restart on a compliant server or in a scan",
         all(r[4] == 0 for (job, _s), runs in now.rows.items() for r in runs
             if job == "scan" or r[0] in ("compliant", "not-cpanel"))),
        ("exactly one Exim restart per remediated server", all(r[4] == 1 for r in every if r[0] == "remediated")),
        (f"an audit scan costs a cPanel server at most {SCAN_CPU_TARGET} CPU-s (median; worst case "
         f"{worst:.3f} s)", worst <= SCAN_CPU_TARGET),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", type=int, default=253, help="lab address block 127.NET.0.0/16 (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per variant (%(default)s)")
    parser.add_argument("--baseline", action="append", default=[], metavar="REV",
                        help="also measure relayguard as of this git revision (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    need_root()
    from lab import HostSpec, Lab  # noqa: PLC0415 - keeps `--help` light

    log(f"bench.costs\n  machine: {machine()}")
    from lab import maildomains  # noqa: PLC0415

    # Every cPanel host serves the lab's deliverability cases (a dozen domains with mail IPs, HELO names and
    # DKIM keys), so the collection reads real files.
    mail = tuple(case.name for case in maildomains.cases())
    specs = {name: HostSpec(**spec, mail_cases=mail if spec["profile"] != "not-cpanel" else ())  # type: ignore[arg-type]
             for name, spec in CASES.items()}
    with tempfile.TemporaryDirectory(prefix="rg-bench-costs-") as tmp:
        lab = Lab(Path(tmp) / "lab", net=args.net)
        try:
            lab.up(specs)
            variants = [current(lab), *(baseline(rev, lab, Path(tmp)) for rev in args.baseline)]
            job_wall = 0.0
            for i in range(args.repeat):
                for variant in variants[i % len(variants):] + variants[:i % len(variants)]:
                    log(f"  round {i + 1}/{args.repeat}: {variant.name}")
                    job_wall = max(job_wall, round_of(variant, lab, specs))
            idle = idle_cpu(list(lab), job_wall)
            parts = sections(fresh_fleet(lab, specs)[0], max(5, args.repeat * 3))
        finally:
            lab.down()
    checks = report(variants, idle, job_wall)
    print("\n### A scan's script by part (one modern-exposed host, server CPU, median)\n")
    print("| what runs | server CPU (ms) |")
    print("|---|---:|")
    for name, cpu in parts.items():
        print(f"| {name} | {cpu * 1000:.1f} |")
    relay, whole = list(parts.values())[1:]
    share = (whole - relay) / relay if relay else 0.0
    print(f"\nThe deliverability collection adds {(whole - relay) * 1000:.1f} ms, {share:+.0%} of the relay probe's "
          "server CPU, in the same exec round trip.")
    checks.append(("the deliverability collection adds at most 20% to a scan's server CPU", share <= 0.20))
    print()
    for text, ok in checks:
        print(f"- {text}: {'meets' if ok else 'MISSES'}")
    print(f"\nMachine: {machine()}")
    if args.json:
        args.json.write_text(json.dumps({v.name: {f"{j}|{s}": rows for (j, s), rows in v.rows.items()}
                                         for v in variants}, indent=1))
    # The CPU targets are findings (MISSES), not failures; broken counts are.
    return 0 if all(ok for _, ok in checks[:-2]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
