"""Joint control at the store: specifications verified with the site's approver keys, the trace's
specification section, two-party actions and retention — on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from spec_support import SIGNERS, TAMPERED, Approvers, spec_doc, tampered
from sqlalchemy import Engine, select
from store_synth import GATEWAY, SEC, SITE, T0, TAGS, Gateway, config_data
from web_support import PASSWORD, login

from blackbox.config import RetentionConfig
from blackbox.model import iso
from blackbox.seal import key_id, public_key_pem
from blackbox.spec.approval import Role, SignatureFile, add_signature, sign
from blackbox.spec.canonical import canonical_sha256
from blackbox.spec.model import SpecError, parse_spec_data
from blackbox.store.actions import perform
from blackbox.store.ingest import Ingestor
from blackbox.store.joint import JointError, check_first_enrolment, enroll_approver, register_spec, stored_specs
from blackbox.store.retention import add_months, retention_report
from blackbox.store.schema import gateway_keys, joint_actions, specifications
from blackbox.store.tlog import TransparencyLog
from blackbox.store.trace import BatchNotFound, render_text, trace_batch
from blackbox.store.verify import verify_store
from blackbox.web.app import create_app
from blackbox.web.auth import create_user

BATCH = "FC050-2026-1125-01"


@pytest.fixture
def approvers(engine: Engine) -> Approvers:
    a = Approvers()
    for role in ("qa", "regulator"):
        enroll_approver(engine, SITE, role, a.pem(role))
    return a


@pytest.fixture
def gw() -> Gateway:
    return Gateway()


@pytest.fixture
def ingestor(engine: Engine, gw: Gateway) -> Ingestor:
    ing = Ingestor(engine)
    ing.enroll(GATEWAY, SITE, gw.public_pem)
    return ing


def applied(doc: dict[str, Any], sigs: SignatureFile) -> dict[str, Any]:
    """What the agent records for a specification it put in force (``spec.applied``)."""
    return {"id": doc["id"], "product": doc["product"], "version": doc["version"], "sha256": canonical_sha256(doc),
            "approvals": [], "document": doc, "signatures": sigs.to_json()}


def tags_under(doc: dict[str, Any], hh: float | None = None) -> list[dict[str, Any]]:
    """The tags of config.applied as the agent records them under ``doc``: exactly its limits
    (``hh`` set: the emulsify HH the gateway really applied instead)."""
    out = []
    for tag in TAGS:
        sets = [dict(ls) for ls in doc["parameters"].get(tag["name"], [])]
        if hh is not None and sets:
            sets[0]["hh"] = hh
        out.append(tag | {"limits": sets})
    return out


def run_batch(gw: Gateway, ing: Ingestor, batch: str, t: int, spec: tuple[dict[str, Any], SignatureFile] | None,
              ended: bool = True, applied_hh: float | None = None) -> None:
    """A production batch recorded under ``spec`` (as the gateway claims it: approved), or under
    unapproved configured limits."""
    if spec is not None:
        gw.event("spec.applied", applied(*spec), t, subject=spec[0]["id"])
        ref = {"approved": True, "specifications": [{k: v for k, v in applied(*spec).items()
                                                     if k not in ("document", "signatures")}]}
        data = config_data(tags_under(spec[0], applied_hh))
    else:
        ref = {"approved": False, "specifications": []}
        data = config_data()
    gw.apply_config(t + 1, data | {"specification": ref})
    gw.start_batch(batch, t + 2 * SEC)
    gw.set_phase("emulsify", t + 3 * SEC)
    gw.reading("EM-01.temperature", 75.0, t + 4 * SEC)
    if ended:
        gw.end_batch(t + 5 * SEC)
    gw.seal()
    assert ing.handle(gw.sealed[-1].wire, SITE, GATEWAY).status == "stored"


def test_a_batch_under_an_approved_specification_shows_both_approvals(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor) -> None:
    v1 = spec_doc(hh=85.0)
    run_batch(gw, ingestor, "B-1", T0, (v1, approvers.signatures(v1)))
    v2 = spec_doc(version=2, hh=84.0, reason="tighten HH after CAPA-17")
    run_batch(gw, ingestor, BATCH, T0 + 100 * SEC, (v2, approvers.signatures(v2)))

    report = trace_batch(engine, BATCH)
    spec = json.loads(report.to_json())["specification"]
    assert spec["unapproved"] is False
    assert (spec["id"], spec["product"], spec["version"], spec["hash"]) == ("FC-050", "FC-050", 2,
                                                                            canonical_sha256(v2))
    assert [(a["role"], a["signer"], a["key_id"]) for a in spec["approvals"]] == [
        ("qa", SIGNERS["qa"], key_id(approvers.qa)), ("regulator", SIGNERS["regulator"], key_id(approvers.regulator))]
    assert [h["version"] for h in spec["history"]] == [1, 2]
    assert spec["history"][1]["reason"] == "tighten HH after CAPA-17"
    assert spec["history"][1]["changes"] == [{"path": "parameters.EM-01.temperature[emulsify].hh", "old": 85.0,
                                              "new": 84.0}]
    assert all(len(h["approvals"]) == 2 for h in spec["history"])
    text = render_text(report)
    qa_at = iso(spec["approvals"][0]["signed_at_us"])
    assert (f"Judged against specification FC-050 v2 (sha256 {canonical_sha256(v2)[:16]}…), approved by factory QA "
            f"{SIGNERS['qa']} on {qa_at}, regulator {SIGNERS['regulator']} on") in text
    assert "parameters.EM-01.temperature[emulsify].hh: 85 -> 84" in text
    assert "UNAPPROVED" not in text


def test_the_release_is_judged_against_the_approved_qc_specification(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor) -> None:
    """The store takes the QC tests from the approved specification it verified, not from the gateway: a
    result recorded as a pass outside the approved range and a missing test are named."""
    doc = spec_doc() | {"qc": [{"test": "pH", "low": 5.5, "high": 6.5}, {"test": "TAMC", "high": 100.0},
                               {"test": "odour"}]}
    run_batch(gw, ingestor, BATCH, T0, (doc, approvers.signatures(doc)))
    gw.batch = BATCH
    gw.event("qc.result", {"test": "pH", "value": 6.9, "spec_low": 5.0, "spec_high": 7.0, "pass": True,
                           "sample": "S-1"}, T0 + 10 * SEC)
    gw.event("qc.result", {"test": "odour", "value": "typical", "pass": True, "sample": "S-1"}, T0 + 11 * SEC)
    gw.event("batch.released", {"batch": BATCH, "product": "FC-050", "required": ["pH"],
                                "qc_basis": {"source": "configuration", "approved": False},
                                "released_by": {"user": "qa", "name": "Qiao An", "meaning": "approved"}},
             T0 + 12 * SEC)
    gw.batch = None
    gw.seal()
    assert ingestor.handle(gw.sealed[-1].wire, SITE, GATEWAY).status == "stored"
    release = trace_batch(engine, BATCH).record.release
    assert release.qc_approved and release.qc_basis is not None and "FC-050 v1" in release.qc_basis
    assert [(c.test, c.high, c.recorded_pass, c.within, c.missing) for c in release.qc_checks] == [
        ("pH", 6.5, True, False, False), ("TAMC", 100.0, None, None, True), ("odour", None, True, None, False)]
    assert release.problems == [
        "the gateway released against its configured QC tests, not the approved specification's",
        "pH 6.9 was recorded as pass, but the approved specification says outside 5.5..6.5",
        "released without a result of TAMC"]
    assert "PROBLEM: released without a result of TAMC" in render_text(trace_batch(engine, BATCH))


def test_a_batch_under_unapproved_limits_is_flagged_in_text_and_json(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor) -> None:
    run_batch(gw, ingestor, BATCH, T0, None)
    report = trace_batch(engine, BATCH)
    assert json.loads(report.to_json())["specification"]["unapproved"] is True
    text = render_text(report)
    assert text.splitlines()[3].startswith("UNAPPROVED LIMITS — No specification approved by both")
    assert "Specification — UNAPPROVED" in text


@pytest.mark.parametrize("how", TAMPERED)
def test_a_spoilt_specification_is_refused_by_the_store(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor, how: str) -> None:
    doc, sigs = tampered(approvers, how, spec_doc())
    run_batch(gw, ingestor, BATCH, T0, (doc, sigs))  # the gateway's record is kept as it came...
    with engine.connect() as conn:
        status, detail = conn.execute(select(specifications.c.status, specifications.c.detail)).one()
    assert status == "refused" and detail  # ...but the specification is not taken as approved
    spec = trace_batch(engine, BATCH).specification
    assert spec.unapproved and spec.approvals == []
    assert "does not verify with the keys enrolled" in (spec.why_unapproved or "")
    with engine.begin() as conn:  # handed in directly: refused too
        assert register_spec(conn, SITE, doc, sigs.to_json(), "operator") is not None


def test_limits_other_than_the_approved_ones_make_the_batch_unapproved(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor) -> None:
    """A gateway that names an approved specification but judges by looser limits is not believed."""
    doc = spec_doc(hh=85.0)
    run_batch(gw, ingestor, BATCH, T0, (doc, approvers.signatures(doc)), applied_hh=95.0)
    report = trace_batch(engine, BATCH)
    assert report.specification.unapproved
    assert "not the specification's for EM-01.temperature" in (report.specification.why_unapproved or "")
    assert "UNAPPROVED LIMITS" in render_text(report)


def test_a_recorded_limit_set_todays_model_refuses_still_counts_against_the_specification(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor) -> None:
    """The applied limits are compared with the specification as the record holds them: a set the
    current configuration model refuses (limits out of order) on a tag the specification does not
    limit is a difference, not a set left out of the comparison (which would make the batch approved)."""
    doc = spec_doc()
    sigs = approvers.signatures(doc)
    ref = {"approved": True, "specifications": [{k: v for k, v in applied(doc, sigs).items()
                                                 if k not in ("document", "signatures")}]}
    tags = [t | {"limits": [{"phases": [], "products": [], "ll": None, "l": -0.05, "h": -0.08, "hh": None}]}
            if t["name"] == "EM-01.vacuum" else t for t in tags_under(doc)]
    gw.event("spec.applied", applied(doc, sigs), T0, subject=doc["id"])
    gw.apply_config(T0 + 1, config_data(tags) | {"specification": ref})
    gw.start_batch(BATCH, T0 + 2 * SEC)
    gw.end_batch(T0 + 5 * SEC)
    gw.seal()
    assert ingestor.handle(gw.sealed[-1].wire, SITE, GATEWAY).status == "stored"
    spec = trace_batch(engine, BATCH).specification
    assert spec.unapproved
    assert spec.why_unapproved == "the limits the gateway applied are not the specification's for EM-01.vacuum"


def test_specifications_are_refused_without_enrolled_approvers(engine: Engine) -> None:
    a = Approvers()
    doc = spec_doc()
    with engine.begin() as conn:
        problem = register_spec(conn, SITE, doc, a.signatures(doc).to_json(), "operator")
    assert problem is not None and "no QA or regulator key is enrolled" in problem


# -- two-party actions ------------------------------------------------------------------------------


def action(kind: str, **fields: Any) -> dict[str, Any]:
    return {"action": kind, "site": SITE, "gateway": GATEWAY, "reason": "test", "requested_at": "2026-12-04T17:00:00Z",
            **fields}


def signed(a: Approvers, doc: dict[str, Any], roles: tuple[Role, ...] = ("qa", "regulator"),
           keys: dict[str, Ed25519PrivateKey] | None = None) -> dict[str, Any]:
    sha, sigfile = canonical_sha256(doc), None
    for role in roles:
        sigfile = add_signature(sigfile, "action", sha, sign("action", sha, role, (keys or {}).get(role, a.key(role)),
                                                             SIGNERS[role]))
    assert sigfile is not None
    return sigfile.to_json()


def outcomes(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.action, r.outcome) for r in conn.execute(select(joint_actions).order_by(joint_actions.c.id))]


def findings(engine: Engine) -> list[str]:
    """What ``blackbox store verify`` finds (chains, rows, keys against the transparency log)."""
    out: list[str] = []
    verify_store(engine, lambda d: out.append(f"{d.code}: {d.message}"))
    return out


def keys_of(engine: Engine) -> dict[str, int | None]:
    with engine.connect() as conn:
        return {r.key_id: r.revoked_at_us for r in conn.execute(select(gateway_keys))}


def test_re_enrolment_needs_both_signatures(engine: Engine, approvers: Approvers, ingestor: Ingestor) -> None:
    new_key = Ed25519PrivateKey.generate()
    with pytest.raises(JointError, match="re-enrolment"):  # the plain enrolment is only for a first key
        check_first_enrolment(engine, SITE, GATEWAY, key_id(new_key))
    doc = action("reenroll", public_key=public_key_pem(new_key))
    with pytest.raises(JointError, match="no valid regulator signature"):
        perform(engine, doc, signed(approvers, doc, ("qa",)), "reenroll")
    with pytest.raises(JointError, match="not a known regulator key"):
        perform(engine, doc, signed(approvers, doc, keys={"regulator": Ed25519PrivateKey.generate()}), "reenroll")
    assert key_id(new_key) not in keys_of(engine)
    sigs = signed(approvers, doc)
    perform(engine, doc, sigs, "reenroll")
    assert key_id(new_key) in keys_of(engine)
    with pytest.raises(JointError, match="already used"):
        perform(engine, doc, sigs, "reenroll")
    assert outcomes(engine) == [("reenroll", "refused")] * 3 + [("reenroll", "done"), ("reenroll", "refused")]
    assert findings(engine) == []  # the new key is logged as enrolled: the store still verifies
    found = TransparencyLog(engine).find("joint.action", canonical_sha256(doc))  # the first attempt: refused
    assert found is not None
    entry = json.loads(found[1])
    assert (entry["action"], entry["outcome"], [s["role"] for s in entry["signers"]]) == ("reenroll", "refused", ["qa"])


def test_revocation_needs_both_signatures(engine: Engine, approvers: Approvers, gw: Gateway,
                                          ingestor: Ingestor) -> None:
    doc = action("revoke", key_id=key_id(gw.key))
    with pytest.raises(JointError):
        perform(engine, doc, None, "revoke")
    assert keys_of(engine)[key_id(gw.key)] is None
    perform(engine, doc, signed(approvers, doc), "revoke")
    assert keys_of(engine)[key_id(gw.key)] is not None
    assert findings(engine) == []  # the revocation is logged: the store still verifies


def test_retention_and_purge(engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor) -> None:
    doc = spec_doc()
    run_batch(gw, ingestor, BATCH, T0, (doc, approvers.signatures(doc)))
    run_batch(gw, ingestor, "B-OPEN", T0 + 100 * SEC, None, ended=False)
    ended = T0 + 5 * SEC
    [open_line, line] = retention_report(engine, RetentionConfig(), at_us=T0)  # by site, gateway, batch
    assert (line.batch, line.product, line.ended_at_us, line.due) == (BATCH, "FC-050", ended, False)
    assert line.keep_until_us == add_months(ended, 36 + 12) and line.basis == "specification FC-050 v1"
    assert open_line.batch == "B-OPEN" and open_line.keep_until_us is None and not open_line.due
    purge = action("purge", through_batch_seq=1)
    with pytest.raises(JointError, match=f"not due.*{BATCH}"):
        perform(engine, purge, signed(approvers, purge), "purge")
    assert retention_report(engine, RetentionConfig(), at_us=line.keep_until_us)[1].due
    with pytest.raises(JointError, match="no valid regulator signature"):
        perform(engine, purge, signed(approvers, purge, ("qa",)), "purge", at_us=line.keep_until_us)
    assert trace_batch(engine, BATCH).batch.batch == BATCH  # nothing was deleted
    perform(engine, purge, signed(approvers, purge), "purge", at_us=line.keep_until_us)
    with pytest.raises(BatchNotFound):
        trace_batch(engine, BATCH)
    assert trace_batch(engine, "B-OPEN").batch.batch == "B-OPEN"  # sealed batch 2 is kept
    assert outcomes(engine) == [("purge", "refused"), ("purge", "refused"), ("purge", "done")]
    assert findings(engine) == []  # the log records the purge: the chain now starts after it, linked to it


@pytest.mark.parametrize(("start", "months", "end"), [
    ("2026-11-18T10:00:00Z", 48, "2030-11-18T10:00:00Z"),
    ("2024-01-31T00:00:00Z", 1, "2024-02-29T00:00:00Z"),
    ("2025-12-15T12:30:00Z", 13, "2027-01-15T12:30:00Z"),
])
def test_add_months(start: str, months: int, end: str) -> None:
    from datetime import datetime

    def us(text: str) -> int:
        return int(datetime.fromisoformat(text).timestamp()) * 1_000_000

    assert add_months(us(start), months) == us(end)


# -- specifications kept as records: read by the record format, not today's model --------------------

OLDER_DOCUMENTS = {
    "a field today's model does not have": {"site_notes": "agreed at the 2025 audit"},
    "limits today's model finds out of order": {"parameters": {"EM-01.temperature": [
        {"phases": ["emulsify"], "l": 80.0, "h": 70.0, "hh": 85.0}]}},
    "a rule type today's model does not know": {"rules": [{"type": "retired-rule", "tag": "EM-01.temperature"}]},
    "a QC test listed twice": {"qc": [{"test": "pH", "low": 5.5, "high": 6.5}, {"test": "pH", "low": 5.0}]},
}
"""Approved documents an older (or other) specification model wrote, which today's strict model refuses."""


@pytest.mark.parametrize("change", OLDER_DOCUMENTS.values(), ids=list(OLDER_DOCUMENTS))
def test_an_approved_specification_todays_model_refuses_still_counts(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor, change: dict[str, Any]) -> None:
    doc = spec_doc() | change
    with pytest.raises(SpecError):
        parse_spec_data(doc)  # what the agent would say of it today
    run_batch(gw, ingestor, BATCH, T0, (doc, approvers.signatures(doc)))
    spec = trace_batch(engine, BATCH).specification
    assert (spec.unapproved, spec.why_unapproved) == (False, None)
    assert [(a.role, a.signer) for a in spec.approvals] == [("qa", SIGNERS["qa"]), ("regulator", SIGNERS["regulator"])]
    assert [(h.version, h.approved, h.problem) for h in spec.history] == [(1, True, None)]
    with engine.connect() as conn:
        assert [(s.spec_id, s.approved, s.sha256) for s in stored_specs(conn, SITE)] == [
            ("FC-050", True, canonical_sha256(doc))]


UNREADABLE_DOCUMENTS = {
    "a format this store does not know": ({"format": 2}, "format 2 is not a specification record format"),
    "a version that is not a number": ({"version": "two"}, "version must be a whole number"),
    "a limit set with no limit": ({"parameters": {"EM-01.temperature": [{"phases": ["emulsify"]}]}},
                                  "parameters.EM-01.temperature[0]: it holds none of ll, l, h, hh"),
    "QC that is not a list": ({"qc": "pH 5.5..6.5"}, "qc must be a list of tests"),
}
"""Kept documents the record format cannot read, and the reason the report must give."""


@pytest.mark.parametrize(("change", "reason"), UNREADABLE_DOCUMENTS.values(), ids=list(UNREADABLE_DOCUMENTS))
def test_a_kept_specification_that_cannot_be_read_is_reported_not_dropped(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor, change: dict[str, Any],
        reason: str) -> None:
    doc = spec_doc() | change
    run_batch(gw, ingestor, BATCH, T0, (doc, approvers.signatures(doc)))
    report = trace_batch(engine, BATCH)
    spec = report.specification
    assert spec.unapproved and spec.approvals == []
    assert "is held by the store, but the kept document cannot be read: " in (spec.why_unapproved or "")
    assert reason in (spec.why_unapproved or "")
    assert reason in render_text(report)
    with engine.connect() as conn:
        kept = stored_specs(conn, SITE)
    assert [(s.spec_id, s.sha256, s.record, s.approved) for s in kept] == [
        ("FC-050", canonical_sha256(doc), None, False)]
    assert reason in (kept[0].problem or "")


def test_history_lists_an_unreadable_version_between_readable_ones(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor) -> None:
    v1 = spec_doc(hh=85.0)
    v2 = spec_doc(version=2, hh=84.0) | {"retention": {"shelf_life_months": "three years"}}
    v3 = spec_doc(version=3, hh=83.0, reason="tighten HH again")
    for i, doc in enumerate((v1, v2)):
        with engine.begin() as conn:
            register_spec(conn, SITE, doc, approvers.signatures(doc).to_json(), "operator", T0 + i)
    run_batch(gw, ingestor, BATCH, T0 + 100 * SEC, (v3, approvers.signatures(v3)))
    spec = trace_batch(engine, BATCH).specification
    assert not spec.unapproved
    assert [(h.version, h.approved, h.reason) for h in spec.history] == [
        (1, True, "first approved limits"), (2, False, "(cannot be read)"), (3, True, "tighten HH again")]
    assert "retention.shelf_life_months must be a whole number" in (spec.history[1].problem or "")
    assert [(c.path, c.old, c.new) for c in spec.history[2].changes] == [  # from v1: v2 was never in force
        ("parameters.EM-01.temperature[emulsify].hh", 85.0, 83.0)]


@pytest.mark.parametrize(("change", "shown"), [
    (OLDER_DOCUMENTS["a field today's model does not have"], f"approved by factory QA {SIGNERS['qa']}"),
    (UNREADABLE_DOCUMENTS["a format this store does not know"][0],
     "the kept document cannot be read: format 2 is not a specification record format")],
    ids=["older", "unreadable"])
def test_the_batch_page_shows_a_kept_specification_as_the_record_holds_it(
        engine: Engine, approvers: Approvers, gw: Gateway, ingestor: Ingestor, change: dict[str, Any],
        shown: str) -> None:
    doc = spec_doc() | change
    run_batch(gw, ingestor, BATCH, T0, (doc, approvers.signatures(doc)))
    create_user(engine, "qa.zhang", PASSWORD, "factory_qa", [SITE])
    with TestClient(create_app(engine, engine)) as c:
        assert login(c, "qa.zhang") == (303, "/")
        page = c.get(f"/sites/{SITE}/batches/{BATCH}", params={"lang": "en"})
    assert page.status_code == 200
    section = page.text.split('<section id="specification">', 1)[1].split("</section>", 1)[0]
    assert shown in section
    assert ('class="bad"' in section) is ("cannot be read" in shown)
