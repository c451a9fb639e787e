"""The post-fix proof on lab hosts (real sshd, real Exim): after every fix, on both generations, the finish
round trip proves that authenticated submission and every alwaysrelay address still work, and a change
that breaks authenticated submission is reported failed with its reason at severity error."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from relayguard.domain.notify import server_message

from lab import Host, HostSpec, Lab
from lab.smtp import authenticated_attempt, relay_attempt

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
#: An admin's alwaysrelay address that is not loopback: exim -bh plays it server-side, no client binds it.
BACKUP_MX = "192.0.2.77"


def fix(lab: Lab, host: Host) -> tuple[int, dict[str, Any]]:
    argv = [RELAYGUARD, "fix", "--json", "--identity", str(lab.client_key), "--known-hosts", str(lab.known_hosts),
            host.address]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    (result,) = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, result


def proof_sessions(host: Host) -> list[list[str]]:
    """The exim -bh sessions of the post-fix proof, as the host's journal saw them (relay probe excluded)."""
    return [r["argv"][1:] for r in host.journal()
            if r["tool"] == "exim" and r["argv"][1:2] == ["-bh"] and {"-oMi", "-oMaa"} & set(r["argv"])]


@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_every_fix_proves_auth_submission_and_that_each_alwaysrelay_address_still_relays(lab, make_host, profile):
    # GIVEN an exposed server whose admin lets a backup MX and a loopback-range client always relay
    keeper = lab.client_source(20)
    host = make_host(HostSpec(profile=profile, alwaysrelay=(BACKUP_MX, keeper)))
    # WHEN RelayGuard fixes it
    code, res = fix(lab, host)
    # THEN it is remediated, with the proof in the record: AUTH offered on 587 (the lab has no 465),
    # authenticated relay accepted and unauthenticated relay refused from the same address
    assert (code, res["outcome"], res["reason"]) == (0, "remediated", ""), res
    proof = res["post_fix"]
    assert proof["ports"] == [25, 587]
    assert proof["auth_advertised"] == {"587": True}
    assert (proof["authenticated_relay"]["code"], proof["authenticated_relay"]["verdict"]) == (250, "accepted")
    assert proof["unauthenticated_relay"] == {"code": 550, "verdict": "refused"}
    assert res["relay_probe"]["code"] == 550
    # AND the backup MX still relays; the loopback-range entry is not probed (cPanel never lets loopback
    # relay through this list) and counted as such
    assert proof["alwaysrelay"] == {BACKUP_MX: 250}
    assert proof["alwaysrelay_not_probed"] == 1
    assert {s["name"] for s in res["steps"]} >= {"exim-ports", "auth-ehlo-587", "auth-relay-probe",
                                                  "alwaysrelay-probe-1"}
    # AND the proof ran on the server, in the finish round trip: no extra SSH login
    assert host.accepted_logins() == 1
    assert [argv[:2] for argv in proof_sessions(host)] == [["-bh", "127.0.0.1"], ["-bh", "127.0.0.1"],
                                                           ["-bh", res["relay_probe"]["ip"]]]
    # AND what the proof says holds for real SMTP clients from outside
    assert authenticated_attempt(host.address, lab.client_source(), host.mailbox).code == 250
    assert relay_attempt(host.address, keeper).code == 250
    assert relay_attempt(host.address, lab.client_source()).code == 550


@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_a_change_that_breaks_authenticated_submission_fails_the_fix_at_severity_error(lab, make_host, profile):
    # GIVEN an exposed server where closing the gate also breaks authenticated submission
    host = make_host(HostSpec(profile=profile, alwaysrelay=(BACKUP_MX,), switches={"tweak_breaks_auth": ""}))
    assert authenticated_attempt(host.address, lab.client_source(), host.mailbox).code == 250
    # WHEN RelayGuard fixes it
    code, res = fix(lab, host)
    # THEN the gate is closed and relaying without AUTH refused, but the fix failed with the precise reason
    assert (code, res["outcome"], res["exposed_after"]) == (2, "failed", False), res
    assert res["reason"] == "auth-submission-broken: no AUTH on 587; authenticated relay refused (550)"
    assert res["post_fix"]["auth_advertised"] == {"587": False}
    assert res["post_fix"]["alwaysrelay"] == {BACKUP_MX: 250}
    assert res["relay_probe"]["code"] == 550
    assert res["restarted"] is True
    # AND a real client indeed can no longer submit with AUTH: the restarted daemon offers none
    with pytest.raises(smtplib.SMTPNotSupportedError):
        authenticated_attempt(host.address, lab.client_source(), host.mailbox)
    # AND it is announced at severity error, not critical
    assert server_message(res, "failed", "sweep-1", "sweep", "2026-12-06T10:00:00+00:00")["severity"] == "error"
