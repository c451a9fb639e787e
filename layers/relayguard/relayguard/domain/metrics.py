"""Every CloudWatch metric RelayGuard emits, in one list, and the pure functions that make its data points.

The functions' Powertools metrics (EMF, namespace ``POWERTOOLS_METRICS_NAMESPACE``) add the dimension
``service`` (``POWERTOOLS_SERVICE_NAME``) to every metric; :attr:`Metric.dimensions` lists the ones a
metric carries besides it. ``template.yaml``'s alarms and dashboard name metrics from this list only:
tests/unit/test_ops_template.py checks each of them against :data:`METRICS`, and the emitting code builds
every data point with :func:`point`, which refuses a metric or a dimension that is not listed here.
docs/operations.md (Alarms, The dashboard) explains what each one means to an operator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relayguard.domain.deliverability import Check
from relayguard.domain.models import FAILURE_OUTCOMES, Outcome
from relayguard.domain.rollout import SkipReason

#: The dimension Powertools adds to every metric (its value: the functions' ``POWERTOOLS_SERVICE_NAME``).
SERVICE_DIMENSION = "service"

COUNT = "Count"
SECONDS = "Seconds"


@dataclass(frozen=True)
class Metric:
    """One metric: its name, its CloudWatch unit, and its dimensions besides ``service``."""

    name: str
    unit: str
    dimensions: tuple[str, ...] = ()
    #: Who emits it and what one data point means (shown in docs/operations.md).
    meaning: str = ""


@dataclass(frozen=True)
class Datapoint:
    """One value of one metric with its dimensions' values (in :attr:`Metric.dimensions` order)."""

    metric: Metric
    value: float
    dimensions: tuple[tuple[str, str], ...] = ()


# -- worker: one job, one server --------------------------------------------------------------------
JOBS_RECEIVED = Metric("JobsReceived", COUNT, meaning="worker: SQS records in one invocation")
MALFORMED_JOBS = Metric("MalformedJobs", COUNT, meaning="worker: a message that is not a job (it ends in the DLQ)")
JOBS_REFUSED = Metric("JobsRefused", COUNT, meaning="worker: a job whose message disagrees with the inventory")
SERVERS_SCANNED = Metric("ServersScanned", COUNT, meaning="worker: a server's job ended with a result")
EXPOSED = Metric("Exposed", COUNT, meaning="worker: a server found exposed (exposed_before), fixed or not")
NONCOMPLIANT = Metric("NonCompliant", COUNT, meaning="worker: a server left exposed (audit mode)")
REMEDIATED = Metric("Remediated", COUNT, meaning="worker: a server fixed")
HOST_KEY_PROBLEMS = Metric("HostKeyProblems", COUNT, meaning="worker: host-key-mismatch or host-key-unknown")
FAILED = Metric("Failed", COUNT, meaning="worker: a server whose outcome is a failure")
FAILED_BY_REASON = Metric("FailedByReason", COUNT, ("reason",),
                          meaning="worker: a failed server, by the reason's stable code (else by outcome)")
ALERT_TO_FIX_LATENCY = Metric("AlertToFixLatency", SECONDS,
                              meaning="worker: from an alert's urgent job being enqueued to its server proven closed")
# -- worker: spam signals, per server (domain/signals.py) ------------------------------------------
QUEUE_SIZE = Metric("QueueSize", COUNT, ("server",), meaning="worker: messages in the server's Exim queue")
SEND_LIMIT_HITS = Metric("SendLimitHits", COUNT, ("server",), meaning="worker: send-limit hits in the window")
RELAY_REJECTS = Metric("RelayRejects", COUNT, ("server",), meaning="worker: relay rejects in the window")
# -- worker: deliverability scan, fleet-wide (domain/mailreport.py) -----------------------------------
DELIVERABILITY_CHECKS = Metric("DeliverabilityChecks", COUNT, ("check", "status"),
                               meaning="worker: domains judged, by check (spf, dkim, dmarc, ptr, helo) and status")
DELIVERABILITY_RULES_BROKEN = Metric("DeliverabilityRulesBroken", COUNT, ("rule",),
                                     meaning="worker: domains breaking a receiver rule, by rule")
CHAT_NOTIFICATIONS_FAILED = Metric(
    "ChatNotificationsFailed", COUNT,
    meaning="a notification's chat copy was not published (the results topic had it; nothing retries)")
# -- planner ----------------------------------------------------------------------------------------
SERVERS_PLANNED = Metric("ServersPlanned", COUNT, meaning="planner: servers a sweep queued")
RUNS_CLOSED_OVERDUE = Metric("RunsClosedOverdue", COUNT,
                             meaning="planner: runs closed past their deadline, missing servers counted failed")
# -- alert intake -----------------------------------------------------------------------------------
ALERTS_RECEIVED = Metric("AlertsReceived", COUNT, meaning="alert intake: alerts and alarm messages received")
UNKNOWN_SERVERS = Metric("UnknownServers", COUNT, meaning="alert intake: an alert naming no server of the inventory")
ALERTS_DEDUPLICATED = Metric("AlertsDeduplicated", COUNT, meaning="alert intake: an alert within the dedup window")
# -- runs (planner, alert intake, and whichever function completes or stops a run) --------------------
RUNS_STARTED = Metric("RunsStarted", COUNT, ("trigger",),
                      meaning="planner (sweep) and alert intake (alert): a run opened")
RUNS_FINISHED = Metric("RunsFinished", COUNT, ("outcome",),
                       meaning="a run's digest went out, by the digest's outcome (ok, noncompliant, failed)")
RUN_FAILED_SERVERS = Metric("RunFailedServers", COUNT, meaning="a run's digest: its failed servers")
RUNS_STOPPED = Metric("RunsStopped", COUNT, meaning="a sweep stopped starting fixes (error-budget, canary-failed)")
# The same stop again, by why: RunsStopped stays without a dimension so that one alarm watches every stop.
RUNS_STOPPED_BY_REASON = Metric("RunsStoppedByReason", COUNT, ("reason",),
                                meaning="a sweep stopped starting fixes, by reason (error-budget, canary-failed)")

#: Every metric RelayGuard emits, by name.
METRICS: dict[str, Metric] = {m.name: m for m in (
    JOBS_RECEIVED, MALFORMED_JOBS, JOBS_REFUSED, SERVERS_SCANNED, EXPOSED, NONCOMPLIANT, REMEDIATED,
    HOST_KEY_PROBLEMS, FAILED, FAILED_BY_REASON, ALERT_TO_FIX_LATENCY, QUEUE_SIZE, SEND_LIMIT_HITS,
    RELAY_REJECTS, DELIVERABILITY_CHECKS, DELIVERABILITY_RULES_BROKEN, SERVERS_PLANNED, RUNS_CLOSED_OVERDUE,
    ALERTS_RECEIVED, UNKNOWN_SERVERS,
    ALERTS_DEDUPLICATED, RUNS_STARTED, RUNS_FINISHED, RUN_FAILED_SERVERS, RUNS_STOPPED, RUNS_STOPPED_BY_REASON,
    CHAT_NOTIFICATIONS_FAILED,
)}

#: Values of RunsFinished's ``outcome`` (notify.digest_message's ``outcome``).
RUN_OUTCOMES = ("ok", "noncompliant", "failed")
#: Values of RunsStarted's ``trigger``.
TRIGGERS = ("sweep", "alert")
#: A reason code fit to be a dimension value: reasons start with a stable code ("whmapi1-refused: ...");
#: a reason that is free text (an exception's message) would make a metric per message.
_REASON_CODE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
#: DeliverabilityChecks' ``check`` values (domain.deliverability.Check).
_CHECKS = frozenset(str(check) for check in Check)
#: Outcomes whose server is proven closed, the end of an alert's story.
_CLOSED = frozenset({Outcome.REMEDIATED, Outcome.COMPLIANT})


def point(metric: Metric, value: float, **dimensions: str) -> Datapoint:
    """A data point of a listed metric; ``ValueError`` for an unlisted metric, a missing or unknown
    dimension, or an empty dimension value (CloudWatch refuses one)."""
    if METRICS.get(metric.name) != metric:
        raise ValueError(f"metric {metric.name!r} is not in domain.metrics.METRICS")
    if set(dimensions) != set(metric.dimensions):
        raise ValueError(f"metric {metric.name} has dimensions {metric.dimensions}, got {tuple(dimensions)}")
    if not all(dimensions.values()):
        raise ValueError(f"metric {metric.name}: empty dimension value in {dimensions}")
    return Datapoint(metric, float(value), tuple((name, dimensions[name]) for name in metric.dimensions))


def reason_code(outcome: str, reason: str) -> str:
    """FailedByReason's ``reason``: the reason's stable code, or the outcome when the reason has none."""
    code = reason.split(":", 1)[0].strip()
    return code if _REASON_CODE.match(code) else str(outcome)


def server_points(outcome: str, reason: str, *, exposed_before: bool | None, trigger: str,
                  action: str | None = None, enqueued_at: datetime, finished_at: datetime) -> list[Datapoint]:
    """The data points of one server's result (the worker, once per job that produced a result).

    ``AlertToFixLatency`` is the time from the alert's urgent job being enqueued to its server proven
    closed (``remediated`` or ``compliant``); a revert is not a fix and is not measured."""
    points = [point(SERVERS_SCANNED, 1)]
    if exposed_before:
        points.append(point(EXPOSED, 1))
    if outcome == Outcome.NONCOMPLIANT:
        points.append(point(NONCOMPLIANT, 1))
    if outcome == Outcome.REMEDIATED:
        points.append(point(REMEDIATED, 1))
    if outcome in (Outcome.HOST_KEY_MISMATCH, Outcome.HOST_KEY_UNKNOWN):
        points.append(point(HOST_KEY_PROBLEMS, 1))
    if outcome in FAILURE_OUTCOMES:
        points += [point(FAILED, 1), point(FAILED_BY_REASON, 1, reason=reason_code(outcome, reason))]
    if trigger == "alert" and action is None and outcome in _CLOSED:
        points.append(point(ALERT_TO_FIX_LATENCY, max(0.0, (finished_at - enqueued_at).total_seconds())))
    return points


def deliverability_points(report: Mapping[str, Any] | None) -> list[Datapoint]:
    """One data point per check status and per broken rule of a server's judged deliverability scan (its
    ``counts``, domain/mailreport.py); none for an unjudged one. Values that are not a plain code are
    dropped: a dimension value must come from the documented vocabulary, never from DNS text."""
    if not report or not report.get("judged"):
        return []
    points = []
    for key, value in sorted((report.get("counts") or {}).items()):
        kind, _, name = str(key).partition(":")
        if not value or not _REASON_CODE.match(name):
            continue
        if kind == "rule":
            points.append(point(DELIVERABILITY_RULES_BROKEN, int(value), rule=name))
        elif kind in _CHECKS:  # per-domain statuses; "ips:ptr:..." and "rule-unknown:..." are the record's
            points.append(point(DELIVERABILITY_CHECKS, int(value), check=kind, status=name))
    return points


def run_started_points(trigger: str) -> list[Datapoint]:
    """A run opened: a sweep by the planner, an alert's run of one server by the alert intake."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    return [point(RUNS_STARTED, 1, trigger=trigger)]


def run_finished_points(digest: Mapping[str, Any]) -> list[Datapoint]:
    """A run's digest went out (``digest`` is notify.digest_message's document)."""
    return [point(RUNS_FINISHED, 1, outcome=str(digest["outcome"])),
            point(RUN_FAILED_SERVERS, int(digest["failed"]))]


def run_stopped_points(reason: str) -> list[Datapoint]:
    """A sweep stopped starting fixes: ``reason`` is a rollout.SkipReason (its error budget is spent, a
    canary failed)."""
    return [point(RUNS_STOPPED, 1), point(RUNS_STOPPED_BY_REASON, 1, reason=str(SkipReason(reason)))]


def count_points(metric: Metric, value: int) -> list[Datapoint]:
    """A plain count of a metric without dimensions of its own."""
    return [point(metric, value)]
