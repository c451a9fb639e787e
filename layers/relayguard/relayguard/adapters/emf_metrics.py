"""Data points (``domain.metrics``) as CloudWatch embedded metric format lines, through Powertools."""

from __future__ import annotations

from collections.abc import Iterable

from aws_lambda_powertools.metrics import EphemeralMetrics, Metrics, MetricUnit

from relayguard.domain.metrics import Datapoint


class EmfMetricSink:
    """A :class:`~relayguard.ports.MetricSink` on Powertools.

    Points without dimensions of their own join ``metrics``, the handler's buffer (every ``Metrics()``
    shares it), which ``log_metrics`` flushes once when the handler returns, as one document with the
    ``service`` dimension. Points with dimensions (``outcome``, ``reason``, ``server``, ...) cannot join it:
    a dimension there would split every other count of the invocation. Each set of them is its own
    document, written at once, in the namespace of ``metrics`` said outright: an ``EphemeralMetrics`` left
    to itself takes it from the environment only, which a caller outside Lambda (the CLI's publisher, a
    test) need not have."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def emit(self, points: Iterable[Datapoint]) -> None:
        documents: dict[tuple[tuple[str, str], ...], list[Datapoint]] = {}
        for p in points:
            if p.dimensions:
                documents.setdefault(p.dimensions, []).append(p)
            else:
                self.metrics.add_metric(name=p.metric.name, unit=MetricUnit(p.metric.unit), value=p.value)
        for dimensions, group in documents.items():
            document = EphemeralMetrics(namespace=self.metrics.namespace)
            for name, value in dimensions:
                document.add_dimension(name=name, value=value)
            for p in group:
                document.add_metric(name=p.metric.name, unit=MetricUnit(p.metric.unit), value=p.value)
            document.flush_metrics()
