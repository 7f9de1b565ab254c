"""The batch record in the store, on SQLite and PostgreSQL: signatures, cleaning verdict, weighing
verification, deviations and release in the trace report; genealogy forward and reverse across
supplier lot -> material lot -> bulk batches -> finished lots."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from store_synth import GATEWAY, SEC, SITE, T0, Gateway

from blackbox.store.findings import Difference
from blackbox.store.genealogy import genealogy
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


@pytest.fixture
def stored(engine: Engine) -> Engine:
    gw = Gateway()
    ing = Ingestor(engine)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    gw.apply_config(T0)
    gw.event("lot.registered", {"lot": "GLY-77", "material": "RM-010", "supplier": "Acme", "supplier_lot": "A-5501",
                                "coa": "COA-5501", "quantity": 200.0, "unit": "kg", "status": "released",
                                "kind": "raw"}, T0 + 1, "GLY-77")
    gw.event("lot.registered", {"lot": "JAR-771", "material": "PK-JAR", "supplier": "GlassCo",
                                "supplier_lot": "G-9", "status": "released", "kind": "packaging"}, T0 + 2, "JAR-771")
    gw.event("cleaning.recorded", {"id": "CLN-1", "unit": "V-101", "method": "CIP", "agent": "NaOH 1%",
                                   "start_us": T0, "end_us": T0 + HOUR, "valid_until_us": T0 + 25 * HOUR,
                                   "performed_by": signature(*ZHANG, T0 + 3)}, T0 + 3, "V-101")
    gw.seal()
    bulk_batch(gw, "B1", T0 + 30 * HOUR)
    bulk_batch(gw, "B2", T0 + 40 * HOUR, qc_after_release=True)
    gw.seal()
    for bulk, fg, t in (("B1", "FG-1", T0 + 50 * HOUR), ("B2", "FG-2", T0 + 51 * HOUR)):
        gw.batch = bulk
        gw.event("lot.produced", {"lot": fg, "batch": bulk, "product": "FC-050", "quantity": 1200.0, "unit": "pcs",
                                  "packaging": [{"material": "PK-JAR", "lot": "JAR-771", "quantity": 1200.0}],
                                  "signatures": [signature(*ZHANG, t)]}, t, fg)
    gw.batch = None
    gw.seal()
    for sealed in gw.sealed:
        assert ing.handle(sealed.wire, SITE, GATEWAY).status == "stored"
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
    assert (dev.id, dev.open, dev.closed_by, dev.reason) == ("DEV-B1", False, "Qiao An", "meter drift")
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
    assert json.loads(report.to_json())["record"]["release"]["released_by"] == "Qiao An"
    late = trace_batch(stored, "B2").record.release
    assert late.results_before_release is False and late.results_after == ["TAMC"]


def test_genealogy_forward_and_reverse(stored: Engine) -> None:
    fwd = genealogy(stored, "A-5501", "forward")
    assert {(n.kind, n.id) for n in fwd.nodes} == {("supplier_lot", "Acme:A-5501"), ("lot", "GLY-77"),
                                                    ("batch", "B1"), ("batch", "B2"), ("finished_lot", "FG-1"),
                                                    ("finished_lot", "FG-2")}
    assert {(x.source, x.relation, x.target) for x in fwd.links} == {
        ("Acme:A-5501", "supplied_as", "GLY-77"), ("GLY-77", "consumed_in", "B1"), ("GLY-77", "consumed_in", "B2"),
        ("B1", "filled_into", "FG-1"), ("B2", "filled_into", "FG-2")}
    back = genealogy(stored, "FG-1", "reverse")
    assert {(x.source, x.relation, x.target) for x in back.links} == {
        ("B1", "filled_into", "FG-1"), ("JAR-771", "packaged_into", "FG-1"), ("GLY-77", "consumed_in", "B1"),
        ("Acme:A-5501", "supplied_as", "GLY-77"), ("GlassCo:G-9", "supplied_as", "JAR-771")}
    packaging = genealogy(stored, "G-9", "forward")
    assert {n.id for n in packaging.nodes if n.kind == "finished_lot"} == {"FG-1", "FG-2"}
    assert genealogy(stored, "NOPE", "forward").links == []


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
