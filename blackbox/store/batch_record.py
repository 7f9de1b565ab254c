"""The batch record section of the trace report: signatures, weighing verification, cleaning,
deviations, release, finished lots and the environment over the batch window.

Everything here is read from the batch's events as the store derived them from the signed
records (``events`` rows, see :mod:`blackbox.store.derive`); nothing is stored besides them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, select

from blackbox.seal.spec_record import RecordedQcTest
from blackbox.store.joint import stored_specs
from blackbox.store.schema import events

ENVIRONMENT_CATEGORIES = frozenset({"environment"})


class _M(BaseModel):
    model_config = ConfigDict(frozen=True)


class SignatureLine(_M):
    """One electronic signature: who (id and printed name), when, and what it means."""

    entry: str = Field(description="event type of the signed entry, e.g. material.consumed")
    subject: str | None
    seq: int
    gateway: str
    user: str | None
    name: str | None
    role: str | None
    meaning: str | None
    time_us: int | None
    accounts_recorded: bool | None = Field(default=None, description="the operator accounts the signature was "
                                           "checked against are recorded in the gateway's chain before it (None: "
                                           "the signature names no accounts digest)")


class WeighingLine(_M):
    weighing: str | None
    material: str | None
    lot: str | None
    target: float | None = None
    actual: float | None = None
    eng_unit: str | None = None
    tolerance: float | None = Field(default=None, description="absolute tolerance, in the weighing's unit")
    tolerance_pct: float | None = Field(default=None, description="tolerance in % of the target")
    in_tolerance: bool | None = None
    performed_by: str | None = Field(description="printed name of the signer, or the PLC")
    verified_by: str | None
    verified_at_us: int | None
    complete: bool = Field(description="verified by a second person")
    gateway: str | None = Field(default=None, description="site/gateway that recorded the weighing")
    seq: int | None = Field(default=None, description="record of the weighing (its signatures carry the same seq)")
    verified_seq: int | None = Field(default=None, description="record of a later verification, if any")


class DeviationLine(_M):
    id: str
    kind: str | None = Field(default=None, description="qc, weighing or cleaning")
    about: str | None = Field(default=None, description="what was outside: the test, the weighing, the units")
    test: str | None
    value: Any = None
    opened_at_us: int
    closed_at_us: int | None = None
    reason: str | None = None
    action: str | None = None
    closed_by: str | None = None
    open: bool


class QcCheckLine(_M):
    """A QC test required before release, and the batch's (last) result of it judged by the store."""

    test: str
    low: float | None = None
    high: float | None = None
    value: Any = None
    recorded_pass: bool | None = Field(default=None, description="the verdict the gateway recorded")
    within: bool | None = Field(default=None, description="the value judged by the store against the approved "
                                "specification (None: no numeric specification, or not approved)")
    missing: bool = False
    after_release: bool = False


class ReleaseInfo(_M):
    released: bool
    released_by: str | None = None
    user: str | None = None
    time_us: int | None = None
    results_before_release: bool | None = Field(
        default=None, description="every QC result of the batch was recorded before the release")
    results_after: list[str] = Field(default_factory=list, description="tests recorded after the release")
    qc_basis: str | None = Field(default=None, description="where the required QC tests and their specifications "
                                 "came from: the approved specification, or UNAPPROVED (the gateway's configuration)")
    qc_approved: bool = False
    qc_checks: list[QcCheckLine] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="what the store finds wrong with the release")


class CleaningUnit(_M):
    unit: str
    status: str = Field(description="valid, expired or missing when the batch started")
    cleaning: str | None = None
    method: str | None = None
    agent: str | None = None
    end_us: int | None = None
    valid_until_us: int | None = None
    performed_by: str | None = None
    verified_by: str | None = None


class CleaningInfo(_M):
    checked: bool = Field(default=False, description="the gateway checked the units when the batch started")
    valid: bool | None = None
    units: list[CleaningUnit] = Field(default_factory=list)


class PackagingUse(_M):
    material: str | None
    lot: str | None
    quantity: float | None = None


class FinishedLot(_M):
    lot: str
    quantity: float | None
    unit: str | None
    ts_us: int
    produced_by: str | None = None
    packaging: list[PackagingUse] = Field(default_factory=list)


class LotInfo(_M):
    lot: str
    material: str | None = None
    sublot: str | None = None
    supplier: str | None = None
    supplier_lot: str | None = None
    coa: str | None = None
    status: str | None = None
    kind: str | None = None


class EnvironmentLine(_M):
    tag: str
    phase: str | None
    n: int
    min: float | None
    max: float | None
    mean: float | None
    limits: str | None
    n_outside: int
    within: bool | None = Field(description="no reading outside the limits (None: no limits known)")


class BatchRecordInfo(_M):
    """The parts of the batch record beyond process data: who signed what, cleaning, release, lots."""

    signatures: list[SignatureLine] = Field(default_factory=list)
    account_findings: list[str] = Field(default_factory=list, description="signatures made under operator accounts "
                                        "the chain never recorded (the accounts file was edited outside the agent)")
    weighings: list[WeighingLine] = Field(default_factory=list)
    cleaning: CleaningInfo = Field(default_factory=CleaningInfo)
    deviations: list[DeviationLine] = Field(default_factory=list)
    release: ReleaseInfo = Field(default_factory=lambda: ReleaseInfo(released=False))
    lots: list[LotInfo] = Field(default_factory=list, description="master data of the lots consumed")
    finished_lots: list[FinishedLot] = Field(default_factory=list)
    environment: list[EnvironmentLine] = Field(default_factory=list)


def _name(sig: Any) -> str | None:
    if not isinstance(sig, dict):
        return None
    if sig.get("source") == "plc":
        return f"PLC {sig.get('tag')} (gateway key)"
    return str(sig.get("name") or sig.get("user") or "") or None


def batch_record_info(conn: Connection, gids: list[int], labels: dict[int, str], rows: Sequence[Any],
                      parameters: Sequence[Any], qc: ApprovedQc | None = None) -> BatchRecordInfo:
    """The record section from the batch's event ``rows`` (type, data, seq, ts_us, gateway_id, subject).

    ``qc``: the QC tests of the approved specification the batch was judged against (:func:`approved_qc`);
    without it the release is judged by what the gateway recorded, flagged UNAPPROVED.
    """
    sigs: list[SignatureLine] = []
    weighings: dict[str, dict[str, Any]] = {}
    verified: dict[str, tuple[str | None, int, int]] = {}
    deviations: dict[str, dict[str, Any]] = {}
    finished: list[FinishedLot] = []
    release: ReleaseInfo = ReleaseInfo(released=False)
    qc_times: list[tuple[int, str]] = []
    results: dict[str, tuple[dict[str, Any], int]] = {}
    digests: list[tuple[int, int, Any]] = []
    release_data: dict[str, Any] = {}
    check: dict[str, Any] | None = None
    lots: set[str] = set()
    for r in rows:
        d: dict[str, Any] = dict(r.data or {})
        for s in d.get("signatures") or []:
            if isinstance(s, dict):
                sigs.append(SignatureLine(entry=r.type, subject=r.subject, seq=r.seq, gateway=labels[r.gateway_id],
                                          user=s.get("user"), name=s.get("name"), role=s.get("role"),
                                          meaning=s.get("meaning"), time_us=s.get("time_us")))
                digests.append((r.gateway_id, r.seq, s.get("accounts_sha256")))
        if r.type == "material.consumed":
            wid = str(d.get("weighing") or f"seq {r.seq}")
            performer = d.get("performed_by")
            weighings[wid] = {"weighing": wid, "material": d.get("material"), "lot": d.get("lot"),
                              "performed_by": _name(performer) if performer else d.get("operator") or "PLC",
                              "verified_by": _name(d.get("verified_by")), "ts": r.ts_us,
                              "gateway": labels[r.gateway_id], "seq": r.seq,
                              **{k: _number(d.get(k)) for k in ("target", "actual", "tolerance", "tolerance_pct")},
                              "eng_unit": d.get("eng_unit"), "in_tolerance": d.get("in_tolerance")}
            if d.get("lot") is not None:
                lots.add(str(d["lot"]))
        elif r.type == "material.verified":
            verified[str(d.get("weighing"))] = (_name(d.get("verified_by")), r.ts_us, r.seq)
        elif r.type == "qc.result":
            qc_times.append((r.ts_us, str(d.get("test"))))
            results[str(d.get("test"))] = (d, r.ts_us)
        elif r.type == "deviation.opened":
            deviations[str(d.get("id"))] = {"id": str(d.get("id")), "kind": d.get("kind") or "qc",
                                            "about": _about(d), "test": d.get("test"), "value": d.get("value"),
                                            "opened_at_us": r.ts_us, "open": True}
        elif r.type == "deviation.closed" and str(d.get("id")) in deviations:
            deviations[str(d.get("id"))].update(closed_at_us=r.ts_us, reason=d.get("reason"), action=d.get("action"),
                                                closed_by=_name(d.get("closed_by")), open=False)
        elif r.type == "batch.released":
            release_data = d
            by = d.get("released_by") or {}
            after = sorted({test for ts, test in qc_times if ts > r.ts_us})
            release = ReleaseInfo(released=True, released_by=_name(by), user=by.get("user"), time_us=r.ts_us,
                                  results_before_release=True, results_after=after)
        elif r.type == "cleaning.check":
            check = d
        elif r.type == "lot.produced":
            finished.append(FinishedLot(
                lot=str(d.get("lot")), quantity=d.get("quantity"), unit=d.get("unit"), ts_us=r.ts_us,
                produced_by=_name((d.get("signatures") or [None])[0]) or d.get("operator"),
                packaging=[PackagingUse(material=p.get("material"), lot=p.get("lot"), quantity=p.get("quantity"))
                           for p in d.get("packaging") or [] if isinstance(p, dict)]))
            lots.update(str(p.get("lot")) for p in d.get("packaging") or [] if isinstance(p, dict))
    if release.released:
        after = sorted({test for ts, test in qc_times if release.time_us is not None and ts > release.time_us})
        release = release.model_copy(update={"results_after": after, "results_before_release": not after})
    release = release.model_copy(update=_qc_release(qc, release, release_data, results))
    recorded = _accounts_recorded(conn, digests)
    sigs = [x.model_copy(update={"accounts_recorded": ok}) for x, ok in zip(sigs, recorded, strict=True)]
    return BatchRecordInfo(
        signatures=sigs,
        account_findings=[f"{x.name} ({x.user}) signed {x.entry} (seq {x.seq}, {x.gateway}) under operator accounts "
                          "the chain never recorded: the accounts file was changed outside the agent"
                          for x in sigs if x.accounts_recorded is False],
        weighings=[WeighingLine(**{f: w[f] for f in ("weighing", "material", "lot", "target", "actual", "eng_unit",
                                                     "tolerance", "tolerance_pct", "in_tolerance", "performed_by",
                                                     "gateway", "seq")},
                                verified_by=w["verified_by"] or (verified[k][0] if k in verified else None),
                                verified_at_us=w["ts"] if w["verified_by"] else (verified[k][1] if k in verified
                                                                                 else None),
                                verified_seq=None if w["verified_by"] or k not in verified else verified[k][2],
                                complete=bool(w["verified_by"] or k in verified)) for k, w in weighings.items()],
        cleaning=_cleaning(conn, gids, check),
        deviations=[DeviationLine(**d) for d in deviations.values()],
        release=release,
        lots=_lots(conn, gids, lots),
        finished_lots=finished,
        environment=[_environment(p) for p in parameters if p.category in ENVIRONMENT_CATEGORIES],
    )


@dataclass(frozen=True)
class ApprovedQc:
    label: str
    tests: tuple[RecordedQcTest, ...]


def approved_qc(conn: Connection, site: str, sha256: str | None, label: str) -> ApprovedQc | None:
    """The QC section of the specification ``sha256`` if the store holds it approved (verified with the
    site's enrolled keys) and it lists QC tests."""
    if not sha256:
        return None
    stored = stored_specs(conn, site, sha256=sha256)
    record = stored[0].record if stored else None
    if not stored or not stored[0].approved or record is None or not record.qc:
        return None
    return ApprovedQc(label, record.qc)


def _qc_release(qc: ApprovedQc | None, release: ReleaseInfo, data: dict[str, Any],
                results: dict[str, tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """The release's QC basis, each required test's result judged by the store, and what is wrong."""
    problems: list[str] = []
    if qc is not None:
        basis, approved = f"{qc.label}, approved by factory QA and the regulator", True
        required: list[tuple[str, float | None, float | None]] = [(t.test, t.low, t.high) for t in qc.tests]
        said = data.get("qc_basis")
        if release.released and not (isinstance(said, dict) and said.get("approved")):
            problems.append("the gateway released against its configured QC tests, not the approved specification's")
    else:
        basis, approved = "UNAPPROVED: the gateway's configuration (record.qc), approved by nobody but its " \
                          "administrator", False
        required = [(str(t), None, None) for t in data.get("required") or [] if isinstance(t, str)]
    checks = []
    for test, low, high in required:
        got = results.get(test)
        if got is None:
            checks.append(QcCheckLine(test=test, low=low, high=high, missing=True))
            if release.released:
                problems.append(f"released without a result of {test}")
            continue
        d, ts = got
        value = d.get("value")
        within = None
        if approved and (low is not None or high is not None) and isinstance(value, int | float):
            within = (low is None or value >= low) and (high is None or value <= high)
            if d.get("pass") is not within:
                problems.append(f"{test} {value} was recorded as {'pass' if d.get('pass') else 'fail'}, but the "
                                f"approved specification says {'within' if within else 'outside'} {low}..{high}")
        checks.append(QcCheckLine(test=test, low=low if approved else d.get("spec_low"),
                                  high=high if approved else d.get("spec_high"), value=value,
                                  recorded_pass=d.get("pass"), within=within,
                                  after_release=release.time_us is not None and ts > release.time_us))
    return {"qc_basis": basis, "qc_approved": approved, "qc_checks": checks, "problems": problems}


ACCOUNT_EVENTS = ("operator.added", "operator.unlocked", "operator.accounts")
"""The gateway's records of its operator accounts, each with the digest after it (``events.ref``)."""


def _accounts_recorded(conn: Connection, digests: list[tuple[int, int, Any]]) -> list[bool | None]:
    """Per signature (gateway id, seq of the signed entry, accounts digest): whether the same gateway recorded
    that digest before the entry. One lookup through the (ref, type) index for all of a batch's digests."""
    wanted = sorted({str(d) for _, _, d in digests if isinstance(d, str)})
    first: dict[tuple[int, str], int] = {}
    if wanted:
        e = events.c
        for gid, seq, ref in conn.execute(select(e.gateway_id, e.seq, e.ref).where(
                e.ref.in_(wanted), e.type.in_(ACCOUNT_EVENTS))):
            first[(gid, ref)] = min(seq, first.get((gid, ref), seq))
    return [None if not isinstance(d, str) else (gid, d) in first and first[(gid, d)] < seq
            for gid, seq, d in digests]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _about(d: dict[str, Any]) -> str | None:
    """What a deviation is about, in a few words."""
    kind = d.get("kind") or "qc"
    if kind == "weighing":
        return f"{d.get('material')} lot {d.get('lot')}: {d.get('actual')} for {d.get('target')} ± {d.get('tolerance')}"
    if kind == "cleaning":
        return ", ".join(f"{u.get('unit')} {u.get('status')}" for u in d.get("units") or [] if isinstance(u, dict))
    return f"{d.get('test')} {d.get('value')}"


def _cleaning(conn: Connection, gids: list[int], check: dict[str, Any] | None) -> CleaningInfo:
    if check is None:
        return CleaningInfo()
    ids = {u.get("cleaning") for u in check.get("units") or [] if isinstance(u, dict) and u.get("cleaning")}
    records: dict[str, dict[str, Any]] = {}
    if ids:
        e = events.c
        for (data,) in conn.execute(select(e.data).where(e.gateway_id.in_(gids), e.type == "cleaning.recorded")):
            if isinstance(data, dict) and data.get("id") in ids:
                records[str(data["id"])] = data
    units = []
    for u in check.get("units") or []:
        rec = records.get(str(u.get("cleaning")), {})
        units.append(CleaningUnit(unit=str(u.get("unit")), status=str(u.get("status")), cleaning=u.get("cleaning"),
                                  method=rec.get("method"), agent=rec.get("agent"), end_us=rec.get("end_us"),
                                  valid_until_us=u.get("valid_until_us"), performed_by=_name(rec.get("performed_by")),
                                  verified_by=_name(rec.get("verified_by"))))
    return CleaningInfo(checked=True, valid=bool(check.get("valid")), units=units)


def _lots(conn: Connection, gids: list[int], lots: set[str]) -> list[LotInfo]:
    if not lots:
        return []
    e = events.c
    found: dict[str, LotInfo] = {}
    for ref, data in conn.execute(select(e.ref, e.data).where(e.gateway_id.in_(gids), e.type == "lot.registered",
                                                             e.ref.in_(sorted(lots))).order_by(e.ts_us, e.seq)):
        d = dict(data or {})
        found[ref] = LotInfo(lot=ref, **{k: d.get(k) for k in ("material", "sublot", "supplier", "supplier_lot",
                                                               "coa", "status", "kind")})
    return [found[lot] for lot in sorted(found)]


def _environment(p: Any) -> EnvironmentLine:
    band = " / ".join(lim.band() for lim in p.limits) or None
    return EnvironmentLine(tag=p.tag, phase=p.phase, n=p.n, min=p.min, max=p.max, mean=p.mean, limits=band,
                           n_outside=p.n_outside, within=None if not p.limits else p.n_outside == 0)
