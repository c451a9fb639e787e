"""The one server type: how to reach a server and every name an alert may give it, and the fleet of them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Server:
    """One server of the fleet: address, port, login, the host keys pinned for it, and its other names."""

    name: str
    host: str
    port: int = 22
    user: str = "root"
    #: OpenSSH public key lines (``ssh-ed25519 AAAA...``), without host names.
    host_keys: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    #: Other hostnames, public IPs or instance ids alerts may name this server by.
    aliases: tuple[str, ...] = ()

    def identities(self) -> frozenset[str]:
        """Every way an alert may name this server, normalised for lookup."""
        return frozenset(identity_key(x) for x in (self.name, self.host, *self.aliases))


@dataclass(frozen=True)
class Inventory:
    """The fleet: every server RelayGuard looks after."""

    servers: tuple[Server, ...]

    def resolve(self, identity: str) -> Server | None:
        """The server an alert names by name, host, alias, public IP or instance id; None if unknown."""
        wanted = identity_key(identity)
        for server in self.servers:
            if wanted in server.identities():
                return server
        return None


def identity_key(value: str) -> str:
    """A server name, hostname or IP address as compared: lower case, no trailing dot, IPs in canonical form."""
    value = value.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value
