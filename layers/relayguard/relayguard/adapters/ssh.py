"""The SSH transport: paramiko behind the :class:`~relayguard.ports.Connector` and ``Session`` ports.

Key handling (private keys, known_hosts, key scans) is in :mod:`relayguard.adapters.ssh_keys`.

Host keys are pinned per target and checked with ``RejectPolicy``; nothing is ever read from
``~/.ssh`` or an agent. Every paramiko and socket failure leaves this module as a
:class:`relayguard.errors.TransportError` leaf chained to its cause. Messages name the target and
never carry key material or script text.
"""

from __future__ import annotations

import logging
import select
import shlex
import socket
import threading
import time
from types import TracebackType

import paramiko

from relayguard.adapters.ssh_keys import public_key
from relayguard.domain.entry import ENTRY_VERSION, UNRESTRICTED, command_of, read_header, script_of, stdin_of
from relayguard.domain.hostkeys import known_hosts_name
from relayguard.domain.operation import Operation
from relayguard.domain.server import Server
from relayguard.errors import (
    AuthFailed,
    EntryRefused,
    HostKeyMismatch,
    HostKeyUnknown,
    Timeout,
    TransportError,
    Unreachable,
)
from relayguard.ports import CommandResult

# paramiko's transport thread logs every failed handshake as an ERROR with a traceback. This module turns
# those failures into outcomes (unreachable, timeout, ...), so the tracebacks are only noise in CloudWatch
# and on an operator's terminal.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)

#: The only remote command lines this module ever sends besides the entry program's (domain.entry.command_of,
#: fixed words and an operation name); scripts and values travel on stdin.
SH_ARGV = ("sh", "-s")
SUDO_SH_ARGV = ("sudo", "-n", "sh", "-s")

_CHUNK = 32768
# The read loop sleeps in poll() on the channel's fileno(), which paramiko signals when stdout or
# stderr data or EOF arrives, so output is handled the moment it lands (no polling latency per round
# trip). The bound applies only while stdin waits for window space or EOF waits for the exit status.
_IDLE_MAX = 0.02


def _describe(target: Server) -> str:
    return f"{target.name} ({target.host}:{target.port})"


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
    """One authenticated SSH connection; every :meth:`run` opens a channel on it.

    The first operation goes to the server's entry program (domain/entry.py). Where the program is not
    installed (no header: ``sh`` says 127, ``sudo`` 1) that operation and the rest of the session take
    the unrestricted path, the same body with ``sh -s``, and every result says so (``access``)."""

    def __init__(self, client: paramiko.SSHClient, target: Server, *, sudo: bool = False) -> None:
        self._client = client
        self._target = target
        self._sudo = sudo
        self._command = shlex.join(SUDO_SH_ARGV if sudo else SH_ARGV)
        self._closed = False
        self._shell: bool | None = None  # None: not known yet whether the entry program is installed

    @property
    def target(self) -> Server:
        return self._target

    def run(self, op: Operation, timeout: float) -> CommandResult:
        """Run one operation; past ``timeout`` seconds close the channel and raise ``Timeout``. A refusal
        by the entry program raises :class:`EntryRefused`; a non-zero exit of the body is ``rc``."""
        deadline = time.monotonic() + timeout
        if not self._shell:
            res = self._run(command_of(op, self._sudo), stdin_of(op), timeout)
            access, refusal, rest = read_header(res.stdout)
            if access is not None:
                self._shell = False
                if refusal:
                    outdated = " (entry-program-outdated: run relayguard enroll)" if (
                        access.version or 0) < ENTRY_VERSION else ""
                    raise EntryRefused(f"{_describe(self._target)}: the entry program version {access.version} "
                                       f"refused {op.name}: {refusal}{outdated}")
                return CommandResult(res.rc, rest, res.stderr, res.duration, access)
            if self._shell is False or res.rc == 0:
                # The program answered before in this session, or something else answered: not ours to judge.
                return res
            self._shell = True
        res = self._run(self._command, script_of(op).encode(), max(deadline - time.monotonic(), 0.001))
        return CommandResult(res.rc, res.stdout, res.stderr, res.duration, UNRESTRICTED)

    def run_script(self, script: str, timeout: float) -> CommandResult:
        """Run ``script`` with ``sh -s`` (or ``sudo -n sh -s``), the unrestricted path."""
        return self._run(self._command, script.encode(), timeout)

    def _run(self, command: str, stdin: bytes, timeout: float) -> CommandResult:
        """Run ``command`` with ``stdin``; past ``timeout`` seconds close the channel and raise ``Timeout``.

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
            return self._exchange(chan, command, stdin, started, deadline, timeout)
        finally:
            chan.close()

    def _exchange(  # noqa: PLR0917 - one private call site, which names nothing twice
        self, chan: paramiko.Channel, command: str, stdin: bytes, started: float, deadline: float, timeout: float
    ) -> CommandResult:
        self._start(chan, command, deadline, timeout)
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

    def _start(self, chan: paramiko.Channel, command: str, deadline: float, timeout: float) -> None:
        # Channel.exec_command waits for the server's reply without a timeout; closing the
        # channel from a timer is the only way to bound that wait.
        watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), chan.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.exec_command(command)
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

    def connect(self, target: Server) -> ParamikoSession:
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
        name = known_hosts_name(target.host, target.port)
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
    def _pinned_keys(target: Server) -> list[paramiko.PKey]:
        who = _describe(target)
        if not target.host_keys:
            raise HostKeyUnknown(f"{who}: no host key is pinned")
        keys: list[paramiko.PKey] = []
        for index, line in enumerate(target.host_keys):
            try:
                keys.append(public_key(line))
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
