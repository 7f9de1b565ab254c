"""The agent's Prometheus metrics: figures read on the event loop, exposed through prometheus-client.

:func:`blackbox.agent.status.collect_metrics` reads the agent's live state and the buffer on the
event loop and returns :class:`Metric` values; :class:`AgentCollector` is the prometheus-client
collector that asks the loop for them at each scrape (the HTTP server runs in a thread of its own,
:class:`blackbox.prometheus.MetricsServer`). Nothing here knows the agent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.core import Metric as Family
from prometheus_client.registry import Collector

SCRAPE_TIMEOUT_S = 5.0
"""A scrape fails (HTTP 500) rather than wait longer than this for the event loop."""


@dataclass
class Metric:
    name: str
    kind: str
    """``gauge`` or ``counter`` (a counter's name ends in ``_total``)."""
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        self.samples.append((labels, value))
        return self

    def family(self) -> Family:
        """The prometheus-client metric family of these samples."""
        names = sorted({k for labels, _ in self.samples for k in labels})
        family: Family
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.help, labels=names)
        else:
            family = GaugeMetricFamily(self.name, self.help, labels=names)
        for labels, value in self.samples:
            family.add_metric([labels.get(k, "") for k in names], value)
        return family


Collect = Callable[[], Coroutine[Any, Any, list[Metric]]]


class AgentCollector(Collector):
    """Runs ``collect`` on ``loop`` for each scrape (called from the HTTP server's thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, collect: Collect) -> None:
        self._loop = loop
        self._collect = collect

    def collect(self) -> Iterator[Family]:
        metrics = asyncio.run_coroutine_threadsafe(self._collect(), self._loop).result(SCRAPE_TIMEOUT_S)
        for m in metrics:
            yield m.family()
