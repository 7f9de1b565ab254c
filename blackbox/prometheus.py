"""Prometheus ``GET /metrics`` and a ``GET /health`` check over HTTP, for the agent and the store.

The exposition (text format, content negotiation, gzip) and the registry are prometheus-client's;
this module only routes the two paths and runs the WSGI server in a thread of its own, so that a
slow scraper never holds the agent's event loop or the store's ingest thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)

Health = Callable[[], tuple[bool, str]]
"""``(healthy, detail)``; called from the HTTP server's thread for each ``GET /health``."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    """Requests go to the debug log, not to stderr line by line; a client silent for 5 s is dropped."""

    timeout = 5.0

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingWSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def _text(start_response: StartResponse, status: str, body: str) -> Iterable[bytes]:
    payload = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(payload)))])
    return [payload]


class MetricsServer:
    """Serves ``registry`` on ``/metrics`` and ``health`` on ``/health`` (and ``/healthz``).

    ``/health`` answers 200 with the detail when healthy, 503 with the reason otherwise; any other
    path is 404 and any method but GET (or HEAD) 405. ``port`` 0 picks a free port, read back from
    :attr:`port` after :meth:`start`.
    """

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        self.host = host
        self.port = port
        self._metrics_app = make_wsgi_app(registry)
        self._health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = make_server(self.host, self.port, self._app, _Server, handler_class=_QuietHandler)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="blackbox-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, health check on /health", self.host, self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", "only GET\n")
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body: Iterable[bytes] = self._metrics_app(environ, start_response)
            return body
        if path in ("/health", "/healthz"):
            try:
                ok, detail = self._health()
            except Exception as exc:  # a failing check is an unhealthy answer, and logged
                log.exception("the health check failed")
                ok, detail = False, f"the health check failed: {type(exc).__name__}: {exc}"
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable", detail + "\n")
        return _text(start_response, "404 Not Found", "try /metrics or /health\n")
