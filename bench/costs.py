"""Per-server cost of a job, counted on the servers: SSH connections, exec round trips, Exim restarts.

    sudo .venv/bin/python -m bench.costs

A fleet of one host per case (modern and legacy, exposed and compliant, plus a non-cPanel host) gets
three jobs in turn: ``relayguard scan`` (audit), ``relayguard scan --fix``, and ``scan --fix`` again
(now everything is compliant). After each job the lab's own records are read per host:

- connections: sshd's ``Accepted publickey`` lines (one per authenticated connection);
- exec round trips: sshd's ``Starting session: command`` lines (the lab's sshd logs at VERBOSE);
- Exim restarts: ``restartsrv_exim`` calls in the command journal whose action restarts Exim
  (default, ``--restart``, ``--hard``, ``--graceful``, ``--reload``).

Targets (issue 6): one connection per server per job; a scan is one exec round trip; a fix at most
three; no Exim restart on a compliant server.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

from bench.common import VENV, log, machine, need_root, run_timed

CASES = {
    "modern-exposed": {"profile": "modern", "exposed": True},
    "legacy-exposed": {"profile": "legacy", "exposed": True},
    "modern-compliant": {"profile": "modern", "exposed": False},
    "legacy-compliant": {"profile": "legacy", "exposed": False},
    "not-cpanel": {"profile": "not-cpanel", "exposed": False},
}
NOT_RESTARTS = {"--status", "--check", "--stop", "--start", "--help"}
_ROW = re.compile(r"^(\S+)\s+(\S+)\s", re.M)


def exim_restarts(host: Any) -> int:
    return sum(1 for r in host.journal() if r["tool"] == "restartsrv_exim"
               and not NOT_RESTARTS.intersection(a.split("=", 1)[0] for a in r["argv"][1:]))


def counters(host: Any) -> tuple[int, int, int]:
    return host.accepted_logins(), host.exec_sessions(), exim_restarts(host)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", type=int, default=253, help="lab address block 127.NET.0.0/16 (%(default)s)")
    args = parser.parse_args(argv)
    need_root()
    from lab import HostSpec, Lab  # noqa: PLC0415 - keeps `--help` light

    log(f"bench.costs\n  machine: {machine()}")
    rows: list[tuple[str, str, str, int, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="rg-bench-costs-") as tmp:
        lab = Lab(Path(tmp) / "lab", net=args.net)
        try:
            hosts = lab.up({name: HostSpec(**spec) for name, spec in CASES.items()})
            for job, extra in (("scan", []), ("fix", ["--fix"]), ("fix again", ["--fix"])):
                before = {h.name: counters(h) for h in hosts}
                run = run_timed([str(VENV / "bin" / "relayguard"), "scan", "--inventory", str(lab.inventory),
                                 "--identity", str(lab.client_key), *extra])
                outcomes = dict(_ROW.findall(run.stdout))
                for h in hosts:
                    after = counters(h)
                    delta = [a - b for a, b in zip(after, before[h.name], strict=True)]
                    rows.append((job, h.name, outcomes.get(h.name, "?"), *delta))
        finally:
            lab.down()
    print("\n### Per-server cost (counted on the lab hosts)\n")
    print("| job | server | outcome | SSH connections | exec round trips | Exim restarts |")
    print("|---|---|---|---:|---:|---:|")
    for job, name, outcome, conns, execs, restarts in rows:
        print(f"| {job} | {name} | {outcome} | {conns} | {execs} | {restarts} |")
    checks = [
        ("one SSH connection per server per job", all(r[3] == 1 for r in rows)),
        ("a scan is one exec round trip", all(r[4] == 1 for r in rows if r[0] == "scan")),
        ("a fix is at most three exec round trips", all(r[4] <= 3 for r in rows if r[0] != "scan")),
        ("no Exim restart on a compliant server or in a scan",
         all(r[5] == 0 for r in rows if r[0] == "scan" or r[2] in ("compliant", "not-cpanel"))),
        ("exactly one Exim restart per remediated server", all(r[5] == 1 for r in rows if r[2] == "remediated")),
    ]
    print()
    for text, ok in checks:
        print(f"- {text}: {'meets' if ok else 'MISSES'}")
    print(f"\nMachine: {machine()}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
