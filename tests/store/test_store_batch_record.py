"""The batch record in the store, on SQLite and PostgreSQL: signatures, cleaning verdict, weighing
verification, deviations and release in the trace report; genealogy forward and reverse across
supplier lot -> material lot -> bulk batches -> finished lots."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy import event as sa_event
from store_synth import GATEWAY, SEC, SITE, T0, Gateway

from blackbox.store.findings import Difference
from blackbox.store.genealogy import Direction, genealogy
from blackbox.store.ingest import Ingestor
from blackbox.store.schema import events
from blackbox.store.trace import render_text, trace_batch
from blackbox.store.verify import verify_store

HOUR = 3600 * SEC


def signature(user: str, name: str, role: str, meaning: str, t: int) -> dict[str, Any]:
    return {"user": user, "name": name, "role": role, "meaning": meaning, "time_us": t}


ZHANG = ("zhang", "Zhang Wei", "operator", "performed")
LI = ("li", "Li Na", "verifier", "verified")
QA = ("qa", "Qiao An", "qa_releaser")


def bulk_batch(gw: Gateway, batch: str, t: int, *, qc_after_release: bool = False) -> None:
    gw.start_batch(batch, t)
    gw.event("cleaning.check", {"batch": batch, "valid": False, "units": [
        {"unit": "V-101", "status": "expired", "cleaning": "CLN-1", "valid_until_us": T0 + 25 * HOUR},
        {"unit": "FL-1", "status": "missing", "cleaning": None, "valid_until_us": None}]}, t + 1, batch)
    zhang = signature(*ZHANG, t + 2)
    gw.event("material.consumed", {"material": "RM-010", "lot": "GLY-77", "target": 25.0, "actual": 25.02,
                                   "eng_unit": "kg", "scale": "SC-02", "weighing": f"W-{batch}",
                                   "performed_by": zhang, "signatures": [zhang]}, t + 2, "RM-010")
    li = signature(*LI, t + 3)
    gw.event("material.verified", {"weighing": f"W-{batch}", "batch": batch, "material": "RM-010", "lot": "GLY-77",
                                   "verified_by": li, "signatures": [li]}, t + 3, "RM-010")
    gw.event("qc.result", {"test": "pH", "value": 6.8, "spec_low": 5.5, "spec_high": 6.5, "pass": False,
                           "sample": "S-1"}, t + 4, "pH")
    gw.event("deviation.opened", {"id": f"DEV-{batch}", "batch": batch, "test": "pH", "value": 6.8}, t + 5)
    gw.end_batch(t + 6)
    gw.batch = batch  # entries about an ended batch are attributed to it, as the agent does
    qa = signature(*QA, "reviewed", t + 7)
    gw.event("deviation.closed", {"id": f"DEV-{batch}", "batch": batch, "reason": "meter drift",
                                  "action": "recalibrated", "closed_by": qa, "signatures": [qa]}, t + 7)
    rel = signature(*QA, "approved", t + 8)
    gw.event("batch.released", {"batch": batch, "product": "FC-050", "released_by": rel, "signatures": [rel]},
             t + 8, batch)
    if qc_after_release:
        gw.event("qc.result", {"test": "TAMC", "value": 12, "spec_high": 100, "pass": True, "sample": "M-7"}, t + 9)
    gw.batch = None


def register(gw: Gateway, data: dict[str, Any], t: int) -> None:
    """A received lot, as the gateway records it: ``lot.registered`` and, with a supplier lot, ``lot.supplied``."""
    gw.event("lot.registered", data, t, data["lot"])
    if data.get("supplier_lot"):
        gw.event("lot.supplied", {k: data.get(k) for k in ("supplier", "supplier_lot", "lot", "material", "quantity",
                                                           "unit")}, t, data["supplier_lot"])


def produce(gw: Gateway, bulk: str, fg: str, t: int, packaging: list[dict[str, Any]]) -> None:
    """A finished lot filled from ``bulk``: ``lot.produced`` and one ``packaging.consumed`` per packaging lot."""
    gw.batch = bulk
    gw.event("lot.produced", {"lot": fg, "batch": bulk, "product": "FC-050", "quantity": 1200.0, "unit": "pcs",
                              "packaging": packaging, "signatures": [signature(*ZHANG, t)]}, t, fg)
    for p in packaging:
        gw.event("packaging.consumed", {**p, "finished_lot": fg, "batch": bulk}, t, p["lot"])
    gw.batch = None


OTHER_SITE, OTHER_GATEWAY = "SZ-02", "gw-sz"


@pytest.fixture
def stored(engine: Engine) -> Engine:
    gw = Gateway()
    ing = Ingestor(engine)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    gw.apply_config(T0)
    register(gw, {"lot": "GLY-77", "material": "RM-010", "supplier": "Acme", "supplier_lot": "A-5501",
                  "coa": "COA-5501", "quantity": 200.0, "unit": "kg", "status": "released", "kind": "raw"}, T0 + 1)
    register(gw, {"lot": "JAR-771", "material": "PK-JAR", "supplier": "GlassCo", "supplier_lot": "G-9",
                  "status": "released", "kind": "packaging"}, T0 + 2)
    for i in range(40):  # other lots of the store: a walk must not read them
        register(gw, {"lot": f"X-{i}", "material": "RM-099", "supplier": "Other", "supplier_lot": f"O-{i}",
                      "status": "released", "kind": "raw"}, T0 + 2)
    gw.event("cleaning.recorded", {"id": "CLN-1", "unit": "V-101", "method": "CIP", "agent": "NaOH 1%",
                                   "start_us": T0, "end_us": T0 + HOUR, "valid_until_us": T0 + 25 * HOUR,
                                   "performed_by": signature(*ZHANG, T0 + 3)}, T0 + 3, "V-101")
    gw.seal()
    bulk_batch(gw, "B1", T0 + 30 * HOUR)
    bulk_batch(gw, "B2", T0 + 40 * HOUR, qc_after_release=True)
    gw.seal()
    for bulk, fg, t in (("B1", "FG-1", T0 + 50 * HOUR), ("B2", "FG-2", T0 + 51 * HOUR)):
        produce(gw, bulk, fg, t, [{"material": "PK-JAR", "lot": "JAR-771", "quantity": 1200.0}])
    gw.seal()
    # another site received a lot of the same supplier lot and made its own batch of it
    other = Gateway(site=OTHER_SITE, gateway=OTHER_GATEWAY)
    ing.enroll(OTHER_GATEWAY, OTHER_SITE, other.public_pem)
    other.apply_config(T0)
    register(other, {"lot": "SZ-GLY-1", "material": "RM-010", "supplier": "Acme", "supplier_lot": "A-5501",
                     "status": "released", "kind": "raw"}, T0 + 5)
    other.start_batch("B9", T0 + 60 * HOUR)
    other.event("material.consumed", {"material": "RM-010", "lot": "SZ-GLY-1", "target": 10.0, "actual": 10.0,
                                      "eng_unit": "kg", "scale": "S-1", "weighing": "W-9"}, T0 + 60 * HOUR + 1,
                "RM-010")
    other.end_batch(T0 + 60 * HOUR + 2)
    produce(other, "B9", "FG-9", T0 + 61 * HOUR, [])
    other.seal()
    for g in (gw, other):
        for sealed in g.sealed:
            assert ing.handle(sealed.wire, g.site, g.gateway).status == "stored"
    return engine


def test_the_trace_report_shows_signatures_cleaning_release_and_finished_lots(stored: Engine) -> None:
    report = trace_batch(stored, "B1")
    rec = report.record
    assert rec.cleaning.checked and rec.cleaning.valid is False
    units = {u.unit: u for u in rec.cleaning.units}
    assert (units["V-101"].status, units["V-101"].method, units["V-101"].performed_by) == ("expired", "CIP",
                                                                                          "Zhang Wei")
    assert units["FL-1"].status == "missing"
    (w,) = rec.weighings
    assert (w.performed_by, w.verified_by, w.complete) == ("Zhang Wei", "Li Na", True)
    (dev,) = rec.deviations
    assert (dev.id, dev.kind, dev.about, dev.open, dev.closed_by, dev.reason) == (
        "DEV-B1", "qc", "pH 6.8", False, "Qiao An", "meter drift")
    assert rec.release.released and rec.release.released_by == "Qiao An"
    assert rec.release.results_before_release is True and rec.release.time_us == T0 + 30 * HOUR + 8
    (fg,) = rec.finished_lots
    assert (fg.lot, fg.quantity, [p.lot for p in fg.packaging]) == ("FG-1", 1200.0, ["JAR-771"])
    assert {(x.lot, x.supplier_lot, x.coa) for x in rec.lots} == {("GLY-77", "A-5501", "COA-5501"),
                                                                  ("JAR-771", "G-9", None)}
    assert [(s.name, s.meaning, s.entry) for s in rec.signatures] == [
        ("Zhang Wei", "performed", "material.consumed"), ("Li Na", "verified", "material.verified"),
        ("Qiao An", "reviewed", "deviation.closed"), ("Qiao An", "approved", "batch.released"),
        ("Zhang Wei", "performed", "lot.produced")]
    text = render_text(report)
    assert "NOT VALID" in text and "Released by Qiao An (qa)" in text and "Every QC result preceded" in text
    assert not rec.release.qc_approved and "QC specifications: UNAPPROVED" in text  # no approved specification
    assert json.loads(report.to_json())["record"]["release"]["released_by"] == "Qiao An"
    late = trace_batch(stored, "B2").record.release
    assert late.results_before_release is False and late.results_after == ["TAMC"]


def test_genealogy_forward_and_reverse(stored: Engine) -> None:
    fwd = genealogy(stored, "A-5501", "forward", sites=[SITE])
    assert {(n.kind, n.id) for n in fwd.nodes} == {("supplier_lot", "Acme:A-5501"), ("lot", "GLY-77"),
                                                    ("batch", "B1"), ("batch", "B2"), ("finished_lot", "FG-1"),
                                                    ("finished_lot", "FG-2")}
    assert {(x.source, x.relation, x.target) for x in fwd.links} == {
        ("Acme:A-5501", "supplied_as", "GLY-77"), ("GLY-77", "consumed_in", "B1"), ("GLY-77", "consumed_in", "B2"),
        ("B1", "filled_into", "FG-1"), ("B2", "filled_into", "FG-2")}
    assert {x.site for x in fwd.links} == {SITE}
    back = genealogy(stored, "FG-1", "reverse", sites=[SITE])
    assert {(x.source, x.relation, x.target) for x in back.links} == {
        ("B1", "filled_into", "FG-1"), ("JAR-771", "packaged_into", "FG-1"), ("GLY-77", "consumed_in", "B1"),
        ("Acme:A-5501", "supplied_as", "GLY-77"), ("GlassCo:G-9", "supplied_as", "JAR-771")}
    assert {n.id: n.detail.get("coa") for n in back.nodes if n.kind == "lot"} == {"GLY-77": "COA-5501",
                                                                                  "JAR-771": None}
    packaging = genealogy(stored, "G-9", "forward")
    assert {n.id for n in packaging.nodes if n.kind == "finished_lot"} == {"FG-1", "FG-2"}
    assert genealogy(stored, "NOPE", "forward").links == []


@pytest.mark.parametrize(("sites", "finished"), [([SITE], {"FG-1", "FG-2"}), ([OTHER_SITE], {"FG-9"}),
                                                 (None, {"FG-1", "FG-2", "FG-9"}), ([], set())])
def test_genealogy_shows_only_the_sites_the_viewer_may_see(stored: Engine, sites: list[str] | None,
                                                           finished: set[str]) -> None:
    fwd = genealogy(stored, "Acme:A-5501", "forward", sites=sites)
    assert {n.id for n in fwd.nodes if n.kind == "finished_lot"} == finished
    assert {x.site for x in fwd.links} <= set(sites if sites is not None else [SITE, OTHER_SITE])
    back = genealogy(stored, "FG-9", "reverse", sites=sites)
    assert bool(back.links) == ("FG-9" in finished)


INDEXES = r"ix_events_(ref|batch)_type"
"""The lookup indexes of events (not the primary key, which would read every event of a gateway)."""


@pytest.mark.parametrize(("start", "direction"), [("A-5501", "forward"), ("G-9", "forward"), ("FG-1", "reverse"),
                                                  ("GLY-77", "forward"), ("B1", "reverse")])
def test_every_genealogy_query_is_an_index_lookup(stored: Engine, start: str, direction: Direction) -> None:
    """Each hop reads through the (ref, type) or (batch, type) index: the database's own plan says so."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "FROM events" in statement:
            statements.append((statement, parameters))

    sa_event.listen(stored, "before_cursor_execute", capture)
    try:
        assert genealogy(stored, start, direction, sites=[SITE]).links
    finally:
        sa_event.remove(stored, "before_cursor_execute", capture)
    assert 4 <= len(statements) <= 16
    with stored.connect() as conn:
        for statement, parameters in statements:
            if stored.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                         parameters))
                assert "SCAN events" not in plan and re.search(INDEXES, plan), (statement, plan)
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")
                plan = " ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
                assert "Seq Scan on events" not in plan and re.search(INDEXES, plan), (statement, plan)


def test_a_forged_release_signature_is_found_by_verify_and_by_the_trace(stored: Engine) -> None:
    found: list[Difference] = []
    verify_store(stored, found.append)
    assert found == [] and trace_batch(stored, "B1").integrity.verdict == "verified"
    with stored.begin() as conn:
        seq, data = conn.execute(select(events.c.seq, events.c.data).where(events.c.type == "batch.released",
                                                                           events.c.ref == "B1")).one()
        forged = {**data, "released_by": {**data["released_by"], "name": "Somebody Else"}}
        conn.execute(update(events).where(events.c.seq == seq).values(data=forged))
    verify_store(stored, found.append)
    assert any(d.table == "events" for d in found), found
    report = trace_batch(stored, "B1")
    assert report.integrity.verdict == "failed", report.integrity.findings


def test_a_signature_under_accounts_the_chain_never_recorded_is_named(engine: Engine) -> None:
    """Root edits the accounts file and hides the agent's record of it: the signatures carry a digest
    that no account record of the chain holds, and the trace names them."""
    gw = Gateway()
    ing = Ingestor(engine)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    gw.apply_config(T0)
    recorded, edited = "a" * 64, "b" * 64
    gw.event("operator.accounts", {"accounts_sha256": recorded, "previous_sha256": None, "changed_outside": False,
                                   "users": []}, T0 + 1, "accounts")
    gw.start_batch("B1", T0 + 2)
    for t, digest in ((T0 + 3, recorded), (T0 + 4, edited), (T0 + 5, None)):
        s = {**signature(*ZHANG, t), **({"accounts_sha256": digest} if digest else {})}
        gw.event("material.consumed", {"material": "RM-010", "lot": "GLY-77", "target": 1.0, "actual": 1.0,
                                       "weighing": f"W-{t}", "performed_by": s, "signatures": [s]}, t, "RM-010")
    gw.end_batch(T0 + 6)
    gw.seal()
    for sealed in gw.sealed:
        assert ing.handle(sealed.wire, SITE, GATEWAY).status == "stored"
    report = trace_batch(engine, "B1")
    assert [s.accounts_recorded for s in report.record.signatures] == [True, False, None]
    (finding,) = report.record.account_findings
    assert "Zhang Wei (zhang) signed material.consumed" in finding and "never recorded" in finding
    assert "NOT RECORDED" in render_text(report)
