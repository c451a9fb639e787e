"""Private keys load from files and strings in every supported format; known_hosts yields the pins."""

from __future__ import annotations

import subprocess
import traceback
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from relayguard.adapters.ssh_keys import host_keys_from_known_hosts, load_private_key
from relayguard.errors import RelayGuardError

KeyGen = Callable[..., Path]


@pytest.fixture
def keygen(tmp_path: Path) -> KeyGen:
    """Make a key pair with ssh-keygen; returns the private key's path (the public key is ``.pub``)."""
    made = 0

    def make(key_type: str = "ed25519", *extra: str, passphrase: str = "") -> Path:
        nonlocal made
        made += 1
        path = tmp_path / f"key{made}_{key_type}"
        if key_type == "rsa" and "-b" not in extra:
            # ssh-keygen's default 3072 bits takes 1 to 2 s a key; what is tested here is types and formats.
            extra = ("-b", "1024", *extra)
        subprocess.run(
            ["ssh-keygen", "-q", "-N", passphrase, "-t", key_type, *extra, "-C", "test", "-f", str(path)],
            check=True,
        )
        return path

    return make


def public_base64(private_path: Path) -> str:
    return private_path.with_name(private_path.name + ".pub").read_text().split()[1]


def pub_line(private_path: Path) -> str:
    """The ``type base64`` form of the key pair's public half."""
    return " ".join(private_path.with_name(private_path.name + ".pub").read_text().split()[:2])


def full_report(err: BaseException) -> str:
    """Message, repr and arguments of the error and of every exception chained behind it."""
    parts: list[str] = []
    seen: BaseException | None = err
    while seen is not None:
        parts += [str(seen), repr(seen), *map(repr, seen.args), traceback.format_exception_only(seen)[-1]]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("key_type", "extra", "expected", "header"),
    [
        ("rsa", (), paramiko.RSAKey, "OPENSSH PRIVATE KEY"),
        ("rsa", ("-m", "PEM"), paramiko.RSAKey, "RSA PRIVATE KEY"),
        ("ecdsa", (), paramiko.ECDSAKey, "OPENSSH PRIVATE KEY"),
        ("ecdsa", ("-m", "PEM"), paramiko.ECDSAKey, "EC PRIVATE KEY"),
        ("ecdsa", ("-m", "PKCS8"), paramiko.ECDSAKey, "BEGIN PRIVATE KEY"),
        ("ed25519", (), paramiko.Ed25519Key, "OPENSSH PRIVATE KEY"),
    ],
)
def test_loads_each_key_type_and_format_from_a_path_and_from_text(keygen, key_type, extra, expected, header):
    path = keygen(key_type, *extra)
    assert header in path.read_text()

    from_path = load_private_key(path=str(path))
    from_text = load_private_key(text=path.read_text())

    assert isinstance(from_path, expected)
    assert isinstance(from_text, expected)
    assert from_path.get_base64() == from_text.get_base64() == public_base64(path)


def test_an_encrypted_key_loads_with_its_passphrase(keygen):
    path = keygen("ed25519", passphrase="correct horse")

    key = load_private_key(text=path.read_text(), passphrase="correct horse")

    assert key.get_base64() == public_base64(path)


def test_an_encrypted_pem_key_loads_with_its_passphrase(keygen):
    path = keygen("rsa", "-m", "PEM", passphrase="correct horse")

    assert load_private_key(path=str(path), passphrase="correct horse").get_base64() == public_base64(path)


def test_a_passphrase_for_an_unencrypted_key_is_ignored(keygen):
    path = keygen("ecdsa")

    assert load_private_key(path=str(path), passphrase="unused").get_base64() == public_base64(path)


@pytest.mark.parametrize("extra", [(), ("-m", "PEM")])
def test_an_encrypted_key_without_its_passphrase_is_a_clean_error(keygen, extra):
    path = keygen("rsa", *extra, passphrase="correct horse")

    with pytest.raises(RelayGuardError, match="encrypted and no passphrase was given"):
        load_private_key(text=path.read_text())


def test_a_wrong_passphrase_is_a_clean_error_that_leaks_neither_key_nor_passphrase(keygen):
    path = keygen("ed25519", passphrase="correct horse")
    text = path.read_text()

    with pytest.raises(RelayGuardError, match="wrong passphrase") as caught:
        load_private_key(text=text, passphrase="battery staple")

    report = full_report(caught.value)
    assert "battery staple" not in report
    assert "correct horse" not in report
    assert not any(line in report for line in text.splitlines()[1:-1])


@pytest.mark.parametrize(
    "garbage",
    [
        "NOT-A-KEY-7f3c1e9b2d",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nNOTAKEY7f3c1e9b2dQUJDREVGR0g=\n-----END OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nNOTAKEY7f3c1e9b2dQUJDREVGR0g=\n-----END RSA PRIVATE KEY-----\n",
    ],
)
def test_garbage_is_a_clean_error_whose_message_does_not_contain_the_input(garbage):
    with pytest.raises(RelayGuardError) as caught:
        load_private_key(text=garbage)

    assert type(caught.value) is RelayGuardError
    assert str(caught.value).startswith("could not load the SSH private key: ")
    assert "7f3c1e9b2d" not in full_report(caught.value)


def test_a_truncated_real_key_is_a_clean_error_that_does_not_echo_it(keygen):
    lines = keygen("ed25519").read_text().splitlines()
    truncated = "\n".join([*lines[:3], lines[-1]]) + "\n"

    with pytest.raises(RelayGuardError) as caught:
        load_private_key(text=truncated)

    report = full_report(caught.value)
    assert not any(line in report for line in lines[1:3])


def test_a_garbage_key_file_is_a_clean_error_that_does_not_echo_it(tmp_path):
    path = tmp_path / "id_garbage"
    path.write_text("SECRET-GARBAGE-91ab\n")

    with pytest.raises(RelayGuardError, match="not an OpenSSH or PEM private key") as caught:
        load_private_key(path=str(path))

    assert "SECRET-GARBAGE-91ab" not in full_report(caught.value)


def test_a_missing_key_file_names_the_path(tmp_path):
    missing = tmp_path / "nope"

    with pytest.raises(RelayGuardError, match=r"cannot read .*nope"):
        load_private_key(path=str(missing))


@pytest.mark.parametrize("kwargs", [{}, {"path": "/x", "text": "y"}])
def test_exactly_one_source_must_be_given(kwargs):
    with pytest.raises(TypeError):
        load_private_key(**kwargs)


def test_a_loaded_key_repr_shows_no_key_material(keygen):
    path = keygen("ed25519")
    key = load_private_key(path=str(path))

    assert public_base64(path) not in repr(key)


# -- known_hosts -------------------------------------------------------------------------------


@pytest.fixture
def known_hosts(tmp_path: Path, keygen: KeyGen) -> tuple[Path, dict[str, str]]:
    """A known_hosts file with plain, port-qualified, multi-name, other-host and revoked entries."""
    keys = {
        "plain": pub_line(keygen("ed25519")),
        "plain_rsa": pub_line(keygen("rsa")),
        "port": pub_line(keygen("ecdsa")),
        "shared": pub_line(keygen("ed25519")),
        "other": pub_line(keygen("ed25519")),
        "revoked": pub_line(keygen("ed25519")),
    }
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n"
        "\n"
        f"srv1.example.net {keys['plain']}\n"
        f"srv1.example.net {keys['plain_rsa']} with a comment\n"
        f"[srv1.example.net]:2222 {keys['port']}\n"
        f"srv9.example.net,srv1.example.net {keys['shared']}\n"
        f"srv2.example.net {keys['other']}\n"
        f"srv1.example.net {keys['revoked']}\n"
        f"@revoked * {keys['revoked']}\n"
    )
    return path, keys


def test_known_hosts_gives_plain_entries_for_port_22(known_hosts):
    path, keys = known_hosts

    pins = host_keys_from_known_hosts(str(path), "srv1.example.net")

    assert pins == (keys["plain"], keys["plain_rsa"], keys["shared"])


def test_known_hosts_skips_malformed_and_unsupported_lines(known_hosts):
    path, keys = known_hosts
    with path.open("a") as fh:
        fh.write("srv1.example.net ssh-ed25519 !!!not-base64!!!\nsrv1.example.net\n")
        fh.write("srv1.example.net ssh-unknown-type AAAAB3NzaC1yc2E=\n")
        fh.write(f"@cert-authority srv1.example.net {keys['other']}\n")

    pins = host_keys_from_known_hosts(str(path), "srv1.example.net")

    assert pins == (keys["plain"], keys["plain_rsa"], keys["shared"])


def test_known_hosts_gives_bracketed_entries_for_another_port(known_hosts):
    path, keys = known_hosts

    assert host_keys_from_known_hosts(str(path), "srv1.example.net", 2222) == (keys["port"],)


def test_known_hosts_gives_nothing_for_an_unknown_host_or_port(known_hosts):
    path, _keys = known_hosts

    assert host_keys_from_known_hosts(str(path), "srv3.example.net") == ()
    assert host_keys_from_known_hosts(str(path), "srv2.example.net", 2200) == ()


def test_known_hosts_matches_hashed_entries(known_hosts):
    path, keys = known_hosts
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
    hashed = path.read_text()
    assert "srv1.example.net" not in hashed
    assert "|1|" in hashed

    assert host_keys_from_known_hosts(str(path), "srv1.example.net") == (
        keys["plain"],
        keys["plain_rsa"],
        keys["shared"],
    )
    assert host_keys_from_known_hosts(str(path), "srv1.example.net", 2222) == (keys["port"],)
    assert host_keys_from_known_hosts(str(path), "srv2.example.net") == (keys["other"],)
    assert host_keys_from_known_hosts(str(path), "srv3.example.net") == ()
