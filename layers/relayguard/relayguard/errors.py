"""RelayGuard's exceptions: one root, one leaf per outcome a caller decides on differently."""

from __future__ import annotations


class RelayGuardError(Exception):
    """Root of every error RelayGuard raises on purpose."""


class TransportError(RelayGuardError):
    """The server could not be reached or talked to; ``outcome`` names the result-record outcome."""

    outcome = "unreachable"


class Unreachable(TransportError):
    """TCP connect or SSH banner failed."""

    outcome = "unreachable"


class Timeout(TransportError):
    """Authentication or a remote command ran past its deadline."""

    outcome = "timeout"


class HostKeyMismatch(TransportError):
    """The server presented a key other than the pinned one: possibly an attack."""

    outcome = "host-key-mismatch"


class HostKeyUnknown(TransportError):
    """No key is pinned for this server: an inventory gap, never trusted on first use."""

    outcome = "host-key-unknown"


class AuthFailed(TransportError):
    """The server refused our key."""

    outcome = "auth-failed"


class FixDeferred(RelayGuardError):
    """The run's rollout policy says to wait (a canary or the error budget still running): nothing was
    changed; ask again later (the worker requeues the job with a delay)."""


class InventoryError(RelayGuardError):
    """The inventory file is malformed; the message names the entry and the field."""


class InvalidInput(RelayGuardError):
    """A value that would reach a remote command failed validation."""


class RecordError(RelayGuardError):
    """A job's record could not be written or read; the job is not done until its record is."""


class RecordExists(RecordError):
    """A record is already stored under this key: records are written once, never overwritten."""


class EntryRefused(RelayGuardError):
    """The server's entry program refused an operation: an older program that lacks it (``relayguard
    enroll`` upgrades it), or a value it does not accept. Nothing ran."""
