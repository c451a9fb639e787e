"""The alert intake: spam alerts and CloudWatch alarms; resolve the server, deduplicate, enqueue an urgent job."""

from __future__ import annotations

import uuid
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SnsModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayguard import bootstrap
from relayguard.entrypoints import logger, metrics, settings, tracer
from relayguard.events import ALERT_DETAIL_TYPE, ALERT_EVENT_SOURCE, CloudWatchAlarm, SpamAlert


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
        # The window is the idempotency record's expiry (expires_after_seconds), checked by Powertools
        # itself on every put: the first alert opens it. A time bucket in the key would split a burst
        # that straddles a bucket boundary into two jobs.
        key = {"server": server.name, "kind": alert.kind}
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
