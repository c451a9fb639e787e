"""A strict SSH client for tests against lab hosts: pinned host keys, RejectPolicy, the lab's key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paramiko

from lab.fleet import Host


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


def ssh(host: Host, command: str, user: str = "root", timeout: float = 30.0, key: Path | None = None) -> Result:
    """``command`` on ``host``, with the lab's client key unless ``key`` names another private key."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(host.lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host.address,
            port=22,
            username=user,
            key_filename=str(key or host.lab.client_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        return Result(stdout.channel.recv_exit_status(), out, err)
    finally:
        client.close()
