"""Key lines and known_hosts names: one reader and one writer, shared by inventory, enrolment and SSH."""

from __future__ import annotations

import base64

import pytest
from relayguard.domain.hostkeys import KEY_TYPES, check_host_key, known_hosts_name, parse_key_line

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize(("host", "port", "name"), [
    ("203.0.113.10", 22, "203.0.113.10"),
    ("203.0.113.10", 2222, "[203.0.113.10]:2222"),
    ("2001:db8::20", 2222, "[2001:db8::20]:2222"),
    ("web1.example.com", 22, "web1.example.com"),
])
def test_known_hosts_names_bracket_only_a_port_other_than_22(host: str, port: int, name: str) -> None:
    assert known_hosts_name(host, port) == name


def test_a_key_line_loses_its_comment_and_keeps_its_data_as_written() -> None:
    key = parse_key_line(f"  {KEY}   root@web1 extra words\n")
    assert (str(key), key.key_type) == (KEY, "ssh-ed25519")
    assert key.blob == base64.b64decode(KEY.split()[1])


@pytest.mark.parametrize(("line", "message"), [
    ("ssh-ed25519", "not an OpenSSH public key"),
    ("ssh-ed25519 not*base64", "key data is not base64"),
])
def test_what_is_not_a_key_line_says_why(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_key_line(line)


def test_only_pinnable_types_pass_the_inventory_check() -> None:
    assert check_host_key(KEY + " comment") == KEY
    with pytest.raises(ValueError, match="not an OpenSSH public key"):
        parse_key_line(KEY.replace("ssh-ed25519", "ssh-dss"), KEY_TYPES)
    with pytest.raises(ValueError, match="does not match its type"):
        check_host_key(KEY.replace("ssh-ed25519", "ssh-rsa"))
