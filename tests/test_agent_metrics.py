"""The Prometheus endpoint: the text format, and real HTTP requests to the asyncio server."""

from __future__ import annotations

import asyncio

from blackbox.agent.metrics import CONTENT_TYPE, Metric, MetricsServer, render


def test_text_format_with_labels_escaping_and_special_values() -> None:
    text = render([
        Metric("blackbox_readings_total", "counter", "Readings committed.").add(12345),
        Metric("blackbox_source_cycle_seconds", "gauge", "Last cycle.\nSeconds.")
        .add(0.0125, source="line-opcua").add(float("nan"), source='we"ird\\name'),
    ])
    assert text == (
        "# HELP blackbox_readings_total Readings committed.\n"
        "# TYPE blackbox_readings_total counter\n"
        "blackbox_readings_total 12345\n"
        "# HELP blackbox_source_cycle_seconds Last cycle.\\nSeconds.\n"
        "# TYPE blackbox_source_cycle_seconds gauge\n"
        'blackbox_source_cycle_seconds{source="line-opcua"} 0.0125\n'
        'blackbox_source_cycle_seconds{source="we\\"ird\\\\name"} NaN\n')


async def get(port: int, request: bytes) -> tuple[str, dict[str, str], str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    status, *headers = head.split("\r\n")
    return status, dict(h.split(": ", 1) for h in headers), body


async def test_metrics_and_health_over_http() -> None:
    healthy = [True]

    async def collect() -> list[Metric]:
        return [Metric("blackbox_up", "gauge", "Up.").add(1)]

    async def health() -> tuple[bool, str]:
        return healthy[0], "ok" if healthy[0] else "the buffer refuses writes"

    server = MetricsServer("127.0.0.1", 0, collect, health)
    await server.start()
    try:
        status, headers, body = await get(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK" and headers["Content-Type"] == CONTENT_TYPE
        assert body == "# HELP blackbox_up Up.\n# TYPE blackbox_up gauge\nblackbox_up 1\n"
        assert int(headers["Content-Length"]) == len(body)
        assert (await get(server.port, b"GET /health HTTP/1.0\r\n\r\n"))[0] == "HTTP/1.1 200 OK"
        healthy[0] = False
        status, _, body = await get(server.port, b"GET /health HTTP/1.0\r\n\r\n")
        assert status == "HTTP/1.1 503 Service Unavailable" and "refuses writes" in body
        assert (await get(server.port, b"GET /nothing HTTP/1.0\r\n\r\n"))[0] == "HTTP/1.1 404 Not Found"
        assert (await get(server.port, b"POST /metrics HTTP/1.0\r\n\r\n"))[0] == "HTTP/1.1 405 Method Not Allowed"
        assert (await get(server.port, b"garbage\r\n\r\n"))[0] == "HTTP/1.1 400 Bad Request"
    finally:
        await server.stop()
