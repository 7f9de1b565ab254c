"""The Prometheus endpoint: the agent's figures through prometheus-client, real HTTP requests to the server."""

from __future__ import annotations

import asyncio
import http.client

from prometheus_client import CollectorRegistry, generate_latest

from blackbox.agent.metrics import Metric
from blackbox.agent.metrics_export import AgentCollector
from blackbox.prometheus import MetricsServer


async def test_text_format_with_labels_escaping_and_special_values() -> None:
    async def collect() -> list[Metric]:
        return [
            Metric("blackbox_readings_total", "counter", "Readings committed.").add(12345),
            Metric("blackbox_source_cycle_seconds", "gauge", "Last cycle.\nSeconds.")
            .add(0.0125, source="line-opcua").add(float("nan"), source='we"ird\\name'),
        ]

    registry = CollectorRegistry()
    registry.register(AgentCollector(asyncio.get_running_loop(), collect))
    text = (await asyncio.to_thread(generate_latest, registry)).decode()
    # the text exposition format 0.0.4, written out by hand
    assert text == (
        "# HELP blackbox_readings_total Readings committed.\n"
        "# TYPE blackbox_readings_total counter\n"
        "blackbox_readings_total 12345.0\n"
        "# HELP blackbox_source_cycle_seconds Last cycle.\\nSeconds.\n"
        "# TYPE blackbox_source_cycle_seconds gauge\n"
        'blackbox_source_cycle_seconds{source="line-opcua"} 0.0125\n'
        'blackbox_source_cycle_seconds{source="we\\"ird\\\\name"} NaN\n')


def get(port: int, method: str, path: str) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


async def test_metrics_and_health_over_http() -> None:
    healthy = [True]

    async def collect() -> list[Metric]:
        return [Metric("blackbox_up", "gauge", "Up.").add(1)]

    def health() -> tuple[bool, str]:
        return healthy[0], "ok" if healthy[0] else "the buffer refuses writes"

    registry = CollectorRegistry()
    registry.register(AgentCollector(asyncio.get_running_loop(), collect))
    server = MetricsServer("127.0.0.1", 0, registry, health)
    server.start()
    try:
        status, headers, body = await asyncio.to_thread(get, server.port, "GET", "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert body == "# HELP blackbox_up Up.\n# TYPE blackbox_up gauge\nblackbox_up 1.0\n"
        assert (await asyncio.to_thread(get, server.port, "GET", "/health"))[0] == 200
        healthy[0] = False
        status, _, body = await asyncio.to_thread(get, server.port, "GET", "/health")
        assert status == 503 and "refuses writes" in body
        assert (await asyncio.to_thread(get, server.port, "GET", "/nothing"))[0] == 404
        assert (await asyncio.to_thread(get, server.port, "POST", "/metrics"))[0] == 405
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_failing_health_check_is_unhealthy_not_a_crash() -> None:
    def broken() -> tuple[bool, str]:
        raise TimeoutError("the event loop did not answer")

    server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), broken)
    server.start()
    try:
        status, _, body = await asyncio.to_thread(get, server.port, "GET", "/health")
        assert status == 503 and "TimeoutError: the event loop did not answer" in body
    finally:
        await asyncio.to_thread(server.stop)
