"""SSH key handling: private keys from files or text, host keys from known_hosts files or a key scan.

Every key line is read by :func:`relayguard.domain.hostkeys.parse_key_line`; this module adds what
needs paramiko or cryptography. Failures name the problem and never carry key material.
"""

from __future__ import annotations

import binascii
import contextlib
import io
import logging
import socket
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.pkey import UnknownKeyType
from paramiko.ssh_exception import IncompatiblePeer

from relayguard.domain.hostkeys import known_hosts_name, parse_key_line
from relayguard.errors import RelayGuardError, Timeout, Unreachable


def public_key(line: str) -> paramiko.PKey:
    """The paramiko key of an OpenSSH public key line (``type base64 [comment]``); ``ValueError`` if unusable."""
    key = parse_key_line(line)
    try:
        return paramiko.PKey.from_type_string(key.key_type, key.blob)
    except (paramiko.SSHException, UnknownKeyType, ValueError) as exc:
        raise ValueError(f"unusable {key.key_type} key") from exc


def load_private_key(
    *, path: str | None = None, text: str | None = None, passphrase: str | None = None
) -> paramiko.PKey:
    """Load an RSA, ECDSA or Ed25519 private key in OpenSSH or PEM format from ``path`` or ``text``.

    A ``passphrase`` given for an unencrypted key is ignored. Failures raise ``RelayGuardError``
    naming the kind of problem; the key text never appears in a message.
    """
    if path is not None and text is None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise RelayGuardError(f"could not load the SSH private key: cannot read {path} ({reason})") from exc
    elif text is not None and path is None:
        data = text.encode()
    else:
        raise TypeError("give exactly one of path= or text=")
    loaded = _deserialize(data, passphrase.encode() if passphrase is not None else None)
    cls: type[paramiko.PKey]
    if isinstance(loaded, rsa.RSAPrivateKey):
        cls = paramiko.RSAKey
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        cls = paramiko.ECDSAKey
    elif isinstance(loaded, ed25519.Ed25519PrivateKey):
        cls = paramiko.Ed25519Key
    else:
        raise RelayGuardError(f"could not load the SSH private key: unsupported key type {type(loaded).__name__}")
    # paramiko reads Ed25519 only from the OpenSSH container and PKCS#8 not at all, so it gets
    # every key re-serialised, in memory, in that container.
    openssh = loaded.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    try:
        return cls.from_private_key(io.StringIO(openssh))
    except (paramiko.SSHException, ValueError) as exc:
        raise RelayGuardError("could not load the SSH private key: unsupported key parameters") from exc


def _deserialize(data: bytes, secret: bytes | None) -> object:
    openssh = b"-----BEGIN OPENSSH PRIVATE KEY-----" in data
    try:
        try:
            return _load(data, secret, openssh=openssh)
        except TypeError:
            if secret is None:
                raise
            # A passphrase for an unencrypted key: cryptography refuses it, OpenSSH's tools ignore it.
            return _load(data, None, openssh=openssh)
    except TypeError as exc:
        raise RelayGuardError(
            "could not load the SSH private key: it is encrypted and no passphrase was given"
        ) from exc
    except ValueError as exc:
        problem = "wrong passphrase or corrupt key" if secret is not None else "not an OpenSSH or PEM private key"
        raise RelayGuardError(f"could not load the SSH private key: {problem}") from exc
    except Exception as exc:
        raise RelayGuardError("could not load the SSH private key: unreadable key data") from exc


def _load(data: bytes, secret: bytes | None, *, openssh: bool) -> object:
    if openssh:
        return serialization.load_ssh_private_key(data, password=secret)
    return serialization.load_pem_private_key(data, password=secret)


def host_keys_from_known_hosts(path: str, host: str, port: int = 22) -> tuple[str, ...]:
    """The ``type base64`` lines an OpenSSH known_hosts file pins for ``host`` (and ``port``).

    Plain and hashed (``|1|salt|hash``) names are matched exactly, as paramiko does; wildcard and
    negated patterns, ``@cert-authority`` lines and keys of unsupported types are skipped, and a
    key listed under ``@revoked`` is never returned.
    """
    want = known_hosts_name(host, port).lower()
    found: list[str] = []
    revoked: set[str] = set()
    for raw in Path(path).read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if fields[0] == "@revoked" and len(fields) >= 4:
            with contextlib.suppress(ValueError):
                revoked.add(_canonical(fields[2], fields[3]))
            continue
        if fields[0].startswith("@") or len(fields) < 3 or not _names_match(fields[0], want):
            continue
        try:
            pinned = _canonical(fields[1], fields[2])
        except ValueError:
            continue
        if pinned not in found:
            found.append(pinned)
    return tuple(entry for entry in found if entry not in revoked)


def _canonical(key_type: str, data: str) -> str:
    key = public_key(f"{key_type} {data}")
    return f"{key.get_name()} {key.get_base64()}"


def _names_match(names: str, want: str) -> bool:
    for name in names.split(","):
        if name.startswith("|1|"):
            try:
                if paramiko.HostKeys.hash_host(want, name) == name:
                    return True
            except (binascii.Error, ValueError):
                continue
        elif name.lower() == want:
            return True
    return False


#: Host-key algorithms asked for one at a time, as ssh-keyscan does: a key exchange shows one key.
#: Both RSA signature algorithms show the same RSA key, so the second is asked only if the first found
#: nothing. paramiko 5 has no SHA-1 ``ssh-rsa``, so an sshd that knows nothing newer (OpenSSH < 7.2)
#: cannot be scanned, nor reached by the engine.
SCAN_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                   "rsa-sha2-512", "rsa-sha2-256")
_SCAN_LOG = "relayguard.keyscan"
# A server without a key of the asked type is an expected answer, which paramiko's transport thread
# would log with a traceback; the scan reports its own errors.
logging.getLogger(_SCAN_LOG).addHandler(logging.NullHandler())
logging.getLogger(_SCAN_LOG).propagate = False


def fetch_host_keys(host: str, port: int = 22, timeout: float = 10.0) -> tuple[str, ...]:
    """The host keys ``host`` offers, as ``type base64`` lines, learnt by key exchange alone.

    No authentication is attempted and nothing is trusted here: the caller shows the keys'
    fingerprints to an operator or compares them with one given out of band. Raises
    ``Unreachable`` or ``Timeout`` naming ``host:port``.
    """
    who = f"{host}:{port}"
    found: list[str] = []
    for algorithm in SCAN_ALGORITHMS:
        if algorithm == "rsa-sha2-256" and any(line.startswith("ssh-rsa ") for line in found):
            continue
        key = _offered_key(host, port, algorithm, timeout, who)
        if key is not None and f"{key.get_name()} {key.get_base64()}" not in found:
            found.append(f"{key.get_name()} {key.get_base64()}")
    if not found:
        raise Unreachable(f"{who}: the server offered none of the host key types {', '.join(SCAN_ALGORITHMS)}")
    return tuple(found)


def _offered_key(host: str, port: int, algorithm: str, timeout: float, who: str) -> paramiko.PKey | None:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise Unreachable(f"{who}: TCP connect timed out after {timeout:g} s") from exc
    except OSError as exc:
        raise Unreachable(f"{who}: TCP connect failed ({exc.strerror or type(exc).__name__})") from exc
    transport = paramiko.Transport(sock)
    transport.set_log_channel(_SCAN_LOG)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    transport.get_security_options().key_types = (algorithm,)
    try:
        transport.start_client(timeout=timeout)
        if not transport.initial_kex_done:
            raise Timeout(f"{who}: the key exchange did not finish within {timeout:g} s")
        return transport.get_remote_server_key()
    except IncompatiblePeer:
        return None  # the server has no key of this type
    except paramiko.SSHException as exc:
        if str(exc).startswith("Error reading SSH protocol banner"):
            raise Unreachable(f"{who}: no SSH banner within {timeout:g} s") from exc
        raise Unreachable(f"{who}: SSH key exchange failed") from exc
    except (OSError, EOFError) as exc:
        raise Unreachable(f"{who}: the connection dropped during the key exchange") from exc
    finally:
        transport.close()
        sock.close()
