"""Deliverability statuses and receiver rules follow from DNS facts, judged with plain data (no DNS)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from relayguard.domain.deliverability import Check, CheckResult
from relayguard.domain.mailauth import (
    CPANEL_STATE,
    DNS_ERROR,
    GMAIL_ALL,
    GMAIL_BULK,
    MICROSOFT_BULK,
    RULES,
    DmarcLookup,
    ReverseLookup,
    SpfLookup,
    SpfRecord,
    SpfTerm,
    counts,
    dkim_tags,
    finding,
    judge_dkim,
    judge_dmarc,
    judge_helo,
    judge_ptr,
    judge_spf,
    parse_resolver,
    report,
    rule_verdicts,
    spf_result,
)

KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAsPNoyMv5XUCp26Hm"
OTHER = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAocrQHVMIjmFc3eBc"
IP = "198.51.100.7"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "deliverability.md"


def ip4(net: str, qualifier: str = "pass") -> SpfTerm:
    return SpfTerm(qualifier, "ip4", net)


# --- SPF ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (SpfRecord((ip4("198.51.100.0/24"),), all="fail"), "pass"),
        (SpfRecord((ip4("192.0.2.0/24"),), all="fail"), "fail"),
        (SpfRecord((ip4("192.0.2.0/24"),), all="softfail"), "softfail"),
        (SpfRecord((ip4("198.51.100.7", "fail"), ip4("198.51.100.0/24")), all="pass"), "fail"),  # first match
        (SpfRecord((ip4("192.0.2.0/24"),)), "neutral"),  # no all, no redirect: §4.7
        (SpfRecord((SpfTerm("pass", "a", "example.test", addresses=(IP,)),), all="fail"), "pass"),
        (SpfRecord((SpfTerm("pass", "mx", "example.test", addresses=("192.0.2.1",)),), all="fail"), "fail"),
        (SpfRecord((SpfTerm("pass", "include", "_spf.x", include=SpfRecord((ip4(IP),), all="fail")),), all="fail"),
         "pass"),
        # An include whose own result is fail does not match: evaluation goes on (RFC 7208 §5.2).
        (SpfRecord((SpfTerm("pass", "include", "_spf.x", include=SpfRecord((), all="fail")), ip4(IP, "softfail")),
                   all="fail"), "softfail"),
        (SpfRecord((ip4("192.0.2.0/24"),), redirect=SpfRecord((ip4(IP),), all="fail")), "pass"),
        (SpfRecord((SpfTerm("pass", "exists", "%{i}.x"),), all="fail"), "fail"),  # not evaluated: no match
        (SpfRecord((SpfTerm("pass", "ip6", "2001:db8::/32"),), all="fail"), "fail"),
    ],
)
def test_spf_result_follows_check_host(record, expected):
    assert spf_result(record, IP) == expected


def test_spf_statuses():
    good = SpfLookup(record=SpfRecord((ip4(IP),), all="fail"), text=f"v=spf1 ip4:{IP} -all", lookups=0)
    assert judge_spf(good, IP).status == "valid"
    assert judge_spf(good, "192.0.2.1").status == "ip-not-permitted"
    assert "fail for 192.0.2.1" in judge_spf(good, "192.0.2.1").detail
    for problem in ("missing", "multiple", "malformed", "too-many-lookups", DNS_ERROR):
        assert judge_spf(SpfLookup(problem), IP).status == problem
    assert judge_spf(SpfLookup(), IP).status == "missing"


# --- DKIM --------------------------------------------------------------------------------------------


def test_dkim_tags_parse_and_reject():
    assert dkim_tags("v=DKIM1; k=rsa; p=AB CD\t==") == {"v": "DKIM1", "k": "rsa", "p": "ABCD=="}
    assert dkim_tags("v=DKIM1; v=DKIM1") is None
    assert dkim_tags("just text") is None


@pytest.mark.parametrize(
    ("records", "server", "status"),
    [
        ((f"v=DKIM1; k=rsa; p={KEY}",), KEY, "valid"),
        ((f"v=DKIM1; k=rsa; p={KEY[:30]} {KEY[30:]}",), KEY, "valid"),  # folding whitespace
        ((f"v=DKIM1; k=rsa; p={OTHER}",), KEY, "mismatch"),
        ((), KEY, "missing"),
        ((f"v=DKIM1; p={KEY}", f"v=DKIM1; p={OTHER}"), KEY, "multiple"),
        (("v=DKIM1; k=rsa; p=not*base64",), KEY, "malformed"),
        (("v=DKIM1; k=rsa; p=",), KEY, "malformed"),  # revoked key
        (("v=DKIM2; p=" + KEY,), KEY, "malformed"),
        ((f"v=DKIM1; p={KEY}",), None, "nopub"),
        (None, KEY, DNS_ERROR),
    ],
)
def test_dkim_statuses(records, server, status):
    assert judge_dkim(records, server).status == status


# --- DMARC -------------------------------------------------------------------------------------------

VALID_SPF = CheckResult(Check.SPF, "valid")
VALID_DKIM = CheckResult(Check.DKIM, "valid")
BAD_SPF = CheckResult(Check.SPF, "missing")
BAD_DKIM = CheckResult(Check.DKIM, "mismatch")


@pytest.mark.parametrize(
    ("lookup", "spf", "dkim", "status"),
    [
        (DmarcLookup(policy="reject"), VALID_SPF, VALID_DKIM, "valid"),
        (DmarcLookup(policy="none"), VALID_SPF, VALID_DKIM, "valid"),
        (DmarcLookup(policy="none"), BAD_SPF, VALID_DKIM, "spf-error"),
        (DmarcLookup(policy="none"), VALID_SPF, BAD_DKIM, "dkim-error"),
        (DmarcLookup(policy="none"), BAD_SPF, BAD_DKIM, "dkim-spf-error"),
        (DmarcLookup("missing"), VALID_SPF, VALID_DKIM, "missing"),
        (DmarcLookup("malformed"), VALID_SPF, VALID_DKIM, "malformed"),
        (DmarcLookup(DNS_ERROR), VALID_SPF, VALID_DKIM, DNS_ERROR),
    ],
)
def test_dmarc_statuses_as_cpanel(lookup, spf, dkim, status):
    assert judge_dmarc(lookup, spf, dkim).status == status


def test_dmarc_detail_names_policy_and_org_domain():
    result = judge_dmarc(DmarcLookup(policy="none", adkim="s", location="example.test"), VALID_SPF, VALID_DKIM)
    assert result.detail == "p=none; adkim=s; aspf=r (record at example.test)"


# --- PTR and HELO ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rev", "ptr", "helo"),
    [
        (ReverseLookup(IP, ("mail.example.test",), {"mail.example.test": (IP,)}), "valid", "valid"),
        (ReverseLookup(IP, ("Mail.Example.test",), {"Mail.Example.test": (IP,)}), "valid", "valid"),
        (ReverseLookup(IP, ("other.example.test",), {"other.example.test": (IP,)}), "valid", "mismatch"),
        (ReverseLookup(IP, ()), "missing-ptr", "unknown"),
        (ReverseLookup(IP, ("mail.example.test",), {"mail.example.test": ()}), "missing-fwd", "unknown"),
        (ReverseLookup(IP, ("mail.example.test",), {"mail.example.test": ("192.0.2.1",)}), "fwd-mismatch",
         "unknown"),
        (ReverseLookup(IP, ("mail.example.test",), {"mail.example.test": None}), DNS_ERROR, DNS_ERROR),
        (ReverseLookup(IP, None), DNS_ERROR, DNS_ERROR),
        # One of two PTR names confirmed is enough (forward-confirmed reverse DNS).
        (ReverseLookup(IP, ("a.test", "mail.example.test"), {"a.test": (), "mail.example.test": (IP,)}),
         "valid", "valid"),
    ],
)
def test_ptr_and_helo(rev, ptr, helo):
    ptr_result = judge_ptr(rev)
    assert ptr_result.status == ptr
    assert judge_helo("mail.example.test.", rev, ptr_result).status == helo


# --- rules -------------------------------------------------------------------------------------------


def checks(spf="valid", dkim="valid", dmarc="valid", ptr="valid", helo="valid"):
    return {Check.SPF: CheckResult(Check.SPF, spf), Check.DKIM: CheckResult(Check.DKIM, dkim),
            Check.DMARC: CheckResult(Check.DMARC, dmarc), Check.PTR: CheckResult(Check.PTR, ptr),
            Check.HELO: CheckResult(Check.HELO, helo)}


@pytest.mark.parametrize(
    ("given", "verdicts"),
    [
        (checks(), (True, True, True)),
        (checks(helo="mismatch"), (True, True, True)),  # no receiver requires HELO = PTR name
        (checks(spf="missing", dmarc="spf-error"), (True, False, False)),  # DKIM alone keeps all-senders
        (checks(spf="missing", dkim="missing", dmarc="dkim-spf-error"), (False, False, False)),
        (checks(dmarc="missing"), (True, False, False)),
        (checks(ptr="missing-ptr"), (False, False, True)),  # Microsoft asks no PTR
        (checks(spf=DNS_ERROR, dkim=DNS_ERROR, dmarc=DNS_ERROR), (None, None, None)),
        (checks(spf=DNS_ERROR, dmarc="spf-error"), (True, None, None)),  # DKIM passes: all-senders is kept
        (checks(spf=DNS_ERROR, dkim="missing", dmarc="dkim-error"), (None, False, False)),  # DKIM breaks bulk
        (checks(ptr=DNS_ERROR), (None, None, True)),
    ],
)
def test_rule_verdicts_are_three_valued(given, verdicts):
    assert tuple(rule_verdicts(given)[r] for r in (GMAIL_ALL, GMAIL_BULK, MICROSOFT_BULK)) == verdicts


def test_finding_orders_checks_and_splits_broken_from_unknown():
    found = finding("example.test", IP, reversed(list(checks(spf=DNS_ERROR, dkim="missing").values())))
    assert [c.check for c in found.checks] == list(Check)
    assert found.rules_broken == (GMAIL_BULK, MICROSOFT_BULK)
    assert found.rules_unknown == (GMAIL_ALL,)


def test_counts_per_status_rule_and_distinct_ip():
    a = finding("a.test", IP, checks(ptr="missing-ptr", helo="unknown").values())
    b = finding("b.test", IP, checks(ptr="missing-ptr", helo="unknown", dmarc="missing").values())
    c = finding("c.test", "192.0.2.1", checks().values())
    rep = report([a, b, c], total_domains=5, notes=["truncated: 3 of 5 domains"])
    assert rep.counts["ptr:missing-ptr"] == 2
    assert rep.counts["ips:ptr:missing-ptr"] == 1  # two domains, one IP to fix
    assert rep.counts["ips:ptr:valid"] == 1
    assert rep.counts["dmarc:missing"] == 1
    assert rep.counts["rule:gmail-all-senders"] == 2
    assert rep.counts["rule:microsoft-bulk-senders"] == 1
    assert rep.total_domains == 5
    assert rep.notes == ("truncated: 3 of 5 domains",)
    assert counts([]) == {}


@pytest.mark.parametrize(
    ("setting", "parsed"),
    [("192.0.2.53", ("192.0.2.53", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)), ("::1", ("::1", 53)),
     ("[2001:db8::53]:5300", ("2001:db8::53", 5300))],
)
def test_parse_resolver(setting, parsed):
    assert parse_resolver(setting) == parsed


@pytest.mark.parametrize("setting", ["dns.example", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:x", "[::1", "1.2.3"])
def test_parse_resolver_refuses(setting):
    with pytest.raises(ValueError, match="resolver"):
        parse_resolver(setting)


def test_docs_table_lists_every_status_and_rule():
    """docs/deliverability.md's status table is the one in code: same rows, same cPanel states."""
    text = DOCS.read_text()
    rows = set(re.findall(r"^\| (spf|dkim|dmarc|ptr|helo) \| `([a-z-]+)` \| ([^|]+?) \|", text, re.M))
    assert rows == {(check.value, status, state) for (check, status), state in CPANEL_STATE.items()}
    for rule in RULES:
        assert f"`{rule}`" in text
