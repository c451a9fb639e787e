"""On lab hosts (real sshd, real Exim): an audit reports the plan the fix then runs, for both generations,
and the spam signals count what the server's own Exim log holds inside the window, read-only."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lab import Host, HostSpec, Lab
from lab.smtp import relay_attempt
from lab.spam import spam_lines

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
#: Plan line → the remote step the fix's scripts record for it (an oracle written by hand, not the code's).
STEP_OF_LINE = {
    "set popbeforesmtp=0": "set-tweak-popbeforesmtp-0",
    "disable Antirelayd": "disable-antirelayd",
    "disable RecentAuthedMailIpTracker": "disable-tracker",
    "clear relayhosts": "truncate-relayhosts",
    "clear relayhostsusers": "truncate-relayhostsusers",
    "run update_exim_rejects": "update-exim-rejects",
    "restart exim": "restart-exim",
}
#: Steps of a fix that are no plan line: its round trips, its record, and the checks after it.
NOT_PLANNED = {"probe", "disable", "finish", "write-revert-record", "exim-status", "exim-bv", "relay-probe",
               # the read-only post-fix proof (domain/proof.py): it verifies, it changes nothing
               "exim-ports", "auth-relay-probe"}
NOT_PLANNED_PREFIXES = ("auth-ehlo-", "alwaysrelay-probe-")


def rg(lab: Lab, command: str, host: Host, *extra: str) -> tuple[int, dict[str, Any]]:
    argv = [RELAYGUARD, command, "--json", "--identity", str(lab.client_key), "--known-hosts", str(lab.known_hosts),
            *extra, host.address]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    (result,) = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, result


def changing_tools(host: Host) -> list[str]:
    """Simulated cPanel tools called with arguments that may change something."""
    read_only = (["--status"], ["-bV"], ["-bpc"], ["status"])
    return [r["tool"] for r in host.journal() if r["argv"][1:] not in read_only and r["argv"][1:2] != ["-bh"]]


@pytest.mark.parametrize(("profile", "plan"), [
    ("modern", ["set popbeforesmtp=0", "run update_exim_rejects", "restart exim"]),
    ("legacy", ["disable Antirelayd", "clear relayhosts", "clear relayhostsusers", "run update_exim_rejects",
                "restart exim"]),
])
def test_the_plan_an_audit_reports_is_what_the_fix_then_runs(lab: Lab, make_host: Any, profile: str,
                                                              plan: list[str]) -> None:
    host = make_host(profile=profile)
    # WHEN audited  THEN the plan is reported and nothing on the server changed
    code, audit = rg(lab, "check", host)
    assert (code, audit["outcome"], audit["plan"]) == (1, "noncompliant", plan)
    assert changing_tools(host) == []
    # WHEN fixed  THEN the fix reports the same plan and its changing steps are exactly the plan's, in order
    code, fix = rg(lab, "fix", host)
    assert (code, fix["outcome"]) == (0, "remediated"), fix["reason"]
    assert fix["plan"] == audit["plan"]
    ran = [step["name"] for step in fix["steps"]
           if step["name"] not in NOT_PLANNED and not step["name"].startswith(NOT_PLANNED_PREFIXES)]
    assert ran == [STEP_OF_LINE[line] for line in audit["plan"]]
    # AND a second audit has nothing left to plan
    assert rg(lab, "check", host)[1]["plan"] == []


def test_spam_signals_count_the_exim_log_inside_the_window_only(lab: Lab, make_host: Any) -> None:
    # GIVEN a server with 2 queued messages, hits and rejects 10 minutes ago, and older ones 2 hours ago
    now = datetime.now()
    inside = spam_lines(now, minutes_ago=10, send_limit_hits=2, defer_hits=1, relay_rejects=3)
    outside = spam_lines(now, minutes_ago=120, send_limit_hits=5, defer_hits=5, relay_rejects=5)
    host = make_host(HostSpec(profile="modern", exposed=False, queue_size=2, mainlog_lines=outside + inside))
    # AND a relay attempt its real Exim refuses and logs now
    assert relay_attempt(host.address, lab.client_source(99)).code == 550
    # WHEN audited
    code, result = rg(lab, "check", host)
    # THEN the counts are those of the last hour: the seeded ones and Exim's own line, none of the old ones
    assert (code, result["outcome"]) == (0, "compliant")
    signals = result["signals"]
    assert {k: signals[k] for k in ("window_minutes", "queue", "send_limit_hits", "relay_rejects", "partial")} == {
        "window_minutes": 60, "queue": 2, "send_limit_hits": 3, "relay_rejects": 4, "partial": False}
    assert signals["since"] < inside[0][:19]
    assert changing_tools(host) == []
