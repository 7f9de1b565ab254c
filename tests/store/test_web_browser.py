"""The pages in a real browser: headless Chromium (Debian's) driven by Playwright, against a real
``blackbox store web`` process, once on a SQLite store and once on PostgreSQL.

Log in, search, open a batch, check the verdict, the materials table and a trend chart with its
limit bands and data points, zoom, open the comparison, export CSV, print to PDF; a factory user
gets 404 for another site's batch, a request without a token 401. Screenshots go to the test's
folder, or to ``$BLACKBOX_SCREENSHOTS`` (docs/img for the regulator's guide) when it is set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from services import free_port_block, unavailable
from sqlalchemy import text
from store_synth import GATEWAY, SEC
from waiting import wait_until
from web_support import BATCH, HOUR, OTHER_BATCH, OTHER_SITE, PASSWORD, REFERENCES, SITE, Store, build_store

from blackbox.store.db import make_engine, open_store
from blackbox.store.ingest import Ingestor

CHROMIUM = os.environ.get("BLACKBOX_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TAG = "EM-01.temperature"
TIMEOUT_MS = 20_000


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Running:
    url: str
    store: Store
    """The synthetic store, its engine still open for the test to ingest more batches."""


@contextmanager
def store_url(kind: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, or a schema of its own in the session's PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{folder}/store.sqlite"
        return
    database: str = request.getfixturevalue("pg_database")
    schema = f"b_{uuid.uuid4().hex[:12]}"
    admin = make_engine(database)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{database}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def running(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """``blackbox store web`` on a store holding the synthetic batches (migrated, as in production)."""
    folder = tmp_path_factory.mktemp("web")
    with store_url(request.param, request, folder) as url:
        yield from serve_store(url, folder)


def serve_store(url: str, folder: Path) -> Iterator[Running]:
    engine = open_store(url)
    store = build_store(engine)
    port = free_port_block(1)  # outside the ephemeral range: no client connection takes it meanwhile
    config = folder / "store.yaml"
    config.write_text(f"store:\n  database_url: '{url}'\n  web: {{host: 127.0.0.1, port: {port}}}\n")
    log = (folder / "web.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "blackbox", "store", "web", "-c", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _listening(port) or proc.poll() is not None, 30, "store web to listen")
        assert proc.poll() is None, (folder / "web.log").read_text()
        yield Running(f"http://127.0.0.1:{port}", store)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        engine.dispose()


@pytest.fixture(scope="module")
def server(running: Running) -> str:
    return running.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("BLACKBOX_SCREENSHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def logged_in(browser: Any, server: str, user: str, lang: str = "zh-CN") -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True,
                                  locale=lang, timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server}/login?lang={lang}")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{server}/")
    return page


def test_regulator_reads_a_batch_in_the_browser(browser: Any, server: str, shots: Path, tmp_path: Path) -> None:
    page = logged_in(browser, server, "inspector.li")
    context = page.context
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        # search
        page.fill("form.filters input[name=product]", "FC-050")
        page.check("form.filters input[name=with_alarms]")
        page.click("form.filters button[type=submit]")
        rows = page.locator("#results tbody tr")
        expect(rows).to_have_count(2)  # the batch at each site with an alarm (waits for the results page)
        page.screenshot(path=str(shots / "search.png"))

        # open the batch
        page.click(f"#results a:text('{BATCH}')")
        page.wait_for_selector("figure.chart[data-state=ready]")
        verdict = page.locator("#verdict")
        assert verdict.get_attribute("data-verdict") == "verified"
        assert "已验证" in verdict.inner_text()
        assert page.locator("#materials-table tbody tr").count() == 2
        assert "LOT-W-0001" in page.locator("#materials-table").inner_text()

        # the trend chart: its limit bands and its data points are drawn
        chart = page.locator(f"figure.chart[data-tag='{TAG}']")
        page.wait_for_selector(f"figure.chart[data-tag='{TAG}'][data-state=ready]")
        assert int(chart.get_attribute("data-points") or 0) == 18
        assert int(chart.get_attribute("data-bands") or 0) == 4
        pixel = page.evaluate(f"""() => {{
            const s = window.bbCharts['{TAG}'], u = s.u;
            // heat phase, at 80 degC: below H 90 and far from the line (60..64): the green standard range
            const x = u.valToPos(u.data[0][2], 'x', true), y = u.valToPos(80, 'y', true);
            const d = u.ctx.getImageData(Math.round(x), Math.round(y), 1, 1).data;
            return [d[0], d[1], d[2]];
        }}""")
        assert pixel[1] > pixel[0] and pixel[1] > pixel[2], f"not the green band: {pixel}"
        blue = page.evaluate(f"""() => {{
            const u = window.bbCharts['{TAG}'].u;
            const x = u.valToPos(u.data[0][9], 'x', true), y = u.valToPos(u.data[2][9], 'y', true);
            const d = u.ctx.getImageData(Math.round(x) - 6, Math.round(y) - 6, 13, 13).data;
            let n = 0;  // pixels of the series' colour (#1f5fa8) around the spike's point
            for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 120 && d[i] < 90 && d[i + 1] < 140) n++;
            return n;
        }}""")
        assert blue >= 5, f"no data point drawn at the spike ({blue} pixels of the series' colour)"
        chart.screenshot(path=str(shots / "chart.png"))
        page.screenshot(path=str(shots / "batch.png"), full_page=True)

        # zoom by dragging over the emulsify phase
        before = page.evaluate(f"() => {{ const x = window.bbCharts['{TAG}'].u.scales.x; return x.max - x.min; }}")
        box = chart.locator(".u-over").bounding_box()
        assert box is not None
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.35, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.55, y, steps=5)
        page.mouse.up()
        page.wait_for_selector(f"figure.chart[data-tag='{TAG}'][data-zoomed=true]")
        after = page.evaluate(f"() => {{ const x = window.bbCharts['{TAG}'].u.scales.x; return x.max - x.min; }}")
        assert after < before / 3
        chart.locator("button[data-act=reset]").click()
        page.wait_for_selector(f"figure.chart[data-tag='{TAG}'][data-zoomed=false]")

        # export CSV
        with page.expect_download() as download:
            page.click("#materials h2 a.csv")
        csv_file = tmp_path / "materials.csv"
        download.value.save_as(csv_file)
        text = csv_file.read_text(encoding="utf-8-sig")
        assert text.splitlines()[0].startswith("material,lot,target,actual")
        assert "LOT-W-0001" in text and "LOT-N-7" in text

        # print to PDF with the print stylesheet
        page.emulate_media(media="print")
        pdf = page.pdf(path=str(tmp_path / "batch.pdf"), format="A4", print_background=True)
        assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
        assert page.locator("header.top").is_hidden()  # navigation is not printed
        page.screenshot(path=str(shots / "batch-print.png"), full_page=True)
        page.emulate_media(media="screen")

        # comparison with the last batches of the product
        page.click(f"figure.chart[data-tag='{TAG}'] a")
        page.wait_for_selector("#compare-chart[data-state=ready]")
        assert int(page.locator("#compare-chart").get_attribute("data-points") or 0) > 0
        assert page.locator("#deviations li").count() >= 1
        assert page.locator("#compare-table td.deviates").count() >= 1
        page.screenshot(path=str(shots / "compare.png"), full_page=True)

        # reverse lot: every batch that used it, each linked to the run that consumed it; the gateways
        page.goto(f"{server}/lots?lot=LOT-W-0001")
        uses = page.locator("#lot-uses tbody tr")
        assert uses.count() == 2
        assert page.locator(f"#lot-uses a[href='/sites/{SITE}/batches/{BATCH}?occurrence=1']").count() == 1
        page.screenshot(path=str(shots / "lot.png"), full_page=True)
        page.goto(f"{server}/gateways")
        assert page.locator("#gateways tbody tr").count() == 2
        page.screenshot(path=str(shots / "gateways.png"), full_page=True)

        # English
        page.goto(f"{server}/sites/{OTHER_SITE}/batches/{OTHER_BATCH}?lang=en")
        assert page.locator("#verdict").get_attribute("data-verdict") == "incomplete"
        page.locator("#verdict").screenshot(path=str(shots / "verdict-incomplete.png"))
        assert errors == []  # no script error, nothing refused by the Content-Security-Policy
    finally:
        context.close()


def test_factory_user_cannot_open_another_sites_batch(browser: Any, server: str) -> None:
    page = logged_in(browser, server, "qa.zhang")
    try:
        own = page.goto(f"{server}/sites/{SITE}/batches/{BATCH}")
        assert own is not None and own.status == 200
        other = page.goto(f"{server}/sites/{OTHER_SITE}/batches/{OTHER_BATCH}")
        assert other is not None and other.status == 404
        api = page.context.request.get(f"{server}/api/v1/sites/{OTHER_SITE}/batches/{OTHER_BATCH}")
        assert api.status == 404  # with the session cookie: still another site's batch
    finally:
        page.context.close()


def test_no_token_is_401_and_no_session_goes_to_login(browser: Any, server: str) -> None:
    context = browser.new_context()
    try:
        api = context.request.get(f"{server}/api/v1/sites/{SITE}/batches/{BATCH}")
        assert api.status == 401
        page = context.new_page()
        page.goto(f"{server}/sites/{SITE}/batches/{BATCH}")
        assert page.url.startswith(f"{server}/login?next=")
    finally:
        context.close()


def test_live_view_follows_the_current_batch(browser: Any, running: Running, shots: Path) -> None:
    gw = running.store.scenario.gw
    ingest = Ingestor(running.store.engine)
    t = running.store.scenario.cool_config_at + 4 * HOUR
    page = logged_in(browser, running.url, "qa.zhang")
    try:
        page.goto(f"{running.url}/live")
        page.wait_for_selector("#live[data-updates='1']")

        gw.start_batch("FC050-LIVE-01", t)
        gw.set_phase("emulsify", t + SEC)
        gw.reading("EM-01.temperature", 75.0, t + 2 * SEC)
        assert ingest.handle(gw.seal().wire, SITE, GATEWAY).status == "stored"
        page.wait_for_selector("#live[data-batch='FC050-LIVE-01']")
        cell = page.locator("#live-values tr[data-tag='EM-01.temperature'] td").nth(1)
        assert cell.inner_text() == "75" and "ok" in (cell.get_attribute("class") or "")

        gw.reading("EM-01.temperature", 86.5, t + 3 * SEC)
        gw.event("alarm.raised", {"rule": "em-temp", "tag": "EM-01.temperature", "level": "HH", "value": 86.5,
                                  "limit": 85.0, "priority": "high"}, t + 3 * SEC, subject="EM-01.temperature")
        assert ingest.handle(gw.seal().wire, SITE, GATEWAY).status == "stored"
        page.wait_for_selector("#live-alarms li[data-fresh=true]")
        assert "raised" in page.locator("#live-alarms li").first.inner_text()
        page.wait_for_function("document.querySelector(\"#live-values tr[data-tag='EM-01.temperature'] td.n\")"
                               ".textContent === '86.5'")
        assert "bad" in (cell.get_attribute("class") or "")  # beyond HH 85 of emulsify
        page.screenshot(path=str(shots / "live.png"))
        gw.end_batch(t + 10 * SEC)
        assert ingest.handle(gw.seal().wire, SITE, GATEWAY).status == "stored"
        other = page.goto(f"{running.url}/live?site={OTHER_SITE}")
        assert other is not None and other.status == 404
    finally:
        page.context.close()


def test_factory_qa_chooses_a_golden_batch(browser: Any, server: str, shots: Path) -> None:
    """The comparison's form makes this batch its product's golden batch; the comparison then says so,
    and the golden page lists the choice with who made it."""
    page = logged_in(browser, server, "qa.zhang")
    try:
        page.goto(f"{server}/sites/{SITE}/batches/{REFERENCES[2]}/compare?tag={TAG}")
        assert page.locator("#reference").get_attribute("data-kind") == "last"
        page.fill("#set-golden input[name=reason]", "validated run, QA report 2026-118")
        page.click("#set-golden button[type=submit]")
        page.wait_for_selector("#reference[data-kind=golden]")
        page.goto(f"{server}/sites/{SITE}/batches/{BATCH}/compare?tag={TAG}")
        note = page.locator("#reference")
        assert note.get_attribute("data-kind") == "golden"
        assert f"标准批 {REFERENCES[2]}（第 1 次生产），由 user:qa.zhang 于" in note.inner_text()  # noqa: RUF001
        page.wait_for_selector("#compare-chart[data-state=ready]")
        page.goto(f"{server}/golden")
        row = page.locator(f"#golden-current tr[data-site='{SITE}']")
        assert REFERENCES[2] in row.inner_text() and "user:qa.zhang" in row.inner_text()
        page.screenshot(path=str(shots / "golden.png"), full_page=True)
        row.locator("button[type=submit]").click()  # withdraw: later comparisons use the last batches again
        page.wait_for_selector("#saved")
        assert page.locator(f"#golden-current tr[data-site='{SITE}']").count() == 0
    finally:
        page.context.close()


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("regulator", 200), ("regulator_other", 404),
                                             ("factory_qa", 200), ("other_qa", 404), ("admin", 403)])
def test_live_stream_for_every_caller(running: Running, who: str | None, status: int) -> None:
    """The server-sent events of SH-PD-01 with a bearer token of each role: a granted stream opens with a
    snapshot of the site's current batch."""
    import httpx

    headers = {"Authorization": f"Bearer {running.store.tokens[who]}"} if who else {}
    with httpx.Client(base_url=running.url, timeout=20) as client, \
            client.stream("GET", f"/api/v1/sites/{SITE}/live", headers=headers) as r:
        assert r.status_code == status
        if status != 200:
            return
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "event: snapshot"
        data = next(lines)
        assert data.startswith("data: ") and f'"site":"{SITE}"' in data
