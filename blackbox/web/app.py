"""The web window's application: API, pages and their static files, and the process that serves them.

``blackbox store web`` runs it with uvicorn, a process separate from the ingest workers. It reads
the store through a read engine and writes only its own tables (sessions, access log) through a
second one.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from blackbox.config.store import WebConfig
from blackbox.store.db import make_engine, open_store_readonly
from blackbox.web.api import build_router
from blackbox.web.context import WebContext

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    # everything the pages load comes from the store itself; no inline script, no framing
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def read_engine(url: str) -> Engine:
    """The engine every query of the web window goes through: read-only (:class:`StoreUnavailable` if the
    store is missing or at another schema revision)."""
    return open_store_readonly(url)


def create_app(read: Engine, write: Engine, config: WebConfig | None = None) -> FastAPI:
    from blackbox.web.pages import build_pages  # pages import the app's helpers

    ctx = WebContext(read=read, write=write, config=config or WebConfig())
    # no /docs page: FastAPI's would load Swagger UI from a CDN; the OpenAPI document is served as JSON
    app = FastAPI(title="blackbox store", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json", description="The regulator's window on the traceability store.")
    app.state.ctx = ctx
    app.include_router(build_router(ctx))
    app.include_router(build_pages(ctx))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def _security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> object:
        if request.url.path.startswith("/api/") or exc.status_code not in (401, 403, 404):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        from blackbox.web.pages import error_page

        return error_page(ctx, request, exc.status_code)

    return app


def app_for_url(url: str, config: WebConfig | None = None) -> FastAPI:
    """The application on the store at ``url``; the schema must be current (``blackbox store migrate``).

    Queries go through a read-only engine; the second engine writes only sessions, the access log
    and (for administrators) API tokens.
    """
    read = read_engine(url)
    return create_app(read, make_engine(url), config)


def _exit_on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve(url: str, config: WebConfig) -> None:
    """Serve the API and pages until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    from blackbox.store.integrity_worker import prestart, shutdown

    app = app_for_url(url, config)
    if url.startswith("postgresql"):  # large reports check their integrity in worker processes: start them
        prestart()
    # uvicorn raises the SIGTERM it caught again once it has shut down; with the default handler that
    # killed the process on the spot, before the worker processes were stopped (they stayed, for
    # ever). This handler ends the process as an exit does: the workers are stopped first.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="info",
                    ssl_certfile=str(config.tls_cert_file) if config.tls_cert_file else None,
                    ssl_keyfile=str(config.tls_key_file) if config.tls_key_file else None,
                    proxy_headers=bool(config.trusted_proxies),
                    forwarded_allow_ips=",".join(config.trusted_proxies) or None)
    finally:
        shutdown()
