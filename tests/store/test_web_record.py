"""The batch record on the pages, with the demo's batch: in a real browser (Debian's Chromium) against
a real ``blackbox store web``, on SQLite and on PostgreSQL.

The demo runs once for the whole test run (its sealed batches are shared between the xdist workers
through a lock file); each store then receives exactly those sealed batches, as the demo's store did,
plus a second site whose lot, batch and finished lot a factory user of the demo's site must not reach.
Screenshots go to the test's folder, or to ``$BLACKBOX_SCREENSHOTS`` (docs/img) when it is set.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from store_synth import SEC, T0
from test_web_browser import browser, logged_in, shots, store_url  # noqa: F401 - fixtures shared with the browser tests
from waiting import wait_until
from web_support import PASSWORD, SiteGateway, csrf_of

from blackbox.config import load_config
from blackbox.demo import run_demo
from blackbox.store.db import open_store
from blackbox.store.ingest import Ingestor
from blackbox.store.joint import enroll_approver
from blackbox.store.trace import trace_batch
from blackbox.web.app import create_app
from blackbox.web.auth import create_user

OTHER_SITE = "GZ-BY-02"
OTHER_BULK = "GZ-2026-0420-01"
OTHER_LOT = "GZ-GLY-9"
OTHER_SUPPLIER_LOT = "GZS-5501"
OTHER_FG = "FG-GZ-0420"
DEMO_WAIT_S = 300.0
"""Bound on waiting for another worker's demo run (the demo itself stops after about 3 minutes)."""
STARTUP_S = 120.0
"""Bound on ``store web`` starting to listen: 30 s were not enough at load average 40 on two cores."""


@dataclass(frozen=True)
class DemoCopy:
    """What a store needs to hold the demo's batch: its gateway's key, its approvers, its sealed batches."""

    folder: Path
    batch: str
    site: str
    timezone: str

    def load(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / "demo.json").read_text()))


def _shared_root(factory: pytest.TempPathFactory) -> Path:
    """A folder of this test run that every xdist worker sees (the workers' base folders' parent)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoCopy:
    folder = _shared_root(tmp_path_factory) / "demo-record"
    with (_shared_root(tmp_path_factory) / "demo-record.lock").open("w") as lock:
        wait_until(lambda: _try_lock(lock), DEMO_WAIT_S, "the demo run of another worker")
        if not (folder / "demo.json").exists():
            _run_demo(folder)
    data = json.loads((folder / "demo.json").read_text())
    return DemoCopy(folder, data["batch"], data["site"], data["timezone"])


def _try_lock(lock: Any) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _run_demo(folder: Path) -> None:
    """Run ``blackbox demo`` and keep what a second store needs to receive the same records."""
    work = folder / "run"
    result = asyncio.run(run_demo(work))
    src = sqlite3.connect(f"file:{work / 'store.sqlite'}?mode=ro", uri=True)
    try:
        gateways = {gid: (site, gw) for gid, site, gw in src.execute("SELECT id, site, gateway FROM gateways")}
        keys = [(gateways[gid], pem) for gid, pem in src.execute("SELECT gateway_id, public_key_pem FROM gateway_keys")]
        approvers = list(src.execute("SELECT site, role, public_key_pem FROM approver_keys"))
        wires = [(gateways[gid], bytes(wire)) for gid, wire in
                 src.execute("SELECT gateway_id, wire FROM sealed_batches ORDER BY gateway_id, batch_seq")]
    finally:
        src.close()
    (folder / "wires").mkdir(parents=True, exist_ok=True)
    for i, (_, wire) in enumerate(wires):
        (folder / "wires" / f"{i:05d}.bin").write_bytes(wire)
    site = result.report.batch.site_id or keys[0][0][0]
    timezone = _site_timezone(work)
    (folder / "demo.json").write_text(json.dumps({
        "batch": result.batch, "site": site, "timezone": timezone,
        "keys": [[s, g, pem] for (s, g), pem in keys], "approvers": approvers,
        "wires": [[s, g] for (s, g), _ in wires]}))
    shutil.rmtree(work / "var", ignore_errors=True)


def _site_timezone(work: Path) -> str:
    return load_config(work / "blackbox.yaml").config.site.timezone


def other_site_record() -> SiteGateway:
    """A second factory: a supplier lot received, consumed in a bulk batch, filled into a finished lot."""
    gw = SiteGateway(site=OTHER_SITE, gateway="gw-07")
    gw.site_info = {"id": OTHER_SITE, "name": "Guangzhou Baiyun Cosmetics", "licence": "粤妆20170033", "line": "L2",
                    "timezone": "Asia/Shanghai"}
    t = T0
    gw.apply_config(t)
    gw.event("lot.registered", {"lot": OTHER_LOT, "material": "RM-010", "supplier": "Acme", "supplier_lot":
                                OTHER_SUPPLIER_LOT, "coa": "COA-GZ", "quantity": 200.0, "unit": "kg",
                                "status": "released", "kind": "raw"}, t + SEC, OTHER_LOT)
    gw.event("lot.supplied", {"supplier": "Acme", "supplier_lot": OTHER_SUPPLIER_LOT, "lot": OTHER_LOT,
                              "material": "RM-010", "quantity": 200.0, "unit": "kg"}, t + SEC, OTHER_SUPPLIER_LOT)
    gw.start_batch(OTHER_BULK, t + 2 * SEC)
    gw.event("material.consumed", {"material": "RM-010", "lot": OTHER_LOT, "target": 25.0, "actual": 25.0,
                                   "eng_unit": "kg", "weighing": "W-1"}, t + 3 * SEC, "RM-010")
    gw.end_batch(t + 4 * SEC)
    gw.batch = OTHER_BULK
    gw.event("lot.produced", {"lot": OTHER_FG, "batch": OTHER_BULK, "product": "FC-050", "quantity": 500.0,
                              "unit": "jars", "packaging": []}, t + 5 * SEC, OTHER_FG)
    gw.batch = None
    gw.seal()
    return gw


def fill_store(url: str, demo: DemoCopy) -> None:
    """The demo's sealed batches and the second site's, received as the store receives them; the users."""
    engine = open_store(url)
    try:
        data = demo.load()
        ingest = Ingestor(engine)
        for site, gateway, pem in data["keys"]:
            ingest.enroll(gateway, site, pem)
        for site, role, pem in data["approvers"]:
            enroll_approver(engine, site, role, pem)
        for i, (site, gateway) in enumerate(data["wires"]):
            wire = (demo.folder / "wires" / f"{i:05d}.bin").read_bytes()
            assert ingest.handle(wire, site, gateway).status == "stored"
        other = other_site_record()
        ingest.enroll(other.gateway, other.site, other.public_pem)
        for sealed in other.sealed:
            assert ingest.handle(sealed.wire, other.site, other.gateway).status == "stored"
        create_user(engine, "inspector.li", PASSWORD, "regulator")
        create_user(engine, "inspector.gz", PASSWORD, "regulator", [OTHER_SITE])
        create_user(engine, "qa.fx", PASSWORD, "factory_qa", [demo.site])
        create_user(engine, "qa.gz", PASSWORD, "factory_qa", [OTHER_SITE])
        create_user(engine, "it.admin", PASSWORD, "admin")
    finally:
        engine.dispose()


@dataclass
class Served:
    url: str
    database: str
    demo: DemoCopy


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo: DemoCopy
           ) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("record-web")
    with store_url(request.param, request, folder) as url:
        fill_store(url, demo)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        config = folder / "store.yaml"
        config.write_text(f"store:\n  database_url: '{url}'\n  web: {{host: 127.0.0.1, port: {port}}}\n")
        with (folder / "web.log").open("w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "blackbox", "store", "web", "-c", str(config)],
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until(lambda: _listening(port) or proc.poll() is not None, STARTUP_S, "store web to listen")
                assert proc.poll() is None, (folder / "web.log").read_text()
                yield Served(f"http://127.0.0.1:{port}", url, demo)
            finally:
                proc.terminate()
                proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def site_time(us: int, zone: str) -> str:
    """A time as the pages print it in the site's zone (computed here, not by the pages' code)."""
    return datetime.fromtimestamp(us / 1e6, tz=UTC).astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def open_batch(page: Any, url: str) -> None:
    """Open a batch page and wait until every chart has its data (no request left in flight)."""
    page.goto(url)
    charts_done(page)


def charts_done(page: Any) -> None:
    page.wait_for_selector("figure.chart:not([data-state])", state="detached")


def test_the_demos_batch_record_in_the_browser(browser: Any, served: Served, shots: Path, tmp_path: Path  # noqa: F811
                                               ) -> None:
    demo = served.demo
    engine = open_store(served.database)
    try:
        expected = trace_batch(engine, demo.batch, deep=False).record  # what `blackbox trace --json` exports
    finally:
        engine.dispose()
    release, fg = expected.release, expected.finished_lots[0]
    page = logged_in(browser, served.url, "inspector.li")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        open_batch(page, f"{served.url}/sites/{demo.site}/batches/{demo.batch}")
        assert "built-in method" not in page.content()  # every word is a word, none a dict method's name
        cleaning = page.locator("#cleaning-verdict")
        assert cleaning.get_attribute("data-valid") == "valid"
        assert "有效" in cleaning.inner_text()
        assert page.locator("#cleaning-table tbody tr[data-status=valid]").count() == len(expected.cleaning.units) == 4
        em = page.locator("#cleaning-table tr[data-unit='EM-01']").inner_text()
        assert "CIP" in em and "Zhang Wei" in em and "Li Na" in em

        verdict = page.locator("#release-verdict")
        assert verdict.get_attribute("data-state") == "released"
        released_at = site_time(release.time_us or 0, demo.timezone)
        assert "Wu Qing" in verdict.inner_text() and released_at in verdict.inner_text()
        signed = page.locator("#signatures-table tr[data-entry='batch.released']").inner_text()
        assert "Wu Qing" in signed and "批准" in signed and released_at in signed
        assert page.locator("#signatures-table tbody tr").count() == len(expected.signatures)

        # a PLC weighing verified afterwards by a second person: her signature on the weighing's own row
        w1 = page.locator("#weighings-table tr[data-weighing='W-1']")
        sig = w1.locator(".sig[data-meaning=verified]")
        assert "Li Na" in sig.inner_text() and "复核" in sig.inner_text()
        assert "PLC" in w1.inner_text()
        assert page.locator("#weighings-table tbody tr.bad").count() == 0  # every weighing verified, in tolerance

        assert page.locator("#lots-table tbody tr").count() == len(expected.lots)
        assert "COA-" in page.locator("#lots-table").inner_text()
        assert page.locator("#qc-basis").get_attribute("data-approved") == "yes"
        assert page.locator("#qc-release-table tbody tr.bad").count() == 0
        assert page.locator("#environment-table tbody tr").count() == len(expected.environment) > 0
        row = page.locator(f"#finished-lots-table tr[data-lot='{fg.lot}']")
        assert "Zhang Wei" in row.inner_text() and all(p.lot and p.lot in row.inner_text() for p in fg.packaging)
        top, bottom = page.locator("#verdict").bounding_box(), page.locator("#release-verdict").bounding_box()
        assert top is not None and bottom is not None
        page.screenshot(path=str(shots / "record-verdicts.png"), clip={
            "x": top["x"], "y": top["y"], "width": top["width"], "height": bottom["y"] + bottom["height"] - top["y"]})
        page.locator("#release").screenshot(path=str(shots / "release.png"))
        page.locator("#weighings").screenshot(path=str(shots / "weighings.png"))
        page.locator("#signatures").screenshot(path=str(shots / "signatures.png"))

        # printed: the record's sections are on paper, the navigation and the genealogy links are not
        page.emulate_media(media="print")
        pdf = page.pdf(path=str(tmp_path / "record.pdf"), format="A4", print_background=True)
        assert pdf.startswith(b"%PDF")
        assert page.locator("header.top").is_hidden() and page.locator("#signatures-table").is_visible()
        assert page.locator("#lots-table th.noprint").is_hidden()
        page.emulate_media(media="screen")

        # English
        open_batch(page, f"{served.url}/sites/{demo.site}/batches/{demo.batch}?lang=en")
        assert "VALID" in page.locator("#cleaning-verdict").inner_text()
        assert "approved" in page.locator("#signatures-table tr[data-entry='batch.released']").inner_text()
        assert "Every QC result preceded the release" in page.locator("#release").inner_text()

        # from the finished lot to what went into it
        open_batch(page, f"{served.url}/sites/{demo.site}/batches/{demo.batch}?lang=zh-CN")
        page.click(f"#finished-lots-table a:text('{fg.lot}')")
        page.wait_for_selector("#genealogy[data-direction=reverse]")
        batch_row = page.locator(f"#genealogy tr[data-node='{demo.batch}']")
        assert batch_row.count() == 1
        for lot in {w.lot for w in expected.weighings} | {p.lot for p in fg.packaging}:
            assert page.locator(f"#genealogy section[data-kind=lot] tr[data-node='{lot}']").count() == 1, lot
        assert page.locator("#genealogy section[data-kind=supplier_lot] tbody tr").count() == len(expected.lots)
        page.screenshot(path=str(shots / "genealogy.png"))
        batch_row.locator("td a").first.click()
        charts_done(page)
        assert page.url.startswith(f"{served.url}/sites/{demo.site}/batches/{demo.batch}")

        # forward from a supplier's lot, reached from the reverse-lot page
        received = expected.lots[-1]
        page.goto(f"{served.url}/lots?lot={received.lot}")
        page.click("#lot-genealogy")
        page.wait_for_selector("#genealogy[data-direction=forward]")
        assert page.locator(f"#genealogy tr[data-node='{fg.lot}']").count() == 1
        page.goto(f"{served.url}/genealogy?id=Demo%20Supplier:{received.supplier_lot}")
        assert page.locator(f"#genealogy section[data-kind=finished_lot] tr[data-node='{fg.lot}']").count() == 1
        assert errors == []
    finally:
        page.context.close()


def test_another_sites_lots_and_batches_are_404(browser: Any, served: Served) -> None:  # noqa: F811
    demo = served.demo
    engine = open_store(served.database)
    try:
        fg = trace_batch(engine, demo.batch, deep=False).record.finished_lots[0].lot
    finally:
        engine.dispose()
    page = logged_in(browser, served.url, "qa.fx")
    try:
        for url in [f"/genealogy?id={fg}&direction=reverse", f"/sites/{demo.site}/batches/{demo.batch}"]:
            own = page.goto(served.url + url)
            assert own is not None and own.status == 200, url
        for url in [f"/genealogy?id={OTHER_FG}&direction=reverse", f"/genealogy?id={OTHER_SUPPLIER_LOT}",
                    f"/genealogy?id={OTHER_LOT}", f"/genealogy?id={OTHER_BULK}&direction=reverse",
                    f"/sites/{OTHER_SITE}/batches/{OTHER_BULK}"]:
            other = page.goto(served.url + url)
            assert other is not None and other.status == 404, url
    finally:
        page.context.close()
    page = logged_in(browser, served.url, "qa.gz")
    try:
        mine = page.goto(f"{served.url}/genealogy?id={OTHER_SUPPLIER_LOT}")
        assert mine is not None and mine.status == 200
        assert page.locator(f"#genealogy tr[data-node='{OTHER_FG}']").count() == 1
        theirs = page.goto(f"{served.url}/genealogy?id={fg}&direction=reverse")
        assert theirs is not None and theirs.status == 404
    finally:
        page.context.close()


@pytest.mark.parametrize(("user", "status"), [(None, 303), ("inspector.li", 200), ("inspector.gz", 404),
                                              ("qa.fx", 200), ("qa.gz", 404), ("it.admin", 403)])
def test_the_genealogy_page_for_every_role(served: Served, user: str | None, status: int) -> None:
    """A finished lot of the demo's site, as each role sees its genealogy page (the pages' counterpart of
    test_web_roles.py's table, which covers the API)."""
    engine = open_store(served.database)
    try:
        fg = trace_batch(engine, served.demo.batch, deep=False).record.finished_lots[0].lot
        with TestClient(create_app(engine, engine)) as c:
            if user is not None:
                form = c.get("/login")
                r = c.post("/login", data={"csrf": csrf_of(form.text), "username": user, "password": PASSWORD},
                           follow_redirects=False)
                assert r.status_code == 303
            r = c.get(f"/genealogy?id={fg}&direction=reverse", follow_redirects=False)
            assert r.status_code == status, (user, r.text[:300])
            if status == 200:
                assert served.demo.batch in r.text
    finally:
        engine.dispose()
