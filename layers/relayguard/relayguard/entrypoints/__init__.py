"""The three Lambda handlers, one module each; ``functions/<name>/app.py`` re-exports one of them.

Each handler parses its event into a typed request, gets its service from :mod:`relayguard.bootstrap`
and shapes the answer. Error policy: a malformed event raises (async invocations then retry and land
in the on-failure destination; SQS records become batch item failures and, in the end, DLQ messages);
a server's own failure is a result, never an exception.

One module per handler so that a function's cold start imports only what that handler uses (the
planner never loads paramiko or the batch processor, the worker never loads the event parser or the
idempotency utility); this package holds what all three share. See bench/README.md for the figures.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

from relayguard import bootstrap
from relayguard.config import Settings, load_settings

logger = Logger()
metrics = Metrics()
tracer = Tracer()


def settings() -> Settings:
    return bootstrap.cached_settings(tuple(sorted(os.environ.items())), load_settings)
