"""OpenSSH public key lines, their fingerprints, and the ``[host]:port`` names known_hosts files use.

The one place that reads a key line: the inventory, ``inventory add`` and the SSH adapter all go
through :func:`parse_key_line`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

#: The host key types an inventory may pin (paramiko 5 can verify each of them).
KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "rsa-sha2-256", "rsa-sha2-512",
})


@dataclass(frozen=True)
class PublicKeyLine:
    """The two fields of a key line that identify the key: its type and its base64 data (and that data decoded)."""

    key_type: str
    data: str
    blob: bytes

    def __str__(self) -> str:
        return f"{self.key_type} {self.data}"


def parse_key_line(line: str, key_types: frozenset[str] | None = None) -> PublicKeyLine:
    """An OpenSSH public key line (``type base64 [comment]``); ``ValueError`` if it is not one, or if
    ``key_types`` is given and does not hold its type."""
    fields = line.split()
    if len(fields) < 2 or (key_types is not None and fields[0] not in key_types):
        raise ValueError("not an OpenSSH public key (expected 'ssh-ed25519 AAAA...')")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError as exc:
        raise ValueError("key data is not base64") from exc
    return PublicKeyLine(fields[0], fields[1], blob)


def check_host_key(line: str) -> str:
    """An OpenSSH public key line of a pinnable type reduced to ``type base64``; ``ValueError`` if not one."""
    key = parse_key_line(line, KEY_TYPES)
    # The blob starts with its own type name (length-prefixed); rsa-sha2-* lines carry an ssh-rsa blob.
    if not key.blob[4:].startswith(key.key_type.encode()) and not key.key_type.startswith("rsa-sha2"):
        raise ValueError("key data does not match its type")
    return str(key)


def fingerprint(key_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key line, as ``ssh-keygen -lf`` prints it."""
    blob = parse_key_line(key_line).blob
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


_FINGERPRINT = re.compile(r"^SHA256:([A-Za-z0-9+/]{43})=?$")


def parse_fingerprint(text: str) -> str:
    """An operator's ``SHA256:...`` fingerprint in the form :func:`fingerprint` returns; ``ValueError`` if not one."""
    match = _FINGERPRINT.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an OpenSSH SHA256 fingerprint (expected 'SHA256:' and 43 base64 "
                         "characters, as 'ssh-keygen -lf' prints it)")
    return f"SHA256:{match.group(1)}"


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH and paramiko look a host up by: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"
