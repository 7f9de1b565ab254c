"""The store worker's Prometheus metrics (prometheus-client, one registry per service instance).

Each worker exports its own figures on its own port (Prometheus labels them by ``instance``, and
sums over workers). The transparency log's
size is not known here: whoever owns the log sets :attr:`StoreMetrics.log_size_hook` and the
gauge ``blackbox_store_log_entries`` appears (absent while no hook is set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from blackbox.store.ingest import REASONS, IngestResult

LogSizeHook = Callable[[], int | None]
"""Number of entries in the transparency log, or ``None`` if it cannot be read right now."""


class _LogSize(Collector):
    def __init__(self, metrics: StoreMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        hook = self._metrics.log_size_hook
        size = hook() if hook is not None else None
        if size is not None:
            yield GaugeMetricFamily("blackbox_store_log_entries", "Entries in the store's transparency log.",
                                    value=size)


class StoreMetrics:
    """Counters and gauges of one store worker, updated by the service as messages are handled."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches = Counter("blackbox_store_batches", "Batches handled, by outcome (stored, duplicate, rejected).",
                               ["status"], registry=r)
        self.rejected = Counter("blackbox_store_batches_rejected", "Batches rejected, by reason.", ["reason"],
                                registry=r)
        self.readings = Counter("blackbox_store_readings_ingested", "Readings stored from verified batches.",
                                registry=r)
        self.db_errors = Counter("blackbox_store_database_errors", "Database failures while ingesting (retried).",
                                 registry=r)
        self.lag = Gauge("blackbox_store_ingest_lag_seconds",
                         "Seconds between the gateway sealing the last stored batch and the store committing it.",
                         registry=r)
        self.ingest_seconds = Histogram("blackbox_store_ingest_seconds",
                                        "Time to verify, check and commit one batch.", registry=r,
                                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.connected = Gauge("blackbox_store_mqtt_connected", "1 while the worker holds its subscription.",
                               registry=r)
        self.queue_depth = Gauge("blackbox_store_queue_depth", "Messages received and not yet handled.",
                                 registry=r)
        for status in ("stored", "duplicate", "rejected"):
            self.batches.labels(status)
        for reason in REASONS:
            self.rejected.labels(reason)
        self.log_size_hook: LogSizeHook | None = None
        r.register(_LogSize(self))

    def handled(self, result: IngestResult, seconds: float, now_us: int) -> None:
        """Count one handled batch; ``now_us`` is the time of the commit."""
        self.batches.labels(result.status).inc()
        self.ingest_seconds.observe(seconds)
        if result.status == "rejected" and result.reason is not None:
            self.rejected.labels(result.reason).inc()
        elif result.status == "stored":
            self.readings.inc(result.n_readings)
            if result.sealed_at_us is not None:
                self.lag.set(max(0.0, (now_us - result.sealed_at_us) / 1e6))
