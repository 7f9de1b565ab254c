"""The HTTP API (``/api/v1``): JSON everywhere, CSV for tables, every batch read authorised by site.

No credentials → 401; a role without batch access → 403; a batch of a site the caller may not see
→ 404, exactly as for a batch that does not exist. Every read of a batch is written to the access
log (who, what, when), which a regulator can list.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from blackbox.store.gateways import gateway_overview
from blackbox.store.genealogy import genealogy
from blackbox.store.report import LotUse, TraceReport
from blackbox.store.trace import reverse_lot
from blackbox.web import golden, queries
from blackbox.web.auth import AuthError, Principal, create_token, list_tokens, revoke_token
from blackbox.web.context import WebContext
from blackbox.web.golden import Mode

Format = Literal["json", "csv"]
Page = Annotated[int, Query(ge=1, description="Page number (1 is the first).")]
PerPage = Annotated[int, Query(ge=1, le=1000, description="Items per page.")]
KEEPALIVE_S = 15.0


def caller(request: Request) -> Principal:
    ctx: WebContext = request.app.state.ctx
    return ctx.require(request)


Caller = Annotated[Principal, Depends(caller)]


def _regulator(principal: Caller) -> Principal:
    if principal.role != "regulator":
        raise HTTPException(403, "regulators only")
    return principal


def _admin(principal: Caller) -> Principal:
    if principal.role != "admin":
        raise HTTPException(403, "administrators only")
    return principal


def _batch_reader(principal: Caller) -> Principal:
    if not principal.may_see_batches():
        raise HTTPException(403, f"the {principal.role} role has no access to batch data")
    return principal


Regulator = Annotated[Principal, Depends(_regulator)]
Admin = Annotated[Principal, Depends(_admin)]
BatchReader = Annotated[Principal, Depends(_batch_reader)]


class NewGolden(BaseModel):
    batch: str = Field(min_length=1, max_length=128)
    occurrence: int | None = Field(None, ge=1, description="Which run of a reused batch number (default: the latest).")
    reason: str | None = Field(None, max_length=1000)


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: Literal["regulator", "factory_qa", "admin"]
    sites: list[str] | None = None


def build_router(ctx: WebContext) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    def report_for(request: Request, principal: Principal, site: str, batch: str, occurrence: int | None,
                   action: str) -> tuple[queries.Occurrence, TraceReport]:
        occ = ctx.occurrence(principal, site, batch, occurrence)
        ctx.record(request, principal, action, site=site, batch=batch, detail=f"occurrence {occ.occurrence}")
        return occ, ctx.report(occ)

    @router.get("/me", summary="Who the credentials belong to")
    def me(principal: Caller) -> dict[str, Any]:
        return {"principal": principal.label, "role": principal.role, "sites": principal.site_filter()}

    @router.get("/batches", summary="Search batch occurrences (newest first)")
    def batches(
        principal: BatchReader,
        site: str | None = None,
        batch: str | None = Query(None, description="Part of the batch number."),
        product: str | None = None,
        from_us: int | None = Query(None, description="Started at or after (µs UTC)."),
        to_us: int | None = Query(None, description="Started at or before (µs UTC)."),
        with_alarms: bool = False,
        with_gaps: bool = False,
        page: int = Query(1, ge=1),
        per_page: int = Query(50, ge=1, le=500),
        format: Format = "json",
    ) -> Any:
        if site is not None and not principal.may_see_site(site):
            result = queries.SearchResult(0, [])
        else:
            result = queries.search_batches(
                ctx.read, sites=principal.site_filter(), site=site, batch=batch, product=product, from_us=from_us,
                to_us=to_us, with_alarms=with_alarms, with_gaps=with_gaps, offset=(page - 1) * per_page,
                limit=per_page)
        items = [o.public() for o in result.items]
        if format == "csv":
            return csv_response("batches.csv", [{**i, "gateways": " ".join(i["gateways"])} for i in items])
        return {"total": result.total, "page": page, "per_page": per_page, "items": items}

    @router.get("/sites/{site}/batches/{batch}", summary="The full trace report of a batch occurrence")
    def report(principal: Caller, request: Request, site: str, batch: str, occurrence: int | None = None) -> Any:
        occ, rep = report_for(request, principal, site, batch, occurrence, "batch.report")
        return {"occurrence": occ.public(), "report": rep.model_dump(mode="json")}

    def table(name: str, rows_of: Any, summary: str) -> None:
        @router.get(f"/sites/{{site}}/batches/{{batch}}/{name}", summary=summary, name=f"batch_{name}")
        def endpoint(principal: Caller, request: Request, site: str, batch: str, occurrence: int | None = None,
                     format: Format = "json") -> Any:
            _, rep = report_for(request, principal, site, batch, occurrence, f"batch.{name}")
            rows = rows_of(rep)
            if format == "csv":
                return csv_response(f"{batch}-{name}.csv", rows)
            return {"items": rows}

    table("materials", lambda r: [m.model_dump(mode="json") for m in r.materials],
          "Genealogy: material lots consumed, target vs actual, tolerance")
    table("parameters", parameter_rows, "Process profile per tag and phase against the limits in force")
    table("qc", lambda r: [q.model_dump(mode="json") for q in r.qc], "QC results against specification")
    table("timeline", timeline_rows, "Alarms, operator actions and data-source events on one time axis")
    table("phases", lambda r: [p.model_dump(mode="json") for p in r.phases], "Phases and their durations")

    @router.get("/sites/{site}/batches/{batch}/integrity",
                summary="Integrity: verdict, findings, gaps, rejections, clock events, configuration versions")
    def integrity(principal: Caller, request: Request, site: str, batch: str, occurrence: int | None = None) -> Any:
        occ, rep = report_for(request, principal, site, batch, occurrence, "batch.integrity")
        configs = sorted({(lim.config_sha256, lim.effective_from_us) for p in rep.parameters for lim in p.limits
                          if lim.config_sha256 is not None}, key=lambda c: c[1] or 0)
        return {
            **rep.integrity.model_dump(mode="json"),
            "clock_events": [f.model_dump() for f in rep.integrity.findings if f.code in ("clock", "clock_jump")],
            "rejections": rejections_of(occ),
            "config_versions": [{"config_sha256": sha, "effective_from_us": eff} for sha, eff in configs],
        }

    def rejections_of(occ: queries.Occurrence) -> list[dict[str, Any]]:
        info = [g for g in gateway_overview(ctx.read) if g.site == occ.site and g.gateway in occ.gateways]
        return [{"gateway": g.gateway, "rejections": g.rejections} for g in info]

    @router.get("/sites/{site}/batches/{batch}/tags", summary="Numeric tags that can be charted")
    def tags(principal: Caller, request: Request, site: str, batch: str, occurrence: int | None = None) -> Any:
        occ = ctx.occurrence(principal, site, batch, occurrence)
        return {"items": queries.batch_tags(ctx.read, occ)}

    @router.get("/sites/{site}/batches/{batch}/series",
                summary="Chart data of one tag: min/max-preserving buckets, limit bands, phases, alarms")
    def series(principal: Caller, request: Request, site: str, batch: str, tag: str, occurrence: int | None = None,
               from_us: int | None = None, to_us: int | None = None,
               points: int = Query(1200, ge=10, le=queries.MAX_POINTS)) -> Any:
        occ = ctx.occurrence(principal, site, batch, occurrence)
        ctx.record(request, principal, "batch.series", site=site, batch=batch,
                   detail=f"occurrence {occ.occurrence}, tag {tag}")
        return queries.series(ctx.read, occ, tag, from_us=from_us, to_us=to_us, points=points)

    @router.get("/sites/{site}/batches/{batch}/compare",
                summary="Phase-aligned comparison with the product's golden batch, its last N batches, or a "
                        "batch named for this comparison")
    def compare(principal: Caller, request: Request, site: str, batch: str, tag: str, occurrence: int | None = None,
                reference: Annotated[Mode, Query(description="auto: the product's golden batch when one is "
                                                 "chosen, else its last N batches; golden; last.")] = "auto",
                last: int = Query(10, ge=1, le=100),
                against: str | None = Query(None, description="Compare with this batch of the site instead "
                                            "(this comparison only; the golden batch is not changed)."),
                against_occurrence: int | None = None, k: float = Query(2.0, gt=0, le=6)) -> Any:
        occ = ctx.occurrence(principal, site, batch, occurrence)
        ref = reference_or_404(ctx, principal, occ, reference, last, against, against_occurrence)
        ctx.record(request, principal, "batch.compare", site=site, batch=batch,
                   detail=f"occurrence {occ.occurrence}, tag {tag}, {describe(ref)}")
        return comparison_answer(ctx, occ, tag, ref, k)

    @router.get("/golden", summary="Golden batches in force, per site and product")
    def golden_current(principal: Caller, site: str | None = None) -> Any:
        return {"items": [c.public() for c in golden.current_choices(ctx.read, sites=golden_sites(principal),
                                                                     site=site)]}

    @router.get("/golden/history", summary="Every golden-batch choice and withdrawal, newest first (the audit trail)")
    def golden_history(principal: Caller, site: str | None = None, product: str | None = None, page: Page = 1,
                       per_page: PerPage = 100, format: Format = "json") -> Any:
        rows = [c.public() for c in golden.history(ctx.read, sites=golden_sites(principal), site=site,
                                                   product=product)]
        if format == "csv":
            return csv_response("golden-history.csv", rows)
        return paged(rows, page, per_page)

    @router.post("/sites/{site}/golden", status_code=201,
                 summary="Choose a batch occurrence as its product's golden batch (factory QA of the site, admin)")
    def golden_set(principal: Caller, site: str, body: NewGolden, request: Request) -> Any:
        changes_by_token(request)
        occ = chooser_occurrence(ctx, principal, site, body.batch, body.occurrence)
        try:
            choice = golden.choose(ctx.write, occ, by=principal.label, role=principal.role, reason=body.reason)
        except golden.GoldenError as exc:
            raise HTTPException(422, str(exc)) from None
        ctx.record(request, principal, "golden.set", site=site, batch=occ.batch,
                   detail=f"occurrence {occ.occurrence}, product {choice.product}")
        return choice.public()

    @router.delete("/sites/{site}/golden",
                   summary="Withdraw a product's golden batch: comparisons go back to its last batches")
    def golden_withdraw(principal: Caller, site: str, product: str, request: Request, reason: str | None = None
                        ) -> Any:
        changes_by_token(request)
        check_chooser(principal, site)
        try:
            choice = golden.withdraw(ctx.write, site, product, by=principal.label, role=principal.role,
                                     reason=reason)
        except golden.GoldenError as exc:
            raise HTTPException(404, str(exc)) from None
        ctx.record(request, principal, "golden.withdraw", site=site, detail=f"product {product}")
        return choice.public()

    @router.get("/sites/{site}/live", summary="Server-sent events: the site's current batch as sealed batches arrive",
                response_class=StreamingResponse)
    async def live(principal: BatchReader, request: Request, site: str) -> StreamingResponse:
        if not principal.may_see_site(site):
            raise HTTPException(404, "no such site")
        await anyio.to_thread.run_sync(lambda: ctx.record(request, principal, "site.live", site=site))
        return StreamingResponse(live_events(ctx, request, site), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @router.get("/lots/{lot}", summary="Reverse trace: every batch that consumed a supplier lot")
    def lot(principal: BatchReader, request: Request, lot: str, page: Page = 1, per_page: PerPage = 100,
            format: Format = "json") -> Any:
        sites = principal.site_filter()
        uses = [u for u in reverse_lot(ctx.read, lot) if sites is None or u.site in sites]
        ctx.record(request, principal, "lot.reverse", detail=f"lot {lot}")
        rows = lot_rows(ctx, uses)
        if format == "csv":
            return csv_response(f"lot-{lot}.csv", rows)
        return paged(rows, page, per_page)

    @router.get("/genealogy/{node}", summary="Genealogy: supplier lot -> lots -> batches -> finished lots, or back")
    def genealogy_of(principal: BatchReader, request: Request, node: str,
                     direction: Literal["forward", "reverse"] = "forward") -> Any:
        found = genealogy(ctx.read, node, direction, sites=principal.site_filter())  # only the viewer's sites
        ctx.record(request, principal, "lot.genealogy", detail=f"{direction} {node}")
        return found.model_dump(mode="json")

    @router.get("/gateways", summary="Gateways: status, chain received, gaps, rejections, keys")
    def gateways(principal: Caller, page: Page = 1, per_page: PerPage = 100, format: Format = "json") -> Any:
        sites = principal.site_filter()
        rows = [asdict(g) for g in gateway_overview(ctx.read) if sites is None or g.site in sites]
        if format == "csv":
            return csv_response("gateways.csv", [{**r, "keys": " ".join(k["key_id"] for k in r["keys"])}
                                                 for r in rows])
        return paged(rows, page, per_page)

    @router.get("/access-log", summary="Who read which batch, and when (regulators)")
    def access(principal: Regulator, site: str | None = None, batch: str | None = None, page: int = Query(1, ge=1),
               per_page: int = Query(100, ge=1, le=1000), format: Format = "json") -> Any:
        total, rows = queries.list_access(ctx.read, sites=principal.site_filter(), site=site, batch=batch,
                                          offset=(page - 1) * per_page, limit=per_page)
        if format == "csv":
            return csv_response("access-log.csv", rows)
        return {"total": total, "page": page, "per_page": per_page, "items": rows}

    @router.get("/admin/tokens", summary="API tokens (administrators)")
    def tokens(principal: Admin, page: Page = 1, per_page: PerPage = 100) -> Any:
        return paged([asdict(t) for t in list_tokens(ctx.read)], page, per_page)

    @router.post("/admin/tokens", status_code=201, summary="Create an API token; its value is shown only here")
    def add_token(principal: Admin, body: NewToken, request: Request) -> Any:
        changes_by_token(request)
        try:
            token = create_token(ctx.write, body.name, body.role, body.sites)
        except AuthError as exc:
            raise HTTPException(422, str(exc)) from None
        ctx.record(request, principal, "token.create", detail=f"{body.name} ({body.role})")
        return {"token": token}

    @router.delete("/admin/tokens/{token_id}", summary="Revoke an API token")
    def delete_token(principal: Admin, token_id: str, request: Request) -> Any:
        changes_by_token(request)
        if not revoke_token(ctx.write, token_id):
            raise HTTPException(404, "no such active token")
        ctx.record(request, principal, "token.revoke", detail=token_id)
        return {"revoked": token_id}

    return router


def lot_rows(ctx: WebContext, uses: Sequence[LotUse]) -> list[dict[str, Any]]:
    """The lot's uses, each with the occurrence of its batch number that consumed it (a reused number
    is two runs: the link must open the right one)."""
    return [{**u.model_dump(mode="json"),
             "occurrence": queries.occurrence_at(ctx.read, u.site, u.batch, u.ts_us) if u.batch else None}
            for u in uses]


def paged(rows: Sequence[Any], page: int, per_page: int) -> dict[str, Any]:
    """One page of a list that the store answers whole (short lists: lots, gateways, tokens, choices);
    CSV exports give every row."""
    start = (page - 1) * per_page
    return {"total": len(rows), "page": page, "per_page": per_page, "items": list(rows[start:start + per_page])}


def changes_by_token(request: Request) -> None:
    """Changes through the API need a bearer token: a session cookie alone would let another site's
    page post to the API in the user's name (the pages' own forms carry a CSRF token instead)."""
    if request.headers.get("authorization") is None:
        raise HTTPException(403, "changes through the API need a bearer token")


def golden_sites(principal: Principal) -> list[str] | None:
    """Sites whose golden batches the caller may list: an administrator every site, others theirs."""
    if principal.role == "admin":
        return None
    if not principal.may_see_batches():
        raise HTTPException(403, f"the {principal.role} role has no access to batch data")
    return principal.site_filter()


def check_chooser(principal: Principal, site: str) -> None:
    """Factory QA of the site or an administrator; 404 for QA of another site (no existence leak)."""
    if principal.role not in ("factory_qa", "admin"):
        raise HTTPException(403, "only factory QA of the site or an administrator chooses golden batches")
    if not golden.may_choose(principal, site):
        raise HTTPException(404, "no such batch")


def chooser_occurrence(ctx: WebContext, principal: Principal, site: str, batch: str, occurrence: int | None
                       ) -> queries.Occurrence:
    """The occurrence to choose as golden, authorised for choosing (an administrator sees no batch data,
    but names the batch to choose)."""
    check_chooser(principal, site)
    if principal.role == "factory_qa":
        return ctx.occurrence(principal, site, batch, occurrence)
    try:
        return queries.find_occurrence(ctx.read, site, batch, occurrence)
    except queries.NotFound:
        raise HTTPException(404, "no such batch") from None


def reference_or_404(ctx: WebContext, principal: Principal, occ: queries.Occurrence, mode: Mode, last: int,
                     against: str | None, against_occurrence: int | None) -> golden.Reference:
    """What the comparison uses, the batch named for it authorised like any other batch."""
    if against:
        ctx.occurrence(principal, occ.site, against, against_occurrence)
    try:
        return golden.reference_for(ctx.read, occ, mode=mode, last=last, batch=against or None,
                                    batch_occurrence=against_occurrence)
    except golden.GoldenError as exc:
        raise HTTPException(404, str(exc)) from None
    except queries.NotFound:
        raise HTTPException(404, "the golden batch is no longer in the store") from None


def describe(ref: golden.Reference) -> str:
    """The reference as written in the access log."""
    if ref.kind == "last":
        return f"last {len(ref.occurrences)}"
    o = ref.occurrences[0]
    return f"{ref.kind} {o.batch} occurrence {o.occurrence}"


def comparison_answer(ctx: WebContext, occ: queries.Occurrence, tag: str, ref: golden.Reference, k: float
                      ) -> dict[str, Any]:
    data = queries.comparison(ctx.read, occ, tag, reference=ref.occurrences, k=k, spread=ref.spread)
    return {**data, "reference_kind": ref.kind, "golden": ref.golden.public() if ref.golden else None}


async def live_events(ctx: WebContext, request: Request, site: str) -> AsyncIterator[str]:
    """``snapshot`` whenever a sealed batch of the site arrives, ``alarm`` for each new alarm event,
    a comment line as keep-alive. The web process polls the store (it runs apart from ingest)."""
    last: tuple[int, int] | None = None
    seen: set[tuple[int, int]] = set()
    quiet = 0.0
    while not await request.is_disconnected():
        stamp = await anyio.to_thread.run_sync(queries.site_stamp, ctx.read, site)
        if stamp != last:
            snap = await anyio.to_thread.run_sync(queries.live_snapshot, ctx.read, site)
            fresh = [a for a in snap["alarms"] if (a["ts_us"], a["seq"]) not in seen]
            if last is not None:  # alarms already there when the view opened are in the snapshot
                for alarm in fresh:
                    yield f"event: alarm\ndata: {orjson.dumps(alarm).decode()}\n\n"
            seen.update((a["ts_us"], a["seq"]) for a in fresh)
            yield f"event: snapshot\ndata: {orjson.dumps(snap).decode()}\n\n"
            last, quiet = stamp, 0.0
        elif quiet >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(ctx.live_poll_s)
        quiet += ctx.live_poll_s


def parameter_rows(report: TraceReport) -> list[dict[str, Any]]:
    out = []
    for p in report.parameters:
        lim = p.limits[-1] if p.limits else None
        out.append({
            "gateway": p.gateway, "tag": p.tag, "phase": p.phase, "eng_unit": p.eng_unit, "category": p.category,
            "n": p.n, "min": p.min, "mean": p.mean, "max": p.max,
            "ll": lim.ll if lim else None, "l": lim.l if lim else None, "h": lim.h if lim else None,
            "hh": lim.hh if lim else None, "limit_sets": len(p.limits), "limits_known": p.limits_known,
            "n_outside": p.n_outside, "n_outside_hh_ll": p.n_outside_hh_ll, "n_bad_quality": p.n_bad_quality,
            "excursions": len(p.excursions),
            "longest_excursion_s": max((e.duration_s for e in p.excursions), default=None),
        })
    return out


def timeline_rows(report: TraceReport) -> list[dict[str, Any]]:
    """Alarms, operator actions (start, weighing, acknowledgement, QC) and source events, by time."""
    rows: list[dict[str, Any]] = []
    b = report.batch
    if b.started_at_us is not None:
        rows.append({"ts_us": b.started_at_us, "kind": "batch", "what": "started", "who": b.operator,
                     "tag": None, "detail": f"{b.product or ''} {b.recipe or ''}".strip(), "phase": None})
    for p in report.phases:
        rows.append({"ts_us": p.start_us, "kind": "phase", "what": p.phase, "who": None, "tag": None,
                     "detail": None, "phase": p.phase})
    for a in report.alarms:
        rows.append({"ts_us": a.ts_us, "kind": "alarm", "what": a.transition, "who": a.user, "tag": a.tag,
                     "detail": f"{a.level or ''} value {a.value} limit {a.limit}".strip(), "phase": a.phase})
    for m in report.materials:
        rows.append({"ts_us": m.ts_us, "kind": "weighing", "what": m.material, "who": m.operator, "tag": m.scale,
                     "detail": f"lot {m.lot}: {m.actual} of {m.target} {m.eng_unit or ''}".strip(), "phase": None})
    for q in report.qc:
        rows.append({"ts_us": q.ts_us, "kind": "qc", "what": q.test, "who": q.operator, "tag": q.sample,
                     "detail": f"{q.value} ({'pass' if q.passed else 'FAIL' if q.passed is False else '?'})",
                     "phase": None})
    for s in report.sources:
        rows.append({"ts_us": s.ts_us, "kind": "source", "what": s.type.split(".", 1)[-1], "who": None,
                     "tag": s.source, "detail": s.reason, "phase": s.phase})
    if b.ended_at_us is not None:
        rows.append({"ts_us": b.ended_at_us, "kind": "batch", "what": "ended", "who": None, "tag": None,
                     "detail": None, "phase": None})
    rows.sort(key=lambda r: r["ts_us"])
    return rows


def csv_text(rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None) -> str:
    """Rows as CSV (UTF-8 with BOM added by the caller's response, header line first)."""
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in cols})
    return buf.getvalue()


def _csv_cell(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return orjson.dumps(v).decode()
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v  # recorded text must not run as a spreadsheet formula
    return v


def csv_response(filename: str, rows: Sequence[dict[str, Any]]) -> Response:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in filename)
    # a BOM so that spreadsheet programs read the Chinese text as UTF-8
    return Response("\ufeff" + csv_text(rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{safe}"'})
