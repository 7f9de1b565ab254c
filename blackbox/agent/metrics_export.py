"""The agent's :class:`~blackbox.agent.metrics.Metric` figures through prometheus-client.

:class:`AgentCollector` is the prometheus-client collector that asks the event loop for the figures
at each scrape (the HTTP server runs in a thread of its own, :class:`blackbox.prometheus.MetricsServer`).
Imported only when the configuration serves metrics (see :mod:`blackbox.agent.metrics`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.core import Metric as Family
from prometheus_client.registry import Collector

from blackbox.agent.metrics import SCRAPE_TIMEOUT_S, Collect, Metric


def family(metric: Metric) -> Family:
    """The prometheus-client metric family of ``metric``'s samples."""
    names = sorted({k for labels, _ in metric.samples for k in labels})
    result: Family
    if metric.kind == "counter":
        result = CounterMetricFamily(metric.name, metric.help, labels=names)
    else:
        result = GaugeMetricFamily(metric.name, metric.help, labels=names)
    for labels, value in metric.samples:
        result.add_metric([labels.get(k, "") for k in names], value)
    return result


class AgentCollector(Collector):
    """Runs ``collect`` on ``loop`` for each scrape (called from the HTTP server's thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, collect: Collect) -> None:
        self._loop = loop
        self._collect = collect

    def collect(self) -> Iterator[Family]:
        metrics = asyncio.run_coroutine_threadsafe(self._collect(), self._loop).result(SCRAPE_TIMEOUT_S)
        for m in metrics:
            yield family(m)
