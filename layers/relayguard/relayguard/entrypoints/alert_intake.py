"""The alert intake: spam alerts and CloudWatch alarms; resolve the server, deduplicate, enqueue an urgent job."""

from __future__ import annotations

from typing import Any, Protocol

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel, SnsModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayguard import bootstrap
from relayguard.config import Settings
from relayguard.domain.metrics import (
    ALERTS_DEDUPLICATED,
    ALERTS_RECEIVED,
    UNKNOWN_SERVERS,
    count_points,
    run_started_points,
)
from relayguard.entrypoints import Handler, emit, logger, observed, settings
from relayguard.events import ALERT_DETAIL_TYPE, ALERT_EVENT_SOURCE, CloudWatchAlarm, SpamAlert
from relayguard.services import AlertAnswer, AlertIntake


class ComposeIntake(Protocol):
    def __call__(self, settings: Settings, *, lambda_context: LambdaContext | None = None) -> AlertIntake: ...


def _alerts_from(event: dict[str, Any]) -> list[SpamAlert]:
    if "Records" in event:
        alerts = []
        for record in parse(event=event, model=SnsModel).Records:
            alarm = CloudWatchAlarm.model_validate_json(str(record.Sns.Message))
            if not alarm.firing:
                logger.info("alarm not in ALARM state; ignored", alarm=alarm.AlarmName, state=alarm.NewStateValue)
                continue
            alerts.append(alarm.to_alert())
        return alerts
    envelope = parse(event=event, model=EventBridgeModel)
    if envelope.source != ALERT_EVENT_SOURCE or envelope.detail_type != ALERT_DETAIL_TYPE:
        raise ValueError(f"unexpected event {envelope.source!r}/{envelope.detail_type!r}")
    return [SpamAlert.model_validate(envelope.detail)]


def _report(taken: AlertAnswer) -> None:
    alert, server = taken.alert, taken.server
    logger.append_keys(alert_id=alert.alert_id)
    if server is None:
        logger.warning("alert names a server outside the inventory; nothing done",
                       identities=alert.host.identities(), source=alert.source, kind=alert.kind)
        emit(count_points(UNKNOWN_SERVERS, 1))
    elif taken.status == "duplicate":
        emit(count_points(ALERTS_DEDUPLICATED, 1))
        logger.info("duplicate alert within the window", server=server.name, kind=alert.kind)
    else:
        emit(run_started_points("alert"))
        logger.info("urgent job enqueued", server=server.name, run_id=taken.answer.get("run_id"))


def make_handler(intake: ComposeIntake = bootstrap.alert_intake) -> Handler:
    """The alert intake's handler, its service composed by ``intake``."""

    @observed
    def alert_intake_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        cfg = settings()
        emit(count_points(ALERTS_RECEIVED, len(event.get("Records") or [event])))
        answers = intake(cfg, lambda_context=context).take(_alerts_from(event))
        for taken in answers:
            _report(taken)
        return {"alerts": [taken.answer for taken in answers]}

    return alert_intake_handler


alert_intake_handler = make_handler()
