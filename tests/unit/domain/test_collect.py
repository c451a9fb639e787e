"""The deliverability collection: the probe section's output parses into a Collected as Exim would send."""

from __future__ import annotations

import subprocess
from pathlib import Path

from relayguard.domain.collect import (
    DKIM_PUBLIC_DIR,
    MAILHELO,
    MAILIPS,
    MAINIP,
    MAX_DOMAINS,
    USERDOMAINS,
    collect_lines,
    parse_collected,
)
from relayguard.domain.deliverability import Source
from relayguard.domain.probe import PRELUDE, PROBE_SCRIPT, _probe_body

KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx+/="


def _out(*lines: str) -> str:
    return "\n".join(lines) + "\n"


PER_DOMAIN = _out(
    "mail.present=1", "mail.opt.per_domain_mailips=1", "mail.opt.custom_mailips=0", "mail.opt.custom_mailhelo=0",
    "mail.opt.use_rdns_for_helo=0", "mail.file.mailips=1", "mail.file.mailhelo=1", "mail.mainip=192.0.2.1",
    f"mail.domain=a.test {KEY}", "mail.domain=b.test ", "mail.ip=b.test 192.0.2.9", "mail.ip=* 192.0.2.1",
    "mail.helo=b.test mail.b.test", "mail.helo=* web1.example.com", "mail.total=2", "mail.bad=0",
)


def test_per_domain_mail_ips_map_a_domain_its_own_ip_and_the_rest_the_default() -> None:
    # GIVEN per-domain mail IPs on, b.test on a dedicated IP and a `*` default  WHEN parsed
    got = parse_collected(PER_DOMAIN, "web1.example.com")
    # THEN each domain's sending IP and HELO follow Exim's lsearch*: its own line, else `*`
    assert got is not None
    a, b = got.domains
    assert (a.name, a.sending_ip, a.ip_source, a.helo, a.helo_source) == (
        "a.test", "192.0.2.1", Source.DEFAULT, "web1.example.com", Source.DEFAULT)
    assert (b.sending_ip, b.ip_source, b.helo, b.helo_source) == ("192.0.2.9", Source.MAP, "mail.b.test", Source.MAP)
    # AND the DKIM public key is carried as the p= value; a domain without a key file has None
    assert (a.dkim_public_key, b.dkim_public_key) == (KEY, None)
    assert got.options == ("per_domain_mailips",)
    assert got.total_domains == 2
    assert not got.truncated
    assert got.notes == ("mailips: in force; mailhelo: in force; options on: per_domain_mailips",)


def test_with_the_options_off_the_maps_are_ignored_and_the_server_main_ip_and_hostname_apply() -> None:
    # GIVEN maps on disk but no Exim Configuration Manager option that reads them
    output = PER_DOMAIN.replace("mail.opt.per_domain_mailips=1", "mail.opt.per_domain_mailips=0")
    got = parse_collected(output, "web1.example.com")
    # THEN every domain sends from the main IP with the hostname, and the result says why
    assert got is not None
    assert {(d.sending_ip, d.ip_source, d.helo, d.helo_source) for d in got.domains} == {
        ("192.0.2.1", Source.SERVER, "web1.example.com", Source.SERVER)}
    assert got.notes[0] == "mailips: not in force; mailhelo: not in force; options on: none"


def test_rdns_helo_reads_mailhelo_but_not_mailips() -> None:
    output = PER_DOMAIN.replace("mail.opt.per_domain_mailips=1", "")
    output = output.replace("use_rdns_for_helo=0", "use_rdns_for_helo=1")
    got = parse_collected(output, "host.example.com")
    assert got is not None
    b = got.domains[1]
    assert (b.sending_ip, b.ip_source, b.helo, b.helo_source) == ("192.0.2.1", Source.SERVER, "mail.b.test", Source.MAP)


def test_a_server_without_userdomains_collects_nothing_and_junk_values_are_dropped() -> None:
    assert parse_collected("mail.present=0\n") is None
    assert parse_collected("scan.schema=1\n") is None
    # GIVEN values that are no IP, no host name, no base64  THEN they never reach a MailDomain
    got = parse_collected(_out("mail.present=1", "mail.opt.custom_mailips=1", "mail.file.mailips=1",
                               "mail.mainip=not-an-ip", "mail.domain=a.test $(reboot)", "mail.domain=-x ",
                               "mail.ip=a.test 999.1.1.1", "mail.total=2", "mail.bad=0"), "bad host;name")
    assert got is not None
    (a,) = got.domains
    assert (a.sending_ip, a.helo, a.dkim_public_key) == ("", "", None)
    assert "no main IP in /var/cpanel/mainip" in got.notes
    assert any(n.startswith("skipped 2 malformed lines") for n in got.notes)


def test_truncation_and_an_unfinished_collection_are_said_in_the_notes() -> None:
    got = parse_collected(_out("mail.present=1", "mail.mainip=192.0.2.1", "mail.domain=a.test ", "mail.total=7123"))
    assert got is not None
    assert got.truncated
    assert got.total_domains == 7123
    assert f"truncated: 1 of 7123 domains (at most {MAX_DOMAINS} per server)" in got.notes
    cut = parse_collected(_out("mail.present=1", "mail.mainip=192.0.2.1", "mail.domain=a.test "))
    assert cut is not None
    assert any(n.startswith("incomplete:") for n in cut.notes)


def test_only_the_first_probe_collects_and_never_names_a_private_key() -> None:
    assert "\n".join(collect_lines()) in PROBE_SCRIPT
    assert "mail.present" not in _probe_body()
    assert "private" not in "\n".join(collect_lines())
    # One process for any number of domains: a single awk, no loop in the shell.
    section = "\n".join(collect_lines())
    assert section.count("awk ") == 1
    assert "while" not in section.split("awk", 1)[0]


def _run_section(root: Path, files: dict[str, str]) -> str:
    """The section as the probe renders it, run by the machine's sh and awk on a tree under ``root``."""
    for path, text in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    section = "\n".join(collect_lines())
    for path in (USERDOMAINS, MAILIPS, MAILHELO, MAINIP, DKIM_PUBLIC_DIR, "/var/cpanel/per_domain_mailips"):
        section = section.replace(path, f"{root}{path}")
    done = subprocess.run(["sh", "-c", PRELUDE + section], capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def test_the_rendered_section_reads_cpanel_files_in_one_awk_pass(tmp_path: Path) -> None:
    # GIVEN cPanel's files as updateuserdomains writes them, a hostile name, and a DKIM public key
    out = _run_section(tmp_path, {
        USERDOMAINS: "a.test: alice\nB.Test: bob\n../../etc/shadow: evil\n*: nobody\n",
        MAILIPS: "b.test: 192.0.2.9\nother.test: 192.0.2.77\n*: 192.0.2.1\n",
        MAILHELO: "b.test: mail.b.test\n*: web1.example.com\n",
        MAINIP: "192.0.2.1",
        "/var/cpanel/per_domain_mailips": "",
        f"{DKIM_PUBLIC_DIR}/a.test": "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\nBgkq+/==\n-----END PUBLIC KEY-----\n",
    })
    got = parse_collected(out, "web1.example.com")
    # THEN the domains, keys and maps are those Exim would use; the hostile name was neither read nor carried
    assert got is not None
    assert [(d.name, d.sending_ip, d.helo, d.dkim_public_key) for d in got.domains] == [
        ("a.test", "192.0.2.1", "web1.example.com", "MIIBIjANBgkq+/=="),
        ("b.test", "192.0.2.9", "mail.b.test", None)]
    assert "other.test" not in out
    assert "shadow" not in out
    assert any(n.startswith("skipped 1 malformed") for n in got.notes)
