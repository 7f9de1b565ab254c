"""Server-rendered pages: login, search, batch report with charts, comparison, reverse lot, gateways.

Every page needs a login session (cookie HttpOnly, SameSite=Lax, Secure when served over HTTPS);
every form carries a CSRF token (the session's, or for the login form a double-submit cookie). The
pages call the same queries as the API and are authorised the same way: another site's batch is a
404 page.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from blackbox.store.gateways import gateway_overview
from blackbox.store.genealogy import Direction, genealogy
from blackbox.store.report import TraceReport, fmt_num
from blackbox.store.trace import reverse_lot
from blackbox.web import golden, queries
from blackbox.web.api import (
    check_chooser,
    chooser_occurrence,
    comparison_answer,
    describe,
    golden_sites,
    lot_rows,
    parameter_rows,
    reference_or_404,
    timeline_rows,
)
from blackbox.web.auth import Principal, check_password, close_session, open_session
from blackbox.web.context import LANG_COOKIE, SESSION_COOKIE, WebContext
from blackbox.web.golden import MODES, Mode
from blackbox.web.i18n import LANGUAGES, words
from blackbox.web.record_view import genealogy_view, signatures_by_record

LOGIN_CSRF_COOKIE = "bbx_login_csrf"
PER_PAGE = 50

_env = Environment(loader=PackageLoader("blackbox.web", "templates"), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)


def _lang(ctx: WebContext, request: Request) -> str:
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    return asked if asked in LANGUAGES else ctx.config.language


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def render(ctx: WebContext, request: Request, template: str, principal: Principal | None, *,
           status: int = 200, tz: ZoneInfo | None = None, **values: Any) -> HTMLResponse:
    lang = _lang(ctx, request)
    zone = tz or ZoneInfo(ctx.config.timezone)

    zones: dict[str, ZoneInfo] = {}

    def when(us: int | None, seconds: bool = True, site: str | None = None) -> str:
        """A time in the page's zone, or in ``site``'s own (rows of several sites, with the zone's name)."""
        if us is None:
            return "-"
        row_zone = zone if site is None else zones.setdefault(site, ctx.timezone(site))
        dt = datetime.fromtimestamp(us / 1e6, tz=UTC).astimezone(row_zone)
        text = dt.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
        return text if row_zone == zone else f"{text} ({row_zone.key})"

    def other_lang_url() -> str:
        params = dict(request.query_params)
        params["lang"] = "en" if lang != "en" else "zh-CN"
        return f"{request.url.path}?{urlencode(params)}"

    html = _env.get_template(template).render(
        t=words(lang), lang=lang, principal=principal, when=when, num=fmt_num, tzname=str(zone.key),
        other_lang_url=other_lang_url(), path=request.url.path, quote=quote, **values)
    response = HTMLResponse(html, status_code=status)
    if request.query_params.get("lang") in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax", secure=_secure(request),
                            httponly=True)
    return response


def error_page(ctx: WebContext, request: Request, status: int) -> Response:
    if status == 401:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    principal = ctx.caller(request)
    key = "not_found" if status == 404 else "forbidden"
    return render(ctx, request, "error.html", principal, status=status, message_key=key)


def _tz_of(ctx: WebContext, site: str | None) -> ZoneInfo:
    return ctx.timezone(site)


def _parse_day(value: str | None, zone: ZoneInfo, end: bool = False) -> int | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=zone)
    except ValueError:
        raise HTTPException(422, f"not a date (YYYY-MM-DD): {value!r}") from None
    us = int(day.timestamp() * 1_000_000)
    return us + 86_400_000_000 - 1 if end else us


def build_pages(ctx: WebContext) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def page_user(request: Request) -> Principal:
        principal = ctx.caller(request)
        if principal is None or principal.user_id is None:
            raise HTTPException(401)
        return principal

    @router.get("/login")
    def login_form(request: Request, next: str = "/", failed: bool = False) -> Response:
        token = secrets.token_urlsafe(24)
        response = render(ctx, request, "login.html", None, csrf=token, next=_local(next), failed=failed)
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request),
                            max_age=3600)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, form.get("csrf", "")):
            raise HTTPException(403, "the form's CSRF token does not match")
        user_id = check_password(ctx.read, form.get("username", ""), form.get("password", ""))
        nxt = _local(form.get("next", "/"))
        if user_id is None:
            return RedirectResponse(f"/login?failed=1&next={quote(nxt)}", status_code=303)
        value = open_session(ctx.write, user_id, int(ctx.config.session_hours * 3600 * 1_000_000))
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(SESSION_COOKIE, value, httponly=True, samesite="lax", secure=_secure(request),
                            max_age=int(ctx.config.session_hours * 3600))
        response.delete_cookie(LOGIN_CSRF_COOKIE)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        principal = page_user(request)
        await _checked_form(request, principal)
        close_session(ctx.write, request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @router.get("/")
    def search(request: Request, site: str = "", batch: str = "", product: str = "", date_from: str = "",
               date_to: str = "", with_alarms: bool = False, with_gaps: bool = False, page: int = 1) -> Response:
        principal = page_user(request)
        if principal.role == "admin":
            return RedirectResponse("/gateways", status_code=303)
        zone = _tz_of(ctx, site or (next(iter(principal.sites)) if principal.sites else None))
        page = max(1, page)
        if site and not principal.may_see_site(site):
            result = queries.SearchResult(0, [])
        else:
            result = queries.search_batches(
                ctx.read, sites=principal.site_filter(), site=site or None, batch=batch or None,
                product=product or None, from_us=_parse_day(date_from, zone),
                to_us=_parse_day(date_to, zone, end=True), with_alarms=with_alarms, with_gaps=with_gaps,
                offset=(page - 1) * PER_PAGE, limit=PER_PAGE)
        params = {k: v for k, v in request.query_params.items() if k not in ("page", "lang")}
        return render(ctx, request, "search.html", principal, tz=zone, result=result, q=params, page=page,
                      per_page=PER_PAGE, query=urlencode(params))

    @router.get("/sites/{site}/batches/{batch}")
    def batch_page(request: Request, site: str, batch: str, occurrence: int | None = None) -> Response:
        principal = page_user(request)
        occ = ctx.occurrence(principal, site, batch, occurrence)
        ctx.record(request, principal, "page.batch", site=site, batch=batch, detail=f"occurrence {occ.occurrence}")
        report = ctx.report(occ)
        tags = chart_tags(report)
        page_url = f"/sites/{quote(site, safe='')}/batches/{quote(batch, safe='')}"
        return render(ctx, request, "batch.html", principal, tz=_tz_of(ctx, site), occ=occ, report=report,
                      parameters=parameter_rows(report), timeline=timeline_rows(report), tags=tags,
                      api=f"/api/v1{page_url}", page_url=page_url, occ_query=f"occurrence={occ.occurrence}",
                      signatures_by_record=signatures_by_record)

    @router.get("/sites/{site}/batches/{batch}/compare")
    def compare_page(request: Request, site: str, batch: str, tag: str = "", occurrence: int | None = None,
                     reference: str = "auto", last: int = 10, against: str = "", k: float = 2.0) -> Response:
        principal = page_user(request)
        occ = ctx.occurrence(principal, site, batch, occurrence)
        mode: Mode = reference if reference in MODES else "auto"
        tags = queries.batch_tags(ctx.read, occ)
        tag = tag or (tags[0] if tags else "")
        last = max(1, min(last, 100))
        k = k if 0 < k <= 6 else 2.0
        ref = reference_or_404(ctx, principal, occ, mode, last, against or None, None)
        data = None
        if tag:
            ctx.record(request, principal, "page.compare", site=site, batch=batch,
                       detail=f"occurrence {occ.occurrence}, tag {tag}, {describe(ref)}")
            data = comparison_answer(ctx, occ, tag, ref, k)
        params = {"tag": tag, "occurrence": occ.occurrence, "reference": mode, "last": last, "k": k,
                  **({"against": against} if against else {})}
        api = f"/api/v1/sites/{quote(site, safe='')}/batches/{quote(batch, safe='')}/compare?" + urlencode(params)
        return render(ctx, request, "compare.html", principal, tz=_tz_of(ctx, site), occ=occ, tags=tags, tag=tag,
                      reference=mode, last=last, against=against, k=k, data=data, ref=ref, api=api,
                      may_choose=golden.may_choose(principal, site) and occ.product is not None,
                      here=f"{request.url.path}?{request.url.query}")

    @router.get("/golden")
    def golden_page(request: Request, site: str = "", product: str = "", saved: bool = False) -> Response:
        principal = page_user(request)
        sites = golden_sites(principal)
        current = golden.current_choices(ctx.read, sites=sites, site=site or None)
        past = golden.history(ctx.read, sites=sites, site=site or None, product=product or None)
        own = sorted(principal.sites) if principal.role == "factory_qa" and principal.sites else []
        return render(ctx, request, "golden.html", principal, tz=_tz_of(ctx, site or (own[0] if own else None)),
                      current=current, history=past, site=site, product=product, saved=saved,
                      chooser=principal.role in ("factory_qa", "admin"), own_sites=own,
                      may_choose=golden.may_choose)

    @router.post("/golden")
    async def golden_choose(request: Request) -> Response:
        principal = page_user(request)
        form = await _checked_form(request, principal)
        site, batch = form.get("site", ""), form.get("batch", "").strip()
        occurrence = _int_or_none(form.get("occurrence", ""))
        occ = chooser_occurrence(ctx, principal, site, batch, occurrence)
        try:
            choice = golden.choose(ctx.write, occ, by=principal.label, role=principal.role,
                                   reason=form.get("reason", "").strip())
        except golden.GoldenError as exc:
            raise HTTPException(422, str(exc)) from None
        ctx.record(request, principal, "golden.set", site=site, batch=occ.batch,
                   detail=f"occurrence {occ.occurrence}, product {choice.product}")
        return RedirectResponse(_local(form.get("next", "")) if form.get("next") else
                                f"/golden?site={quote(site)}&saved=1", status_code=303)

    @router.post("/golden/withdraw")
    async def golden_withdraw(request: Request) -> Response:
        principal = page_user(request)
        form = await _checked_form(request, principal)
        site, product = form.get("site", ""), form.get("product", "")
        check_chooser(principal, site)
        try:
            golden.withdraw(ctx.write, site, product, by=principal.label, role=principal.role,
                            reason=form.get("reason", "").strip())
        except golden.GoldenError:
            raise HTTPException(404) from None
        ctx.record(request, principal, "golden.withdraw", site=site, detail=f"product {product}")
        return RedirectResponse(f"/golden?site={quote(site)}&saved=1", status_code=303)

    @router.get("/live")
    def live_page(request: Request, site: str = "") -> Response:
        principal = page_user(request)
        if not principal.may_see_batches():
            raise HTTPException(403)
        if not site and principal.sites is not None and len(principal.sites) == 1:
            site = next(iter(principal.sites))
        if site and not principal.may_see_site(site):
            raise HTTPException(404)
        return render(ctx, request, "live.html", principal, tz=_tz_of(ctx, site or None), site=site)

    @router.get("/lots")
    def lot_page(request: Request, lot: str = "") -> Response:
        principal = page_user(request)
        if not principal.may_see_batches():
            raise HTTPException(403)
        uses = []
        if lot:
            sites = principal.site_filter()
            uses = lot_rows(ctx, [u for u in reverse_lot(ctx.read, lot) if sites is None or u.site in sites])
            ctx.record(request, principal, "page.lot", detail=f"lot {lot}")
        return render(ctx, request, "lot.html", principal, lot=lot, uses=uses)

    @router.get("/genealogy")
    def genealogy_page(request: Request, id: str = "", direction: str = "forward") -> Response:
        """The walk of the API's /genealogy, through the records of the viewer's sites only: a node that
        none of them holds is a 404 page, as another site's batch is."""
        principal = page_user(request)
        if not principal.may_see_batches():
            raise HTTPException(403)
        way: Direction = "reverse" if direction == "reverse" else "forward"
        view = None
        if id:
            view = genealogy_view(ctx.read, genealogy(ctx.read, id, way, sites=principal.site_filter()))
            ctx.record(request, principal, "page.genealogy", detail=f"{way} {id}")
            if not view.found:
                raise HTTPException(404)
        site = view.levels[0][1][0].sites[0] if view and view.levels and view.levels[0][1][0].sites else None
        return render(ctx, request, "genealogy.html", principal, tz=_tz_of(ctx, site), id=id, direction=way,
                      view=view)

    @router.get("/gateways")
    def gateways_page(request: Request) -> Response:
        principal = page_user(request)
        sites = principal.site_filter()
        infos = [g for g in gateway_overview(ctx.read) if sites is None or g.site in sites]
        return render(ctx, request, "gateways.html", principal, gateways=infos)

    @router.get("/access-log")
    def access_page(request: Request, site: str = "", batch: str = "", page: int = 1) -> Response:
        principal = page_user(request)
        if principal.role != "regulator":
            raise HTTPException(403)
        page = max(1, page)
        total, rows = queries.list_access(ctx.read, sites=principal.site_filter(), site=site or None,
                                          batch=batch or None, offset=(page - 1) * 100, limit=100)
        return render(ctx, request, "access.html", principal, total=total, rows=rows, site=site, batch=batch,
                      page=page)

    return router


def chart_tags(report: TraceReport) -> list[str]:
    """Tags with numeric readings among the report's process parameters (what the batch page charts)."""
    return sorted({p.tag for p in report.parameters if p.n_numeric})


def _local(target: str) -> str:
    """Only same-site paths as redirect targets (no open redirect through ?next=)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


async def _checked_form(request: Request, principal: Principal) -> dict[str, str]:
    """The posted form of a logged-in user, refused (403) unless it carries the session's CSRF token."""
    form = await _form(request)
    if principal.csrf is None or not hmac.compare_digest(principal.csrf, form.get("csrf", "")):
        raise HTTPException(403, "the form's CSRF token does not match")
    return form


def _int_or_none(value: str) -> int | None:
    try:
        return int(value) if value.strip() else None
    except ValueError:
        raise HTTPException(422, f"not a number: {value!r}") from None


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the only kind the pages post)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise HTTPException(415, "forms are posted as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > 16_384:
        raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
