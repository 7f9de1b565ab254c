"""What every request of the web window shares: the engines, the settings, the caller, the rule by site."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Request
from sqlalchemy import Engine, func, select

from blackbox.config.store import WebConfig
from blackbox.model import now_us
from blackbox.store.report import TraceReport
from blackbox.store.schema import sealed_batches
from blackbox.store.trace import trace_batch
from blackbox.web import queries
from blackbox.web.auth import Principal, session_principal, token_principal

SESSION_COOKIE = "bbx_session"
LANG_COOKIE = "bbx_lang"
REPORT_CACHE_SIZE = 16


@dataclass
class WebContext:
    """``read`` answers every query; ``write`` only records sessions and the access log."""

    read: Engine
    write: Engine
    config: WebConfig
    live_poll_s: float = 1.0
    """How often the live view looks for new sealed batches of its site."""
    _reports: OrderedDict[tuple[object, ...], TraceReport] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- who is calling ----------------------------------------------------------------------

    def caller(self, request: Request) -> Principal | None:
        """The principal of a bearer token, else of the session cookie, else None."""
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return token_principal(self.read, token.strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        return session_principal(self.read, cookie) if cookie else None

    def require(self, request: Request) -> Principal:
        principal = self.caller(request)
        if principal is None:
            raise HTTPException(401, "authentication required: a bearer token or a login session",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal

    # -- the rule by site ----------------------------------------------------------------------

    def occurrence(self, principal: Principal, site: str, batch: str, occurrence: int | None) -> queries.Occurrence:
        """The batch occurrence if the caller may see it; 404 alike for another site's and a missing batch."""
        if not principal.may_see_batches():
            raise HTTPException(403, f"the {principal.role} role has no access to batch data")
        if not principal.may_see_site(site):
            raise HTTPException(404, "no such batch")
        try:
            return queries.find_occurrence(self.read, site, batch, occurrence)
        except queries.NotFound:
            raise HTTPException(404, "no such batch") from None

    def record(self, request: Request, principal: Principal, action: str, *, site: str | None = None,
               batch: str | None = None, detail: str | None = None) -> None:
        client = request.client.host if request.client else None
        queries.record_access(self.write, principal.label, principal.role, action, site=site, batch=batch,
                              detail=detail, client=client)

    # -- reports -------------------------------------------------------------------------------

    def report(self, occ: queries.Occurrence) -> TraceReport:
        """The trace report of an occurrence.

        Kept in this process's memory (never in the database, where whoever could edit rows could
        also edit a cached verdict) while no new sealed batch of its gateways arrives, and at most
        ``config.report_cache_s``: an edit of the stored rows shows in the verdict within that time.
        """
        sb = sealed_batches.c
        with self.read.connect() as conn:
            stamp = conn.execute(select(func.max(sb.id), func.count()).where(sb.gateway_id.in_(list(occ.ranges)))
                                 ).one()
        key = (occ.site, occ.batch, occ.occurrence, tuple(sorted(occ.ranges.items())), tuple(stamp))
        with self._lock:
            cached = self._reports.get(key)
            if cached is not None and now_us() - cached.generated_at_us <= self.config.report_cache_s * 1e6:
                self._reports.move_to_end(key)
                return cached
        report = trace_batch(self.read, occ.batch, site=occ.site, ranges=occ.ranges)
        with self._lock:
            self._reports[key] = report
            while len(self._reports) > REPORT_CACHE_SIZE:
                self._reports.popitem(last=False)
        return report

    def timezone(self, site: str | None) -> ZoneInfo:
        name = queries.site_timezone(self.read, site) if site else None
        try:
            return ZoneInfo(name or self.config.timezone)
        except (ValueError, KeyError):  # a zone this machine does not know: the configured default
            return ZoneInfo(self.config.timezone)
