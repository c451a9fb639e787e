"""Hand-written fakes for RelayGuard's ports: no sockets, no subprocess, scripted answers only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from relayguard.domain.deliverability import Collected, Deliverability
from relayguard.domain.entry import script_of
from relayguard.domain.evidence import record_key
from relayguard.domain.metrics import Datapoint
from relayguard.domain.models import Outcome
from relayguard.domain.operation import Operation
from relayguard.domain.rollout import Admission, Rollout, Tally
from relayguard.domain.server import Inventory, Server
from relayguard.errors import RecordError, RecordExists, TransportError
from relayguard.events import SpamAlert
from relayguard.ports import CommandResult, Notification, RunProgress, ServerState
from relayguard.services import UrgentJobs


class FakeSession:
    """Answers each ``run`` with the next scripted :class:`CommandResult` (or raises the next scripted
    transport error) and records every operation, and the script the unrestricted path would send."""

    def __init__(self, results: Iterable[CommandResult | TransportError] = ()) -> None:
        self._results = list(results)
        self.operations: list[Operation] = []
        self.scripts: list[str] = []
        self.timeouts: list[float] = []
        self.closed = False

    def run(self, op: Operation, timeout: float) -> CommandResult:
        self.operations.append(op)
        self.scripts.append(script_of(op))
        self.timeouts.append(timeout)
        if not self._results:
            raise AssertionError(f"unexpected script #{len(self.scripts)}: no scripted result left")
        answer = self._results.pop(0)
        if isinstance(answer, TransportError):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True

    def assert_all_consumed(self) -> None:
        assert not self._results, f"{len(self._results)} scripted result(s) never requested"


class FakeConnector:
    """Hands out one :class:`FakeSession`, or raises the given transport error leaf."""

    def __init__(self, session: FakeSession | None = None, error: TransportError | None = None) -> None:
        self.session = session or FakeSession()
        self.error = error
        self.targets: list[Server] = []

    def connect(self, target: Server) -> FakeSession:
        self.targets.append(target)
        if self.error is not None:
            raise self.error
        return self.session


class FakeFleetConnector:
    """Hands out each server's own :class:`FakeSession`, by server name, to jobs on many threads."""

    def __init__(self, sessions: dict[str, FakeSession]) -> None:
        self.sessions = sessions

    def connect(self, target: Server) -> FakeSession:
        return self.sessions[target.name]


def ok(stdout: str, stderr: str = "", rc: int = 0) -> CommandResult:
    """A finished remote script (a non-zero ``rc`` stays a value)."""
    return CommandResult(rc=rc, stdout=stdout, stderr=stderr, duration=0.5)


class FakeGate:
    """A run's rollout gate that gives the scripted answers in turn and records what it was told."""

    def __init__(self, *answers: Admission) -> None:
        self._answers = list(answers)
        self.asked: list[str] = []
        self.ended: list[tuple[str, Outcome]] = []

    def admit(self, server: Server) -> Admission:
        self.asked.append(server.name)
        return self._answers.pop(0)

    def finished(self, server: Server, outcome: Outcome) -> None:
        self.ended.append((server.name, outcome))


class FakeBannerCheck:
    """An SMTP banner check that answers ``code`` for every host and records the hosts asked."""

    def __init__(self, code: int | None = 220) -> None:
        self.code = code
        self.asked: list[str] = []

    def __call__(self, host: str) -> int | None:
        self.asked.append(host)
        return self.code


# -- serverless ports ---------------------------------------------------------------------------


class FakeInventoryStore:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.loads = 0

    def load(self) -> Inventory:
        self.loads += 1
        return self.inventory


class FakeJobQueue:
    def __init__(self, refuse: int = 0) -> None:
        self.sent: dict[str, list[str]] = {}
        self.delays: list[int] = []
        self.returned: list[tuple[str, str]] = []
        self.refuse = refuse

    def send(self, queue_url: str, bodies: list[str], delay_seconds: int = 0) -> list[str]:
        accepted, refused = bodies[self.refuse :], bodies[: self.refuse]
        self.sent.setdefault(queue_url, []).extend(accepted)
        self.delays += [delay_seconds] * len(accepted)
        return refused

    def return_now(self, queue_url: str, receipt_handle: str) -> bool:
        self.returned.append((queue_url, receipt_handle))
        return True


class FakeRunStore:
    """Runs in memory. ``conflicts`` makes that many of the next :meth:`reserve` calls lose, as if another
    worker had changed the run's fix counters after the gate read them (it does change them: +1 started)."""

    def __init__(self, conflicts: int = 0) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.done: set[tuple[str, str]] = set()
        self.digests: list[str] = []
        self.reservations: dict[tuple[str, str], str] = {}
        self.conflicts = conflicts

    def create(self, run_id: str, mode: str, trigger: str, total: int, started_at: str,
               *, rollout: Rollout | None = None) -> bool:
        if run_id in self.runs:
            return False
        self.runs[run_id] = {"mode": mode, "trigger": trigger, "total": total, "counts": {}, "started_at": started_at,
                             "rollout": rollout or Rollout(), "fixes": Tally(total), "stopped": ""}
        return True

    def record(self, run_id: str, server: str, outcome: str,
               mail: Mapping[str, int] | None = None) -> RunProgress | None:
        if run_id not in self.runs:
            return None
        if (run_id, server) not in self.done:
            self.done.add((run_id, server))
            counts = self.runs[run_id]["counts"]
            counts[outcome] = counts.get(outcome, 0) + 1
            totals = self.runs[run_id].setdefault("mail", {})
            for key, value in {**(mail or {}), **({"servers": 1} if mail else {})}.items():
                if value:
                    totals[key] = totals.get(key, 0) + value
        return self.progress(run_id)

    def progress(self, run_id: str) -> RunProgress:
        run = self.runs[run_id]
        fixes: Tally = run["fixes"]
        return RunProgress(run_id, run["mode"], run["trigger"], run["total"], sum(run["counts"].values()),
                           dict(run["counts"]), run["started_at"], run["rollout"], fixes.started, fixes.finished,
                           fixes.failed, run["stopped"], dict(run.get("mail", {})))

    def reservation(self, run_id: str, server: str) -> str | None:
        return self.reservations.get((run_id, server))

    def reserve(self, run_id: str, server: str, seen: Tally) -> bool:
        run = self.runs[run_id]
        if self.conflicts:
            self.conflicts -= 1
            fixes = run["fixes"]
            run["fixes"] = Tally(fixes.total, fixes.started + 1, fixes.finished, fixes.failed)
            self.reservations[(run_id, f"other-{fixes.started}")] = "running"
        if run["fixes"] != seen or (run_id, server) in self.reservations:
            return False
        run["fixes"] = Tally(seen.total, seen.started + 1, seen.finished, seen.failed)
        self.reservations[(run_id, server)] = "running"
        return True

    def release(self, run_id: str, server: str, failed: bool) -> None:
        if self.reservations.get((run_id, server)) != "running":
            return
        self.reservations[(run_id, server)] = "done"
        fixes = self.runs[run_id]["fixes"]
        self.runs[run_id]["fixes"] = Tally(fixes.total, fixes.started, fixes.finished + 1, fixes.failed + failed)

    def claim_stop(self, run_id: str, reason: str) -> bool:
        if self.runs[run_id]["stopped"]:
            return False
        self.runs[run_id]["stopped"] = reason
        return True

    def claim_digest(self, run_id: str) -> bool:
        if run_id in self.digests or not self.progress(run_id).done:
            return False
        self.digests.append(run_id)
        return True

    def open_runs(self) -> list[RunProgress]:
        return [self.progress(r) for r in self.runs if r not in self.digests]

    def close(self, progress: RunProgress, lost: int) -> RunProgress | None:
        if progress.run_id in self.digests or self.progress(progress.run_id).completed != progress.completed:
            return None
        counts = self.runs[progress.run_id]["counts"]
        counts["failed"] = counts.get("failed", 0) + lost
        return self.progress(progress.run_id)


class FakeStateStore:
    def __init__(self) -> None:
        self.states: dict[str, ServerState] = {}
        self.results: dict[str, dict[str, Any]] = {}

    def get(self, server: str) -> ServerState | None:
        return self.states.get(server)

    def put(self, state: ServerState, result: dict[str, Any] | None = None) -> None:
        self.states[state.server] = state
        if result is not None:
            self.results[state.server] = result


class FakeRecordStore:
    """Records in memory, written once under the real key rule; ``puts`` keeps them in order."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.puts: list[str] = []

    def put(self, document: dict[str, Any]) -> str:
        location = f"memory://records/{record_key(document)}"
        if location in self.documents:
            raise RecordExists(location)
        self.documents[location] = document
        self.puts.append(location)
        return location

    def get(self, location: str) -> dict[str, Any]:
        return self.documents[location]


class FakeRunReports:
    """A run's records read from a :class:`FakeRecordStore` (by their run id), pages kept in memory; ``broken``
    makes every read fail as an unreadable bucket would."""

    def __init__(self, records: FakeRecordStore, broken: bool = False) -> None:
        self.records_store = records
        self.broken = broken
        self.pages: dict[str, str] = {}

    def records(self, run_id: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        if self.broken:
            raise RecordError("memory://records: AccessDenied")
        for location, document in self.records_store.documents.items():
            if run_id is None or document["run_id"] == run_id:
                yield location, document

    def write(self, run_id: str | None, html: str) -> str:
        location = f"memory://reports/{run_id}.html"
        self.pages[location] = html
        return location


class FakeLockStore:
    def __init__(self, held: Iterable[str] = ()) -> None:
        self.held = dict.fromkeys(held, "someone-else")
        self.history: list[tuple[str, str, str]] = []

    def acquire(self, server: str, owner: str, ttl_seconds: int) -> bool:
        if self.held.get(server, owner) != owner:
            return False
        self.held[server] = owner
        self.history.append(("acquire", server, owner))
        return True

    def release(self, server: str, owner: str) -> None:
        if self.held.get(server) == owner:
            del self.held[server]
            self.history.append(("release", server, owner))


class FakeNotifier:
    """Keeps what it is given; the next ``failures`` publishes raise instead, as SNS refusing would."""

    def __init__(self, failures: int = 0) -> None:
        self.published: list[Notification] = []
        self.failures = failures

    def publish(self, notification: Notification) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("SNS refused the publish")
        self.published.append(notification)


class FakeMetrics:
    """Keeps every data point emitted, in order."""

    def __init__(self) -> None:
        self.points: list[Datapoint] = []

    def emit(self, points: Iterable[Datapoint]) -> None:
        self.points.extend(points)

    def values(self, name: str, **dimensions: str) -> list[float]:
        """The values emitted for metric ``name`` with exactly these dimensions."""
        want = tuple(sorted(dimensions.items()))
        return [p.value for p in self.points if p.metric.name == name and tuple(sorted(p.dimensions)) == want]


class FakeEnqueueOnce:
    """The alert intake's dedup in memory: the first call per key enqueues through ``jobs``, every later
    call gets that first answer back (with the first caller's ``request``), as the DynamoDB one does."""

    def __init__(self, jobs: UrgentJobs) -> None:
        self.jobs = jobs
        self.answers: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}

    def __call__(self, *, key: dict[str, str], request: str, server: Server, alert: SpamAlert) -> dict[str, Any]:
        record = tuple(sorted(key.items()))
        if record not in self.answers:
            self.answers[record] = {**self.jobs.enqueue(server, alert), "request": request}
        return self.answers[record]


class FakeLambdaContext(LambdaContext):
    """Lambda's context object, with the time left fixed at ``remaining_ms``."""

    _function_name = "relayguard-test"
    _function_version = "$LATEST"
    _memory_limit_in_mb = 512
    _invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:relayguard-test"
    _aws_request_id = "00000000-0000-4000-8000-000000000000"

    def __init__(self, remaining_ms: int = 300_000) -> None:
        self.remaining_ms = remaining_ms

    # Powertools types it as a static method; Lambda's real context answers per invocation.
    def get_remaining_time_in_millis(self) -> int:  # type: ignore[override]
        return self.remaining_ms


class FakeJudge:
    """A deliverability judge (``ports.DeliverabilityJudge``) answering a scripted report, or raising ``error``;
    it records every collection it was given."""

    def __init__(self, report: Deliverability | None = None, error: Exception | None = None) -> None:
        self.report = report or Deliverability()
        self.error = error
        self.seen: list[Collected] = []

    def judge(self, collected: Collected) -> Deliverability:
        self.seen.append(collected)
        if self.error is not None:
            raise self.error
        return self.report
