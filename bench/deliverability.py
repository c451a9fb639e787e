"""How many domains the DNS judge gets through in one job's budget, against the lab's real DNS (issue 20).

    sudo .venv/bin/python -m bench.deliverability [--domains 2000] [--repeat 3] [--workers 16]

Starts the lab's nsd + unbound (lab/dns.py) with ``--domains`` well-configured domains beside the
cases of lab/maildomains.py, judges them all as one server's job (all on one sending IP, all
including one provider's SPF, as a shared-hosting server's accounts are), and prints the job's wall
time, the queries it sent and what that makes of the 60 s budget: the ratio of the job's time to the
budget, and the number of domains one budget holds at this rate. A resolver on another machine adds
its round trip to every query: the figure is the judge's own cost, the floor under any real one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import log, machine, need_root

BUDGET = 60.0  # relayguard.engine.JUDGE_BUDGET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", type=int, default=2000, help="domains in the job (%(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="jobs to time (%(default)s)")
    parser.add_argument("--workers", type=int, default=16, help="domains judged at once (%(default)s)")
    parser.add_argument("--net", type=int, default=240, help="preferred lab block 127.NET.0.0/16 (%(default)s)")
    args = parser.parse_args(argv)
    need_root()
    # Imported here to keep `--help` light.
    from relayguard.adapters.dns_judge import DnsJudge  # noqa: PLC0415

    from lab import maildomains, reserve_net  # noqa: PLC0415
    from lab.dns import LabDns  # noqa: PLC0415

    log(f"bench.deliverability\n  machine: {machine()}")
    reservation = reserve_net(start=args.net)
    walls: list[float] = []
    queries = 0
    try:
        with tempfile.TemporaryDirectory(prefix="rg-bench-dns-") as tmp, \
                LabDns(Path(tmp), reservation.net, bulk=args.domains) as dns:
            collected = maildomains.bulk_collected(dns.net, args.domains)
            for i in range(args.repeat):
                judge = DnsJudge(dns.resolver, workers=args.workers, budget=BUDGET)
                start = time.monotonic()
                report = judge.judge(collected)
                walls.append(time.monotonic() - start)
                queries = judge.last_queries
                bad = [f.domain for f in report.domains if f.rules_broken or f.rules_unknown]
                log(f"  job {i + 1}/{args.repeat}: {walls[-1]:.2f} s, {queries} queries, "
                    f"{len(report.domains)} judged, {len(bad)} not clean, notes {list(report.notes)}")
                if len(report.domains) != args.domains or bad:
                    log(f"  the bulk domains should all be judged clean: {bad[:5]}")
                    return 1
    finally:
        reservation.release()
    wall = statistics.median(walls)
    per_domain = queries / args.domains
    # Without the per-job cache every domain would ask the shared PTR, its name's address and the
    # provider's include (TXT, and checkdmarc's SPF-type and CNAME looks at it) again: 5 more each.
    uncached = queries + 5 * (args.domains - 1)
    print(f"\nDNS judge, {args.domains} domains, {args.workers} workers, lab resolver on loopback "
          f"(median of {args.repeat} jobs)")
    print("| domains | job wall s | queries | queries/domain | domains/s | job / 60 s budget | domains per budget |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.domains} | {wall:.2f} | {queries} | {per_domain:.2f} | {args.domains / wall:.0f} | "
          f"{wall / BUDGET:.3f} | {int(args.domains * BUDGET / wall)} |")
    print(f"\nShared lookups asked once per job: {queries} queries instead of {uncached} "
          f"({uncached / queries:.2f}x fewer).")
    print(f"\nMachine: {machine()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
