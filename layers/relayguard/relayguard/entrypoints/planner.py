"""The planner: a scheduled sweep reads the inventory and fans one job per server out to the work queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayguard import bootstrap
from relayguard.config import Settings
from relayguard.domain.metrics import RUNS_CLOSED_OVERDUE, SERVERS_PLANNED, count_points, run_started_points
from relayguard.entrypoints import Handler, emit, logger, observed, settings
from relayguard.events import SweepDetail
from relayguard.services import SweepPlanner


def make_handler(planner: Callable[[Settings], SweepPlanner] = bootstrap.planner) -> Handler:
    """The planner's handler, its sweep composed by ``planner``."""

    @observed
    def planner_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        scheduled = parse(event=event, model=EventBridgeModel)
        detail = SweepDetail.model_validate(scheduled.detail)
        # The event's id names the run: a retried invocation of the same event opens no second run.
        result = planner(settings())(mode=detail.mode, event_id=scheduled.id, event_time=scheduled.time)
        if result["duplicate"]:
            logger.warning("this event's run exists already; nothing queued", run_id=result["run_id"],
                           event_id=scheduled.id)
        if result["outside_window"]:
            logger.info("fix sweep outside the maintenance window; this run only audits")
        for closed in result["closed_overdue"]:
            # Its digest went out with these servers counted failed: their jobs are in a DLQ, or lost.
            logger.warning("run closed past its deadline; servers never counted are counted failed", **closed)
        emit(count_points(RUNS_CLOSED_OVERDUE, len(result["closed_overdue"])))
        logger.append_keys(run_id=result["run_id"])
        logger.info("sweep planned", servers=result["servers"], mode=result["mode"], unsent=result["unsent"])
        emit(count_points(SERVERS_PLANNED, result["servers"]))
        if not result["duplicate"]:
            # The missed-sweep alarm watches this: no sweep run opened in twice the schedule's period.
            emit(run_started_points("sweep"))
        return result

    return planner_handler


planner_handler = make_handler()
