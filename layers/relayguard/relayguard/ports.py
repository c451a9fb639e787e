"""The small interfaces the services depend on; adapters implement them, tests fake them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CommandResult:
    """What one remote script returned. A non-zero ``rc`` is a value, not an exception."""

    rc: int
    stdout: str
    stderr: str
    duration: float


@dataclass(frozen=True)
class Target:
    """How to reach one server: address, port, login and the host keys pinned for it."""

    name: str
    host: str
    port: int = 22
    user: str = "root"
    #: OpenSSH public key lines (``ssh-ed25519 AAAA...``), without host names.
    host_keys: tuple[str, ...] = ()


class Session(Protocol):
    """One authenticated SSH connection to one server, used for a whole job."""

    def run(self, script: str, timeout: float) -> CommandResult:
        """Run ``script`` with ``sh -s`` on the server (text on stdin, never on a command line)."""
        ...

    def close(self) -> None: ...


class Connector(Protocol):
    """Opens sessions; raises a :class:`relayguard.errors.TransportError` leaf on failure."""

    def connect(self, target: Target) -> Session: ...
