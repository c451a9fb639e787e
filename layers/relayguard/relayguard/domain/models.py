"""Values the pure core works on: what a server looked like, what to do, what happened."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Generation(enum.StrEnum):
    """Which relay mechanism a cPanel server has, as :func:`relayguard.domain.decide.detect_generation` finds it."""

    MODERN = "modern"  # cPanel 11.52+: the popbeforesmtp Tweak Setting gates relaying
    LEGACY = "legacy"  # cPanel < 11.52: the Antirelayd driver's list opens relaying
    UNKNOWN = "unknown"  # version and paths disagree: report, change nothing
    NONE = "none"  # not a cPanel server


class Outcome(enum.StrEnum):
    """How a job on one server ended (docs/operations.md, Troubleshooting, lists each)."""

    COMPLIANT = "compliant"
    REMEDIATED = "remediated"
    NONCOMPLIANT = "noncompliant"
    NOT_CPANEL = "not-cpanel"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    HOST_KEY_MISMATCH = "host-key-mismatch"
    HOST_KEY_UNKNOWN = "host-key-unknown"
    AUTH_FAILED = "auth-failed"
    PERMISSION_DENIED = "permission-denied"
    SKIPPED = "skipped"  # exposed, left unfixed by the run's rollout limits (reason: max-changes, error-budget, ...)
    EXCLUDED = "excluded"  # scanned and reported, never changed: the inventory excludes it from fixing
    REVERTED = "reverted"  # an operator's revert restored the state before RelayGuard's fix


#: Outcomes after which the job is done and nothing is wrong (CLI exit 0).
OK_OUTCOMES = frozenset({Outcome.COMPLIANT, Outcome.REMEDIATED, Outcome.NOT_CPANEL})
#: Outcomes that leave a server as it was by design, not by failure: exposure may remain (CLI exit 1 when
#: it does, like ``noncompliant``), but nothing went wrong.
HELD_OUTCOMES = frozenset({Outcome.NONCOMPLIANT, Outcome.SKIPPED, Outcome.EXCLUDED, Outcome.REVERTED})
#: Outcomes where something went wrong: the digest's ``failed``, the worker's ``Failed`` metric, CLI exit 2.
FAILURE_OUTCOMES = frozenset(Outcome) - OK_OUTCOMES - HELD_OUTCOMES


class Mode(enum.StrEnum):
    """Audit reports what a fix would change; fix changes it."""

    AUDIT = "audit"
    FIX = "fix"


@dataclass(frozen=True)
class Policy:
    """How far a job may go.

    ``disable_tracker`` also turns off cPanel's RecentAuthedMailIpTracker on modern servers. Its side
    effect: POP/IMAP users lose the greylisting and rate-limit bypass the list gives them, and WHM
    hides the Tweak Setting. Off by default: closing the gate alone stops the relaying.
    """

    mode: Mode = Mode.AUDIT
    disable_tracker: bool = False
    #: The inventory excludes this server from fixing: it is probed and reported ``excluded``, never changed.
    excluded: bool = False


@dataclass(frozen=True)
class ListFile:
    """One relay or exception list as found on the server."""

    path: str
    kind: str  # "file", "symlink" or "missing"
    target: str = ""
    lines: tuple[str, ...] = ()

    @property
    def entries(self) -> tuple[str, ...]:
        """The list's lines without blanks and comments, stripped."""
        return tuple(line.strip() for line in self.lines if line.strip() and not line.lstrip().startswith("#"))


#: Spam signals are counted over the last hour: cPanel's send limits are hourly ("max emails per hour",
#: "max defers and failures per hour"), and an alert-triggered job wants what is happening now, not
#: yesterday. An hour of a busy server's log is also small enough to read on every probe.
SIGNALS_WINDOW_MINUTES = 60


@dataclass(frozen=True)
class Signals:
    """Spam signals counted in Exim's main log over the window that ends when the probe ran (domain/probe.py).

    A count is None when it was not measured: no readable ``/var/log/exim_mainlog``, or no ``date -d`` on
    the server to compute the window's start.
    """

    window_minutes: int = SIGNALS_WINDOW_MINUTES
    #: The window's start as the server's clock writes log timestamps (``YYYY-MM-DD HH:MM:SS``); "" if unknown.
    since: str = ""
    send_limit_hits: int | None = None
    relay_rejects: int | None = None
    #: The probe's line bound ended inside the window: the counts are lower bounds.
    partial: bool = False


@dataclass(frozen=True)
class Finding:
    """Every fact one read-only probe collected (cpanel.md §5), already parsed."""

    complete: bool
    uid: int | None = None
    hostname: str = ""
    has_timeout: bool = False
    version: str = ""
    version_present: bool = False
    libexec_tailwatchd: bool = False
    bin_tailwatchd: bool = False
    tracker_module: bool = False
    antirelayd_module: bool = False
    config: Mapping[str, str] = field(default_factory=dict)
    gate_file: bool = False
    senders_warning_file: bool = False
    markers: frozenset[str] = frozenset()
    lists: Mapping[str, ListFile] = field(default_factory=dict)
    exceptions: Mapping[str, ListFile] = field(default_factory=dict)
    tailwatchd_status_rc: int | None = None
    tailwatchd_status: str = ""
    exim_status_rc: int | None = None
    exim_status: str = ""
    exim_bv_rc: int | None = None
    queue: int | None = None
    reject_text: str = ""
    local_domain: str = ""
    smtp_restrictions: str = ""
    indicators: Mapping[str, int] = field(default_factory=dict)
    signals: Signals = Signals()

    @property
    def exim_running(self) -> bool:
        """Whether ``restartsrv_exim --status`` reported Exim up during the probe."""
        return self.exim_status_rc == 0


class StepName(enum.StrEnum):
    """The name of every step a job records: its round trips and the remote steps inside them."""

    PROBE = "probe"
    DISABLE = "disable"
    FINISH = "finish"
    SET_TWEAK = "set-tweak-popbeforesmtp-0"
    DISABLE_TRACKER = "disable-tracker"
    DISABLE_ANTIRELAYD = "disable-antirelayd"
    SET_SKIPANTIRELAYD = "set-skipantirelayd"
    RESTART_TAILWATCHD = "restart-tailwatchd"
    TRUNCATE_RELAYHOSTS = "truncate-relayhosts"
    TRUNCATE_RELAYHOSTSUSERS = "truncate-relayhostsusers"
    UPDATE_EXIM_REJECTS = "update-exim-rejects"
    RESTART_EXIM = "restart-exim"
    RESTART_EXIM_HARD = "restart-exim-hard"
    EXIM_STATUS = "exim-status"
    EXIM_BV = "exim-bv"
    RELAY_PROBE = "relay-probe"
    # The post-fix proof (domain/proof.py); AUTH_EHLO and ALWAYSRELAY_PROBE get a suffix: the port, the index.
    EXIM_PORTS = "exim-ports"
    AUTH_EHLO = "auth-ehlo"
    AUTH_RELAY_PROBE = "auth-relay-probe"
    ALWAYSRELAY_PROBE = "alwaysrelay-probe"
    WRITE_RECORD = "write-revert-record"
    REVERT = "revert"
    SET_TWEAK_ON = "set-tweak-popbeforesmtp-1"
    ENABLE_TRACKER = "enable-tracker"
    ENABLE_ANTIRELAYD = "enable-antirelayd"
    UNSET_SKIPANTIRELAYD = "unset-skipantirelayd"
    RESTORE_RECENT_AUTHED_MAIL_IPS = "restore-recent-authed-mail-ips"
    RESTORE_RECENT_AUTHED_MAIL_IPS_USERS = "restore-recent-authed-mail-ips-users"
    RESTORE_RELAYHOSTS = "restore-relayhosts"
    RESTORE_RELAYHOSTSUSERS = "restore-relayhostsusers"
    ADD_PROBE_IP = "add-probe-ip"
    REMOVE_PROBE_IP = "remove-probe-ip"


@dataclass(frozen=True)
class Step:
    """One planned remote action, for the record and for rendering."""

    name: StepName
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """What a fix runs on one server: the steps, the lists to truncate and the relay-probe values to verify with."""

    generation: Generation
    exposed: bool
    steps: tuple[Step, ...] = ()
    truncate: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    verify_ip: str = ""
    verify_sender: str = ""

    @property
    def empty(self) -> bool:
        """True when the plan writes nothing and restarts nothing."""
        return not self.steps and not self.truncate


@dataclass(frozen=True)
class StepResult:
    """One step as it ran: a round trip or a step inside a script, with its exit status and output."""

    name: str
    rc: int | None
    duration: float
    stdout: str = ""
    stderr: str = ""

    def to_json(self) -> dict[str, Any]:
        """The step as it appears in a result record."""
        return {"name": str(self.name), "rc": self.rc, "duration": round(self.duration, 3),
                "stdout": self.stdout, "stderr": self.stderr}
