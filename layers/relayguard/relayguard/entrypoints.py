"""The three Lambda handlers. ``functions/<name>/app.py`` re-exports one of them.

Each handler parses its event into a typed request, gets its service from :mod:`relayguard.bootstrap`
and shapes the answer. Error policy: a malformed event raises (async invocations then retry and land
in the on-failure destination; SQS records become batch item failures and, in the end, DLQ messages);
a server's own failure is a result, never an exception.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SnsModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from relayguard import bootstrap
from relayguard.config import Settings, load_settings
from relayguard.domain.models import Outcome
from relayguard.events import ALERT_DETAIL_TYPE, ALERT_EVENT_SOURCE, CloudWatchAlarm, Job, SpamAlert, SweepDetail
from relayguard.services import Deferred, LockBusy, plan_sweep

logger = Logger()
metrics = Metrics()
tracer = Tracer()
processor = BatchProcessor(event_type=EventType.SQS)

HOST_KEY_OUTCOMES = frozenset({Outcome.HOST_KEY_MISMATCH, Outcome.HOST_KEY_UNKNOWN})


def settings() -> Settings:
    return bootstrap.cached_settings(tuple(sorted(os.environ.items())), load_settings)


# -- planner ------------------------------------------------------------------------------------


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def planner_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scheduled = parse(event=event, model=EventBridgeModel)
    detail = SweepDetail.model_validate(scheduled.detail)
    cfg = settings()
    result = plan_sweep(cfg, bootstrap.inventory_store(cfg), bootstrap.run_store(cfg), bootstrap.job_queue(),
                        bootstrap.publisher(cfg), mode=detail.mode)
    logger.append_keys(run_id=result["run_id"])
    logger.info("sweep planned", servers=result["servers"], mode=result["mode"], unsent=result["unsent"])
    metrics.add_metric(name="ServersPlanned", unit=MetricUnit.Count, value=result["servers"])
    return result


# -- worker -------------------------------------------------------------------------------------


def _queue_url_of(cfg: Settings, event_source_arn: str) -> str:
    name = event_source_arn.rsplit(":", 1)[-1]
    for url in (cfg.urgent_queue_url, cfg.work_queue_url):
        if url.rstrip("/").rsplit("/", 1)[-1] == name:
            return url
    raise ValueError(f"record from an unexpected queue {event_source_arn!r}")


def _work_record(record: SQSRecord, context: LambdaContext) -> None:
    cfg = settings()
    receive_count = int(record.attributes.approximate_receive_count or "1")
    try:
        job = Job.model_validate_json(record.body)
    except ValidationError as exc:
        logger.error("rejected job message", message_id=record.message_id, errors=exc.errors(include_url=False,
                     include_input=False))
        metrics.add_metric(name="MalformedJobs", unit=MetricUnit.Count, value=1)
        raise
    logger.append_keys(run_id=job.run_id, server=job.server.name, alert_id=job.alert_id)
    worker = bootstrap.worker(cfg)
    try:
        handled = worker.handle(job, receive_count, context.get_remaining_time_in_millis(),
                                _queue_url_of(cfg, record.event_source_arn))
    except Deferred as exc:
        logger.info("job deferred", reason=str(exc))
        raise
    except Exception as exc:
        if receive_count >= cfg.max_receive_count:
            # This delivery's failure sends the job to the DLQ: count the server failed so the run's
            # digest still comes out, exactly once, with every server in it.
            worker.give_up(job)
            logger.exception("job failed on its last delivery; counted as failed")
        elif isinstance(exc, LockBusy):
            logger.info("server busy, job retried later", reason=str(exc))
        raise
    result = handled.result
    if result is None:
        logger.info("job finished without an SSH session", status=handled.status, note=handled.note)
        return
    metrics.add_metric(name="ServersScanned", unit=MetricUnit.Count, value=1)
    for outcome, name in ((Outcome.NONCOMPLIANT, "NonCompliant"), (Outcome.REMEDIATED, "Remediated")):
        if result.outcome == outcome:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
    if result.outcome in HOST_KEY_OUTCOMES:
        metrics.add_metric(name="HostKeyProblems", unit=MetricUnit.Count, value=1)
    if result.outcome not in (Outcome.COMPLIANT, Outcome.REMEDIATED, Outcome.NOT_CPANEL, Outcome.NONCOMPLIANT):
        metrics.add_metric(name="Failed", unit=MetricUnit.Count, value=1)
    logger.info("server done", outcome=str(result.outcome), reason=result.reason, restarted=result.restarted)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def worker_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Every invocation reports at least this metric (Powertools warns about an empty flush otherwise).
    metrics.add_metric(name="JobsReceived", unit=MetricUnit.Count, value=len(event.get("Records") or []))
    return dict(process_partial_response(
        event=event, record_handler=lambda record: _work_record(record, context), processor=processor,
        context=context,
    ))


# -- alert intake -------------------------------------------------------------------------------


def _alerts_from(event: dict[str, Any]) -> list[SpamAlert]:
    if "Records" in event:
        alerts = []
        for record in parse(event=event, model=SnsModel).Records:
            alarm = CloudWatchAlarm.model_validate_json(str(record.Sns.Message))
            identity = alarm.server_identity()
            if alarm.NewStateValue != "ALARM":
                logger.info("alarm not in ALARM state; ignored", alarm=alarm.AlarmName, state=alarm.NewStateValue)
                continue
            if identity is None:
                raise ValueError(f"alarm {alarm.AlarmName!r} names no server "
                                 "(dimension Server, Hostname or InstanceId)")
            host = {"instance_id": identity} if identity.startswith("i-") else {"hostname": identity}
            alerts.append(SpamAlert.model_validate({
                "schema": "relayguard.alert/v1",
                "alert_id": f"alarm-{uuid.uuid5(uuid.NAMESPACE_URL, alarm.AlarmName + str(alarm.StateChangeTime))}",
                "source": "cloudwatch_alarm", "kind": "alarm", "observed_at": alarm.StateChangeTime,
                "severity": "warning", "host": host, "evidence": {"alarm": alarm.AlarmName},
            }))
        return alerts
    envelope = parse(event=event, model=EventBridgeModel)
    if envelope.source != ALERT_EVENT_SOURCE or envelope.detail_type != ALERT_DETAIL_TYPE:
        raise ValueError(f"unexpected event {envelope.source!r}/{envelope.detail_type!r}")
    return [SpamAlert.model_validate(envelope.detail)]


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def alert_intake_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cfg = settings()
    metrics.add_metric(name="AlertsReceived", unit=MetricUnit.Count, value=len(event.get("Records") or [event]))
    intake = bootstrap.alert_intake(cfg)
    enqueue_once, idem_config = bootstrap.enqueue_once(cfg)
    idem_config.register_lambda_context(context)
    answers = []
    for alert in _alerts_from(event):
        logger.append_keys(alert_id=alert.alert_id)
        server = intake.resolve(alert)
        if server is None:
            logger.warning("alert names a server outside the inventory; nothing done",
                           identities=alert.host.identities(), source=alert.source, kind=alert.kind)
            metrics.add_metric(name="UnknownServers", unit=MetricUnit.Count, value=1)
            answers.append({"status": "unknown-server", "alert_id": alert.alert_id})
            continue
        window = int(time.time()) // cfg.dedup_window_seconds
        key = {"server": server.name, "kind": alert.kind, "window": window}
        request = uuid.uuid4().hex
        try:
            answer = enqueue_once(key=key, request=request, server=server, alert=alert)
        except IdempotencyAlreadyInProgressError:
            answer = {"status": "duplicate", "server": server.name}
        if answer.get("request") != request:
            answer = {**answer, "status": "duplicate"}
            metrics.add_metric(name="AlertsDeduplicated", unit=MetricUnit.Count, value=1)
            logger.info("duplicate alert within the window", server=server.name, kind=alert.kind)
        else:
            logger.info("urgent job enqueued", server=server.name, run_id=answer.get("run_id"))
        answers.append({**answer, "alert_id": alert.alert_id})
    return {"alerts": answers}

