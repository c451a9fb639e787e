"""The inventory parses from JSON or YAML, names the entry and field of every error, and resolves alerts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from relayguard.domain.server import Inventory
from relayguard.errors import InventoryError
from relayguard.inventory import load_text, parse_inventory

KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIC"

FLEET: dict[str, Any] = {
    "defaults": {"user": "admin", "port": 2222},
    "servers": [
        {"name": "web1", "host": "203.0.113.10", "host_keys": [KEY1 + " root@web1"], "tags": ["prod"],
         "aliases": ["web1.example.com", "198.51.100.10", "i-0abc123"]},
        {"name": "web2", "host": "2001:DB8::20", "port": 22, "user": "root", "host_keys": [KEY2]},
    ],
}

YAML_FLEET = f"""
defaults:
  user: admin
servers:
  - name: web1
    host: 203.0.113.10
    host_keys:
      - {KEY1}
    aliases: [web1.example.com]
"""


def fleet_with(index: int, **fields: object) -> dict[str, Any]:
    servers = [dict(s) for s in FLEET["servers"]]
    servers[index].update(fields)
    return {**FLEET, "servers": servers}


def error_of(data: object) -> str:
    with pytest.raises(InventoryError) as info:
        parse_inventory(data)
    return str(info.value)


def test_loads_json_with_defaults_and_reduced_host_keys() -> None:
    inv = load_text(json.dumps(FLEET))
    web1, web2 = inv.servers
    assert (web1.name, web1.host, web1.port, web1.user, web1.host_keys) == (
        "web1", "203.0.113.10", 2222, "admin", (KEY1,))
    assert (web1.tags, web1.aliases) == (("prod",), ("web1.example.com", "198.51.100.10", "i-0abc123"))
    assert (web2.host, web2.port, web2.user) == ("2001:db8::20", 22, "root")


def test_loads_yaml_with_the_same_shape() -> None:
    (web1,) = load_text(YAML_FLEET).servers
    assert (web1.name, web1.host, web1.port, web1.user, web1.host_keys) == (
        "web1", "203.0.113.10", 22, "admin", (KEY1,))


def test_text_that_is_neither_json_nor_yaml_is_refused_with_its_source() -> None:
    with pytest.raises(InventoryError, match=r"^fleet.yaml: neither JSON nor YAML"):
        load_text("servers: [unclosed", source="fleet.yaml")


def test_a_document_without_a_servers_list_is_refused() -> None:
    assert error_of({"hosts": []}) == "inventory: expected an object with a 'servers' list"


def test_a_bad_port_names_the_entry_and_the_field() -> None:
    assert error_of(fleet_with(1, port=70000)) == "servers[1] (web2).port: must be an integer from 1 to 65535"


def test_a_boolean_port_is_not_a_port() -> None:
    assert error_of(fleet_with(1, port=True)).startswith("servers[1] (web2).port:")


def test_a_bad_host_key_type_names_the_key() -> None:
    assert error_of(fleet_with(0, host_keys=["ssh-dss AAAAB3NzaC1kc3M="])) == (
        "servers[0] (web1).host_keys[0]: not an OpenSSH public key (expected 'ssh-ed25519 AAAA...')")


def test_bad_base64_in_a_host_key_is_refused() -> None:
    assert error_of(fleet_with(1, host_keys=[KEY2, "ssh-ed25519 not*base64"])) == (
        "servers[1] (web2).host_keys[1]: key data is not base64")


def test_host_key_data_of_another_type_is_refused() -> None:
    assert error_of(fleet_with(0, host_keys=["ssh-rsa " + KEY1.split()[1]])) == (
        "servers[0] (web1).host_keys[0]: key data does not match its type")


def test_an_unknown_field_is_named() -> None:
    assert error_of(fleet_with(0, password="hunter2")) == "servers[0] (web1): unknown field(s) password"


def test_a_bad_host_is_named() -> None:
    assert error_of(fleet_with(1, host="web 2;reboot")).startswith("servers[1] (web2).host: ")


def test_a_missing_name_is_reported_by_index() -> None:
    servers = [{"host": "203.0.113.10"}]
    assert error_of({"servers": servers}).startswith("servers[0].name: required")


def test_an_alias_shared_by_two_servers_is_refused() -> None:
    message = error_of(fleet_with(1, aliases=["WEB1.example.com."]))
    assert message == "servers (web2): identity 'web1.example.com' also belongs to web1"


def test_two_servers_with_the_same_name_are_refused() -> None:
    assert error_of(fleet_with(1, name="web1")) == "servers (web1).name: appears 2 times"


@pytest.fixture
def inventory() -> Inventory:
    return parse_inventory(FLEET)


@pytest.mark.parametrize("identity", ["web1", "WEB1.example.com.", "198.51.100.10", " 203.0.113.10 ", "i-0ABC123"])
def test_resolves_a_server_by_any_of_its_identities(inventory: Inventory, identity: str) -> None:
    server = inventory.resolve(identity)
    assert server is not None
    assert server.name == "web1"


def test_resolves_an_ipv6_address_in_any_spelling(inventory: Inventory) -> None:
    server = inventory.resolve("2001:0db8:0000::0020")
    assert server is not None
    assert server.name == "web2"


def test_an_unknown_identity_resolves_to_nothing(inventory: Inventory) -> None:
    assert inventory.resolve("mail.unknown.example") is None
