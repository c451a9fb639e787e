"""The DNS judge's glue without DNS: checkdmarc's parse tree becomes the domain's SpfRecord, DNS trouble is
told from absence through the exception chain, and the resolver setting is validated up front.
The lookups themselves are tested against the lab's real DNS (tests/integration/test_dns_judge.py)."""

from __future__ import annotations

import checkdmarc.spf
import dns.exception
import dns.resolver
import pytest
from relayguard.adapters.dns_judge import DnsJudge, _spf_record, _trouble
from relayguard.domain.deliverability import Collected
from relayguard.domain.mailauth import SpfRecord, SpfTerm, spf_result


def test_checkdmarc_parse_tree_becomes_an_spf_record():
    # ip4/ip6/all only: checkdmarc parses these without a lookup.
    parsed = checkdmarc.spf.parse_spf_record("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all", "x.test")["parsed"]
    record = _spf_record(parsed)
    assert record == SpfRecord((SpfTerm("pass", "ip4", "192.0.2.0/24"), SpfTerm("pass", "ip6", "2001:db8::/32")),
                               all="softfail")
    assert spf_result(record, "192.0.2.9") == "pass"
    assert spf_result(record, "198.51.100.1") == "softfail"


def test_resolved_mechanisms_includes_and_redirects_keep_their_addresses():
    parsed = {
        "mechanisms": [
            {"action": "pass", "mechanism": "a", "value": "x.test", "addresses": ["192.0.2.1"]},
            {"action": "pass", "mechanism": "mx", "value": "x.test",
             "hosts": [{"hostname": "mx.x.test", "addresses": ["192.0.2.2"]}]},
            {"action": "pass", "mechanism": "include", "value": "_spf.p.test",
             "parsed": {"mechanisms": [{"action": "pass", "mechanism": "ip4", "value": "192.0.2.3"}],
                        "redirect": None, "all": "fail"}},
        ],
        "redirect": {"domain": "r.test", "parsed": {"mechanisms": [], "redirect": None, "all": "neutral"}},
        "all": None,
    }
    record = _spf_record(parsed)
    assert record.terms[1].addresses == ("192.0.2.2",)
    assert [spf_result(record, ip) for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4")] == \
        ["pass", "pass", "pass", "neutral"]


def _spf_not_found(cause: dns.exception.DNSException) -> None:
    """As checkdmarc reports a failed TXT lookup: its own error, raised from dnspython's."""
    try:
        raise cause
    except dns.exception.DNSException as exc:
        raise checkdmarc.spf.SPFRecordNotFound(str(exc), "x.test") from exc


@pytest.mark.parametrize(("cause", "trouble"), [(dns.exception.Timeout(), True),
                                                (dns.resolver.NoNameservers(), True),
                                                (dns.resolver.NXDOMAIN(), False)])
def test_dns_trouble_is_found_behind_checkdmarc_errors(cause, trouble):
    with pytest.raises(checkdmarc.spf.SPFRecordNotFound) as caught:
        _spf_not_found(cause)
    assert _trouble(caught.value) is trouble


@pytest.mark.parametrize("setting", ["resolver.example", "127.0.0.1:0"])
def test_a_bad_resolver_setting_is_refused_before_any_job(setting):
    with pytest.raises(ValueError, match="resolver"):
        DnsJudge(setting)


def test_nothing_collected_needs_no_dns():
    report = DnsJudge("127.0.0.1:5353").judge(Collected(notes=("no /etc/userdomains",)))
    assert report.domains == ()
    assert report.notes == ("no /etc/userdomains",)
