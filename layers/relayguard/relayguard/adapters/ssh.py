"""The SSH transport: paramiko behind the :class:`~relayguard.ports.Connector` and ``Session`` ports.

Host keys are pinned per target and checked with ``RejectPolicy``; nothing is ever read from
``~/.ssh`` or an agent. Every paramiko and socket failure leaves this module as a
:class:`relayguard.errors.TransportError` leaf chained to its cause. Messages name the target and
never carry key material or script text.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import logging
import select
import shlex
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.pkey import UnknownKeyType
from paramiko.ssh_exception import IncompatiblePeer

from relayguard.errors import (
    AuthFailed,
    HostKeyMismatch,
    HostKeyUnknown,
    RelayGuardError,
    Timeout,
    TransportError,
    Unreachable,
)
from relayguard.ports import CommandResult, Target

# paramiko's transport thread logs every failed handshake as an ERROR with a traceback. This module turns
# those failures into outcomes (unreachable, timeout, ...), so the tracebacks are only noise in CloudWatch
# and on an operator's terminal.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)

#: The only remote command lines this module ever sends; scripts travel on stdin.
SH_ARGV = ("sh", "-s")
SUDO_SH_ARGV = ("sudo", "-n", "sh", "-s")

_CHUNK = 32768
# The read loop sleeps in poll() on the channel's fileno(), which paramiko signals when stdout or
# stderr data or EOF arrives, so output is handled the moment it lands (no polling latency per round
# trip). The bound applies only while stdin waits for window space or EOF waits for the exit status.
_IDLE_MAX = 0.02


def _describe(target: Target) -> str:
    return f"{target.name} ({target.host}:{target.port})"


def _known_hosts_name(host: str, port: int) -> str:
    """The name paramiko and OpenSSH look a host up by: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def _public_key(line: str) -> paramiko.PKey:
    """Parse an OpenSSH public key line (``type base64 [comment]``); ``ValueError`` if it is not one."""
    fields = line.split()
    if len(fields) < 2:
        raise ValueError("expected 'type base64'")
    try:
        data = base64.b64decode(fields[1], validate=True)
        return paramiko.PKey.from_type_string(fields[0], data)
    except (binascii.Error, paramiko.SSHException, UnknownKeyType, ValueError) as exc:
        raise ValueError(f"unusable {fields[0]} key") from exc


class _Pump:
    """Feeds one channel's stdin and drains its stdout and stderr, never blocking on any of them."""

    def __init__(self, chan: paramiko.Channel, stdin: bytes) -> None:
        self._chan = chan
        self._pending = memoryview(stdin)
        self._writing = True
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        if not stdin:
            self._stop_writing()

    def step(self) -> bool:
        """Move whatever can move now; report whether anything did."""
        fed = self._feed()
        return self.drain() or fed

    @property
    def writing(self) -> bool:
        return self._writing

    def finished(self) -> bool:
        # exit-status can arrive before the last output, so the end is EOF plus a status (or a close).
        chan = self._chan
        return bool(chan.closed or (chan.eof_received and chan.exit_status_ready()))

    def drain(self) -> bool:
        moved = False
        while self._chan.recv_ready():
            self._out.append(self._chan.recv(_CHUNK))
            moved = True
        while self._chan.recv_stderr_ready():
            self._err.append(self._chan.recv_stderr(_CHUNK))
            moved = True
        return moved

    def stdout(self) -> str:
        return b"".join(self._out).decode("utf-8", errors="replace")

    def stderr(self) -> str:
        return b"".join(self._err).decode("utf-8", errors="replace")

    def _feed(self) -> bool:
        if not self._writing:
            return False
        if self._chan.exit_status_ready():
            self._writing = False
            return False
        if not self._chan.send_ready():
            return False
        try:
            sent = self._chan.send(bytes(self._pending[:_CHUNK]))
        except OSError:
            # The far side stopped reading (the script exited early): nothing left to feed.
            self._writing = False
            return False
        self._pending = self._pending[sent:]
        if not self._pending:
            self._stop_writing()
        return sent > 0

    def _stop_writing(self) -> None:
        self._chan.shutdown_write()
        self._writing = False


class ParamikoSession:
    """One authenticated SSH connection; every :meth:`run` opens a channel on it."""

    def __init__(self, client: paramiko.SSHClient, target: Target, *, sudo: bool = False) -> None:
        self._client = client
        self._target = target
        self._command = shlex.join(SUDO_SH_ARGV if sudo else SH_ARGV)
        self._closed = False

    @property
    def target(self) -> Target:
        return self._target

    def run(self, script: str, timeout: float) -> CommandResult:
        """Run ``script`` with ``sh -s``; past ``timeout`` seconds close the channel and raise ``Timeout``.

        A non-zero exit is returned as ``rc``; a command ended by a signal reports ``rc == -1``.
        """
        if self._closed:
            raise RuntimeError(f"session to {_describe(self._target)} is closed")
        started = time.monotonic()
        deadline = started + timeout
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise Unreachable(f"connection to {_describe(self._target)} was lost")
        try:
            chan = transport.open_session(timeout=max(deadline - time.monotonic(), 0.001))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if time.monotonic() >= deadline:
                raise Timeout(f"{_describe(self._target)}: no channel within {timeout:g} s") from exc
            raise Unreachable(f"could not open a channel to {_describe(self._target)}") from exc
        try:
            return self._exchange(chan, script.encode(), started, deadline, timeout)
        finally:
            chan.close()

    def _exchange(
        self, chan: paramiko.Channel, stdin: bytes, started: float, deadline: float, timeout: float
    ) -> CommandResult:
        self._start(chan, deadline, timeout)
        pump = _Pump(chan, stdin)
        # poll(), not select(): a busy worker may hold file descriptors above select's 1024 limit.
        ready = select.poll()
        ready.register(chan.fileno(), select.POLLIN)
        while True:
            moved = pump.step()
            if pump.finished():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                chan.close()
                raise Timeout(f"{_describe(self._target)}: command ran past its {timeout:g} s deadline")
            if moved:
                continue
            if chan.eof_received:
                # After EOF the fileno stays readable; what is missing now is the exit status.
                chan.status_event.wait(min(remaining, _IDLE_MAX))
            else:
                # Only a stdin still waiting for window space needs a bounded nap; otherwise sleep
                # until output, EOF or the deadline (a 20 ms cap here cost ~90 wake-ups per probe).
                ready.poll((min(remaining, _IDLE_MAX) if pump.writing else remaining) * 1000)
        pump.drain()
        rc = chan.recv_exit_status()
        transport = chan.get_transport()
        if rc == -1 and (transport is None or not transport.is_active()):
            raise Unreachable(f"connection to {_describe(self._target)} was lost during the command")
        return CommandResult(rc=rc, stdout=pump.stdout(), stderr=pump.stderr(), duration=time.monotonic() - started)

    def _start(self, chan: paramiko.Channel, deadline: float, timeout: float) -> None:
        # Channel.exec_command waits for the server's reply without a timeout; closing the
        # channel from a timer is the only way to bound that wait.
        watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), chan.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.exec_command(self._command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if time.monotonic() >= deadline:
                raise Timeout(f"{_describe(self._target)}: command did not start within {timeout:g} s") from exc
            raise Unreachable(f"{_describe(self._target)} refused to start the command") from exc
        finally:
            watchdog.cancel()

    def close(self) -> None:
        """Close the connection; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._client.close()

    def __enter__(self) -> ParamikoSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ParamikoConnector:
    """Opens one :class:`ParamikoSession` per :meth:`connect`, trusting only the target's pinned keys."""

    def __init__(
        self,
        private_key: paramiko.PKey,
        *,
        connect_timeout: float = 10,
        banner_timeout: float = 10,
        auth_timeout: float = 10,
        sudo: bool = False,
    ) -> None:
        self._key = private_key
        self.connect_timeout = connect_timeout
        self.banner_timeout = banner_timeout
        self.auth_timeout = auth_timeout
        self.sudo = sudo

    def __repr__(self) -> str:
        return (
            f"ParamikoConnector(key_type={self._key.get_name()!r}, connect_timeout={self.connect_timeout}, "
            f"banner_timeout={self.banner_timeout}, auth_timeout={self.auth_timeout}, sudo={self.sudo})"
        )

    def connect(self, target: Target) -> ParamikoSession:
        """Connect and authenticate; raise a ``TransportError`` leaf naming ``target`` on failure."""
        who = _describe(target)
        pins = self._pinned_keys(target)
        try:
            sock = socket.create_connection((target.host, target.port), timeout=self.connect_timeout)
        except TimeoutError as exc:
            raise Unreachable(f"{who}: TCP connect timed out after {self.connect_timeout:g} s") from exc
        except OSError as exc:
            raise Unreachable(f"{who}: TCP connect failed ({exc.strerror or type(exc).__name__})") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        client = paramiko.SSHClient()
        name = _known_hosts_name(target.host, target.port)
        for key in pins:
            client.get_host_keys().add(name, key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                pkey=self._key,
                sock=sock,
                banner_timeout=self.banner_timeout,
                auth_timeout=self.auth_timeout,
                look_for_keys=False,
                allow_agent=False,
            )
        except Exception as exc:
            client.close()
            sock.close()
            translated = self._translate(exc, who)
            if translated is None:
                raise
            raise translated from exc
        except BaseException:
            client.close()
            sock.close()
            raise
        return ParamikoSession(client, target, sudo=self.sudo)

    @staticmethod
    def _pinned_keys(target: Target) -> list[paramiko.PKey]:
        who = _describe(target)
        if not target.host_keys:
            raise HostKeyUnknown(f"{who}: no host key is pinned")
        keys: list[paramiko.PKey] = []
        for index, line in enumerate(target.host_keys):
            try:
                keys.append(_public_key(line))
            except ValueError as exc:
                raise HostKeyUnknown(f"{who}: pinned host key #{index} is not a usable OpenSSH public key") from exc
        return keys

    def _translate(self, exc: Exception, who: str) -> TransportError | None:
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyMismatch(f"{who}: the server's host key does not match the pinned key")
        if isinstance(exc, paramiko.AuthenticationException):
            if "timeout" in str(exc).lower():
                return Timeout(f"{who}: authentication took longer than {self.auth_timeout:g} s")
            return AuthFailed(f"{who}: the server refused our key")
        if isinstance(exc, paramiko.SSHException):
            return self._translate_negotiation(str(exc), who)
        if isinstance(exc, (OSError, EOFError)):
            return Unreachable(f"{who}: the connection dropped during SSH negotiation")
        return None

    def _translate_negotiation(self, text: str, who: str) -> TransportError:
        # paramiko tells these apart only by message: RejectPolicy's and Transport._check_banner's.
        if "not found in known_hosts" in text:
            return HostKeyUnknown(f"{who}: no host key is pinned")
        if text.startswith("Error reading SSH protocol banner"):
            return Unreachable(f"{who}: no SSH banner within {self.banner_timeout:g} s")
        return Unreachable(f"{who}: SSH negotiation failed")


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
    want = _known_hosts_name(host, port).lower()
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
    key = _public_key(f"{key_type} {data}")
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
