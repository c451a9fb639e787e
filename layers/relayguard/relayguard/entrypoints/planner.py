"""The planner: a scheduled sweep reads the inventory and fans one job per server out to the work queue."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayguard import bootstrap
from relayguard.entrypoints import logger, metrics, settings, tracer
from relayguard.events import SweepDetail
from relayguard.services import plan_sweep


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler
def planner_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scheduled = parse(event=event, model=EventBridgeModel)
    detail = SweepDetail.model_validate(scheduled.detail)
    cfg = settings()
    result = plan_sweep(cfg, bootstrap.inventory_store(cfg), bootstrap.run_store(cfg), bootstrap.job_queue(),
                        bootstrap.publisher(cfg), mode=detail.mode)
    for closed in result["closed_overdue"]:
        # Its digest went out with these servers counted failed: their jobs are in a DLQ, or lost.
        logger.warning("run closed past its deadline; servers never counted are counted failed", **closed)
    metrics.add_metric(name="RunsClosedOverdue", unit=MetricUnit.Count, value=len(result["closed_overdue"]))
    logger.append_keys(run_id=result["run_id"])
    logger.info("sweep planned", servers=result["servers"], mode=result["mode"], unsent=result["unsent"])
    metrics.add_metric(name="ServersPlanned", unit=MetricUnit.Count, value=result["servers"])
    return result
