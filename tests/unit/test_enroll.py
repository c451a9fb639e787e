"""`relayguard inventory add` without a network: fingerprints, the inventory edit and every refusal.

The server is a fake of the fetch port; the inventory is a real file. The real key exchange against a
lab sshd is tested in tests/integration/test_inventory_add.py.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from relayguard.domain.hostkeys import fingerprint, parse_fingerprint
from relayguard.enroll import AddRequest, add_server
from relayguard.errors import InventoryError
from relayguard.inventory import load_inventory, upsert_server


def public_line(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


ED = public_line(ed25519.Ed25519PrivateKey.generate())
ED_OTHER = public_line(ed25519.Ed25519PrivateKey.generate())
ECDSA = public_line(ec.generate_private_key(ec.SECP256R1()))
EXISTING: dict[str, Any] = {
    "defaults": {"user": "admin"},
    "servers": [{"name": "web1", "host": "203.0.113.10", "host_keys": [ED_OTHER], "tags": ["prod"],
                 "aliases": ["web1.example.com"]}],
}


class FakeServer:
    """The fetch port: offers fixed keys and records every contact."""

    def __init__(self, *keys: str) -> None:
        self.keys = keys
        self.contacts: list[tuple[str, int, float]] = []

    def __call__(self, host: str, port: int, timeout: float) -> tuple[str, ...]:
        self.contacts.append((host, port, timeout))
        return self.keys


class Terminal(io.StringIO):
    """Standard input that is a terminal, with the operator's answer already typed."""

    def isatty(self) -> bool:
        return True


def run(request: AddRequest, server: FakeServer, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = add_server(request, server, stdin if stdin is not None else io.StringIO(""), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(EXISTING, indent=2))
    path.chmod(0o640)
    return path


# -- fingerprints --------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [ED, ED_OTHER, ECDSA])
def test_fingerprint_is_the_one_paramiko_computes_the_openssh_way(line: str) -> None:
    kind, data = line.split()
    key = paramiko.PKey.from_type_string(kind, base64.b64decode(data))
    assert fingerprint(line) == key.fingerprint
    assert fingerprint(line + " comment@host") == key.fingerprint


def test_parse_fingerprint_takes_ssh_keygen_output_and_a_padded_copy() -> None:
    fp = fingerprint(ED)
    assert parse_fingerprint(fp) == fp
    assert parse_fingerprint(f"  {fp}=\n") == fp


@pytest.mark.parametrize("text", [
    "MD5:2b:3c:4d:5e:6f:70:81:92:a3:b4:c5:d6:e7:f8:09:1a",
    "SHA256:tooShort",
    "sha1:" + "A" * 43,
    "A" * 43,
])
def test_parse_fingerprint_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not an OpenSSH SHA256 fingerprint"):
        parse_fingerprint(text)


# -- the inventory edit --------------------------------------------------------------------------


def test_upsert_adds_a_new_server_and_keeps_everything_else() -> None:
    doc, before = upsert_server(EXISTING, host="203.0.113.20", port=2222, host_keys=[ED + " root@web2"],
                                name="web2", aliases=["web2.example.com"])
    assert before is None
    assert doc["defaults"] == EXISTING["defaults"]
    assert doc["servers"][0] == EXISTING["servers"][0]
    assert doc["servers"][1] == {"name": "web2", "host": "203.0.113.20", "port": 2222, "host_keys": [ED],
                                 "aliases": ["web2.example.com"]}
    assert EXISTING["servers"][0]["host_keys"] == [ED_OTHER]  # the input is not modified


def test_upsert_finds_the_entry_by_host_and_replaces_only_its_keys() -> None:
    doc, before = upsert_server(EXISTING, host="203.0.113.10", port=22, host_keys=[ED], aliases=["198.51.100.10"],
                                tags=["prod", "eu"])
    assert before == EXISTING["servers"][0]
    assert doc["servers"] == [{"name": "web1", "host": "203.0.113.10", "host_keys": [ED], "tags": ["prod", "eu"],
                               "aliases": ["web1.example.com", "198.51.100.10"]}]


def test_upsert_refuses_a_new_name_for_an_address_another_server_owns() -> None:
    with pytest.raises(InventoryError, match=r"identity '203\.0\.113\.10' also belongs to web1"):
        upsert_server(EXISTING, host="203.0.113.10", port=22, host_keys=[ED], name="web9")


def test_upsert_refuses_a_bad_login_name() -> None:
    with pytest.raises(InventoryError, match=r"servers\[1\] \(web2\)\.user: must be a valid Unix login name"):
        upsert_server(EXISTING, host="203.0.113.20", port=22, host_keys=[ED], name="web2", user="Bad User")


# -- refusals: nothing written -------------------------------------------------------------------


def test_without_a_terminal_and_without_a_fingerprint_nothing_is_written(inventory: Path) -> None:
    before = inventory.read_bytes()
    code, out, err = run(AddRequest("203.0.113.20", 22, inventory, name="web2"), FakeServer(ED))
    assert code == 2
    assert fingerprint(ED) in out  # shown, so the operator can verify it and come back with --fingerprint
    assert "not a terminal and no --fingerprint" in err
    assert "nothing written" in err
    assert inventory.read_bytes() == before


def test_without_a_terminal_a_new_file_is_not_even_created(tmp_path: Path) -> None:
    path = tmp_path / "new.json"
    code, _, _ = run(AddRequest("203.0.113.20", 22, path), FakeServer(ED))
    assert code == 2
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_fingerprint_that_matches_no_offered_key_is_refused(inventory: Path) -> None:
    before = inventory.read_bytes()
    code, _, err = run(AddRequest("203.0.113.20", 22, inventory, name="web2", fingerprints=(fingerprint(ED_OTHER),)),
                       FakeServer(ED, ECDSA), stdin=Terminal("y\n"))
    assert code == 2
    assert f"{fingerprint(ED_OTHER)} matches none of the keys" in err
    assert inventory.read_bytes() == before


def test_one_unmatched_fingerprint_among_several_refuses_them_all(inventory: Path) -> None:
    before = inventory.read_bytes()
    request = AddRequest("203.0.113.20", 22, inventory, name="web2",
                         fingerprints=(fingerprint(ED), fingerprint(ED_OTHER)))
    assert run(request, FakeServer(ED, ECDSA))[0] == 2
    assert inventory.read_bytes() == before


def test_a_malformed_fingerprint_is_refused_before_the_server_is_contacted(inventory: Path) -> None:
    server = FakeServer(ED)
    code, _, err = run(AddRequest("203.0.113.20", 22, inventory, fingerprints=("MD5:aa:bb",)), server)
    assert code == 2
    assert "not an OpenSSH SHA256 fingerprint" in err
    assert server.contacts == []


def test_an_invalid_inventory_is_refused_before_the_server_is_contacted(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"servers": [{"name": "web1", "host": "203.0.113.10", "port": 0}]}))
    before = path.read_bytes()
    server = FakeServer(ED)
    code, _, err = run(AddRequest("203.0.113.20", 22, path, fingerprints=(fingerprint(ED),)), server)
    assert code == 2
    assert "is not a valid inventory" in err
    assert "servers[0] (web1).port" in err
    assert server.contacts == []
    assert path.read_bytes() == before


def test_a_bad_alias_is_refused_before_the_server_is_contacted(inventory: Path) -> None:
    server = FakeServer(ED)
    request = AddRequest("203.0.113.20", 22, inventory, name="web2", aliases=("web1.example.com",),
                         fingerprints=(fingerprint(ED),))
    code, _, err = run(request, server)
    assert code == 2
    assert "also belongs to web1" in err
    assert server.contacts == []


def test_on_a_terminal_anything_but_yes_writes_nothing(inventory: Path) -> None:
    before = inventory.read_bytes()
    code, _, err = run(AddRequest("203.0.113.20", 22, inventory, name="web2"), FakeServer(ED), stdin=Terminal("\n"))
    assert code == 1
    assert "Pin them for web2" in err
    assert "not confirmed; nothing written" in err
    assert inventory.read_bytes() == before


# -- accepted ------------------------------------------------------------------------------------


def test_a_matching_fingerprint_pins_only_the_verified_key(inventory: Path) -> None:
    request = AddRequest("203.0.113.20", 22, inventory, name="web2", user="deploy", aliases=("web2.example.com",),
                         tags=("prod",), fingerprints=(fingerprint(ECDSA),))
    code, out, _ = run(request, FakeServer(ED, ECDSA))
    assert code == 0
    assert "added web2" in out
    servers = {s.name: s for s in load_inventory(inventory).servers}
    assert servers["web2"].host_keys == (ECDSA,)
    assert servers["web2"].user == "deploy"
    assert servers["web1"].user == "admin"  # the file's defaults and other entries survive
    assert json.loads(inventory.read_text())["servers"][0] == EXISTING["servers"][0]
    assert inventory.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in inventory.parent.iterdir()] == ["fleet.json"]  # no temporary file left


def test_on_a_terminal_yes_pins_every_offered_key(inventory: Path) -> None:
    code, out, _ = run(AddRequest("203.0.113.20", 22, inventory, name="web2"), FakeServer(ED, ECDSA),
                       stdin=Terminal("yes\n"))
    assert code == 0, out
    web2 = next(s for s in load_inventory(inventory).servers if s.name == "web2")
    assert web2.host_keys == (ED, ECDSA)


def test_re_pinning_an_entry_names_the_key_it_replaces(inventory: Path) -> None:
    code, out, _ = run(AddRequest("203.0.113.10", 22, inventory, fingerprints=(fingerprint(ED),)), FakeServer(ED))
    assert code == 0
    assert f"replaces the key(s) pinned for web1 now: {fingerprint(ED_OTHER)}" in out
    (web1,) = load_inventory(inventory).servers
    assert web1.host_keys == (ED,)
    assert web1.aliases == ("web1.example.com",)


def test_keys_already_pinned_leave_the_file_alone(inventory: Path) -> None:
    os.utime(inventory, (1_000_000, 1_000_000))
    code, out, _ = run(AddRequest("203.0.113.10", 22, inventory, fingerprints=(fingerprint(ED_OTHER),)),
                       FakeServer(ED_OTHER))
    assert code == 0
    assert "nothing to change" in out
    assert inventory.stat().st_mtime == 1_000_000


def test_a_yaml_inventory_stays_yaml_and_its_commented_original_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    original = "# our fleet\n" + yaml.safe_dump(EXISTING, sort_keys=False)
    path.write_text(original)
    code, _, err = run(AddRequest("203.0.113.20", 22, path, name="web2", fingerprints=(fingerprint(ED),)),
                       FakeServer(ED))
    assert code == 0
    assert "YAML comments are not kept" in err
    assert (tmp_path / "fleet.yaml.bak").read_text() == original
    doc = yaml.safe_load(path.read_text())
    assert [s["name"] for s in doc["servers"]] == ["web1", "web2"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(path.read_text())


def test_a_new_file_is_created_in_the_format_of_its_suffix(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yml"
    assert run(AddRequest("203.0.113.20", 22, path, fingerprints=(fingerprint(ED),)), FakeServer(ED))[0] == 0
    assert yaml.safe_load(path.read_text()) == {
        "servers": [{"name": "203.0.113.20", "host": "203.0.113.20", "host_keys": [ED]}]}
