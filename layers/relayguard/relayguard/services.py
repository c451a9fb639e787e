"""The serverless services: plan a sweep, work one job, take in one alert. Ports only, no AWS names."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from relayguard.config import Settings
from relayguard.domain.bounds import bounded_result, state_result
from relayguard.domain.evidence import record_document
from relayguard.domain.metrics import run_finished_points, run_stopped_points
from relayguard.domain.models import Mode, Outcome, Policy
from relayguard.domain.notify import (
    announced_status,
    attributes,
    change_of,
    deliverability_message,
    deliverability_text,
    digest_message,
    digest_text,
    mail_change,
    run_stopped_message,
    run_stopped_text,
    server_message,
    server_text,
)
from relayguard.domain.report import build_report, render_html, row_of
from relayguard.domain.rollout import Admission, Decision, admit, excluded, fix_failed, stop_reason
from relayguard.domain.server import Inventory, Server, identity_key
from relayguard.engine import Engine, ServerResult
from relayguard.errors import FixDeferred, RelayGuardError
from relayguard.events import JOB_SCHEMA, Job, SpamAlert
from relayguard.ports import (
    FixGate,
    InventoryStore,
    JobQueue,
    LockStore,
    MetricSink,
    Notification,
    Notifier,
    RecordStore,
    ReportPages,
    RunProgress,
    RunRecords,
    RunReports,
    RunStore,
    ServerState,
    StateStore,
)

_RANK = {Mode.AUDIT: 0, Mode.FIX: 1}
#: Lambda time kept back after a server's SSH job for recording, notifying and releasing the lock.
FINISH_RESERVE_MS = 15_000
#: A run whose digest is not out this long after it started has lost jobs: a worker killed by its
#: timeout or memory limit on a job's last delivery counts nothing before SQS dead-letters the job.
#: Far beyond any job's legitimate life (maxReceiveCount x the visibility timeout: 7.5 h at most).
RUN_DEADLINE = timedelta(hours=24)
#: Reads and conditional reservations a run's gate tries when other workers keep changing the run's fix
#: counters under it; after that the fix waits (its job comes back later) rather than fail.
GATE_ATTEMPTS = 5


def now_iso() -> str:
    # Microseconds: a job compares this with its own enqueue time to reuse a fresher result.
    return datetime.now(UTC).isoformat(timespec="microseconds")


#: A child of Powertools' ``relayguard`` logger in Lambda, so its lines are JSON with the handler's keys.
_log = logging.getLogger(__name__)


class LockBusy(RelayGuardError):
    """Another job holds this server's lock; the job is retried later."""


class Deferred(RelayGuardError):
    """Not enough Lambda time left to start this server; the job is retried later."""


def job_for(server: Server, run_id: str, mode: Mode, trigger: str, alert_id: str | None = None,
            *, excluded: bool = False, action: str | None = None) -> Job:
    return Job.model_validate({
        "excluded": excluded,
        "action": action,
        "schema": JOB_SCHEMA,
        "run_id": run_id,
        "job_id": uuid.uuid4().hex,
        "mode": mode,
        "trigger": trigger,
        "alert_id": alert_id,
        "enqueued_at": datetime.now(UTC),
        "server": server,
    })


@dataclass
class Publisher:
    """Records every result, and turns results and run progress into notifications (only on change; one
    digest per run) and run metrics (``domain.metrics``: RunsFinished, RunFailedServers, RunsStopped)."""

    notifier: Notifier
    runs: RunStore
    state: StateStore
    records: RecordStore
    metrics: MetricSink
    #: Where a run's report page goes with its digest (None: no page, digests say ``report: null``).
    reports: RunReports | None = None

    def server_result(self, job: Job, result: ServerResult) -> bool:
        """Record the result; announce it if it is news. Returns whether a message went out.

        In this order: the whole record goes to the record store (written once); the state table notes
        the latest state, where its record is and the change it owes; only then is the change published,
        and the state table clears it. A publish that fails leaves the result recorded and the change
        owed, and raises: the job is retried, and the server's next job announces the change (:meth:`flush`)."""
        previous = self.flush(job.server.name)
        record = result.to_json()
        at = now_iso()
        location = self.records.put(record_document(record, run_id=job.run_id, job_id=job.job_id,
                                                    trigger=job.trigger, recorded_at=at, alert_id=job.alert_id))
        change = change_of(previous.announced if previous else None, record["outcome"], record["reason"])
        state = ServerState(server=job.server.name, outcome=record["outcome"],
                            announced=previous.announced if previous else "ok", updated_at=at, mode=str(job.mode),
                            record=location, pending=change or "", mail=previous.mail if previous else "")
        view = state_result(bounded_result(record, location))
        self.state.put(state, view)
        if change is not None:
            state = self._announce(state, record, job.run_id, job.trigger, view)
        mail = mail_change(state.mail, record)
        if mail is not None:
            # Apart from the relay message (attribute finding=deliverability), and only when the summary changed.
            doc = deliverability_message(record, job.run_id, job.trigger, now_iso(), record=location)
            self.notifier.publish(Notification(
                subject=f"RelayGuard: {job.server.name} deliverability", document=doc,
                text=deliverability_text(doc), attributes=attributes(doc)))
            self.state.put(replace(state, mail=mail), view)
        return change is not None or mail is not None

    def flush(self, server: str) -> ServerState | None:
        """Announce the change a failed publish left owed for ``server``, from its record; the server's
        state afterwards (None: never seen)."""
        state = self.state.get(server)
        if state is None or not state.pending:
            return state
        document = self.records.get(state.record)
        record = document["result"]
        return self._announce(state, record, document["run_id"], document["trigger"],
                              state_result(bounded_result(record, state.record)))

    def _announce(self, state: ServerState, record: dict[str, Any], run_id: str, trigger: str,
                  view: dict[str, Any]) -> ServerState:
        doc = server_message(record, state.pending, run_id, trigger, now_iso(), record=state.record)
        self.notifier.publish(Notification(
            subject=f"RelayGuard: {state.server} {state.pending}", document=doc, text=server_text(doc),
            attributes=attributes(doc)))
        announced = replace(state, announced=announced_status(record["outcome"], record["reason"]), pending="")
        self.state.put(announced, view)
        return announced

    def count(self, run_id: str, server: str, outcome: str, mail: Mapping[str, int] | None = None) -> None:
        progress = self.runs.record(run_id, server, outcome, mail)
        if progress is not None:
            self.digest_if_done(progress)

    def digest_if_done(self, progress: RunProgress) -> None:
        run_id = progress.run_id
        if progress.done and self.runs.claim_digest(run_id):
            doc = digest_message(run_id, mode=progress.mode, trigger=progress.trigger, total=progress.total,
                                 counts=progress.counts, started_at=progress.started_at, at=now_iso(),
                                 stopped=progress.stopped, mail=progress.mail,
                                 report=self._report(run_id, progress.total))
            # Before the publish: the claim is taken, so a failed publish is never retried, and the run
            # must still count on the dashboard and in the failed-servers alarm.
            self.metrics.emit(run_finished_points(doc))
            self.notifier.publish(Notification(
                subject=f"RelayGuard run {run_id}: {doc['outcome']}", document=doc, text=digest_text(doc),
                attributes=attributes(doc)))

    def _report(self, run_id: str, total: int) -> str | None:
        """Write the run's report page before its digest, so the digest says where it is; None without one.

        Nothing that goes wrong here holds the digest back: it is claimed once and never sent again."""
        if self.reports is None:
            return None
        try:
            return write_report(self.reports, self.reports, run_id, generated_at=now_iso(), expected=total)
        except Exception:
            _log.exception("run report not written; the digest goes out without it", extra={"run_id": run_id})
            return None

    def run_stopped(self, progress: RunProgress, reason: str) -> None:
        """Announce that the run stopped starting fixes (called once per run, by the claim's winner)."""
        limits = progress.rollout
        doc = run_stopped_message(
            progress.run_id, mode=progress.mode, trigger=progress.trigger, reason=reason, total=progress.total,
            fixes={"started": progress.fix_started, "finished": progress.fix_finished, "failed": progress.fix_failed},
            limits={"max_changes": limits.max_changes, "canary": limits.canary,
                    "max_errors": str(limits.max_errors) if limits.max_errors else None},
            at=now_iso())
        self.metrics.emit(run_stopped_points(reason))
        self.notifier.publish(Notification(
            subject=f"RelayGuard run {progress.run_id} stopped: {reason}", document=doc, text=run_stopped_text(doc),
            attributes=attributes(doc)))


def write_report(records: RunRecords, pages: ReportPages, run_id: str | None, *, generated_at: str,
                 title: str = "", expected: int | None = None) -> str:
    """Render the fleet report page of ``run_id``'s records (None: every record ``records`` holds), write it
    to ``pages`` and return where it is. Each record becomes a small row as it is read: memory grows with
    the fleet, not with its records."""
    rows = (row_of(document, location) for location, document in records.records(run_id))
    return pages.write(run_id, render_html(build_report(rows, generated_at=generated_at, title=title,
                                                        expected=expected)))


@dataclass
class RunGate:
    """A sweep run's rollout gate (:class:`~relayguard.ports.FixGate`) over the run's record, shared by
    every worker: each admission reads the run's fix counters, asks :func:`~relayguard.domain.rollout.admit`
    and reserves a granted fix with a write conditional on the counters it read, so two workers cannot
    both take the last slot. The first worker told to skip for good announces the stop, once per run."""

    runs: RunStore
    run_id: str
    on_stop: Callable[[RunProgress, str], None]

    def admit(self, server: Server) -> Admission:
        if self.runs.reservation(self.run_id, server.name) is not None:
            # A redelivery of a job whose fix was admitted already (its worker died or ran out of time):
            # the same change goes on, it is not a new one.
            return Admission(Decision.START)
        for _ in range(GATE_ATTEMPTS):
            try:
                progress = self.runs.progress(self.run_id)
            except KeyError:
                return Admission(Decision.START)  # a hand-made job of no run: no run, no run limits
            answer = admit(progress.rollout, progress.tally)
            if answer.decision == Decision.SKIP:
                reason = stop_reason(progress.rollout, progress.tally)
                if reason and self.runs.claim_stop(self.run_id, reason):
                    self.on_stop(progress, reason)
                return answer
            if answer.decision == Decision.WAIT or self.runs.reserve(self.run_id, server.name, progress.tally):
                return answer
        return Admission(Decision.WAIT)

    def finished(self, server: Server, outcome: Outcome) -> None:
        self.runs.release(self.run_id, server.name, failed=fix_failed(outcome))


def close_overdue_runs(runs: RunStore, publisher: Publisher, now: datetime) -> list[dict[str, Any]]:
    """Give every run its digest: one complete but unpublished (a worker died between counting and
    publishing) gets it now; one past :data:`RUN_DEADLINE` counts its missing servers failed first."""
    closed = []
    for progress in runs.open_runs():
        if progress.done:
            publisher.digest_if_done(progress)
            continue
        if now - datetime.fromisoformat(progress.started_at) < RUN_DEADLINE:
            continue
        lost = progress.total - progress.completed
        after = runs.close(progress, lost)
        if after is not None:  # else a worker counted meanwhile; the next sweep looks again
            publisher.digest_if_done(after)
            closed.append({"run_id": progress.run_id, "lost": lost, "started_at": progress.started_at})
    return closed


class SweepPlanner(Protocol):
    """:func:`plan_sweep` with its settings and ports bound."""

    def __call__(self, *, mode: Mode | None = None, event_id: str | None = None,
                 event_time: datetime | None = None) -> dict[str, Any]: ...


def sweep_run_id(event_id: str | None, event_time: datetime) -> str:
    """The run of a triggering event: the same event (a retried invocation) names the same run, so the
    run's conditional creation lets only one invocation queue its servers. Without an event id, a new run."""
    tail = hashlib.sha256(event_id.encode()).hexdigest()[:16] if event_id else uuid.uuid4().hex[:8]
    return f"sweep-{event_time.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{tail}"


def plan_sweep(settings: Settings, inventory: InventoryStore, runs: RunStore, queue: JobQueue,
               publisher: Publisher, *, mode: Mode | None = None, event_id: str | None = None,
               event_time: datetime | None = None) -> dict[str, Any]:
    """Read the inventory, open a run record with the rollout limits, fan one job per server out to the
    work queue; first, close the runs that will never complete by themselves.

    A fix sweep outside the maintenance window (at ``event_time``, the schedule's time) only audits. A
    second invocation for the same ``event_id`` finds its run open and queues nothing (``duplicate``)."""
    now = datetime.now(UTC)
    at = event_time or now
    overdue = close_overdue_runs(runs, publisher, now)
    run_id = sweep_run_id(event_id, at)
    mode = mode or settings.sweep_mode
    window = settings.maintenance_window
    outside_window = mode == Mode.FIX and window is not None and not window.open_at(at)
    if outside_window:
        mode = Mode.AUDIT
    inv = inventory.load()
    if not runs.create(run_id, str(mode), "sweep", len(inv.servers), now_iso(), rollout=settings.rollout):
        return {"run_id": run_id, "mode": runs.progress(run_id).mode, "servers": 0, "unsent": 0,
                "closed_overdue": overdue, "duplicate": True, "outside_window": outside_window}
    exclude = (settings.exclude_tag,)
    jobs = [job_for(s, run_id, mode, "sweep", excluded=excluded(s.tags, exclude)) for s in inv.servers]
    unsent = queue.send(settings.work_queue_url, [j.body() for j in jobs])
    for body in unsent:
        # A job the queue refused is a failed server, not a silent gap in the digest.
        publisher.count(run_id, Job.model_validate_json(body).server.name, str(Outcome.FAILED))
    if not jobs:
        publisher.digest_if_done(runs.progress(run_id))
    return {"run_id": run_id, "mode": str(mode), "servers": len(jobs), "unsent": len(unsent),
            "closed_overdue": overdue, "duplicate": False, "outside_window": outside_window,
            "excluded": sum(j.excluded for j in jobs)}


@dataclass(frozen=True)
class Handled:
    """What became of one job: ``done`` (the engine ran), ``reused`` (a fresher result counted, no SSH),
    ``requeued`` (a fresh copy is on the queue; this delivery is complete) or ``refused`` (its message
    disagrees with the inventory: no SSH, reported failed)."""

    status: str
    result: ServerResult | None = None
    note: str = ""


@dataclass
class Worker:
    """Runs one job: check it against the inventory, lock, engine, record, notify, count.

    One worker per Lambda invocation: it reads the inventory once, for the whole batch."""

    settings: Settings
    engine_factory: Callable[[], Engine]
    locks: LockStore
    state: StateStore
    publisher: Publisher
    queue: JobQueue
    inventory: InventoryStore
    _fleet: Inventory | None = field(default=None, init=False, repr=False)

    def policy(self, job: Job) -> Policy:
        return Policy(mode=job.mode, disable_tracker=self.settings.disable_tracker, excluded=job.excluded)

    def gate(self, job: Job) -> FixGate | None:
        """The run's rollout gate: a sweep's fixes share their run's limits; an alert's run of one server
        has none (docs/operations.md, Rolling out fix mode)."""
        if job.trigger != "sweep" or job.mode != Mode.FIX:
            return None
        return RunGate(self.publisher.runs, job.run_id, self.publisher.run_stopped)

    def handle(self, job: Job, receive_count: int, remaining_ms: int, queue_url: str) -> Handled:
        """Work one job delivered from ``queue_url``.

        Raises :class:`Deferred` (too little Lambda time left) or :class:`LockBusy` (the server stays
        locked for longer than any lock lives) to have SQS redeliver this delivery later.
        """
        if remaining_ms < self.settings.safety_margin_ms:
            if receive_count >= self.settings.max_receive_count - 1:
                # Running out of time is not the job's fault: it must never be what dead-letters it.
                self._requeue(job, queue_url, delay_seconds=0)
                return Handled("requeued", note=f"{remaining_ms} ms left; fresh copy enqueued")
            raise Deferred(f"{remaining_ms} ms left, {self.settings.safety_margin_ms} ms needed")
        trusted, refusal = self._trusted(job, queue_url)
        if trusted is None:
            return self._refused(job, refusal)
        job = trusted
        # A revert is an operator's explicit request: no other job's result can stand in for it.
        reused = None if job.action == "revert" else self._recent_result(job)
        if reused is not None:
            self.publisher.count(job.run_id, job.server.name, reused)
            # The result reused may be one whose announcement failed (a retried delivery of this job).
            self.publisher.flush(job.server.name)
            return Handled("reused", note=reused)
        if not self.locks.acquire(job.server.name, job.job_id, self.settings.lock_ttl_seconds):
            return self._busy(job, queue_url)
        try:
            # The job must end, recorded and announced, before Lambda's own timeout would kill it.
            deadline = time.monotonic() + max(0, remaining_ms - FINISH_RESERVE_MS) / 1000
            engine = self.engine_factory()
            if job.action == "revert":
                # An operator's explicit request (manual source, requested_by): no rollout gate applies.
                result = engine.revert(job.server, deadline=deadline)
            else:
                try:
                    result = engine.run(job.server, self.policy(job), deadline=deadline, gate=self.gate(job))
                except FixDeferred as exc:
                    return self._held(job, queue_url, exc)
            try:
                self.publisher.server_result(job, result)
            finally:
                # Counted even when the publish failed: the result is recorded, and the digest must not wait
                # for a retry (counting is idempotent per run and server).
                self.publisher.count(job.run_id, job.server.name, str(result.outcome),
                                     (result.deliverability or {}).get("summary"))
            return Handled("done", result)
        finally:
            self.locks.release(job.server.name, job.job_id)

    def _trusted(self, job: Job, queue_url: str) -> tuple[Job | None, str]:
        """The job with its server as the inventory has it (address, port, login, pinned keys, tags), or
        None and the reason to refuse it: the message names a server the inventory does not have, or
        one whose connection details differ. The message is checked, never trusted: whoever can write
        to the queue must not be able to point the worker's SSH key at another host."""
        if job.action == "revert" and not (job.trigger == "alert" and job.alert_id and
                                           queue_url == self.settings.urgent_queue_url):
            # A revert reopens relaying: it comes only from an operator's revert request, which the alert
            # intake checks (manual source, requested_by) and puts on the urgent queue. A revert in a sweep
            # job, or on the work queue, was written by something else and is refused unrun.
            return None, "revert-refused: a revert comes only from an operator's revert request"
        if self._fleet is None:
            self._fleet = self.inventory.load()
        known = next((s for s in self._fleet.servers if s.name == job.server.name), None)
        if known is None:
            return None, f"not-in-inventory: no server named {job.server.name!r}"
        sent = job.server
        differ = [name for name, ours, theirs in (
            ("host", identity_key(known.host), identity_key(sent.host)), ("port", known.port, sent.port),
            ("user", known.user, sent.user), ("host_keys", frozenset(known.host_keys), frozenset(sent.host_keys)),
        ) if ours != theirs]
        if differ:
            return None, f"inventory-mismatch: the job's {', '.join(differ)} differ from the inventory's"
        # The inventory's tags also decide exclusion: a message cannot take an excluded server off the list.
        held = job.excluded or excluded(known.tags, (self.settings.exclude_tag,))
        return job.model_copy(update={"server": known, "excluded": held}), ""

    def _refused(self, job: Job, reason: str) -> Handled:
        """A job refused by :meth:`_trusted`: no lock, no SSH; reported ``failed`` with the reason, recorded,
        announced like any failure and counted in its run."""
        result = ServerResult(name=job.server.name, address=job.server.host, mode=str(job.mode),
                              outcome=Outcome.FAILED, reason=reason, started_at=now_iso())
        try:
            self.publisher.server_result(job, result)
        finally:
            self.publisher.count(job.run_id, job.server.name, str(result.outcome))
        return Handled("refused", result, note=reason)

    def _busy(self, job: Job, queue_url: str) -> Handled:
        """Another job works this server. Retry soon, outside SQS's receive count (a failed delivery
        would wait a whole visibility timeout and creep toward the DLQ); once the job is older than
        any lock can live, the lock is not the reason any more and SQS's own retries take over."""
        age = (datetime.now(UTC) - job.enqueued_at).total_seconds()
        if age >= self.settings.lock_ttl_seconds:
            raise LockBusy(f"{job.server.name} is still locked by another job after {int(age)} s")
        self._requeue(job, queue_url, delay_seconds=self.settings.lock_retry_seconds)
        return Handled("requeued", note=f"{job.server.name} is locked by another job; retry in "
                                        f"{self.settings.lock_retry_seconds} s")

    def _held(self, job: Job, queue_url: str, exc: FixDeferred) -> Handled:
        """The run's gate holds this fix (canary unfinished, error budget in flight): nothing was changed
        and nothing is counted; the job comes back after the lock retry delay, outside SQS's receive count.
        A run past :data:`RUN_DEADLINE` is closed with its missing servers failed: then SQS's retries,
        the DLQ and :meth:`give_up` take over."""
        if datetime.now(UTC) - job.enqueued_at >= RUN_DEADLINE:
            raise exc
        self._requeue(job, queue_url, delay_seconds=self.settings.lock_retry_seconds)
        return Handled("requeued", note=f"{exc}; retry in {self.settings.lock_retry_seconds} s")

    def _requeue(self, job: Job, queue_url: str, delay_seconds: int) -> None:
        # The copy keeps its enqueued_at, so a result recorded meanwhile by the lock holder is reused.
        if self.queue.send(queue_url, [job.body()], delay_seconds=delay_seconds):
            raise RelayGuardError(f"could not re-enqueue the job for {job.server.name}")

    def _recent_result(self, job: Job) -> str | None:
        """A result another job recorded after this one was enqueued, at least as strong: reuse it.

        This is what makes a sweep job and an alert job for the same server cost one SSH session.
        """
        last = self.state.get(job.server.name)
        if last is None:
            return None
        if datetime.fromisoformat(last.updated_at) < job.enqueued_at:
            return None
        if _RANK[Mode(last.mode)] < _RANK[job.mode]:
            return None
        return last.outcome

    def give_up(self, job: Job) -> None:
        """The job's last delivery failed: count the server as failed so the run's digest completes, and
        end its fix as failed if one was admitted, so the run's canary and budget do not wait for it forever."""
        if self.gate(job) is not None:
            self.publisher.runs.release(job.run_id, job.server.name, failed=True)
        self.publisher.count(job.run_id, job.server.name, str(Outcome.FAILED))


class EnqueueOnce(Protocol):
    """Enqueues an alert's urgent job unless one with the same ``key`` was enqueued within the dedup window."""

    def __call__(self, *, key: dict[str, str], request: str, server: Server, alert: SpamAlert) -> dict[str, Any]:
        """The answer of the call that enqueued the job: a ``request`` other than the caller's (or none)
        means this alert was a duplicate."""
        ...


@dataclass
class UrgentJobs:
    """Puts an alert's urgent job on the urgent queue, as a run of one server."""

    settings: Settings
    runs: RunStore
    queue: JobQueue

    def enqueue(self, server: Server, alert: SpamAlert) -> dict[str, Any]:
        """Open a one-server run and put an urgent job on the queue (called once per dedup key)."""
        run_id = f"alert-{alert.alert_id}"[:64]
        # An alert's own rule: no run limits and no maintenance window (a spam incident is under way),
        # but an excluded server is only probed and reported. A revert changes the server whatever the
        # alert mode says: its run is a fix-mode run.
        mode = Mode.FIX if alert.action == "revert" else self.settings.alert_mode
        job = job_for(server, run_id, mode, "alert", alert.alert_id, action=alert.action,
                      excluded=excluded(server.tags, (self.settings.exclude_tag,)))
        if not self.runs.create(run_id, str(job.mode), "alert", 1, now_iso()):
            raise RelayGuardError(f"run {run_id} exists already: alert {alert.alert_id} was taken in before")
        unsent = self.queue.send(self.settings.urgent_queue_url, [job.body()])
        if unsent:
            raise RelayGuardError(f"could not enqueue the urgent job for {server.name}")
        return {"status": "enqueued", "server": server.name, "run_id": run_id, "job_id": job.job_id}


@dataclass(frozen=True)
class AlertAnswer:
    """What became of one alert: the answer the handler returns for it (``status`` ``enqueued``,
    ``duplicate`` or ``unknown-server``), next to the alert and the server it named."""

    alert: SpamAlert
    answer: dict[str, Any]
    server: Server | None = None

    @property
    def status(self) -> str:
        return str(self.answer["status"])


@dataclass
class AlertIntake:
    """Takes in alerts: finds each one's server in the inventory and enqueues one urgent job per server
    and alert kind within the dedup window."""

    inventory: InventoryStore
    enqueue_once: EnqueueOnce

    def take(self, alerts: Iterable[SpamAlert]) -> list[AlertAnswer]:
        """One answer per alert, in order. An alert naming no server of the inventory changes nothing."""
        alerts = list(alerts)
        if not alerts:
            return []  # e.g. only alarms going back to OK: the inventory is not even read
        inventory = self.inventory.load()
        answers = []
        for alert in alerts:
            server = _server_named_by(alert, inventory)
            if server is None:
                answers.append(AlertAnswer(alert, {"status": "unknown-server", "alert_id": alert.alert_id}))
                continue
            # The window is the dedup record's expiry, which the first alert opens. A time bucket in the
            # key would split a burst that straddles a bucket boundary into two jobs.
            key = {"server": server.name, "kind": alert.kind}
            request = uuid.uuid4().hex
            answer = self.enqueue_once(key=key, request=request, server=server, alert=alert)
            if answer.get("request") != request:
                answer = {**answer, "status": "duplicate"}
            answers.append(AlertAnswer(alert, {**answer, "alert_id": alert.alert_id}, server))
        return answers


def _server_named_by(alert: SpamAlert, inventory: Inventory) -> Server | None:
    for identity in alert.host.identities():
        server = inventory.resolve(identity)
        if server is not None:
            return server
    return None
