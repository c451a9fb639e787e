"""The paramiko transport against the lab's real OpenSSH sshd: results, pinning, auth, timeouts, sudo."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pytest
from relayguard.adapters.ssh import ParamikoConnector, ParamikoSession
from relayguard.adapters.ssh_keys import load_private_key
from relayguard.domain.entry import PROBE, UNRESTRICTED
from relayguard.domain.server import Server
from relayguard.errors import AuthFailed, HostKeyMismatch, HostKeyUnknown, Timeout, Unreachable
from relayguard.ports import Connector, Session

from lab import Host, Lab

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration


def pinned_key(host: Host) -> str:
    """The host's ed25519 public key as ``type base64`` (the .pub file adds a comment)."""
    return " ".join((host.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def target_for(host: Host, *, user: str = "root", host_keys: tuple[str, ...] | None = None) -> Server:
    keys = (pinned_key(host),) if host_keys is None else host_keys
    return Server(name=host.name, host=host.address, port=22, user=user, host_keys=keys)


@pytest.fixture
def host(make_host: HostFactory) -> Host:
    return make_host(profile="not-cpanel")


@pytest.fixture
def connector(lab: Lab, host: Host) -> ParamikoConnector:
    # Depends on ``host``: the lab writes its client key when it brings a host up.
    return ParamikoConnector(load_private_key(path=str(lab.client_key)))


@pytest.fixture
def session(connector: ParamikoConnector, host: Host) -> Iterator[ParamikoSession]:
    opened = connector.connect(target_for(host))
    yield opened
    opened.close()


@pytest.fixture
def stranger_key(tmp_path: Path) -> paramiko.PKey:
    """An ed25519 key no lab host has ever seen."""
    path = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return load_private_key(path=str(path))


@pytest.fixture
def some_pin(stranger_key: paramiko.PKey) -> tuple[str, ...]:
    """A well-formed pin for servers the test never gets far enough to check."""
    return (f"{stranger_key.get_name()} {stranger_key.get_base64()}",)


@pytest.fixture
def spare_address(lab: Lab) -> str:
    """A loopback address inside this lab's range that no lab host uses."""
    return f"127.{lab.net}.253.1"


@pytest.fixture
def closed_port(spare_address: str) -> Iterator[tuple[str, int]]:
    """A bound but non-listening port: held for the test so nothing else can take it, refusing connects."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((spare_address, 0))
    yield sock.getsockname()
    sock.close()


@pytest.fixture
def silent_listener(spare_address: str) -> Iterator[tuple[str, int]]:
    """A TCP listener that completes the handshake (in the kernel's backlog) and never sends a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((spare_address, 0))
    sock.listen(4)
    yield sock.getsockname()
    sock.close()


def test_a_session_opened_through_the_connector_port_runs_a_script_on_that_server(connector, host):
    # GIVEN the connector seen only through the port the engine uses
    port: Connector = connector
    # WHEN a session opened through it runs a script and is closed
    session: Session = port.connect(target_for(host))
    try:
        result = session.run(PROBE, timeout=30)
    finally:
        session.close()
    # THEN the probe ran on that server as the target's user, once, by the unrestricted path (no entry
    # program is installed there), which the result says
    assert result.rc == 0
    assert "id.uid=0\n" in result.stdout
    assert result.stdout.rstrip().endswith("scan.end=1")
    assert result.access == UNRESTRICTED
    assert host.accepted_logins() == 1


def test_runs_a_script_and_returns_stdout_stderr_and_rc(session):
    result = session.run_script("echo out; echo err >&2; exit 3", timeout=10)

    assert result.rc == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert 0 < result.duration < 10


def test_the_script_travels_on_stdin_not_on_the_command_line(session):
    marker = "marker-5d1c0f"

    result = session.run_script(f": {marker}\ntr '\\0' ' ' < /proc/$$/cmdline", timeout=10)

    assert result.rc == 0
    assert result.stdout.split() == ["sh", "-s"]
    assert marker not in result.stdout


def test_a_megabyte_of_stderr_does_not_deadlock(session):
    result = session.run_script("head -c 1048576 /dev/zero | tr '\\0' e >&2; echo done", timeout=30)

    assert result.rc == 0
    assert result.stdout == "done\n"
    assert result.stderr == "e" * 1048576


def test_a_big_script_and_big_output_in_both_streams_flow_together(session):
    # ~1 MB of script interleaved with output: stdin must keep flowing while stdout/stderr are drained.
    line = "echo " + "o" * 60 + "; echo " + "x" * 60 + " >&2\n"
    script = line * 8000 + "exit 0\n"

    result = session.run_script(script, timeout=60)

    assert result.rc == 0
    assert result.stdout.count("\n") == 8000
    assert result.stderr.count("\n") == 8000


def test_output_is_decoded_as_utf8_with_replacement(session):
    result = session.run_script("printf 'caf\\303\\251 \\377\\n'", timeout=10)

    assert result.stdout == "café \ufffd\n"


def test_a_wrong_pinned_key_is_a_mismatch_and_never_logs_in(connector, host, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(other.with_name("other_host_key.pub").read_text().split()[:2])

    with pytest.raises(HostKeyMismatch) as caught:
        connector.connect(target_for(host, host_keys=(wrong,)))

    assert host.name in str(caught.value)
    assert f"{host.address}:22" in str(caught.value)
    assert wrong.split()[1] not in str(caught.value)
    assert isinstance(caught.value.__cause__, paramiko.BadHostKeyException)
    assert "Accepted" not in host.sshd_log()


def test_no_pinned_key_is_unknown_and_never_reaches_the_server(connector, host):
    before = host.sshd_log()

    with pytest.raises(HostKeyUnknown) as caught:
        connector.connect(target_for(host, host_keys=()))

    assert host.name in str(caught.value)
    time.sleep(0.2)
    assert host.sshd_log() == before


def test_a_wrong_client_key_fails_authentication(stranger_key, host):
    connector = ParamikoConnector(stranger_key)

    with pytest.raises(AuthFailed) as caught:
        connector.connect(target_for(host))

    assert f"{host.address}:22" in str(caught.value)
    assert host.accepted_logins() == 0


def test_a_closed_port_is_unreachable(stranger_key, some_pin, closed_port):
    address, port = closed_port
    target = Server(name="closed", host=address, port=port, host_keys=some_pin)

    with pytest.raises(Unreachable) as caught:
        ParamikoConnector(stranger_key, connect_timeout=2).connect(target)

    assert f"closed ({address}:{port})" in str(caught.value)
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_a_server_that_never_sends_a_banner_is_unreachable_quickly(stranger_key, some_pin, silent_listener):
    address, port = silent_listener
    target = Server(name="silent", host=address, port=port, host_keys=some_pin)
    started = time.monotonic()

    with pytest.raises(Unreachable, match="banner") as caught:
        ParamikoConnector(stranger_key, banner_timeout=1).connect(target)

    assert time.monotonic() - started < 5
    assert "SSH protocol banner" in str(caught.value.__cause__)


def test_a_command_past_its_deadline_times_out_and_the_session_survives(session):
    started = time.monotonic()

    with pytest.raises(Timeout) as caught:
        session.run_script("sleep 30", timeout=2)

    assert time.monotonic() - started < 20
    assert "deadline" in str(caught.value)
    assert session.run_script("echo still here", timeout=10).stdout == "still here\n"


def test_sudo_runs_the_script_as_root_for_a_user_with_a_sudoers_entry(lab, make_host):
    host = make_host(profile="not-cpanel", sudo=True)
    connector = ParamikoConnector(load_private_key(path=str(lab.client_key)), sudo=True)

    with connector.connect(target_for(host, user="cpuser")) as session:
        result = session.run_script("id -u", timeout=10)

    assert result.rc == 0
    assert result.stdout == "0\n"


def test_sudo_without_a_sudoers_entry_fails_without_prompting(lab, make_host):
    host = make_host(profile="not-cpanel")
    connector = ParamikoConnector(load_private_key(path=str(lab.client_key)), sudo=True)

    with connector.connect(target_for(host, user="cpuser")) as session:
        result = session.run_script("id -u", timeout=10)

    assert result.rc == 1
    assert "a password is required" in result.stderr
    assert result.stdout == ""


def test_one_session_is_one_connection_and_close_is_idempotent(connector, host):
    session = connector.connect(target_for(host))

    first = session.run_script("echo one", timeout=10)
    second = session.run_script("echo two", timeout=10)
    session.close()
    session.close()

    assert (first.stdout, second.stdout) == ("one\n", "two\n")
    assert host.accepted_logins() == 1
    with pytest.raises(RuntimeError, match="closed"):
        session.run_script("echo three", timeout=10)
