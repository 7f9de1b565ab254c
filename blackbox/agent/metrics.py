"""The agent's Prometheus metrics as plain figures: :class:`Metric` values read on the event loop.

:func:`blackbox.agent.status.collect_metrics` reads the agent's live state and the buffer on the
event loop and returns :class:`Metric` values; :mod:`blackbox.agent.metrics_export` turns them into
prometheus-client's families for the HTTP server. prometheus-client is imported there only, and
only when the configuration asks for metrics (``agent.metrics_port``): importing it costs the
agent about 2 MiB. Nothing here knows the agent.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

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


Collect = Callable[[], Coroutine[Any, Any, list[Metric]]]
