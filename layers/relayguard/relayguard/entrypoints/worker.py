"""The worker: one server per SQS record; lock, probe, fix or audit over SSH, record, notify on change."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from relayguard import bootstrap
from relayguard.config import Settings
from relayguard.domain.metrics import (
    JOBS_RECEIVED,
    JOBS_REFUSED,
    MALFORMED_JOBS,
    METRICS,
    count_points,
    point,
    server_points,
)
from relayguard.domain.signals import signal_metrics
from relayguard.entrypoints import Handler, emit, logger, observed, settings
from relayguard.events import Job
from relayguard.services import Deferred, LockBusy, Worker


def _queue_url_of(cfg: Settings, event_source_arn: str) -> str:
    name = event_source_arn.rsplit(":", 1)[-1]
    for url in (cfg.urgent_queue_url, cfg.work_queue_url):
        if url.rstrip("/").rsplit("/", 1)[-1] == name:
            return url
    raise ValueError(f"record from an unexpected queue {event_source_arn!r}")


def _work_record(record: SQSRecord, context: LambdaContext, compose: Callable[[Settings], Worker]) -> None:
    """One SQS record; ``compose`` hands out the invocation's one worker (its inventory read once per batch)."""
    cfg = settings()
    receive_count = int(record.attributes.approximate_receive_count or "1")
    try:
        job = Job.model_validate_json(record.body)
    except ValidationError as exc:
        logger.error("rejected job message", message_id=record.message_id, errors=exc.errors(include_url=False,
                     include_input=False))
        emit(count_points(MALFORMED_JOBS, 1))
        raise
    logger.append_keys(run_id=job.run_id, server=job.server.name, alert_id=job.alert_id)
    worker = compose(cfg)
    try:
        # Inside the try: a record from an unexpected queue fails like any other job failure.
        queue_url = _queue_url_of(cfg, record.event_source_arn)
        handled = worker.handle(job, receive_count, context.get_remaining_time_in_millis(), queue_url)
    except Deferred as exc:
        # Visible again at once for the next invocation, which has its full time; left alone, a failed
        # item waits out the visibility timeout (6 x the worker timeout: 30 min at 300 s).
        returned = worker.queue.return_now(queue_url, record.receipt_handle)
        logger.info("job deferred", reason=str(exc), returned_to_queue=returned)
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
    if handled.status == "refused":
        emit(count_points(JOBS_REFUSED, 1))
        logger.warning("job refused: its message disagrees with the inventory; no SSH connection was made",
                       reason=handled.note, address=result.address if result else "")
    if result is None:
        logger.info("job finished without a result of its own", status=handled.status, note=handled.note)
        return
    emit(server_points(result.outcome, result.reason, exposed_before=result.exposed_before, trigger=job.trigger,
                       action=job.action, enqueued_at=job.enqueued_at, finished_at=datetime.now(UTC)))
    _publish_signals(result.name, result.signals)
    logger.info("server done", outcome=str(result.outcome), reason=result.reason, restarted=result.restarted)


def _publish_signals(server: str, signals: dict[str, Any] | None) -> None:
    """The server's non-zero spam signals, each a metric with the dimension ``server`` (one EMF document)."""
    emit([point(METRICS[name], value, server=server) for name, value in signal_metrics(signals or {}).items()])


def make_handler(worker: Callable[[Settings], Worker] = bootstrap.worker) -> Handler:
    """The worker's handler, each job's worker composed by ``worker``."""
    processor = BatchProcessor(event_type=EventType.SQS)

    @observed
    def worker_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # Every invocation reports at least this metric (Powertools warns about an empty flush otherwise).
        emit(count_points(JOBS_RECEIVED, len(event.get("Records") or [])))
        composed: list[Worker] = []

        def invocation_worker(cfg: Settings) -> Worker:
            # One worker for the whole batch, composed on first use: it caches the inventory it checks jobs against.
            if not composed:
                composed.append(worker(cfg))
            return composed[0]

        return dict(process_partial_response(
            event=event, record_handler=lambda record: _work_record(record, context, invocation_worker),
            processor=processor, context=context,
        ))

    return worker_handler


worker_handler = make_handler()
