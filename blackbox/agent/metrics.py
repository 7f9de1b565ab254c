"""Prometheus metrics and a health check over HTTP, served by asyncio itself.

The text exposition format (version 0.0.4) is a few lines per metric, and the two endpoints need
nothing of a web framework: ``GET /metrics`` and ``GET /health`` (200 ``ok`` or 503 with the
reason). The agent supplies the figures through two coroutines; nothing here knows the agent.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_HEADER_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0


@dataclass
class Metric:
    name: str
    kind: str
    """``gauge`` or ``counter``."""
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        self.samples.append((labels, value))
        return self


def render(metrics: list[Metric]) -> str:
    """The metrics in Prometheus text format."""
    lines: list[str] = []
    for m in metrics:
        lines.append(f"# HELP {m.name} {_escape_help(m.help)}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{m.name}{{{label_text}}} {_number(value)}" if label_text else f"{m.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


Collect = Callable[[], Awaitable[list[Metric]]]
Health = Callable[[], Awaitable[tuple[bool, str]]]


class MetricsServer:
    def __init__(self, host: str, port: int, collect: Collect, health: Health) -> None:
        self.host = host
        self.port = port
        self._collect = collect
        self._health = health
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEADER_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics, health check on /health", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, ctype = await asyncio.wait_for(self._answer(reader), REQUEST_TIMEOUT_S)
            payload = body.encode()
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                         "Connection: close\r\n\r\n".encode() + payload)
            await writer.drain()
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that went away or sent garbage gets nothing more
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, str, str]:
        request = (await reader.readline()).decode("latin-1").split()
        while (await reader.readline()).strip():  # headers: not needed
            pass
        if len(request) != 3:
            return "400 Bad Request", "bad request\n", "text/plain"
        method, target = request[0], request[1].split("?", 1)[0]
        if method != "GET":
            return "405 Method Not Allowed", "only GET\n", "text/plain"
        if target == "/metrics":
            return "200 OK", render(await self._collect()), CONTENT_TYPE
        if target in ("/health", "/healthz"):
            ok, detail = await self._health()
            return ("200 OK" if ok else "503 Service Unavailable"), detail + "\n", "text/plain"
        return "404 Not Found", "try /metrics or /health\n", "text/plain"
