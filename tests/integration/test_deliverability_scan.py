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
