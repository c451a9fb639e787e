"""Lab start-up times against issue 2's targets: one host with Exim ≤ 2 s, a 50-host fleet ≤ 20 s.

    sudo .venv/bin/python -m bench.lab_startup [--hosts 50] [--repeat 3]

Prints min/median/max per case and the ratio to its target. Cleans up after itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from lab import HostSpec, Lab

TARGETS = {"one host": 2.0, "fleet": 20.0}


def _time_up(workdir: Path, count: int, net: int) -> float:
    lab = Lab(workdir, net=net)
    specs = {f"b{i:03d}": HostSpec(profile=("modern", "legacy")[i % 2]) for i in range(count)}
    try:
        started = time.perf_counter()
        lab.up(specs)
        return time.perf_counter() - started
    finally:
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the lab uses mount and PID namespaces)")
    net = 240
    with tempfile.TemporaryDirectory(prefix="rg-bench-") as tmp:
        for case, count in (("one host", 1), ("fleet", args.hosts)):
            runs = [_time_up(Path(tmp) / f"{count}-{i}", count, net) for i in range(args.repeat)]
            median = statistics.median(runs)
            target = TARGETS[case]
            verdict = "meets" if median <= target else "MISSES"
            print(f"{case:9} ({count:3d} hosts): min {min(runs):.2f}s  median {median:.2f}s  max {max(runs):.2f}s  "
                  f"target {target:.0f}s  ratio {median / target:.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
