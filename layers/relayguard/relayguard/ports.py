"""The small interfaces the services depend on; adapters implement them, tests fake them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from relayguard.domain.deliverability import Collected, Deliverability
from relayguard.domain.entry import Access
from relayguard.domain.metrics import Datapoint
from relayguard.domain.models import Outcome
from relayguard.domain.operation import Operation
from relayguard.domain.rollout import Admission, Rollout, Tally
from relayguard.domain.server import Inventory, Server


@dataclass(frozen=True)
class CommandResult:
    """What one remote script returned. A non-zero ``rc`` is a value, not an exception."""

    rc: int
    stdout: str
    stderr: str
    duration: float
    #: How the server was reached (entry program or ``sh -s``); None where no transport says (fakes).
    access: Access | None = None


class Session(Protocol):
    """One authenticated SSH connection to one server, used for a whole job."""

    def run(self, op: Operation, timeout: float) -> CommandResult:
        """Run one RelayGuard operation: through the server's entry program, or where none is installed
        its script (domain.entry.script_of) with ``sh -s``; values travel on stdin, never on a command line."""
        ...

    def close(self) -> None: ...


class FixGate(Protocol):
    """The run's rollout policy, asked before each fix starts (:func:`relayguard.domain.rollout.admit`
    over the run's tally) and told how every admitted fix ended. The CLI keeps the tally in memory,
    the stack in the run's DynamoDB record."""

    def admit(self, server: Server) -> Admission:
        """Start, wait or skip. An in-process gate may block until it can answer start or skip."""
        ...

    def finished(self, server: Server, outcome: Outcome) -> None: ...


class Connector(Protocol):
    """Opens sessions; raises a :class:`relayguard.errors.TransportError` leaf on failure."""

    def connect(self, target: Server) -> Session: ...


class InventoryStore(Protocol):
    """Where the fleet inventory lives (an S3 object by default)."""

    def load(self) -> Inventory: ...


class JobQueue(Protocol):
    def send(self, queue_url: str, bodies: list[str], delay_seconds: int = 0) -> list[str]:
        """Send message bodies in batches; returns the bodies that could not be sent."""
        ...

    def return_now(self, queue_url: str, receipt_handle: str) -> bool:
        """Make a received message visible again at once, for the next poll; False if the queue refused."""
        ...


class RunStore(Protocol):
    def create(self, run_id: str, mode: str, trigger: str, total: int, started_at: str,
               *, rollout: Rollout | None = None) -> bool:
        """Open a run with its rollout limits (they travel with the run: a later parameter change does not
        touch a running run). False, with nothing written, when the run exists already (a retried planner)."""
        ...

    def record(self, run_id: str, server: str, outcome: str,
               mail: Mapping[str, int] | None = None) -> RunProgress | None:
        """Count one finished server once (a redelivered job does not count twice), with its deliverability
        summary (``domain.mailreport.SUMMARY_KEYS``) added to the run's ``mail`` totals.

        None when the run has no record (expired, or a hand-made job): there is nothing to count into.
        """
        ...

    def progress(self, run_id: str) -> RunProgress: ...

    def claim_digest(self, run_id: str) -> bool:
        """True exactly once per run, for the caller that must publish the digest."""
        ...

    def open_runs(self) -> list[RunProgress]:
        """Runs whose digest has not been claimed yet (runs whose record has expired are dropped)."""
        ...

    def close(self, progress: RunProgress, lost: int) -> RunProgress | None:
        """Count ``lost`` servers of the run failed at once, completing it, unless it has moved on since
        ``progress`` was read or its digest is claimed (then None)."""
        ...

    # -- the run's fix gate (services.RunGate) --------------------------------------------------

    def reservation(self, run_id: str, server: str) -> str | None:
        """This server's fix in the run: None (never admitted), ``running`` or ``done``."""
        ...

    def reserve(self, run_id: str, server: str, seen: Tally) -> bool:
        """Admit the server's fix (``fix_started`` + 1, a ``running`` reservation) only if the run's fix
        counters are still those of ``seen`` and the server holds no reservation; False otherwise."""
        ...

    def release(self, run_id: str, server: str, failed: bool) -> None:
        """End the server's ``running`` reservation (``fix_finished`` + 1, ``fix_failed`` + 1 if ``failed``);
        nothing when it holds none or it has ended already."""
        ...

    def claim_stop(self, run_id: str, reason: str) -> bool:
        """Mark the run stopped for ``reason``: True exactly once per run, for the caller that announces it."""
        ...


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    mode: str
    trigger: str
    total: int
    completed: int
    counts: dict[str, int]
    started_at: str
    rollout: Rollout = field(default_factory=Rollout)
    fix_started: int = 0
    fix_finished: int = 0
    fix_failed: int = 0
    stopped: str = ""  # why the run stopped starting fixes (a claimed stop), or ""
    #: Deliverability summaries added up over the run's servers; ``servers`` counts those that had one.
    mail: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.completed >= self.total

    @property
    def tally(self) -> Tally:
        """The run's fixes so far, as the rollout policy sees them."""
        return Tally(total=self.total, started=self.fix_started, finished=self.fix_finished, failed=self.fix_failed)


class RecordStore(Protocol):
    """Where every job's whole record (``domain.evidence.record_document``) is written once: a versioned
    S3 bucket in the stack, a directory for the CLI's ``--record-dir``."""

    def put(self, document: dict[str, Any]) -> str:
        """Write ``document`` under its own new key (``domain.evidence.record_key``) and return where it is
        (``s3://bucket/key`` or a file path). Never overwrites: raises
        :class:`relayguard.errors.RecordExists` if the key is taken."""
        ...

    def get(self, location: str) -> dict[str, Any]:
        """The document at a location :meth:`put` returned."""
        ...


class RunRecords(Protocol):
    """Where a run's records are read back from for its fleet report (issue 15): the records bucket, a
    ``--record-dir``."""

    def records(self, run_id: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every record of the run as (location, document), one at a time; ``None``: every record the store
        holds (a directory; the bucket refuses). Raises :class:`relayguard.errors.RecordError`."""
        ...


class ReportPages(Protocol):
    """Where a fleet report page goes: ``reports/<run_id>.html`` in the records bucket, the CLI's ``--html``."""

    def write(self, run_id: str | None, html: str) -> str:
        """Store the run's page, replacing an earlier one (a page is derived, the records are the evidence);
        returns where it is."""
        ...


class RunReports(RunRecords, ReportPages, Protocol):
    """Both in one place: the stack's records bucket, where the worker writes each run's page at its end."""


@dataclass(frozen=True)
class ServerState:
    server: str
    outcome: str
    announced: str
    updated_at: str
    mode: str
    #: Where the latest job's whole record is ("" before records existed).
    record: str = ""
    #: The change of that record not yet announced ("" when nothing is owed): set before the SNS publish,
    #: cleared after it, so a failed publish is retried by the server's next job (services.Publisher.flush).
    pending: str = ""
    #: The deliverability summary line last announced ("" before any): a server-deliverability message goes
    #: out only when it changes (domain.notify.mail_change).
    mail: str = ""


class StateStore(Protocol):
    def get(self, server: str) -> ServerState | None: ...

    def put(self, state: ServerState, result: dict[str, Any] | None = None) -> None: ...


class LockStore(Protocol):
    def acquire(self, server: str, owner: str, ttl_seconds: int) -> bool: ...

    def release(self, server: str, owner: str) -> None: ...


@dataclass(frozen=True)
class Notification:
    subject: str
    document: dict[str, Any]
    text: str
    attributes: dict[str, str]


class Notifier(Protocol):
    def publish(self, notification: Notification) -> None: ...


class MetricSink(Protocol):
    """Where metric data points go: CloudWatch (EMF lines through Powertools) in the functions."""

    def emit(self, points: Iterable[Datapoint]) -> None: ...


class SecretStore(Protocol):
    def ssh_key(self) -> str: ...


class DeliverabilityJudge(Protocol):
    """Judges what a server collected against DNS (issue 20); bounded in time, never raises for DNS trouble."""

    def judge(self, collected: Collected) -> Deliverability: ...


class DeadLetterQueues(Protocol):
    """A stack's job queues and their dead-letter queues, for ``relayguard redrive`` (domain/redrive.py)."""

    def stack_outputs(self, stack: str) -> dict[str, str]: ...

    def waiting(self, queue_url: str) -> int:
        """About how many messages wait in the queue (SQS counts approximately)."""
        ...

    def start_move(self, source_url: str, destination_url: str) -> tuple[str, str]:
        """Start moving every message of ``source_url`` to ``destination_url``; (the task handle, the source ARN)."""
        ...

    def copy(self, source_url: str, destination_url: str, limit: int | None) -> int:
        """Receive, send and delete until ``source_url`` is empty or ``limit`` are copied; how many were."""
        ...
