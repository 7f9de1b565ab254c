"""The regulator's trace report: its data model (JSON-serialisable) and its printable text form.

Times are integer microseconds UTC (``*_us``) in the model and ISO 8601 in the text; every
figure in the text comes from the model, so the JSON export and the printout always agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blackbox.model import iso
from blackbox.store.batch_record import BatchRecordInfo
from blackbox.text_table import plain_table

Verdict = Literal["verified", "incomplete", "failed"]
Severity = Literal["failed", "incomplete", "info"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class BatchInfo(_Model):
    batch: str
    product: str | None = None
    recipe: str | None = None
    recipe_version: str | None = None
    operator: str | None = None
    site_id: str | None = None
    site_name: str | None = None
    licence: str | None = None
    line: str | None = None
    gateways: list[str] = Field(default_factory=list, description="site/gateway of every gateway with records")
    started_at_us: int | None = None
    ended_at_us: int | None = None


class PhaseSpan(_Model):
    phase: str
    start_us: int
    end_us: int | None
    duration_s: float | None


class MaterialLine(_Model):
    material: str | None
    lot: str | None
    target: float | None
    actual: float | None
    eng_unit: str | None
    deviation_pct: float | None
    tolerance_pct: float | None
    in_tolerance: bool | None
    scale: str | None
    operator: str | None
    verifier: str | None
    ts_us: int
    gateway: str


class Limits(_Model):
    """A limit set in force, and the configuration it came from."""

    ll: float | None = None
    l: float | None = None  # noqa: E741 - the ISA name of the low limit
    h: float | None = None
    hh: float | None = None
    phases: list[str] = Field(default_factory=list)
    products: list[str] = Field(default_factory=list)
    config_sha256: str | None = None
    effective_from_us: int | None = None

    def band(self) -> str:
        """The limits present, e.g. ``L 70 H 80 HH 85``."""
        parts = [(n, v) for n, v in (("LL", self.ll), ("L", self.l), ("H", self.h), ("HH", self.hh)) if v is not None]
        return " ".join(f"{n} {fmt_num(v)}" for n, v in parts) or "none"


# A plain dataclass, not a pydantic model: the report validates and serialises it as it does a model
# (the same JSON and schema), but a report builds one per excursion, and a batch of a million readings
# can have a hundred thousand of them: as models they took 0.23 s and about 120 MB of freshly
# faulted-in memory, as slotted dataclasses 0.12 s and 15 MB. The trace computes every field itself,
# so nothing is lost by not validating them one by one. (Its docstring is the published schema's text.)
@dataclass(frozen=True, slots=True)
class Excursion:
    """Consecutive readings outside the L..H band (or LL..HH where only those exist)."""

    level: Literal["HH", "H", "L", "LL"]
    start_us: int
    end_us: int
    duration_s: float
    peak: float
    n_readings: int
    returned: Annotated[bool, Field(description="False if the tag was still outside its limits at its last reading")]


class ParameterStats(_Model):
    """One tag in one phase: statistics of its good and uncertain numeric readings against limits."""

    gateway: str
    tag: str
    unit: str | None
    eng_unit: str | None
    category: str | None
    phase: str | None
    n: int = Field(description="readings of the tag in the phase, any quality")
    n_numeric: int
    min: float | None
    max: float | None
    mean: float | None
    first_ts_us: int
    last_ts_us: int
    limits: list[Limits] = Field(description="limit sets in force (more than one if the configuration changed)")
    limits_known: bool = Field(description="False if no configuration was recorded for some readings")
    n_outside: int = Field(description="readings outside L..H (or LL..HH where L/H are absent)")
    n_outside_hh_ll: int
    n_bad_quality: int
    excursions: list[Excursion] = Field(default_factory=list)


class QcLine(_Model):
    test: str | None
    value: Any
    eng_unit: str | None = None
    spec_low: float | None
    spec_high: float | None
    passed: bool | None
    sample: str | None
    operator: str | None
    ts_us: int
    gateway: str


class AlarmLine(_Model):
    ts_us: int
    transition: str = Field(description="raised, cleared, acknowledged, shelved, ...")
    rule: str | None
    tag: str | None
    level: str | None
    value: Any
    limit: Any
    priority: str | None
    user: str | None
    phase: str | None
    gateway: str


class SourceLine(_Model):
    ts_us: int
    type: str
    source: str | None
    reason: str | None
    phase: str | None
    gateway: str


class Finding(_Model):
    severity: Severity
    code: str
    message: str


class SealedRange(_Model):
    """The sealed batches of one gateway that the verdict covers."""

    gateway: str
    first_batch_seq: int
    last_batch_seq: int
    n_present: int
    n_verified: int
    missing: list[int]


class GapLine(_Model):
    gateway: str
    type: str
    ts_us: int
    data: dict[str, Any]


class Integrity(_Model):
    verdict: Verdict
    findings: list[Finding]
    ranges: list[SealedRange]
    gaps: list[GapLine] = Field(description="buffer.gap and clock.jump events over the batch's sealed range")

    @property
    def reasons(self) -> list[str]:
        return [f.message for f in self.findings if f.severity != "info"]


class ApprovalLine(_Model):
    """One approval of a specification, verified by the store with the keys enrolled for the site."""

    role: str = Field(description="qa or regulator")
    role_name: str = Field(description="factory QA or regulator")
    signer: str | None
    key_id: str
    signed_at_us: int


class ChangeLine(_Model):
    path: str = Field(description="the parameter, e.g. parameters.EM-01.temperature[emulsify].hh")
    old: Any
    new: Any


class SpecVersion(_Model):
    """One version of the specification in the store, with what it changed from the previous one."""

    version: int
    hash: str
    reason: str
    approved: bool
    problem: str | None = Field(default=None, description="why it is not approved")
    approvals: list[ApprovalLine]
    changes: list[ChangeLine]


class SpecRefusal(_Model):
    """A specification change the gateway refused (spec.refused) during the batch."""

    ts_us: int
    gateway: str
    reason: str | None
    who: str | None
    changes: list[ChangeLine]


class SpecificationInfo(_Model):
    """What the batch was judged against, and whether the factory QA and the regulator approved it."""

    id: str | None = None
    product: str | None = None
    version: int | None = None
    hash: str | None = None
    approvals: list[ApprovalLine] = Field(default_factory=list)
    unapproved: bool = Field(default=True, description="true unless both approvals verify at the store")
    why_unapproved: str | None = None
    statement: str = Field(default="", description="one sentence for the report header")
    changed_during_batch: list[str] = Field(default_factory=list,
                                            description="other specifications in force during the batch")
    history: list[SpecVersion] = Field(default_factory=list)
    refusals: list[SpecRefusal] = Field(default_factory=list)


class TraceReport(_Model):
    generated_at_us: int
    batch: BatchInfo
    phases: list[PhaseSpan]
    materials: list[MaterialLine]
    parameters: list[ParameterStats]
    qc: list[QcLine]
    alarms: list[AlarmLine]
    sources: list[SourceLine]
    integrity: Integrity
    specification: SpecificationInfo = Field(default_factory=SpecificationInfo)
    record: BatchRecordInfo = Field(default_factory=BatchRecordInfo,
                                    description="signatures, weighing verification, cleaning, deviations, release, "
                                                "lots and environment")

    def to_json(self, *, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)


class LotUse(_Model):
    """One consumption of a supplier lot (reverse trace)."""

    lot: str
    material: str | None
    batch: str | None
    product: str | None
    target: float | None
    actual: float | None
    eng_unit: str | None
    ts_us: int
    site: str
    gateway: str


# -- text rendering ---------------------------------------------------------------------------


def fmt_num(v: float | int | None) -> str:
    """A number with about four significant digits, never in exponent form."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    decimals = max(0, 3 - math.floor(math.log10(abs(v))))
    text = f"{v:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, (int, float)):
        return fmt_num(v)
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table with a rule under the header; numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [i for i in range(len(headers)) if rows and all(
        (isinstance(row[i], (int, float)) and not isinstance(row[i], bool)) or row[i] is None for row in rows)]
    text = plain_table(headers, cells, right=numeric, rule=True)
    return text if rows else text + "\n(none)"


def _t(ts: int | None) -> str:
    return iso(ts) or "-"


def _section(title: str) -> str:
    return f"\n{title}\n{'=' * len(title)}"


def render_text(report: TraceReport) -> str:
    """The printable regulator's report: header, integrity verdict, then one section per question."""
    b = report.batch
    out: list[str] = []
    out.append(f"BATCH TRACE REPORT — {b.batch}")
    out.append("=" * len(out[0]))
    kv = [
        ("Product", b.product),
        ("Recipe", f"{b.recipe or '-'} version {b.recipe_version or '-'}"),
        ("Site", f"{b.site_name or '-'} ({b.site_id or '-'})"),
        ("Production licence", b.licence),
        ("Line", b.line),
        ("Gateways", ", ".join(b.gateways) or "-"),
        ("Started", _t(b.started_at_us)),
        ("Ended", _t(b.ended_at_us)),
        ("Started by", b.operator),
        ("Report generated", _t(report.generated_at_us)),
    ]
    width = max(len(k) for k, _ in kv)
    spec = report.specification
    if spec.unapproved:
        banner = "UNAPPROVED LIMITS — " + spec.statement
        out.insert(2, "!" * min(len(banner), 100))
        out.insert(3, banner)
        out.insert(4, "!" * min(len(banner), 100))
    out.extend(f"{k.ljust(width)}  {v if v is not None else '-'}" for k, v in kv)
    out.extend(_specification_lines(spec))

    integ = report.integrity
    out.append(_section(f"Integrity: {integ.verdict.upper()}"))
    out.append(
        table(
            ["gateway", "sealed batches", "present", "verified", "missing"],
            [
                [
                    r.gateway,
                    f"{r.first_batch_seq}..{r.last_batch_seq}",
                    r.n_present,
                    r.n_verified,
                    ", ".join(str(m) for m in r.missing) or "none",
                ]
                for r in integ.ranges
            ],
        )
    )
    if integ.findings:
        out.append("")
        out.extend(f"[{f.severity}] {f.message}" for f in integ.findings)
    if integ.gaps:
        out.append("")
        out.append(
            table(
                ["time", "gateway", "event", "details"],
                [[_t(g.ts_us), g.gateway, g.type, _kv(g.data)] for g in integ.gaps],
            )
        )

    out.append(_section("Phases"))
    out.append(
        table(
            ["phase", "start", "end", "duration min"],
            [
                [p.phase, _t(p.start_us), _t(p.end_us), None if p.duration_s is None else round(p.duration_s / 60, 2)]
                for p in report.phases
            ],
        )
    )

    out.append(_section("Materials (genealogy)"))
    out.append(
        table(
            [
                "material",
                "lot",
                "target",
                "actual",
                "unit",
                "dev %",
                "tol %",
                "in tol",
                "scale",
                "operator",
                "verifier",
                "time",
            ],
            [
                [
                    m.material,
                    m.lot,
                    m.target,
                    m.actual,
                    m.eng_unit,
                    m.deviation_pct,
                    m.tolerance_pct,
                    m.in_tolerance,
                    m.scale,
                    m.operator,
                    m.verifier,
                    _t(m.ts_us),
                ]
                for m in report.materials
            ],
        )
    )

    out.append(_section("Process parameters against the limits in force"))
    out.append(
        table(
            ["tag", "phase", "unit", "n", "min", "mean", "max", "LL", "L", "H", "HH", "outside", "out HH/LL", "bad q"],
            [
                [
                    p.tag,
                    p.phase,
                    p.eng_unit,
                    p.n,
                    p.min,
                    p.mean,
                    p.max,
                    *_limit_cells(p),
                    p.n_outside,
                    p.n_outside_hh_ll,
                    p.n_bad_quality,
                ]
                for p in report.parameters
            ],
        )
    )
    notes = [p for p in report.parameters if len(p.limits) > 1 or not p.limits_known]
    for p in notes:
        if len(p.limits) > 1:
            out.append(
                f"  note: {p.tag} in {p.phase}: limits changed during the phase: "
                + "; ".join(f"{lim.band()} from {_t(lim.effective_from_us)}" for lim in p.limits)
            )
        if not p.limits_known:
            out.append(f"  note: {p.tag} in {p.phase}: no configuration recorded for some readings")
    excursions = [(p, e) for p in report.parameters for e in p.excursions]
    if excursions:
        out.append("")
        out.append("Excursions")
        out.append(
            table(
                ["tag", "phase", "level", "start", "end", "duration s", "peak", "readings", "returned"],
                [
                    [
                        p.tag,
                        p.phase,
                        e.level,
                        _t(e.start_us),
                        _t(e.end_us),
                        round(e.duration_s, 1),
                        e.peak,
                        e.n_readings,
                        e.returned,
                    ]
                    for p, e in excursions
                ],
            )
        )

    out.append(_section("Alarms"))
    out.append(
        table(
            ["time", "transition", "tag", "level", "value", "limit", "priority", "user", "phase"],
            [
                [_t(a.ts_us), a.transition, a.tag, a.level, a.value, a.limit, a.priority, a.user, a.phase]
                for a in report.alarms
            ],
        )
    )

    out.append(_section("QC results"))
    out.append(
        table(
            ["test", "sample", "value", "unit", "spec low", "spec high", "pass", "operator", "time"],
            [
                [q.test, q.sample, q.value, q.eng_unit, q.spec_low, q.spec_high, q.passed, q.operator, _t(q.ts_us)]
                for q in report.qc
            ],
        )
    )

    out.append(_section("Data sources"))
    out.append(
        table(
            ["time", "event", "source", "reason", "phase"],
            [[_t(s.ts_us), s.type, s.source, s.reason, s.phase] for s in report.sources],
        )
    )
    out.extend(_record_lines(report.record))
    return "\n".join(out) + "\n"


def _record_lines(rec: BatchRecordInfo) -> list[str]:
    """Cleaning, weighing verification, environment, deviations, release, finished lots, signatures."""
    out = [_section("Cleaning of the equipment (when the batch started)")]
    if not rec.cleaning.checked:
        out.append("not checked (no units configured on the gateway)")
    else:
        out.append(f"Verdict: {'VALID' if rec.cleaning.valid else 'NOT VALID — batch started on equipment not clean'}")
        out.append(table(["unit", "status", "cleaning", "method", "agent", "ended", "valid until", "by", "verified by"],
                         [[u.unit, u.status, u.cleaning, u.method, u.agent, _t(u.end_us), _t(u.valid_until_us),
                           u.performed_by, u.verified_by] for u in rec.cleaning.units]))
    out.append(_section("Weighings: second-person verification"))
    out.append(table(["weighing", "material", "lot", "performed by", "verified by", "verified", "complete"],
                     [[w.weighing, w.material, w.lot, w.performed_by, w.verified_by, _t(w.verified_at_us),
                       "yes" if w.complete else "NO"] for w in rec.weighings]))
    out.append(_section("Material lots"))
    out.append(table(["lot", "material", "kind", "supplier", "supplier lot", "CoA", "status"],
                     [[x.lot, x.material, x.kind, x.supplier, x.supplier_lot, x.coa, x.status] for x in rec.lots]))
    out.append(_section("Environment and utilities over the batch"))
    out.append(table(["tag", "phase", "n", "min", "max", "mean", "limits", "outside", "within"],
                     [[e.tag, e.phase, e.n, e.min, e.max, e.mean, e.limits, e.n_outside, e.within]
                      for e in rec.environment]))
    out.append(_section("Deviations"))
    out.append(table(["id", "kind", "about", "opened", "closed", "reason", "action", "closed by"],
                     [[d.id, d.kind, d.about, _t(d.opened_at_us), _t(d.closed_at_us), d.reason, d.action,
                       d.closed_by if not d.open else "OPEN"] for d in rec.deviations]))
    out.append(_section("Finished-goods lots"))
    out.append(table(["lot", "quantity", "unit", "filled", "by", "packaging lots"],
                     [[f.lot, f.quantity, f.unit, _t(f.ts_us), f.produced_by,
                       ", ".join(f"{p.material}:{p.lot}" for p in f.packaging)] for f in rec.finished_lots]))
    r = rec.release
    out.append(_section(f"Release: {'RELEASED' if r.released else 'NOT RELEASED'}"))
    if r.released:
        out.append(f"Released by {r.released_by} ({r.user}) at {_t(r.time_us)}, meaning: approved")
        out.append("Every QC result preceded the release" if r.results_before_release else
                   f"QC results recorded AFTER the release: {', '.join(r.results_after)}")
    if r.released or r.qc_approved or r.qc_checks:
        out.append(f"QC specifications: {r.qc_basis}")
        out.append(table(["test", "low", "high", "value", "recorded", "within approved spec", "note"],
                         [[c.test, c.low, c.high, c.value, None if c.recorded_pass is None else
                           ("pass" if c.recorded_pass else "FAIL"), c.within,
                           "MISSING" if c.missing else "after release" if c.after_release else None]
                          for c in r.qc_checks]))
    out.extend(f"  PROBLEM: {p}" for p in r.problems)
    out.append(_section("Electronic signatures"))
    out.append(table(["time", "name", "user", "role", "meaning", "entry", "seq", "gateway", "accounts"],
                     [[_t(s.time_us), s.name, s.user, s.role, s.meaning, s.entry, s.seq, s.gateway,
                       None if s.accounts_recorded is None else "recorded" if s.accounts_recorded else "NOT RECORDED"]
                      for s in rec.signatures]))
    out.extend(f"  PROBLEM: {f}" for f in rec.account_findings)
    return out


def _specification_lines(spec: SpecificationInfo) -> list[str]:
    out = [_section("Specification" + (" — UNAPPROVED" if spec.unapproved else ""))]
    out.append(spec.statement)
    if spec.approvals:
        out.append(table(["role", "signer", "key", "approved at"],
                         [[a.role_name, a.signer, a.key_id, _t(a.signed_at_us)] for a in spec.approvals]))
    for other in spec.changed_during_batch:
        out.append(f"  note: also in force during the batch: {other}")
    if spec.history:
        out.append("")
        out.append("Change history")
        for v in spec.history:
            who = "; ".join(f"{a.role_name} {a.signer or '-'} {_t(a.signed_at_us)}" for a in v.approvals)
            state = f"approved by {who}" if v.approved else f"NOT APPROVED ({v.problem})"
            out.append(f"  v{v.version} ({v.hash[:16]}…): {v.reason} — {state}")
            out.extend(f"      {c.path}: {_cell(c.old)} -> {_cell(c.new)}" for c in v.changes)
    if spec.refusals:
        out.append("")
        out.append("Refused changes (the gateway kept the approved limits)")
        for r in spec.refusals:
            out.append(f"  {_t(r.ts_us)} {r.gateway} by {r.who or '-'}: {r.reason or '-'}")
            out.extend(f"      {c.path}: {_cell(c.old)} -> {_cell(c.new)}" for c in r.changes)
    return out


def _limit_cells(p: ParameterStats) -> list[Any]:
    if not p.limits:
        return [None, None, None, None]
    lim = p.limits[-1]
    return [lim.ll, lim.l, lim.h, lim.hh]


def _kv(data: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in data.items())
