"""The benchmarks cannot rot: ``python -m bench --smoke`` runs every one of them, small, once.

It brings up its own lab (127.252.0.0/16), network namespace, relay and moto server and takes them
down again. What it asserts is that every approach probed every host and every count came out right;
it never asserts a time (the figures are in bench/README.md, from full runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab import listeners

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SMOKE_NET = "127.252."


def _netns() -> set[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (mount and PID namespaces)")
def test_bench_smoke_runs_every_benchmark_and_cleans_up() -> None:
    namespaces = _netns()
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--smoke"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=840)
    except subprocess.TimeoutExpired:
        # SIGTERM first: bench unwinds and takes its lab, namespace and relay down.
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"bench --smoke ran past 840 s:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-6000:]
    assert "steps exited 0" in out
    for heading in ("### 3 hosts, loopback", "### 2 hosts, WAN 20 ms RTT", "### Per-server cost",
                    "### Planner and queue path, 200 servers"):
        assert heading in out, heading
    # Every installed approach probed every host: an incomplete one would show as failed.
    assert "| failed |" not in out
    assert "INCOMPLETE" not in out
    assert "- a scan is one exec round trip (+1 entry-program attempt, not enrolled): meets" in out
    assert "- exactly one digest: yes" in out
    if (REPO / ".aws-sam" / "build" / "DepsLayer" / "python").is_dir():
        # Each handler measured, with its stack-alone anchor beside it.
        assert "### Cold start per handler" in out
        assert all(f"| {h} | " in out for h in ("planner", "worker", "alert_intake"))
        assert "stack alone: the same process without RelayGuard's code" in out
    # Nothing left behind: no listener in the smoke's address block, no extra network namespace.
    assert not [addr for addr, _ in listeners() if addr.startswith(SMOKE_NET)]
    assert _netns() <= namespaces
