"""The batch record at the gateway, through the control handlers on a real buffer: signatures that
fail record nothing, a weighing needs a second person, quarantined lots and expired cleaning raise
alarms, release waits for every required QC result and for deviations to be closed."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import BufferThread, events_of, make_recorder, reply

from blackbox.agent.batch_record import BatchRecord
from blackbox.agent.control import Caller, ControlError
from blackbox.agent.esign import Accounts
from blackbox.agent.operator import operator_handlers
from blackbox.buffer import Buffer
from blackbox.config import QcRequirement, RecordConfig
from blackbox.model import Context, EventDraft, now_us
from blackbox.spec.enforce import QcBasis
from blackbox.spec.model import QcSpec

ROOT = Caller(0, "root", None)
LINE = Caller(1001, "line1", None)
PW = {"zhang": "zhang-secret-1", "li": "li-secret-22", "wang": "wang-secret-3", "qa": "qa-secret-44"}
HOUR_US = 3_600_000_000
Gateway = tuple[dict[str, Any], Path, Path, BatchRecord]
"""Control handlers, the buffer file, the accounts file and the record keeper of a test gateway."""


def sig(user: str, password: str | None = None) -> dict[str, str]:
    return {"user": user, "password": PW[user] if password is None else password}


@pytest.fixture(params=[12])
async def gw(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    db = BufferThread()
    buffer = Buffer(tmp_path / "b.sqlite")
    rec = make_recorder(buffer, db)
    cfg = RecordConfig(operators_file=tmp_path / "operators.json", lockout_after=3, units=["V-101", "FL-1"],
                       cleaning_valid_hours={"V-101": 24},
                       qc={"FC-050": [QcRequirement(test="pH", low=5.5, high=6.5), QcRequirement(test="TAMC")]})
    rec.record_keeper = BatchRecord(cfg)
    h = operator_handlers(rec, Accounts(cfg.operators_file, cfg.lockout_after, log2_n=request.param))
    for user, name, roles in [("zhang", "Zhang Wei", ["operator"]), ("li", "Li Na", ["operator", "verifier"]),
                              ("wang", "Wang Fang", ["qc_analyst"]), ("qa", "Qiao An", ["qa_releaser"])]:
        await reply(h["operator.add"], {"user": user, "name": name, "roles": roles, "password": PW[user]}, ROOT)
    yield h, tmp_path / "b.sqlite", cfg.operators_file, rec.record_keeper
    buffer.close()
    db.close()


def n_events(path: Path) -> int:
    return len(events_of(path))


async def test_accounts_store_no_password_and_only_an_administrator_adds_them(
        gw: Gateway) -> None:
    h, _, accounts, _ = gw
    text = accounts.read_text()
    assert all(pw not in text for pw in PW.values())
    assert accounts.stat().st_mode & 0o777 == 0o600
    assert json.loads(text)["operators"]["li"]["n"] == 2**12  # the tests' cost; the default is below
    default = Accounts(accounts.parent / "default.json")
    default.add("x", "X", ["operator"], "long-enough")
    assert json.loads((accounts.parent / "default.json").read_text())["operators"]["x"]["n"] == 2**15  # 32 MiB
    with pytest.raises(ControlError, match="only root"):
        await h["operator.add"]({"user": "x", "name": "X", "roles": ["operator"], "password": "long-enough"}, LINE)
    assert [a["user"] for a in await h["operator.list"]({}, ROOT)] == ["li", "qa", "wang", "zhang"]


async def test_a_wrong_password_or_a_locked_account_records_nothing(gw: Gateway) -> None:
    h, path, _, _ = gw
    before = n_events(path)
    start = {"batch": "B1", "product": "FC-050"}
    with pytest.raises(ControlError, match="must be signed"):
        await h["batch.start"](start, LINE)
    for _ in range(2):
        with pytest.raises(ControlError, match="wrong password"):
            await h["batch.start"]({**start, "signature": sig("zhang", "guess")}, LINE)
    with pytest.raises(ControlError, match="now locked"):
        await h["batch.start"]({**start, "signature": sig("zhang", "guess")}, LINE)
    with pytest.raises(ControlError, match="is locked"):  # the right password no longer helps
        await h["batch.start"]({**start, "signature": sig("zhang")}, LINE)
    with pytest.raises(ControlError, match="wrong password"):
        await h["batch.start"]({**start, "signature": sig("nobody", "whatever-it-is")}, LINE)
    with pytest.raises(ControlError, match="does not have the role"):
        await h["batch.start"]({**start, "signature": sig("wang")}, LINE)
    assert n_events(path) == before
    await h["operator.unlock"]({"user": "zhang"}, ROOT)
    await h["batch.start"]({**start, "signature": sig("zhang")}, LINE)
    started = events_of(path, "batch.started")[0]["data"]
    (s,) = started["signatures"]
    assert (s["user"], s["name"], s["meaning"], s["role"]) == ("zhang", "Zhang Wei", "performed", "operator")
    assert isinstance(s["time_us"], int) and "password" not in s
    assert started["operator"] == "Zhang Wei (zhang; os:line1)"  # the signer, at the terminal of line1


async def clean_units(h: dict[str, Any]) -> None:
    """A valid, verified cleaning of both units, so that a batch starts without a cleaning deviation."""
    now = now_us()
    for unit in ("V-101", "FL-1"):
        await h["cleaning.record"]({"unit": unit, "method": "CIP", "agent": "NaOH 1%", "start_us": now - HOUR_US,
                                    "end_us": now, "signature": sig("zhang"), "verifier_signature": sig("li")}, LINE)


async def test_a_weighing_is_complete_only_with_a_second_person(gw: Gateway) -> None:
    h, path, _, _ = gw
    await clean_units(h)
    await h["batch.start"]({"batch": "B1", "product": "FC-050", "signature": sig("li")}, LINE)
    weigh = {"material": "RM-010", "lot": "GLY-77", "target": 25.0, "actual": 25.02, "scale": "SC-02"}
    before = n_events(path)
    with pytest.raises(ControlError, match="cannot verify their own"):
        await h["material.add"]({**weigh, "signature": sig("li"), "verifier_signature": sig("li")}, LINE)
    with pytest.raises(ControlError, match="typed name does not count"):
        await h["material.add"]({**weigh, "signature": sig("li"), "verifier": "zhang"}, LINE)
    assert n_events(path) == before
    await h["material.add"]({**weigh, "signature": sig("li")}, LINE)
    wid = events_of(path, "material.consumed")[0]["data"]["weighing"]
    with pytest.raises(ControlError, match="cannot verify it"):
        await h["material.verify"]({"weighing": wid, "signature": sig("li")}, LINE)
    with pytest.raises(ControlError, match="does not have the role verifier"):
        await h["material.verify"]({"weighing": wid, "signature": sig("zhang")}, LINE)
    assert n_events(path) == before + 1
    await h["material.add"]({**weigh, "lot": "GLY-78", "signature": sig("zhang"), "verifier_signature": sig("li")},
                            LINE)
    both = events_of(path, "material.consumed")[1]["data"]
    assert [(s["user"], s["meaning"]) for s in both["signatures"]] == [("zhang", "performed"), ("li", "verified")]
    await h["batch.end"]({"signature": sig("zhang")}, LINE)
    await h["qc.add"]({"test": "pH", "value": 6.0, "sample": "S-1", "batch": "B1", "signature": sig("wang")}, LINE)
    await h["qc.add"]({"test": "TAMC", "value": "<10", "pass": True, "sample": "S-1", "batch": "B1",
                       "signature": sig("wang")}, LINE)
    with pytest.raises(ControlError, match=f"not verified by a second person: {wid}"):
        await h["batch.release"]({"batch": "B1", "signature": sig("qa")}, LINE)
    # zhang has no verifier role; a third account verifies li's weighing
    await h["operator.add"]({"user": "chen", "name": "Chen Jie", "roles": ["verifier"], "password": "chen-pass-9"},
                            ROOT)
    await h["material.verify"]({"weighing": wid, "signature": {"user": "chen", "password": "chen-pass-9"}}, LINE)
    verified = events_of(path, "material.verified")[0]
    assert verified["batch"] == "B1" and verified["data"]["verified_by"]["name"] == "Chen Jie"
    await h["batch.release"]({"batch": "B1", "signature": sig("qa")}, LINE)


async def test_a_quarantined_lot_raises_an_alarm(gw: Gateway) -> None:
    h, path, _, _ = gw
    await h["lot.register"]({"lot": "GLY-77", "material": "RM-010", "supplier": "Acme", "supplier_lot": "A-5501",
                             "coa": "COA-5501", "quantity": 200, "unit": "kg", "status": "released",
                             "signature": sig("li")}, LINE)
    await h["lot.register"]({"lot": "GLY-99", "material": "RM-010", "status": "quarantined", "signature": sig("li")},
                            LINE)
    await h["batch.start"]({"batch": "B1", "product": "FC-050", "signature": sig("li")}, LINE)
    weigh = {"material": "RM-010", "target": 25.0, "actual": 25.0, "scale": "SC-02", "signature": sig("zhang"),
             "verifier_signature": sig("li")}
    await h["material.add"]({**weigh, "lot": "GLY-77"}, LINE)
    assert [a for a in events_of(path, "alarm.raised") if a["data"]["rule"] == "lot_status"] == []
    await h["material.add"]({**weigh, "lot": "GLY-99"}, LINE)
    (alarm,) = [a for a in events_of(path, "alarm.raised") if a["data"]["rule"] == "lot_status"]
    assert (alarm["batch"], alarm["subject"], alarm["data"]["level"]) == ("B1", "GLY-99", "quarantined")


async def test_a_batch_on_a_unit_with_expired_or_missing_cleaning_is_flagged(
        gw: Gateway) -> None:
    h, path, _, _ = gw
    now = now_us()
    clean = {"method": "CIP", "agent": "NaOH 1%", "verification": "swab ATP < 150 RLU", "signature": sig("zhang"),
             "verifier_signature": sig("li")}
    await h["cleaning.record"]({**clean, "unit": "V-101", "start_us": now - 30 * HOUR_US,
                                "end_us": now - 29 * HOUR_US}, LINE)  # valid 24 h: expired
    await h["cleaning.record"]({**clean, "unit": "FL-1", "start_us": now - 2 * HOUR_US, "end_us": now - HOUR_US}, LINE)
    await h["batch.start"]({"batch": "B1", "product": "FC-050", "signature": sig("zhang")}, LINE)
    (check,) = events_of(path, "cleaning.check")
    assert check["batch"] == "B1" and check["data"]["valid"] is False
    assert {u["unit"]: u["status"] for u in check["data"]["units"]} == {"V-101": "expired", "FL-1": "valid"}
    (alarm,) = [a for a in events_of(path, "alarm.raised") if a["data"]["rule"] == "cleaning_validity"]
    assert alarm["batch"] == "B1" and alarm["data"]["tag"] == "V-101"
    await h["batch.end"]({"signature": sig("zhang")}, LINE)
    await h["cleaning.record"]({**clean, "unit": "V-101", "start_us": now - HOUR_US, "end_us": now}, LINE)
    await h["batch.start"]({"batch": "B2", "product": "FC-050", "signature": sig("zhang")}, LINE)
    assert events_of(path, "cleaning.check")[1]["data"]["valid"] is True
    with pytest.raises(ControlError, match="cannot verify the cleaning"):
        await h["cleaning.record"]({**clean, "unit": "V-101", "start_us": now, "end_us": now,
                                    "signature": sig("li"), "verifier_signature": sig("li")}, LINE)


async def test_release_waits_for_required_results_and_closed_deviations(
        gw: Gateway) -> None:
    h, path, _, _ = gw
    await clean_units(h)
    await h["batch.start"]({"batch": "B1", "product": "FC-050", "signature": sig("zhang")}, LINE)
    await h["batch.end"]({"signature": sig("zhang")}, LINE)
    release = {"batch": "B1", "signature": sig("qa")}
    with pytest.raises(ControlError, match="does not have the role qa_releaser"):
        await h["batch.release"]({"batch": "B1", "signature": sig("wang")}, LINE)
    with pytest.raises(ControlError, match="missing: pH, TAMC"):
        await h["batch.release"](release, LINE)
    # the specification comes from the configuration: 6.8 is out of 5.5..6.5 and opens a deviation
    await h["qc.add"]({"test": "pH", "value": 6.8, "sample": "S-1", "batch": "B1", "signature": sig("wang")}, LINE)
    (dev,) = events_of(path, "deviation.opened")
    assert (dev["batch"], dev["data"]["kind"], dev["data"]["test"], dev["data"]["spec_high"]) == ("B1", "qc", "pH", 6.5)
    await h["qc.add"]({"test": "TAMC", "value": "<10", "pass": True, "sample": "S-1", "batch": "B1",
                       "signature": sig("wang")}, LINE)
    with pytest.raises(ControlError, match=f"deviation\\(s\\) open: {dev['data']['id']}"):
        await h["batch.release"](release, LINE)
    assert events_of(path, "batch.released") == []
    close = {"id": dev["data"]["id"], "reason": "pH meter drift, retest 6.2 within spec",
             "action": "meter recalibrated"}
    with pytest.raises(ControlError, match="does not have the role qa_releaser"):
        await h["deviation.close"]({**close, "signature": sig("wang")}, LINE)
    await h["deviation.close"]({**close, "signature": sig("qa")}, LINE)
    (closed,) = events_of(path, "deviation.closed")
    assert (closed["data"]["reason"], closed["data"]["action"], closed["data"]["closed_by"]["meaning"]) == (
        close["reason"], close["action"], "reviewed")
    await h["batch.release"](release, LINE)
    (rel,) = events_of(path, "batch.released")
    assert rel["batch"] == "B1" and rel["data"]["released_by"]["meaning"] == "approved"
    assert rel["data"]["qc_basis"] == {"source": "configuration", "approved": False}  # flagged: no specification
    assert rel["data"]["required"] == ["pH", "TAMC"]
    with pytest.raises(ControlError, match="released already"):
        await h["batch.release"](release, LINE)


async def _weigh_out_of_tolerance(h: dict[str, Any]) -> None:
    await h["material.add"]({"material": "RM-010", "lot": "GLY-77", "target": 25.0, "actual": 25.4, "tolerance": 0.1,
                             "scale": "SC-02", "signature": sig("zhang"), "verifier_signature": sig("li")}, LINE)


async def _start_unclean(h: dict[str, Any]) -> None:
    """Nothing: no cleaning is recorded for the units, so the batch's start opens the deviation itself."""


@pytest.mark.parametrize(("kind", "cause", "clean"), [("weighing", _weigh_out_of_tolerance, True),
                                                       ("cleaning", _start_unclean, False)])
async def test_an_out_of_tolerance_weighing_or_unclean_equipment_opens_a_deviation_that_blocks_release(
        gw: Gateway, kind: str, cause: Any, clean: bool) -> None:
    h, path, _, _ = gw
    if clean:
        await clean_units(h)
    await h["batch.start"]({"batch": "B1", "product": "FC-050", "signature": sig("zhang")}, LINE)
    await cause(h)
    await h["batch.end"]({"signature": sig("zhang")}, LINE)
    for test, value in (("pH", 6.0), ("TAMC", 5.0)):
        await h["qc.add"]({"test": test, "value": value, "pass": True, "sample": "S-1", "batch": "B1",
                           "signature": sig("wang")}, LINE)
    (dev,) = events_of(path, "deviation.opened")
    assert (dev["batch"], dev["data"]["kind"]) == ("B1", kind)
    with pytest.raises(ControlError, match=f"deviation\\(s\\) open: {dev['data']['id']}"):
        await h["batch.release"]({"batch": "B1", "signature": sig("qa")}, LINE)
    await h["deviation.close"]({"id": dev["data"]["id"], "reason": "assessed, no impact on the product",
                                "action": "documented", "signature": sig("qa")}, LINE)
    await h["batch.release"]({"batch": "B1", "signature": sig("qa")}, LINE)
    assert events_of(path, "batch.released")[0]["data"]["deviations"] == [dev["data"]["id"]]


async def test_qc_specifications_come_from_the_approved_specification(gw: Gateway) -> None:
    """The approved specification's QC section replaces record.qc: other tests, other limits, and a specification
    typed by the analyst that contradicts it is refused."""
    h, path, _, keeper = gw
    basis = {"source": "specification", "approved": True, "id": "FC-050", "version": 3, "sha256": "ab" * 32}
    keeper.approved_qc = {"FC-050": QcBasis((QcSpec(test="pH", low=5.0, high=7.0), QcSpec(test="odour")), basis)}
    await clean_units(h)
    await h["batch.start"]({"batch": "B1", "product": "FC-050", "signature": sig("zhang")}, LINE)
    await h["batch.end"]({"signature": sig("zhang")}, LINE)
    with pytest.raises(ControlError, match="missing: pH, odour"):  # not TAMC: the specification does not list it
        await h["batch.release"]({"batch": "B1", "signature": sig("qa")}, LINE)
    before = n_events(path)
    with pytest.raises(ControlError, match=re.escape("approved specification FC-050 v3 says pH 5.0..7.0")):
        await h["qc.add"]({"test": "pH", "value": 6.8, "spec_low": 5.5, "spec_high": 6.5, "sample": "S-1",
                           "batch": "B1", "signature": sig("wang")}, LINE)
    assert n_events(path) == before
    await h["qc.add"]({"test": "pH", "value": 6.8, "sample": "S-1", "batch": "B1", "signature": sig("wang")}, LINE)
    (ph,) = events_of(path, "qc.result")
    assert (ph["data"]["pass"], ph["data"]["spec_high"], ph["data"]["spec_basis"]) == (True, 7.0, basis)
    await h["qc.add"]({"test": "odour", "value": "typical", "pass": True, "sample": "S-1", "batch": "B1",
                       "signature": sig("wang")}, LINE)
    await h["batch.release"]({"batch": "B1", "signature": sig("qa")}, LINE)
    (rel,) = events_of(path, "batch.released")
    assert (rel["data"]["qc_basis"], rel["data"]["required"]) == (basis, ["pH", "odour"])


async def test_an_accounts_file_edited_outside_the_agent_is_recorded_before_anything_is_signed(gw: Gateway) -> None:
    h, path, accounts_file, keeper = gw
    digest = keeper.chained_accounts()
    assert digest is not None and events_of(path, "operator.added")[-1]["data"]["accounts_sha256"] == digest
    doc = json.loads(accounts_file.read_text())
    doc["operators"]["zhang"]["failures"] = 2  # failure counts are not the accounts' identity: not a change
    accounts_file.write_text(json.dumps(doc))
    await h["batch.start"]({"batch": "B1", "product": "FC-050", "signature": sig("zhang")}, LINE)
    assert events_of(path, "operator.accounts") == []
    assert events_of(path, "batch.started")[0]["data"]["signatures"][0]["accounts_sha256"] == digest
    doc["operators"]["wang"]["roles"].append("qa_releaser")  # root gives the analyst the right to release
    accounts_file.write_text(json.dumps(doc))
    await h["batch.phase"]({"phase": "mix", "signature": sig("zhang")}, LINE)
    (changed,) = events_of(path, "operator.accounts")
    assert (changed["data"]["changed_outside"], changed["data"]["previous_sha256"]) == (True, digest)
    assert {u["user"]: u["roles"] for u in changed["data"]["users"]}["wang"] == ["qc_analyst", "qa_releaser"]
    (alarm,) = [a for a in events_of(path, "alarm.raised") if a["data"]["rule"] == "accounts_file"]
    assert alarm["data"]["priority"] == "high" and changed["seq"] < alarm["seq"]
    phase = events_of(path, "batch.phase")[0]
    assert phase["seq"] > alarm["seq"]  # recorded before the entry it was found with
    assert phase["data"]["signatures"][0]["accounts_sha256"] == changed["data"]["accounts_sha256"]
    await h["batch.phase"]({"phase": "cool", "signature": sig("zhang")}, LINE)
    assert len(events_of(path, "operator.accounts")) == 1  # recorded once
    accounts_file.write_text(json.dumps({"operators": {}}))  # emptied: entries would go unsigned
    await h["batch.end"]({}, LINE)
    emptied = events_of(path, "operator.accounts")[-1]["data"]
    assert (emptied["users"], emptied["changed_outside"]) == ([], True)


@pytest.mark.parametrize(("signing", "expected"), [(False, 0), (True, 512)])
def test_the_state_saved_with_every_commit_stays_small(signing: bool, expected: int) -> None:
    record = BatchRecord(RecordConfig())
    record.signing = lambda: signing
    ctx = Context(batch="B1", product="FC-050")
    for i in range(2000):
        record.observe([EventDraft("material.consumed", "RM-1", {"material": "RM-1", "lot": f"L{i}"}),
                        EventDraft("lot.registered", f"L{i}", {"lot": f"L{i}", "status": "released"})], ctx, i)
    assert len(record.state()["weighings"]) == expected and record.state()["lots"] == {}
    assert "W-2000" in record.state()["weighings"] or not signing  # the newest are kept
