"""The post-fix proof renders fixed exim -bh sessions and reads back what they show, from plain text."""

from __future__ import annotations

import pytest
from relayguard.domain.models import Finding, ListFile
from relayguard.domain.proof import (
    ALWAYSRELAY_LIMIT,
    PostFixProof,
    RelayClass,
    alwaysrelay_args,
    alwaysrelay_targets,
    configured_ports,
    ehlo_offers_auth,
    post_fix_proof,
    proof_lines,
    relay_class,
)
from relayguard.domain.script import parse_steps
from relayguard.errors import InvalidInput

from tests.unit.samples import (
    EHLO_WITH_AUTH,
    EHLO_WITHOUT_AUTH,
    RELAY_ACCEPTED,
    RELAY_REFUSED,
    proof_steps,
    rcpt_dialogue,
)

SENDER = "relayguard-probe@example.com"


def with_alwaysrelay(*lines: str) -> Finding:
    return Finding(complete=True, exceptions={"alwaysrelay": ListFile("/etc/alwaysrelay", "file", lines=lines)})


def proof_of(output: str, alwaysrelay: tuple[str, ...] = (), unauthenticated: int | None = 550) -> PostFixProof:
    return post_fix_proof(parse_steps(output), alwaysrelay, unauthenticated_relay=unauthenticated)


# --- relay_class --------------------------------------------------------------------------------

@pytest.mark.parametrize(("code", "expected"), [
    (250, RelayClass.ACCEPTED), (550, RelayClass.REFUSED), (554, RelayClass.REFUSED),
    (451, RelayClass.INCONCLUSIVE), (421, RelayClass.INCONCLUSIVE), (None, RelayClass.INCONCLUSIVE),
    (354, RelayClass.INCONCLUSIVE),
])
def test_a_4xx_or_missing_reply_is_inconclusive_never_accepted_or_refused(code: int | None,
                                                                        expected: RelayClass) -> None:
    assert relay_class(code) == expected


# --- what is probed -------------------------------------------------------------------------------

def test_alwaysrelay_targets_are_the_valid_non_loopback_addresses_in_file_order() -> None:
    finding = with_alwaysrelay("# backups", "192.0.2.77: backups", "198.51.100.4=mx", '"2001:db8::9"',
                               "127.0.0.1", "10.0.0.0/24", "1.2.3.4;touch /tmp/x", "192.0.2.77")
    ips, not_probed = alwaysrelay_targets(finding)
    assert ips == ("192.0.2.77", "198.51.100.4", "2001:db8::9")
    assert not_probed == 3  # loopback, a network, a hostile line; the duplicate is the same entry


def test_alwaysrelay_targets_stop_at_the_limit_and_count_the_rest() -> None:
    finding = with_alwaysrelay(*(f"192.0.2.{i}" for i in range(1, ALWAYSRELAY_LIMIT + 4)))
    ips, not_probed = alwaysrelay_targets(finding)
    assert (len(ips), not_probed) == (ALWAYSRELAY_LIMIT, 3)


def test_no_alwaysrelay_file_means_nothing_to_prove() -> None:
    assert alwaysrelay_targets(Finding(complete=True)) == ((), 0)


def test_the_proof_is_fixed_exim_sessions_reading_only_validated_arguments() -> None:
    lines = proof_lines("relayguard-probe@example.net")
    text = "\n".join(lines)
    assert "run exim-ports /usr/sbin/exim -bP daemon_smtp_ports tls_on_connect_ports" in lines
    assert "| run auth-ehlo-587 /usr/sbin/exim -bh 127.0.0.1 -oMi 127.0.0.1.587" in text
    assert "| run auth-ehlo-465 /usr/sbin/exim -bh 127.0.0.1 -oMi 127.0.0.1.465" in text
    # authenticated as the probe sender, from the very address whose unauthenticated relay must be refused
    assert '| run auth-relay-probe /usr/sbin/exim -bh "$RG_ip" -oMaa dovecot_login -oMai "$RG_sender"' in text
    assert '| run "alwaysrelay-probe-$rg_i" /usr/sbin/exim -bh "$rg_ar"' in text
    assert alwaysrelay_args(("192.0.2.77", "2001:DB8::9")) == ("192.0.2.77", "2001:db8::9")


def test_the_proof_refuses_an_alwaysrelay_value_that_is_not_an_address() -> None:
    with pytest.raises(InvalidInput, match="not an IP address"):
        alwaysrelay_args(("1.2.3.4;touch /tmp/x",))


# --- reading it back ----------------------------------------------------------------------------

def test_ports_come_from_daemon_and_tls_on_connect_ports_by_number_or_name() -> None:
    assert configured_ports("daemon_smtp_ports = 25 : 465 : 587\ntls_on_connect_ports = 465\n") == (25, 465, 587)
    assert configured_ports("daemon_smtp_ports = smtp : submission\ntls_on_connect_ports = \n") == (25, 587)
    assert configured_ports("") == ()


def test_the_ehlo_reply_shows_whether_auth_is_offered() -> None:
    assert ehlo_offers_auth(EHLO_WITH_AUTH) is True
    assert ehlo_offers_auth(EHLO_WITHOUT_AUTH) is False
    assert ehlo_offers_auth("220 web1 ESMTP\n") is None
    # "250-AUTHORIZED ..." text or AUTH in the banner is not an AUTH capability
    assert ehlo_offers_auth("220 AUTH banner\n250-web1 Hello\n250 AUTHX\n") is False


def test_a_healthy_server_proves_auth_on_both_ports_authenticated_relay_and_every_alwaysrelay_address() -> None:
    proof = proof_of(proof_steps(alwaysrelay=(RELAY_ACCEPTED,)), ("192.0.2.77",))
    assert proof.ports == (25, 465, 587)
    assert dict(proof.auth_advertised) == {587: True, 465: True}
    assert (proof.authenticated_relay, proof.unauthenticated_relay) == (250, 550)
    assert dict(proof.alwaysrelay) == {"192.0.2.77": 250}
    assert (proof.auth_problems(), proof.alwaysrelay_refused(), proof.warnings()) == ((), (), ())
    assert proof.to_json() == {
        "ports": [25, 465, 587], "auth_advertised": {"587": True, "465": True},
        "authenticated_relay": {"code": 250, "reply": "250 Accepted", "verdict": "accepted"},
        "unauthenticated_relay": {"code": 550, "verdict": "refused"},
        "alwaysrelay": {"192.0.2.77": 250}, "alwaysrelay_not_probed": 0,
    }


def test_465_is_judged_only_where_exim_listens_on_it() -> None:
    proof = proof_of(proof_steps(ports="daemon_smtp_ports = 25 : 587\ntls_on_connect_ports = \n"))
    assert dict(proof.auth_advertised) == {587: True}


def test_lost_authenticators_and_a_refused_authenticated_relay_are_auth_problems() -> None:
    proof = proof_of(proof_steps(ehlo=EHLO_WITHOUT_AUTH, authenticated=RELAY_REFUSED))
    assert proof.auth_problems() == ("no AUTH on 587", "no AUTH on 465", "authenticated relay refused (550)")


def test_a_refused_alwaysrelay_address_is_named_and_a_deferred_one_only_warned() -> None:
    proof = proof_of(proof_steps(alwaysrelay=(RELAY_REFUSED, rcpt_dialogue("451 try later"), RELAY_ACCEPTED)),
                     ("192.0.2.5", "192.0.2.6", "192.0.2.7"))
    assert proof.alwaysrelay_refused() == ("192.0.2.5",)
    assert proof.warnings() == ("post-fix-alwaysrelay-inconclusive:192.0.2.6",)


def test_a_proof_that_did_not_run_is_inconclusive_not_broken() -> None:
    proof = proof_of("", ("192.0.2.5",))
    assert (proof.auth_problems(), proof.alwaysrelay_refused()) == ((), ())
    assert proof.warnings() == ("post-fix-auth-inconclusive:587", "post-fix-authenticated-relay-inconclusive",
                                "post-fix-alwaysrelay-inconclusive:192.0.2.5")
