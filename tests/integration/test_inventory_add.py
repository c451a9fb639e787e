"""`relayguard inventory add` through the installed entry point, against lab hosts (real OpenSSH sshd).

The fingerprint it shows is compared with ``ssh-keygen -lf`` of the key file the host's sshd serves;
every refusal is checked to leave the inventory byte for byte as it was; an accepted key is checked
by scanning with the written inventory alone (an empty known_hosts file, so the pin must come from it).
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab import Host, Lab

pytestmark = pytest.mark.integration

RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"


def keygen_fingerprint(host: Host) -> str:
    """What OpenSSH's own tool says about the key the host's sshd serves (HostKey in its sshd_config)."""
    out = subprocess.run(["ssh-keygen", "-lf", str(host.path("/etc/ssh/ssh_host_ed25519_key.pub"))],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return out.split()[1]


def add(host: Host, inventory: Path, *extra: str, stdin: int | None = subprocess.DEVNULL,
        answer: bytes | None = None) -> subprocess.CompletedProcess[str]:
    argv = [RELAYGUARD, "inventory", "add", host.address, "--inventory", str(inventory), *extra]
    if answer is None:
        return subprocess.run(argv, stdin=stdin, capture_output=True, text=True, timeout=120, check=False)
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer)
        proc = subprocess.Popen(argv, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(controller)
        os.close(terminal)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def scan(lab: Lab, inventory: Path, tmp_path: Path) -> tuple[int, list[dict[str, Any]]]:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    proc = subprocess.run([RELAYGUARD, "scan", "--json", "--identity", str(lab.client_key), "--known-hosts",
                           str(empty), "--inventory", str(inventory)],
                          capture_output=True, text=True, timeout=180, check=False)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    """An inventory that already holds another server, which every run must leave as it was."""
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"servers": [{"name": "other", "host": "192.0.2.50", "tags": ["keep"],
                                             "host_keys": [OTHER_KEY]}]}, indent=1))
    return path


def test_the_fingerprint_shown_is_the_one_ssh_keygen_gives_for_the_hosts_key(modern, existing):
    proc = add(modern, existing)
    assert FINGERPRINT.findall(proc.stdout) == [keygen_fingerprint(modern)]


def test_without_a_terminal_and_without_a_fingerprint_nothing_is_written(modern, existing, tmp_path):
    before = existing.read_bytes()
    proc = add(modern, existing)
    assert proc.returncode == 2
    assert "not a terminal and no --fingerprint" in proc.stderr
    assert existing.read_bytes() == before
    fresh = tmp_path / "fresh.json"
    assert add(modern, fresh).returncode == 2
    assert not fresh.exists()


def test_a_wrong_fingerprint_is_refused_and_nothing_is_written(lab, make_host, existing):
    host, impostor = make_host(profile="modern"), make_host(profile="modern")
    before = existing.read_bytes()
    proc = add(host, existing, "--fingerprint", keygen_fingerprint(impostor), answer=b"y\n")
    assert proc.returncode == 2
    assert f"{keygen_fingerprint(impostor)} matches none of the keys" in proc.stderr
    assert existing.read_bytes() == before


def test_a_matching_fingerprint_pins_the_key_and_scan_connects_with_it(lab, modern, existing, tmp_path):
    proc = add(modern, existing, "--name", "web1", "--alias", modern.domain, "--fingerprint",
               keygen_fingerprint(modern))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(existing.read_text())
    assert doc["servers"][0]["name"] == "other"
    assert doc["servers"][0]["tags"] == ["keep"]
    # Scan only this server: the kept "other" entry points at a documentation address.
    only = tmp_path / "only.json"
    only.write_text(json.dumps({"servers": doc["servers"][1:]}))
    code, (res,) = scan(lab, only, tmp_path)
    assert (code, res["host"], res["outcome"]) == (1, "web1", "noncompliant")
    assert modern.accepted_logins() >= 1


def test_on_a_terminal_the_operator_confirms_or_declines(lab, modern, tmp_path):
    declined = tmp_path / "declined.json"
    proc = add(modern, declined, answer=b"n\n")
    assert proc.returncode == 1
    assert "Pin them for" in proc.stderr
    assert not declined.exists()
    confirmed = tmp_path / "confirmed.json"
    proc = add(modern, confirmed, answer=b"y\n")
    assert proc.returncode == 0, proc.stderr
    code, (res,) = scan(lab, confirmed, tmp_path)
    assert (code, res["outcome"]) == (1, "noncompliant")


def test_re_pinning_a_changed_host_key_ends_the_mismatch(lab, make_host, tmp_path):
    host, other = make_host(profile="modern"), make_host(profile="modern")
    inventory = tmp_path / "fleet.json"
    # The inventory pins another host's key, as if the server had been rebuilt since.
    stale = other.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    inventory.write_text(json.dumps({"servers": [{"name": "web1", "host": host.address,
                                                  "host_keys": [" ".join(stale)]}]}))
    assert scan(lab, inventory, tmp_path)[1][0]["outcome"] == "host-key-mismatch"
    proc = add(host, inventory, "--fingerprint", keygen_fingerprint(host))
    assert proc.returncode == 0, proc.stderr
    assert f"replaces the key(s) pinned for web1 now: {keygen_fingerprint(other)}" in proc.stdout
    assert scan(lab, inventory, tmp_path)[1][0]["outcome"] == "noncompliant"
