"""``relayguard revert`` on lab hosts (real sshd, real Exim): a fix undone to the exact before-state."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab import Host, Lab
from lab.fleet import pristine_view
from lab.remote import ssh
from lab.smtp import relay_attempt

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
RECORD = "/var/lib/relayguard/last-fix.json"
#: State keys that change by themselves: Exim's PID, and log counters the relay attempts add to.
VOLATILE = ("exim_status", "indicators")


def rg(lab: Lab, command: str, host: Host, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    argv = [RELAYGUARD, command, "--json", "--identity", str(lab.client_key), "--known-hosts", str(lab.known_hosts),
            *extra, host.address]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def stable(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in VOLATILE}


def exim_restarts(records: list[dict[str, Any]]) -> list[list[str]]:
    return [r["argv"][1:] for r in records if r["tool"] == "restartsrv_exim" and "--status" not in r["argv"]]


def files(host: Host) -> dict[str, tuple[Any, ...]]:
    """Every file the lab compares for pristine hosts, by hash, mode and link target (PID files by mode),
    without cPanel's own logs (tailwatchd logs each restart)."""
    return pristine_view(host.snapshot(exclude=("/var/log", "/var/spool/exim/db", "/usr/local/cpanel/logs")))


def reject_text_of(res: dict[str, Any], profile: str) -> dict[str, Any]:
    """The one difference a revert may leave: the reject text. Only update_exim_rejects writes it, from
    cpanel.config's popbeforesmtp key, which a legacy server has off (the lab seeds a legacy host's text
    as if it were on); the revert runs that tool as the fix did, and the text says what it wrote."""
    if profile == "modern":
        return {}
    assert "login to the IMAP/POP3" not in res["after"]["reject_text"]
    return {"reject_text": res["after"]["reject_text"]}


def pop_login(host: Host, lab: Lab, k: int) -> str:
    """A POP login from 127.N.250.k as the lab plays it: the address joins the tracker's logins, and the
    tracker (if its driver runs) writes it to the relay list at the next cPanel tool call."""
    source = lab.client_source(k)
    with host.path("/etc/sim/seed_ips").open("a") as seed:
        seed.write(f"{source}: newcomer@{host.domain}\n")
    assert ssh(host, "/usr/local/cpanel/scripts/smtpmailgidonly status").rc == 0
    return source


@pytest.mark.parametrize(("profile", "fix_options"), [("modern", ()), ("legacy", ()),
                                                     ("modern", ("--disable-tracker",))])
def test_revert_restores_the_exact_before_state_and_pop_before_smtp_relaying(lab, make_host, profile, fix_options):
    # GIVEN an exposed host, fixed by RelayGuard
    host = make_host(profile=profile)
    relay_ip = lab.client_source()
    assert relay_attempt(host.address, relay_ip).code == 250
    files_before = files(host)
    code, (fixed,), _ = rg(lab, "fix", host, *fix_options)
    assert (code, fixed["outcome"]) == (0, "remediated"), fixed["reason"]
    assert relay_attempt(host.address, relay_ip).code == 550
    # the fix left its record on the server, for root only
    info = host.path(RECORD).stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, 0)
    assert json.loads(host.read(RECORD))["before"]["generation"] == profile
    assert relay_attempt(host.address, pop_login(host, lab, 31)).code == 550  # a new login does not relay
    ssh(host, "sed -i '$d' /etc/sim/seed_ips")  # that login is over: it is not part of the before-state
    journal_before = len(host.journal())

    # WHEN the operator reverts
    code, (res,), err = rg(lab, "revert", host)

    # THEN: reverted, loudly, with exactly one Exim restart
    assert code == 0, res
    assert "WITHOUT SMTP AUTH" in err
    assert (res["outcome"], res["mode"], res["restarted"], res["exim_restarts"]) == ("reverted", "revert", True, 1)
    assert exim_restarts(host.journal()[journal_before:]) == [[]]
    assert res["relay_probe"]["code"] == 250
    if fix_options:  # the fix turned the tracker off and it emptied its lists: both come back
        assert {"enable-tracker", "restore-recent-authed-mail-ips"} <= {s["name"] for s in res["steps"]}
    # the state is the one the fix found, by the probe and file by file
    assert stable(res["after"]) == {**stable(fixed["before"]), **reject_text_of(res, profile)}
    assert res["exposed_after"] is True
    after = files(host)
    changed = {p for p in files_before if after.get(p) != files_before[p]}
    assert changed == ({"/etc/eximrejects"} if profile == "legacy" else set())
    assert set(after) == set(files_before)
    # and POP-before-SMTP works again: the old relay address relays, and so does a new login's
    assert relay_attempt(host.address, relay_ip).code == 250
    assert relay_attempt(host.address, pop_login(host, lab, 32)).code == 250


def test_revert_without_a_server_record_uses_the_saved_fix_result(lab, make_host, tmp_path):
    host = make_host(profile="legacy")
    code, (fixed,), _ = rg(lab, "fix", host)
    assert fixed["outcome"] == "remediated"
    assert ssh(host, f"rm {RECORD}").rc == 0
    # Without any record a revert changes nothing and says why.
    journal_before = len(host.journal())
    code, (res,), _ = rg(lab, "revert", host)
    assert (code, res["outcome"], res["reason"], res["restarted"]) == (2, "failed", "no-revert-record", False)
    assert host.journal()[journal_before:] == [r for r in host.journal()[journal_before:]
                                               if r["argv"][1:] in (["--status"], ["-bV"], ["-bpc"], ["status"])]
    saved = tmp_path / "fix.jsonl"
    saved.write_text(json.dumps(fixed) + "\n")
    code, (res,), _ = rg(lab, "revert", host, "--record", str(saved))
    assert (code, res["outcome"], res["exim_restarts"]) == (0, "reverted", 1)
    assert stable(res["after"]) == {**stable(fixed["before"]), **reject_text_of(res, "legacy")}
    assert relay_attempt(host.address, lab.client_source()).code == 250
