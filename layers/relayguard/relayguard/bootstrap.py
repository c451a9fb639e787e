"""The composition root: the only module that names concrete adapters.

Handlers, the CLI and tests build their services here; tests pass fakes for any port.
"""

from __future__ import annotations

from relayguard.adapters.smtp import smtp_banner
from relayguard.adapters.ssh import ParamikoConnector, load_private_key
from relayguard.engine import BannerCheck, Engine
from relayguard.errors import RelayGuardError
from relayguard.ports import Connector


def build_engine(
    *,
    key_path: str | None = None,
    key_text: str | None = None,
    sudo: bool = False,
    timeout: float = 60.0,
    connector: Connector | None = None,
    banner_check: BannerCheck | None = None,
) -> Engine:
    """An engine wired to paramiko and a plain SMTP greeting check unless fakes are given."""
    if connector is None:
        if (key_path is None) == (key_text is None):
            raise RelayGuardError("give exactly one SSH private key: a key file or the key text")
        key = load_private_key(path=key_path, text=key_text)
        # Connect, banner and auth deadlines stay well below the per-command one.
        handshake = min(timeout, 15.0)
        connector = ParamikoConnector(key, connect_timeout=handshake, banner_timeout=handshake,
                                      auth_timeout=handshake, sudo=sudo)
    return Engine(connector, banner_check or smtp_banner, timeout=timeout)
