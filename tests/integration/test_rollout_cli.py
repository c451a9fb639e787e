"""Fix limits through the installed ``relayguard`` entry point, against lab hosts (real sshd, real Exim):
the error budget, the canary, max-changes, exclusion by tag and the maintenance window.

"Untouched" is proven three ways for every server a run left alone: its files (hash, mode, link target)
are as before, its command journal holds only the read-only calls of the probe, and a client that logged
in by POP still relays through it (250).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lab import Host, HostSpec, Lab
from lab.fleet import pristine_view
from lab.smtp import relay_attempt

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
EXCLUDE_TAG = "relayguard:exclude"
FAILING = HostSpec(profile="modern", switches={"exim_restart_fail": ""})

#: The only simulated-tool calls that change nothing: what the probe runs.
READ_ONLY = {("tailwatchd", ("--status",)), ("restartsrv_exim", ("--status",)), ("exim", ("-bV",)),
             ("exim", ("-bpc",)), ("smtpmailgidonly", ("status",))}


def writes(host: Host) -> list[tuple[str, list[str]]]:
    """Journal records of calls that may change something (``exim -bh`` only simulates a session, ``-bP`` reads)."""
    return [(r["tool"], r["argv"][1:]) for r in host.journal()
            if (r["tool"], tuple(r["argv"][1:])) not in READ_ONLY and r["argv"][1:2] not in (["-bh"], ["-bP"])]


def fix_window(host: Host) -> tuple[float, float] | None:
    """From the start of the host's first changing call to the end of its last one, if any."""
    records = [r for r in host.journal()
               if (r["tool"], tuple(r["argv"][1:])) not in READ_ONLY and r["argv"][1:2] not in (["-bh"], ["-bP"])]
    return (min(r["start"] for r in records), max(r["end"] or r["start"] for r in records)) if records else None


def state(hosts: list[Host]) -> dict[str, dict[str, tuple[object, ...]]]:
    # Without mtimes: the simulated tracker rewrites its list (same content) before every root command.
    return {h.name: pristine_view(h.snapshot()) for h in hosts}


def scan(lab: Lab, hosts: list[Host], tmp_path: Path, *extra: str, tags: dict[str, list[str]] | None = None,
         ) -> tuple[int, list[dict[str, Any]], str]:
    """``relayguard scan --fix --json`` over an inventory of ``hosts`` in that order."""
    entries = {s["name"]: s for s in json.loads(lab.inventory.read_text())["servers"]}
    servers = [{**entries[h.name], "tags": [*entries[h.name]["tags"], *(tags or {}).get(h.name, [])]}
               for h in hosts]
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"servers": servers}))
    argv = [RELAYGUARD, "scan", "--inventory", str(inventory), "--fix", "--json", "--identity", str(lab.client_key),
            *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def assert_untouched(lab: Lab, host: Host, before: dict[str, tuple[object, ...]]) -> None:
    assert pristine_view(host.snapshot()) == before, host.name
    assert writes(host) == [], host.name
    assert relay_attempt(host.address, lab.client_source()).code == 250, host.name


def test_a_20_host_fix_sweep_stops_at_two_failed_fixes_and_leaves_the_rest_untouched(lab, make_fleet, tmp_path):
    # GIVEN 20 exposed servers, 4 of which cannot restart Exim, spread through the inventory
    failing = {"ro01", "ro06", "ro11", "ro16"}
    specs = {f"ro{i:02d}": FAILING if f"ro{i:02d}" in failing else HostSpec(profile=("modern", "legacy")[i % 2])
             for i in range(20)}
    hosts = make_fleet(specs)
    before = state(hosts)
    # WHEN a fix sweep runs five at a time with an error budget of 2
    code, results, stderr = scan(lab, hosts, tmp_path, "--max-errors", "2", "--concurrency", "5")
    # THEN every server is reported exactly once
    assert sorted(r["host"] for r in results) == sorted(specs)
    by_name = {r["host"]: r for r in results}
    outcomes = Counter(r["outcome"] for r in results)
    # ... exactly two fixes failed, both on servers that cannot restart Exim
    assert outcomes["failed"] == 2, outcomes
    assert {n for n, r in by_name.items() if r["outcome"] == "failed"} <= failing
    # ... every other server was either fixed before the budget was spent, or skipped and left untouched
    assert set(outcomes) <= {"failed", "remediated", "skipped"}, outcomes
    assert outcomes["skipped"] >= 2  # the failing servers that did not fail cannot have been fixed
    for host in hosts:
        res = by_name[host.name]
        if res["outcome"] == "remediated":
            assert host.name not in failing
        elif res["outcome"] == "skipped":
            assert (res["reason"], res["exposed_before"], res["exposed_after"]) == ("error-budget", True, True)
            assert_untouched(lab, host, before[host.name])
    # ... fixes count against the budget while they run, so no more than two ever overlapped
    windows = [w for w in map(fix_window, hosts) if w is not None]
    assert len(windows) == outcomes["remediated"] + 2
    for trio in itertools.combinations(windows, 3):
        assert max(w[0] for w in trio) >= min(w[1] for w in trio), "three fixes ran at once"
    # ... the run says it was stopped and why, and exits 2 for the failures
    assert code == 2
    assert "relayguard: run stopped: --max-errors 2 reached" in stderr


def test_a_failed_canary_stops_the_run_with_nothing_touched_beyond_it(lab, make_host, tmp_path):
    # GIVEN a compliant server, then five exposed ones; the second exposed one cannot restart Exim
    hosts = [make_host(profile="modern", exposed=False), make_host(profile="modern"), make_host(FAILING),
             make_host(profile="legacy"), make_host(profile="modern"), make_host(profile="legacy")]
    before = state(hosts)
    # WHEN a fix sweep with a canary of 2 runs them all at once
    code, results, stderr = scan(lab, hosts, tmp_path, "--canary", "2", "--concurrency", "6")
    # THEN the canary is the first two exposed servers of the inventory; one failed, so the rest were skipped
    assert [(r["host"], r["outcome"], r["reason"]) for r in results] == [
        (hosts[0].name, "compliant", ""), (hosts[1].name, "remediated", ""),
        (hosts[2].name, "failed", "exim-restart-failed"),
        *((h.name, "skipped", "canary-failed") for h in hosts[3:])]
    for host in hosts[3:]:
        assert_untouched(lab, host, before[host.name])
    assert code == 2
    assert "relayguard: run stopped: a canary fix failed (--canary 2;" in stderr


def test_max_changes_changes_exactly_that_many_servers(lab, make_host, tmp_path):
    hosts = [make_host(profile="modern"), make_host(profile="legacy"), make_host(profile="modern"),
             make_host(profile="legacy"), make_host(profile="modern")]
    before = state(hosts)
    code, results, stderr = scan(lab, hosts, tmp_path, "--max-changes", "3", "--concurrency", "5")
    assert sorted(r["host"] for r in results) == sorted(h.name for h in hosts)
    assert Counter((r["outcome"], r["reason"]) for r in results) == {("remediated", ""): 3,
                                                                     ("skipped", "max-changes"): 2}
    by_name = {r["host"]: r for r in results}
    for host in hosts:
        if by_name[host.name]["outcome"] == "skipped":
            assert_untouched(lab, host, before[host.name])
        else:
            assert relay_attempt(host.address, lab.client_source()).code == 550
    assert code == 1  # exposure left as it is on purpose
    assert "relayguard: --max-changes 3 reached (3 changed, 0 failed, 2 skipped)" in stderr


def test_a_server_tagged_exclude_is_scanned_and_reported_but_never_written_to(lab, make_host, tmp_path):
    kept, fixed = make_host(profile="modern"), make_host(profile="legacy")
    before = state([kept])
    code, results, _ = scan(lab, [kept, fixed], tmp_path, tags={kept.name: [EXCLUDE_TAG]})
    assert [(r["host"], r["outcome"], r["reason"]) for r in results] == [
        (kept.name, "excluded", "excluded"), (fixed.name, "remediated", "")]
    assert (results[0]["generation"], results[0]["exposed_before"], results[0]["exposed_after"]) == (
        "modern", True, True)
    assert_untouched(lab, kept, before[kept.name])
    assert code == 1


def test_outside_the_maintenance_window_fix_only_audits(lab, make_host):
    host = make_host(profile="modern")
    before = state([host])
    later = datetime.now(UTC) + timedelta(hours=2)
    closed = f"{later:%H}:00-{later + timedelta(hours=1):%H}:00 UTC"  # opens in 1 to 2 hours, never now
    argv = [RELAYGUARD, "fix", "--json", "--identity", str(lab.client_key), "--known-hosts", str(lab.known_hosts),
            "--window", closed, host.address]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    (res,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert (proc.returncode, res["mode"], res["outcome"]) == (1, "audit", "noncompliant")
    assert "outside-maintenance-window" in res["warnings"]
    assert "outside the --window maintenance window" in proc.stderr
    assert_untouched(lab, host, before[host.name])


def test_check_honours_concurrency(lab, make_host):
    hosts = [make_host(profile="modern", exposed=False) for _ in range(3)]
    for h in hosts:
        # exim.conf newer than the daemon: the probe asks `exim -bV`, whose journal record dates each probe.
        os.utime(h.path("/etc/exim.conf"))
    argv = [RELAYGUARD, "check", "--json", "--identity", str(lab.client_key), "--known-hosts", str(lab.known_hosts),
            "--concurrency", "1", *(h.address for h in hosts)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert [json.loads(line)["outcome"] for line in proc.stdout.splitlines()] == ["compliant"] * 3
    # One at a time: no host's first command started before another host's last one had ended.
    windows = sorted((min(r["start"] for r in h.journal()), max(r["end"] or r["start"] for r in h.journal()))
                     for h in hosts)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(windows)), windows
