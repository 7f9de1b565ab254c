"""The pages: login with CSRF and session cookies, per-site access, languages, what a batch page shows."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from store_synth import GATEWAY, SEC, T0
from web_support import BATCH, OTHER_BATCH, OTHER_SITE, PASSWORD, REUSED, SITE, Store, csrf_of, login, reference_batch

from blackbox.config import WebConfig
from blackbox.store.ingest import Ingestor
from blackbox.web.app import create_app

PAGE = f"/sites/{SITE}/batches/{BATCH}"


def fresh(web_store: Store) -> TestClient:
    """A client of its own: a cookie jar no other test shares."""
    return TestClient(create_app(web_store.engine, web_store.engine))


def test_pages_need_a_login(web_store: Store) -> None:
    with fresh(web_store) as c:
        for url in ["/", PAGE, f"{PAGE}/compare", "/lots", "/genealogy", "/gateways", "/access-log"]:
            r = c.get(url, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), url


def test_login_sets_a_safe_session_cookie(web_store: Store) -> None:
    with fresh(web_store) as c:
        form = c.get("/login")
        r = c.post("/login", data={"csrf": csrf_of(form.text), "username": "qa.zhang", "password": PASSWORD,
                                   "next": "/"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("bbx_session="))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain HTTP here; behind TLS the cookie is marked Secure
        assert c.get("/").status_code == 200


def test_login_over_https_marks_the_cookie_secure(web_store: Store) -> None:
    with TestClient(create_app(web_store.engine, web_store.engine), base_url="https://store.example") as c:
        form = c.get("/login")
        r = c.post("/login", data={"csrf": csrf_of(form.text), "username": "qa.zhang", "password": PASSWORD},
                   follow_redirects=False)
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("bbx_session="))
        assert "Secure" in cookie


@pytest.mark.parametrize("csrf", ["", "forged"])
def test_login_without_the_forms_csrf_token_is_refused(web_store: Store, csrf: str) -> None:
    with fresh(web_store) as c:
        c.get("/login")
        r = c.post("/login", data={"csrf": csrf, "username": "qa.zhang", "password": PASSWORD},
                   follow_redirects=False)
        assert r.status_code == 403
        assert "bbx_session" not in r.headers.get("set-cookie", "")


def test_wrong_password_and_unknown_user_look_the_same(web_store: Store) -> None:
    with fresh(web_store) as c:
        assert login(c, "qa.zhang", "wrong password!") == (303, "/login?failed=1&next=/")
        assert login(c, "nobody", "wrong password!") == (303, "/login?failed=1&next=/")
        assert c.get("/", follow_redirects=False).status_code == 303


def test_next_is_never_an_open_redirect(web_store: Store) -> None:
    with fresh(web_store) as c:
        assert login(c, "qa.zhang", next_="https://evil.example/") == (303, "/")
        assert login(c, "qa.zhang", next_="//evil.example/") == (303, "/")
        assert login(c, "qa.zhang", next_=PAGE) == (303, PAGE)


def test_logout_needs_the_sessions_csrf_token(web_store: Store) -> None:
    with fresh(web_store) as c:
        login(c, "qa.zhang")
        page = c.get("/")
        assert c.post("/logout", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
        assert c.get("/").status_code == 200  # still logged in
        r = c.post("/logout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
        assert r.status_code == 303
        assert c.get("/", follow_redirects=False).status_code == 303


def test_factory_qa_gets_404_for_another_sites_batch_page(web_store: Store) -> None:
    with fresh(web_store) as c:
        login(c, "qa.zhang")
        assert c.get(PAGE).status_code == 200
        other = c.get(f"/sites/{OTHER_SITE}/batches/{OTHER_BATCH}")
        missing = c.get(f"/sites/{SITE}/batches/NO-SUCH")
        assert other.status_code == missing.status_code == 404
        assert other.text.replace(f"{OTHER_SITE}/batches/{OTHER_BATCH}", "X") == missing.text.replace(
            f"{SITE}/batches/NO-SUCH", "X")  # the same page: nothing tells that the batch exists
        assert c.get(f"/sites/{OTHER_SITE}/batches/{OTHER_BATCH}/compare").status_code == 404
        assert c.get("/access-log").status_code == 403
        assert OTHER_BATCH not in c.get("/").text


def test_batch_page_shows_verdict_tables_and_charts(web_store: Store) -> None:
    with fresh(web_store) as c:
        login(c, "inspector.li")
        html = c.get(PAGE).text
        assert 'data-verdict="verified"' in html and "已验证" in html  # Chinese by default
        assert "LOT-W-0001" in html and "LOT-N-7" in html and "沪妆20160012" in html
        assert html.count('<figure class="chart"') == 3  # CR-01.temperature, EM-01.temperature, EM-01.vacuum
        assert "/static/vendor/uplot/uPlot.iife.min.js" in html and "http://" not in html and "https://" not in html
        assert "2026-11-18 19:06:41" in html  # batch start, shown in the site's zone (UTC+8)
        english = c.get(PAGE + "?lang=en")
        assert "VERIFIED" in english.text and "bbx_lang=en" in english.headers["set-cookie"]
        assert "Materials (genealogy)" in c.get(PAGE).text  # the choice is remembered
        other = c.get(f"/sites/{OTHER_SITE}/batches/{OTHER_BATCH}").text
        assert 'data-verdict="incomplete"' in other and "disk quota" in other


def test_a_reused_batch_number_shows_which_occurrence(web_store: Store) -> None:
    with fresh(web_store) as c:
        login(c, "inspector.li")
        html = c.get(f"/sites/{SITE}/batches/{REUSED}?occurrence=1&lang=en").text
        assert "occurrence 1 of 2, never merged" in html
        assert "?occurrence=2" in html


def test_search_compare_lot_gateways_and_access_log_pages(web_store: Store) -> None:
    with fresh(web_store) as c:
        login(c, "inspector.li")
        search = c.get("/?product=FC-050&with_alarms=true").text
        assert BATCH in search and OTHER_BATCH in search and REUSED not in search
        compare = c.get(f"{PAGE}/compare?tag=EM-01.temperature&last=3").text
        assert 'id="compare-chart"' in compare and 'class="n deviates"' in compare
        assert BATCH in c.get("/lots?lot=LOT-W-0001").text
        gateways = c.get("/gateways").text
        assert "gw-01" in gateways and "gw-07" in gateways
        log = c.get(f"/access-log?batch={BATCH}").text
        assert "page.batch" in log or "page.compare" in log


def test_static_files_are_served_by_the_store(web_store: Store) -> None:
    with fresh(web_store) as c:
        js = c.get("/static/vendor/uplot/uPlot.iife.min.js")
        assert js.status_code == 200 and "uPlot" in js.text
        assert c.get("/static/vendor/uplot/LICENSE").status_code == 200
        assert c.get("/static/chart.js").status_code == 200 and c.get("/static/app.css").status_code == 200


def test_security_headers_and_no_cdn_docs(web_store: Store) -> None:
    with fresh(web_store) as c:
        r = c.get("/login")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert c.get("/api/docs").status_code in (303, 404)  # Swagger UI would load from a CDN: not served
        assert c.get("/api/v1/openapi.json").status_code == 200


def test_batch_numbers_with_url_characters_link_correctly(web_store: Store) -> None:
    """The agent names a reused batch number's second run <id>#2: every link must encode the '#'."""
    gw = web_store.scenario.gw
    name = "FC050-2026-1125-01#2"
    reference_batch(gw, name, T0 + 20 * 3600 * SEC, 0.0)
    assert Ingestor(web_store.engine).handle(gw.sealed[-1].wire, SITE, GATEWAY).status == "stored"
    with fresh(web_store) as c:
        login(c, "inspector.li")
        encoded = "FC050-2026-1125-01%232"
        assert f'href="/sites/{SITE}/batches/{encoded}?occurrence=1"' in c.get("/?batch=%232").text
        html = c.get(f"/sites/{SITE}/batches/{encoded}").text
        assert f"/sites/{SITE}/batches/{encoded}/compare?" in html
        assert f"/api/v1/sites/{SITE}/batches/{encoded}/series?" in html
        assert c.get(f"/api/v1/sites/{SITE}/batches/{encoded}/compare?tag=EM-01.temperature").status_code == 200


def test_rows_of_several_sites_show_each_sites_time_zone(web_store: Store) -> None:
    """Lists that mix sites (reverse lot, gateways, golden batches, access log) give each row's time in
    its site's zone — named, where it is not the page's (here the store's default, UTC)."""
    with TestClient(create_app(web_store.engine, web_store.engine, WebConfig(timezone="UTC"))) as c:
        login(c, "inspector.li")
        html = c.get("/lots?lot=LOT-W-0001").text
        assert "2026-11-18 19:06:42 (Asia/Shanghai)" in html  # the weighing at 11:06:42 UTC, at SH-PD-01
        assert "2026-11-18 11:06:42" not in html
