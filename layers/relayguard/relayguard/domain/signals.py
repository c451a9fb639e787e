"""Spam signals (queue size, send-limit hits, relay rejects) as a result reports them and as metrics.

The probe counts them read-only (domain/probe.py): the queue with ``exim -bpc``, the other two in
``/var/log/exim_mainlog`` over the last :data:`~relayguard.domain.models.SIGNALS_WINDOW_MINUTES`
minutes. Here they become the result's ``signals`` field, a short text line, and the per-server
metrics the worker publishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relayguard.domain.metrics import QUEUE_SIZE, RELAY_REJECTS, SEND_LIMIT_HITS
from relayguard.domain.models import Finding

#: Result field → metric name. Each is published with the dimension ``server`` (docs/operations.md).
METRIC_NAMES = {"queue": QUEUE_SIZE.name, "send_limit_hits": SEND_LIMIT_HITS.name, "relay_rejects": RELAY_REJECTS.name}


def signals_of(finding: Finding) -> dict[str, Any]:
    """The result's ``signals`` field: the window, where it starts, and each count (None: not measured)."""
    signals = finding.signals
    return {
        "window_minutes": signals.window_minutes,
        "since": signals.since or None,
        "queue": finding.queue,
        "send_limit_hits": signals.send_limit_hits,
        "relay_rejects": signals.relay_rejects,
        "partial": signals.partial,
    }


def signal_metrics(signals: Mapping[str, Any]) -> dict[str, int]:
    """Metric name → value for one server, only counts that were measured and are not zero.

    Every value of the ``server`` dimension is a metric of its own that CloudWatch bills for the hours
    it receives data. Leaving out zeros keeps a quiet fleet at no custom metrics; a missing data point
    means zero (alarms: ``TreatMissingData=notBreaching``)."""
    return {name: int(value) for key, name in METRIC_NAMES.items()
            if isinstance(value := signals.get(key), int) and not isinstance(value, bool) and value > 0}


def signals_text(signals: Mapping[str, Any]) -> str:
    """One line, e.g. ``queue 12, send-limit hits 3, relay rejects 40 in the last 60 min``; "" if empty."""
    if not signals:
        return ""

    def count(key: str) -> str:
        value = signals.get(key)
        if value is None:
            return "?"
        return f"≥{value}" if signals.get("partial") and key != "queue" else str(value)

    return (f"queue {count('queue')}, send-limit hits {count('send_limit_hits')}, "
            f"relay rejects {count('relay_rejects')} in the last {signals.get('window_minutes')} min")
