"""``python -m bench``: every benchmark of issue 6, or a quick smoke run of all of them.

    sudo .venv/bin/python -m bench --smoke          # a few hosts, one repetition, what is installed (CI)
    sudo .venv/bin/python -m bench --all [--out DIR] # the full figures of bench/README.md

The modules also run on their own: ``bench.fleet``, ``bench.costs``, ``bench.lambda_costs``,
``bench.scale``, ``bench.alert_to_fix``, ``bench.deliverability`` and ``bench.lab_startup`` (see
bench/README.md). Every step brings its lab, network namespace, relay and moto server down before the
next starts, also on SIGTERM and Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import alert_to_fix, costs, deliverability, fleet, lambda_costs, scale
from bench.common import REPO, log, machine, need_root

#: The smoke run's own lab address block, apart from the full runs' (251, 253) and pytest's (100-249).
SMOKE_NET = 252


def _smoke() -> list[tuple[str, Callable[[], int]]]:
    net = str(SMOKE_NET)
    steps: list[tuple[str, Callable[[], int]]] = [
        ("fleet, loopback", lambda: fleet.main(["--hosts", "3", "--repeat", "1", "--net", net, "--timeout", "120"])),
        ("fleet, WAN", lambda: fleet.main(["--wan", "--hosts", "2", "--rtt-ms", "20", "--concurrency", "2",
                                           "--repeat", "1", "--net", net, "--timeout", "120", "--alone-repeat", "2",
                                           "--approaches", "relayguard,paramiko-pool,openssh"])),
        ("per-server cost", lambda: costs.main(["--net", net, "--repeat", "1"])),
        ("planner and queue path", lambda: scale.main(["--servers", "200"])),
        ("alert to fix", lambda: alert_to_fix.main(["--repeat", "1"])),
        ("DNS judge", lambda: deliverability.main(["--domains", "200", "--repeat", "1", "--net", net])),
    ]
    if (lambda_costs.BUILD / "DepsLayer" / "python").is_dir():
        steps.append(("Lambda costs", lambda: lambda_costs.main(["--repeat", "1"])))
    else:
        log("bench --smoke: no .aws-sam/build (./scripts/sam build); Lambda costs skipped")
    return steps


def _all(out: Path) -> list[tuple[str, Callable[[], int]]]:
    return [
        ("fleet, loopback", lambda: fleet.main(["--json", str(out / "fleet.json")])),
        ("fleet, WAN", lambda: fleet.main(["--wan", "--json", str(out / "wan.json")])),
        ("per-server cost", lambda: costs.main([])),
        ("Lambda costs", lambda: lambda_costs.main(["--json", str(out / "lambda.json")])),
        ("planner and queue path", lambda: scale.main(["--json", str(out / "scale.json")])),
        ("alert to fix", lambda: alert_to_fix.main(["--repeat", "7"])),
        ("DNS judge", lambda: deliverability.main([])),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--smoke", action="store_true", help="a few hosts, one repetition (CI runs this)")
    mode.add_argument("--all", action="store_true", help="every benchmark at full size")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="JSON results (--all)")
    args = parser.parse_args(argv)
    need_root()
    # SIGTERM (a CI timeout, `kill PID`) unwinds like Ctrl-C, so every step's clean-up runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.all:
        args.out.mkdir(parents=True, exist_ok=True)
    steps = _smoke() if args.smoke else _all(args.out)
    failed = []
    for name, step in steps:
        started = time.perf_counter()
        log(f"\n== bench: {name}")
        code = step()
        log(f"== bench: {name}: exit {code} after {time.perf_counter() - started:.0f} s")
        if code != 0:
            failed.append(name)
    print(f"\nbench {'--smoke' if args.smoke else '--all'}: {len(steps) - len(failed)} of {len(steps)} steps "
          f"exited 0{'; non-zero: ' + ', '.join(failed) if failed else ''}\nMachine: {machine()}")
    # Steps exit non-zero for broken results (an approach that did not probe every host, a wrong
    # count); a missed time or size target is printed as MISSES and is a finding, not a failure.
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
