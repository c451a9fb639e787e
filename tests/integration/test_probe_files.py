"""The probe reads from files what it used to ask cPanel's tools (issue 20, the scan's cost on the server).

Each answer the probe now derives itself (tailwatchd's status block, Exim up or down, the queue size,
SMTP Restrictions, whether ``exim -bV`` passes) must equal what the tool says on the same host, over real
SSH, with the simulated cPanel tools (which implement cpanel.md) and a real Exim as the reference. And
the probe runs none of those tools unless it has to.
"""

from __future__ import annotations

import shlex

import pytest
from relayguard.domain.probe import PROBE_SCRIPT, parse_probe

from lab import Host, HostSpec
from lab.remote import ssh

pytestmark = pytest.mark.integration

TAILWATCHD = {"modern": "/usr/local/cpanel/libexec/tailwatchd", "legacy": "/usr/local/cpanel/bin/tailwatchd"}


def probe(host: Host):
    res = ssh(host, "sh -c " + shlex.quote(PROBE_SCRIPT))
    assert res.rc == 0, res.err
    finding = parse_probe(res.out)
    assert finding.complete
    return finding, res.out


def tools_run(host: Host, since: int) -> list[tuple[str, list[str]]]:
    return [(r["tool"], r["argv"][1:]) for r in host.journal()[since:]]


@pytest.mark.parametrize("profile", ["modern", "legacy"])
def test_the_probe_answers_as_the_tools_do_without_running_them(make_host, profile):
    host = make_host(HostSpec(profile=profile, queue_size=2))
    before = len(host.journal())

    finding, out = probe(host)

    assert tools_run(host, before) == []  # no simulated tool, no exim run: files and /proc only
    assert "exim.bv.by=daemon" in out
    status = ssh(host, f"{TAILWATCHD[profile]} --status").out
    assert finding.tailwatchd_status == status
    assert finding.exim_status_rc == ssh(host, "/usr/local/cpanel/scripts/restartsrv_exim --status").rc == 0
    assert finding.queue == int(ssh(host, "/usr/sbin/exim -bpc").out) == 2
    assert finding.smtp_restrictions == ssh(host, "/usr/local/cpanel/scripts/smtpmailgidonly status").out.strip()
    assert finding.exim_bv_rc == ssh(host, "/usr/sbin/exim -bV").rc == 0


def test_changed_state_shows_as_the_tools_show_it(make_host):
    host = make_host(profile="modern")
    # A driver switched off by its marker and by its skip key, SMTP Restrictions off, exim.conf edited after
    # the daemon started, then Exim stopped.
    assert ssh(host, "touch /etc/recentauthedmailiptrackerdisable && "
                     "/usr/local/cpanel/scripts/smtpmailgidonly off && touch /etc/exim.conf").rc == 0
    before = len(host.journal())

    finding, out = probe(host)

    assert tools_run(host, before) == [("exim", ["-bV"])]  # the configuration changed: ask Exim
    assert "exim.bv.by" not in out
    assert finding.exim_bv_rc == 0
    assert finding.tailwatchd_status == ssh(host, f"{TAILWATCHD['modern']} --status").out
    assert "(Active: 0) Cpanel::TailWatch::RecentAuthedMailIpTracker" in finding.tailwatchd_status
    assert finding.smtp_restrictions == "Protection is: off"

    assert ssh(host, "/usr/local/cpanel/scripts/restartsrv_exim --stop").rc == 0
    assert ssh(host, f"{TAILWATCHD['modern']} --stop").rc == 0
    finding, _out = probe(host)
    assert finding.exim_status_rc == ssh(host, "/usr/local/cpanel/scripts/restartsrv_exim --status").rc == 1
    assert not finding.exim_running
    assert finding.tailwatchd_status == ssh(host, f"{TAILWATCHD['modern']} --status").out
    assert "Not running" in finding.tailwatchd_status.splitlines()
