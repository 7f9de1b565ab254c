"""The batch record on the batch page when things are wrong, on SQLite and PostgreSQL: a cleaning that
expired or is missing, a quarantined lot, an open deviation, QC results recorded after the release,
QC tests from the gateway's configuration (UNAPPROVED) — each marked as the text report marks it, in
Chinese and English. (test_web_record.py shows the demo's batch, where all is well, in a browser.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from store_synth import SEC, T0
from test_store_batch_record import QA, ZHANG, bulk_batch, produce, register
from web_support import PASSWORD, SITE, SiteGateway, login, web_engine

from blackbox.store.ingest import Ingestor
from blackbox.web.app import create_app
from blackbox.web.auth import create_user

HOUR = 3600 * SEC
BULK = "B-REC-1"
START = T0 + 30 * HOUR
PAGE = f"/sites/{SITE}/batches/{BULK}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with web_engine(request, tmp_path_factory) as engine:
        gw = SiteGateway()
        ing = Ingestor(engine)
        ing.enroll(gw.gateway, gw.site, gw.public_pem)
        gw.apply_config(T0)
        register(gw, {"lot": "GLY-77", "material": "RM-010", "supplier": "Acme", "supplier_lot": "A-5501",
                      "coa": "COA-5501", "quantity": 200.0, "unit": "kg", "status": "quarantined", "kind": "raw"},
                 T0 + 1)
        register(gw, {"lot": "JAR-771", "material": "PK-JAR", "supplier": "GlassCo", "supplier_lot": "G-9",
                      "status": "released", "kind": "packaging"}, T0 + 2)
        gw.seal()
        bulk_batch(gw, BULK, START, qc_after_release=True)
        gw.batch = BULK  # a weighing deviation still open when the report is read
        gw.event("deviation.opened", {"id": "DEV-W", "batch": BULK, "kind": "weighing", "material": "RM-010",
                                      "lot": "GLY-77", "target": 25.0, "actual": 26.0, "tolerance": 0.1},
                 START + 20, "DEV-W")
        gw.batch = None
        produce(gw, BULK, "FG-REC-1", START + HOUR, [{"material": "PK-JAR", "lot": "JAR-771", "quantity": 1200.0}])
        gw.seal()
        for sealed in gw.sealed:
            assert ing.handle(sealed.wire, gw.site, gw.gateway).status == "stored"
        create_user(engine, "inspector.rec", PASSWORD, "regulator")
        yield engine


def page_of(engine: Engine, lang: str) -> str:
    with TestClient(create_app(engine, engine)) as c:
        assert login(c, "inspector.rec")[0] == 303
        r = c.get(f"{PAGE}?lang={lang}")
        assert r.status_code == 200
        return str(r.text)


def element(html: str, tag: str, attrs: str) -> str:
    """The text of the first ``<tag …attrs…>…</tag>`` (no nesting of the same tag inside)."""
    match = re.search(rf"<{tag}[^>]*{attrs}[^>]*>(.*?)</{tag}>", html, re.S)
    assert match, f"no <{tag} {attrs}>"
    return unescape(re.sub(r"<[^>]+>", " ", match.group(1)))


def opening(html: str, tag: str, attrs: str) -> str:
    match = re.search(rf"<{tag}[^>]*{attrs}[^>]*>", html)
    assert match, f"no <{tag} {attrs}>"
    return match.group(0)


def shanghai(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.parametrize(("lang", "words"), [
    ("en", {"not_valid": "NOT VALID", "expired": "EXPIRED", "missing": "MISSING", "quarantined": "QUARANTINED",
            "after": "AFTER the release: TAMC", "open": "OPEN", "performed": "performed", "verified": "verified"}),
    ("zh-CN", {"not_valid": "无效", "expired": "已过期", "missing": "无记录", "quarantined": "待检隔离",
               "after": "放行后才录入的质检结果：TAMC", "open": "未关闭", "performed": "执行", "verified": "复核"}),  # noqa: RUF001
])
def test_what_is_wrong_is_marked(engine: Engine, lang: str, words: dict[str, str]) -> None:
    html = page_of(engine, lang)

    # the cleaning verdict, beside the integrity verdict
    assert 'data-valid="not-valid"' in opening(html, "div", 'id="cleaning-verdict"')
    verdict = element(html, "div", 'id="cleaning-verdict"')
    assert words["not_valid"] in verdict
    assert f"V-101: {words['expired']}" in verdict and f"FL-1: {words['missing']}" in verdict
    for unit, status in (("V-101", "expired"), ("FL-1", "missing")):
        assert 'class="bad"' in opening(html, "tr", f'data-unit="{unit}" data-status="{status}"')

    # the quarantined lot
    row = opening(html, "tr", 'data-lot="GLY-77" data-status="quarantined"')
    assert 'class="bad"' in row
    assert words["quarantined"] in element(html, "tr", 'data-lot="GLY-77"')

    # the release: results after it, on gateway-configured tests
    assert 'data-state="released-with-problems"' in opening(html, "div", 'id="release-verdict"')
    assert words["after"] in element(html, "dd", 'id="results-before"')
    assert 'data-approved="no"' in opening(html, "p", 'id="qc-basis"')
    assert "UNAPPROVED" in element(html, "p", 'id="qc-basis"')
    assert "Qiao An (qa)" in element(html, "dl", 'id="release-signature"')

    # deviations: the closed one with its closure, the open one marked
    closed = element(html, "tr", 'data-deviation="DEV-B-REC-1"')
    assert "meter drift" in closed and "recalibrated" in closed and "Qiao An" in closed
    assert 'data-open="yes"' in opening(html, "tr", 'data-deviation="DEV-W"')
    assert words["open"] in element(html, "tr", 'data-deviation="DEV-W"')

    # the weighing's own signatures: performer and verifier, with time (site's zone) and meaning
    weighing = element(html, "tr", f'data-weighing="W-{BULK}"')
    assert f"{ZHANG[1]} · {shanghai(START + 2)} · {words['performed']}" in weighing
    assert f"Li Na · {shanghai(START + 3)} · {words['verified']}" in weighing

    # the finished lot and its packaging lot, linked to the genealogy
    finished = element(html, "tr", 'data-lot="FG-REC-1"')
    assert "JAR-771" in finished
    assert '/genealogy?id=FG-REC-1&amp;direction=reverse' in html

    # every signature of the batch, once
    assert html.count('data-entry="batch.released"') == 1
    assert QA[1] in element(html, "tr", 'data-entry="batch.released"')
