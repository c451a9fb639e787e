"""The three Lambda handlers, one module each; ``functions/<name>/app.py`` re-exports one of them.

Each handler parses its event into a typed request, gets its service from :mod:`relayguard.bootstrap`
and shapes the answer. Each module builds its handler with ``make_handler(...)``, whose parameters are
bootstrap's factories by default; a test builds a handler of its own on fakes (tests/unit/test_handlers.py).
That beats swapping a cached factory for a fake: nothing global changes hands, so no test leaks a fake
into the next, and the product code carries no switch for tests.

Error policy: a malformed event raises (async invocations then retry and land
in the on-failure destination; SQS records become batch item failures and, in the end, DLQ messages);
a server's own failure is a result, never an exception.

One module per handler so that a function's cold start imports only what that handler uses (the
planner never loads paramiko or the batch processor, the worker never loads the event parser or the
idempotency utility); this package holds what all three share. See bench/README.md for the figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from relayguard import bootstrap
from relayguard.config import Settings, load_settings
from relayguard.domain.metrics import Datapoint

#: A Lambda handler: event and context in, the JSON answer out.
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]

logger = Logger()
metrics = Metrics()
tracer = Tracer()


def settings() -> Settings:
    return bootstrap.cached_settings(tuple(sorted(os.environ.items())), load_settings)


def emit(points: Iterable[Datapoint]) -> None:
    """Data points of ``domain.metrics`` (the one list of every metric): those without dimensions of their
    own are flushed with the handler's other metrics, the others at once."""
    bootstrap.metric_sink(settings().metrics_namespace).emit(points)


def observed(handler: Handler) -> Handler:
    """``handler`` under Powertools' logger, metrics and tracer, stacked the same way for every function."""
    traced = tracer.capture_lambda_handler(handler)
    measured = metrics.log_metrics(capture_cold_start_metric=True)(traced)
    # Powertools' decorators are untyped; the wrapped handler keeps the handler's signature.
    return cast(Handler, logger.inject_lambda_context(clear_state=True)(measured))
