"""The deliverability scan end to end: a simulated cPanel host (real sshd) holding every case of
lab/maildomains.py at cPanel's real paths, scanned with ``relayguard check --json``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import Host, HostSpec, Lab, maildomains
from lab.dns import LabDns

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
CASES = tuple(c.name for c in maildomains.cases())


@pytest.fixture(scope="module")
def mail_host(lab: Lab, host_pool: Any) -> Iterator[Host]:
    host = host_pool.take(HostSpec(profile="modern", exposed=False, mail_cases=CASES))
    yield host
    host_pool.give_back(host)


def check(lab: Lab, host: Host, *extra: str) -> dict[str, Any]:
    argv = [RELAYGUARD, "check", "--json", "--identity", str(lab.client_key), "--known-hosts", str(lab.known_hosts),
            *extra, host.address]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    (line,) = proc.stdout.splitlines()
    return dict(json.loads(line))


def test_the_probe_collects_every_domain_with_its_sending_ip_helo_and_key(lab: Lab, mail_host: Host) -> None:
    # GIVEN a host with per-domain mail IPs on, seeded from the case table  WHEN checked (no resolver given)
    result = check(lab, mail_host, "--resolver", "off")
    # THEN the relay result stands, and the collection is what Exim would send with, domain by domain
    assert result["outcome"] == "compliant"
    report = result["deliverability"]
    want = maildomains.collected(lab.net)
    got = {d["domain"]: d for d in report["domains"]}
    assert report["total_domains"] == len(want.domains)
    assert report["options"] == ["per_domain_mailips"]
    for domain in want.domains:
        row = got[domain.name]
        assert (row["sending_ip"], row["helo"], row["ip_source"], row["helo_source"]) == (
            domain.sending_ip, domain.helo, str(domain.ip_source), str(domain.helo_source)), domain.name
        assert row["dkim_key_on_server"] == (domain.dkim_public_key is not None), domain.name
    # AND one exec round trip did it all: the probe is the job's only step
    assert [s["name"] for s in result["steps"]] == ["probe"]
    assert report["judged"] is False


@pytest.fixture(scope="module")
def judged(lab: Lab, mail_host: Host, lab_dns: LabDns) -> dict[str, Any]:
    """One ``relayguard check`` of the mail host, judged by the lab's real DNS (nsd behind unbound)."""
    return check(lab, mail_host, "--resolver", lab_dns.resolver)


@pytest.mark.parametrize("case", maildomains.cases(), ids=lambda c: c.name)
def test_every_case_is_judged_end_to_end(judged: dict[str, Any], case: maildomains.Case) -> None:
    row = {d["domain"]: d for d in judged["deliverability"]["domains"]}[case.domain]
    assert {check: value["status"] for check, value in row["checks"].items()} == case.expect
    assert set(row["rules_broken"]) == set(case.rules_broken)
    assert set(row["rules_unknown"]) == set(case.rules_unknown)


def test_dns_trouble_leaves_the_relay_result_and_the_counts_whole(judged: dict[str, Any]) -> None:
    report = judged["deliverability"]
    assert (judged["outcome"], judged["exposed_before"]) == ("compliant", False)
    assert report["judged"] is True
    cases = maildomains.cases()
    summary = report["summary"]
    assert summary["domains"] == summary["judged"] == len(cases)
    assert summary["failing"] == sum(1 for c in cases if c.rules_broken)
    assert summary["without_dmarc"] == sum(1 for c in cases if c.expect["dmarc"] == "missing")
    assert summary["dns_errors"] == sum(1 for c in cases if c.times_out)
    bad_ips = {c.ip(0) for c in cases if c.expect["ptr"] not in ("valid", "dns-error")}
    assert summary["ips_without_fcrdns"] == len(bad_ips)
