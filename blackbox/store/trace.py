"""Trace queries: a finished batch forward to its lots, process, QC, alarms and integrity; a lot back.

``trace_batch`` answers the regulator's questions about one production batch (SPEC §10) from the
rows the ingest stored, judging process parameters against the limits **in force at the time**:
for each reading, the configuration (``config.applied``) most recently applied on its gateway
before the reading was taken, and in it the most specific limit set for the reading's phase and
the batch's product (:func:`blackbox.seal.limits.most_specific`). Limit sets are read as the
record holds them (:func:`blackbox.seal.limits.recorded_limit_set`), not through the agent's
current configuration model, so an old batch's limits are shown even where a newer model would
refuse them.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import itemgetter, ne, sub
from types import SimpleNamespace
from typing import Any, Literal, NamedTuple

from sqlalchemy import ColumnElement, Connection, Engine, Table, and_, or_, select, true

from blackbox.model import now_us
from blackbox.seal.limits import RecordedLimitSet, most_specific, recorded_limit_set
from blackbox.store.batch_record import approved_qc, batch_record_info
from blackbox.store.chunks import Chunk, ChunkError, and_masks, check_sizes, merge, take, unpack_seqs
from blackbox.store.gc_pause import gc_paused
from blackbox.store.integrity import chain_gaps, check_integrity, find_lost_records, merge_shares, spans
from blackbox.store.integrity_worker import PARALLEL_MIN_BATCHES, start_integrity
from blackbox.store.report import (
    AlarmLine,
    BatchInfo,
    Excursion,
    Finding,
    Integrity,
    Limits,
    LotUse,
    MaterialLine,
    ParameterStats,
    PhaseSpan,
    QcLine,
    SourceLine,
    TraceReport,
    render_text,
)
from blackbox.store.schema import events, gateways, reading_chunks, tag_configs
from blackbox.store.spec_report import AppliedSpec, specification_info
from blackbox.store.verify import driver_rows

TRACED_CATEGORIES = frozenset({"process", "environment"})
BATCH_EVENTS = ("batch.started", "batch.phase", "batch.ended")

__all__ = ["BatchNotFound", "LotUse", "TraceReport", "render_text", "reverse_lot", "trace_batch"]


class BatchNotFound(LookupError):
    """No record of the production batch is stored (for the given site, if one was given)."""


# -- configuration in force --------------------------------------------------------------------


@dataclass(frozen=True)
class _TagMeta:
    category: str | None
    unit: str | None
    eng_unit: str | None
    limit_sets: tuple[Limits, ...]
    """Every limit set the record holds, read through the record format (never the current config model)."""
    recorded_sets: tuple[RecordedLimitSet, ...] = ()
    """The same sets in the record format: what the specification is compared with."""
    unreadable: tuple[str, ...] = ()
    """Why each limit set that cannot be read at all was left out (reported as a finding)."""

    def limits_for(self, phase: str | None, product: str | None) -> Limits | None:
        """The rule of :meth:`blackbox.config.TagConfig.limits_for` (:func:`blackbox.seal.limits.most_specific`)."""
        return most_specific(self.limit_sets, phase, product)


@dataclass(frozen=True)
class _AppliedConfig:
    sha256: str
    effective_from_us: int
    site: dict[str, Any]
    tags: dict[str, _TagMeta]
    specification: Any = None
    """The ``specification`` of the config.applied event (absent before joint control: unapproved)."""
    unreadable: tuple[str, ...] = ()
    """Why parts of the configuration other than a tag's limit sets cannot be read (a tag entry without a
    name, a ``tags`` that is no list): reported as findings like the unreadable limit sets."""

    def problems(self) -> list[str]:
        """Everything of this configuration that could not be read."""
        return [*self.unreadable, *(why for meta in self.tags.values() for why in meta.unreadable)]


def _parse_config(sha: str, effective_from: int, data: Any) -> _AppliedConfig:
    """The configuration of a ``tag_configs`` row. The record format checks config.applied's shape at
    ingest, so what does not fit here is a row edited since (the integrity check names the edit): the
    report says what it could not read rather than leaving it out."""
    tags: dict[str, _TagMeta] = {}
    problems: list[str] = []
    if not isinstance(data, dict):
        problems.append(f"the configuration is a {type(data).__name__}, not an object")
        data = {}
    entries = data.get("tags") or []
    if not isinstance(entries, list):
        problems.append(f"its tags are a {type(entries).__name__}, not a list")
        entries = []
    for k, tag in enumerate(entries):
        if not isinstance(tag, dict) or not isinstance(tag.get("name"), str):
            problems.append(f"tag entry {k + 1} has no name")
            continue
        sets: list[Limits] = []
        recorded: list[RecordedLimitSet] = []
        unreadable: list[str] = []
        for i, raw in enumerate(tag.get("limits") or []):
            try:
                rec = recorded_limit_set(raw)
            except ValueError as exc:
                unreadable.append(f"limit set {i + 1} of tag {tag['name']}: {exc}")
                continue
            recorded.append(rec)
            sets.append(Limits(ll=rec.ll, l=rec.l, h=rec.h, hh=rec.hh, phases=list(rec.phases),
                               products=list(rec.products), config_sha256=sha, effective_from_us=effective_from))
        tags[tag["name"]] = _TagMeta(
            category=_str(tag.get("category")),
            unit=_str(tag.get("unit")),
            eng_unit=_str(tag.get("eng_unit")),
            limit_sets=tuple(sets),
            recorded_sets=tuple(recorded),
            unreadable=tuple(unreadable),
        )
    site = data.get("site") if isinstance(data.get("site"), dict) else {}
    return _AppliedConfig(sha, effective_from, dict(site or {}), tags, data.get("specification"), tuple(problems))


class _Configs:
    """The configurations applied on each gateway, to look up the one in force at a time."""

    def __init__(self, conn: Connection, gids: Iterable[int]) -> None:
        self._by_gateway: dict[int, list[_AppliedConfig]] = defaultdict(list)
        tc = tag_configs.c
        rows = conn.execute(
            select(tc.gateway_id, tc.config_sha256, tc.effective_from_us, tc.data)
            .where(tc.gateway_id.in_(list(gids)))
            .order_by(tc.gateway_id, tc.effective_from_us, tc.seq)
        )
        for gid, sha, eff, data in rows:
            self._by_gateway[gid].append(_parse_config(sha, eff, data))
        self._starts = {gid: [c.effective_from_us for c in cs] for gid, cs in self._by_gateway.items()}

    def at(self, gid: int, ts_us: int) -> _AppliedConfig | None:
        starts = self._starts.get(gid)
        if not starts:
            return None
        i = bisect.bisect_right(starts, ts_us) - 1
        return self._by_gateway[gid][i] if i >= 0 else None

    def during(self, gid: int, start_us: int, end_us: int | None) -> list[_AppliedConfig]:
        """The configuration in force at ``start_us`` and every one applied until ``end_us``."""
        first = self.at(gid, start_us)
        later = [c for c in self._by_gateway.get(gid, []) if start_us < c.effective_from_us
                 and (end_us is None or c.effective_from_us <= end_us)]
        return ([first] if first is not None else []) + later


# -- helpers -----------------------------------------------------------------------------------


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


@dataclass
class _Acc:
    """Running statistics of one (gateway, tag, phase)."""

    gateway: str
    tag: str
    phase: str | None
    meta: _TagMeta | None
    first_ts_us: int
    last_ts_us: int = 0
    n: int = 0
    n_numeric: int = 0
    total: float = 0.0
    lo: float | None = None
    hi: float | None = None
    n_bad: int = 0
    n_outside: int = 0
    n_outside_hard: int = 0
    limits: list[Limits] = field(default_factory=list)
    limits_known: bool = True
    excursions: list[Excursion] = field(default_factory=list)


@dataclass
class _Open:
    """An excursion in progress."""

    level: Level
    side: str
    start_us: int
    last_us: int
    peak: float
    n: int
    acc: _Acc


Level = Literal["HH", "H", "L", "LL"]
_RANK: dict[str, int] = {"H": 1, "HH": 2, "L": 1, "LL": 2}


def _classify(v: float, lim: Limits) -> Level | None:
    if lim.hh is not None and v > lim.hh:
        return "HH"
    if lim.h is not None and v > lim.h:
        return "H"
    if lim.ll is not None and v < lim.ll:
        return "LL"
    if lim.l is not None and v < lim.l:
        return "L"
    return None


def _close(ex: _Open, end_us: int, returned: bool) -> None:
    ex.acc.excursions.append(
        Excursion(
            level=ex.level,
            start_us=ex.start_us,
            end_us=end_us,
            duration_s=(end_us - ex.start_us) / 1e6,
            peak=ex.peak,
            n_readings=ex.n,
            returned=returned,
        )
    )


# -- the trace ---------------------------------------------------------------------------------


SeqRanges = dict[int, tuple[int, int | None]]
"""gateway id -> (first seq, last seq or None): one occurrence of a reused batch number."""


def trace_batch(engine: Engine, batch_no: str, *, site: str | None = None, deep: bool = True,
                ranges: SeqRanges | None = None, parallel: bool | None = None) -> TraceReport:
    """The trace report of production batch ``batch_no`` (only gateways of ``site`` if given).

    ``deep`` also compares every stored row with the signed records it came from (edits after
    capture); it reads every record of the batch's sealed range once more. ``ranges`` restricts
    the report to the records of one occurrence of the batch number (from its ``batch.started`` to
    its ``batch.ended`` on each gateway), so that a reused number is never merged with its other
    runs. ``parallel``: the integrity check in a worker process on the report's snapshot
    (:mod:`blackbox.store.integrity_worker`; PostgreSQL only); ``None``: if the batch is large.
    Raises :class:`BatchNotFound` if nothing of the batch is stored.
    """
    with gc_paused(), engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # one snapshot for every query of the report
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            return _trace(conn, batch_no, site, deep, ranges, parallel)


def in_ranges(table: Table, ranges: SeqRanges | None) -> ColumnElement[bool]:
    """The rows of ``table`` (reading chunks or events) inside ``ranges``; every row if None.

    A reading chunk is in if any of its readings may be (its seq span overlaps): its readings are
    then selected one by one (:func:`blackbox.store.chunks.select_seqs`).
    """
    if ranges is None:
        return true()
    c = table.c
    first, last = (c.first_seq, c.last_seq) if "first_seq" in c else (c.seq, c.seq)
    return or_(*(and_(c.gateway_id == gid, last >= lo, *([first <= hi] if hi is not None else []))
                 for gid, (lo, hi) in ranges.items()))


def _gateways_of(conn: Connection, batch_no: str, site: str | None, ranges: SeqRanges | None) -> dict[int, str]:
    gids: set[int] = set()
    if ranges is not None:
        stmt = select(gateways.c.id, gateways.c.site, gateways.c.gateway).where(gateways.c.id.in_(sorted(ranges)))
        if site is not None:
            stmt = stmt.where(gateways.c.site == site)
        return {gid: f"{s}/{g}" for gid, s, g in conn.execute(stmt)}
    for table in (reading_chunks, events):
        gids.update(g for (g,) in conn.execute(select(table.c.gateway_id).where(table.c.batch == batch_no).distinct()))
    gids.update(
        g
        for (g,) in conn.execute(
            select(events.c.gateway_id).where(events.c.ref == batch_no, events.c.type.in_(BATCH_EVENTS)).distinct()
        )
    )
    if not gids:
        return {}
    stmt = select(gateways.c.id, gateways.c.site, gateways.c.gateway).where(gateways.c.id.in_(sorted(gids)))
    if site is not None:
        stmt = stmt.where(gateways.c.site == site)
    return {gid: f"{s}/{g}" for gid, s, g in conn.execute(stmt)}


def _trace(conn: Connection, batch_no: str, site: str | None, deep: bool, ranges: SeqRanges | None,
           parallel: bool | None) -> TraceReport:
    labels = _gateways_of(conn, batch_no, site, ranges)
    lost: dict[int, list[int]] = {}
    if not labels:
        lost = find_lost_records(conn, batch_no, site)
        if not lost:
            raise BatchNotFound(_not_found(conn, batch_no, site))
        g = gateways.c
        labels = {gid: f"{s}/{gw}" for gid, s, gw in conn.execute(select(g.id, g.site, g.gateway)
                                                                 .where(g.id.in_(sorted(lost))))}
    gids = list(labels)
    e = events.c
    batch_rows = conn.execute(
        select(e.gateway_id, e.seq, e.batch_seq, e.type, e.data, e.ts_us, e.phase)
        .where(e.gateway_id.in_(gids), e.type.in_(BATCH_EVENTS), or_(e.ref == batch_no, e.batch == batch_no),
               in_ranges(events, ranges))
        .order_by(e.ts_us, e.seq)
    ).all()
    batch_rows = [r for r in batch_rows if (r.data or {}).get("batch", batch_no) == batch_no]
    other_rows = conn.execute(
        select(e.gateway_id, e.seq, e.type, e.subject, e.data, e.ts_us, e.phase)
        .where(e.gateway_id.in_(gids), e.batch == batch_no, e.type.not_in(BATCH_EVENTS), in_ranges(events, ranges))
        .order_by(e.ts_us, e.seq)
    ).all()

    started = [r for r in batch_rows if r.type == "batch.started"]
    ended = [r for r in batch_rows if r.type == "batch.ended"]
    first_start = started[0] if started else None
    start_data = dict(first_start.data) if first_start is not None else {}
    product = _str(start_data.get("product"))

    configs = _Configs(conn, gids)
    header_gid = first_start.gateway_id if first_start is not None else min(gids)
    started_at = first_start.ts_us if first_start is not None else None
    ended_at = ended[-1].ts_us if ended else None
    site_info: dict[str, Any] = {}
    cfg = configs.at(header_gid, started_at if started_at is not None else (batch_rows[0].ts_us if batch_rows else 0))
    if cfg is None:  # the configuration may have been applied after the first record: take the first one
        cfg = configs.at(header_gid, 2**63 - 1)
    if cfg is not None:
        site_info = cfg.site
    info = BatchInfo(
        batch=batch_no,
        product=product,
        recipe=_str(start_data.get("recipe")),
        recipe_version=_str(start_data.get("recipe_version")),
        operator=_str(start_data.get("operator")),
        site_id=_str(site_info.get("id")),
        site_name=_str(site_info.get("name")),
        licence=_str(site_info.get("licence")),
        line=_str(site_info.get("line")),
        gateways=sorted(labels.values()),
        started_at_us=started_at,
        ended_at_us=ended_at,
    )

    boundaries: dict[int, tuple[int | None, int | None]] = {}
    for gid in gids:
        s = [r.batch_seq for r in started if r.gateway_id == gid]
        en = [r.batch_seq for r in ended if r.gateway_id == gid]
        boundaries[gid] = (min(s) if s else None, max(en) if en else None)
    if parallel is None:
        parallel = _large(boundaries)
    pending = start_integrity(conn, batch_no, labels, boundaries, deep=deep, lost=lost, ranges=ranges) if (
        parallel and conn.dialect.name == "postgresql") else None

    phases = _phases(batch_rows, ended_at)
    materials, qc, alarms, sources = _events(other_rows, labels)
    parameters, no_config, unreadable = _parameters(conn, batch_no, labels, configs, product, ranges)

    integrity = pending.result() if pending is not None else merge_shares([check_integrity(
        conn, batch_no, labels, boundaries, deep=deep, lost=lost, scope=lambda t: in_ranges(t, ranges))])
    spec_from = started_at if started_at is not None else (batch_rows[0].ts_us if batch_rows else 0)
    in_force = [c for gid in sorted(gids) for c in configs.during(gid, spec_from, ended_at)] or (
        [cfg] if cfg is not None else [])
    extra = [_no_config_finding(label) for label in sorted(no_config)] + unreadable + [
        _unreadable_limits_finding(c, why) for c in in_force for why in c.problems()]
    if extra:
        verdict = integrity.verdict if integrity.verdict == "failed" else "incomplete"
        integrity = Integrity(verdict=verdict, findings=[*integrity.findings, *extra], ranges=integrity.ranges,
                              gaps=integrity.gaps)

    specification = specification_info(conn, labels, [AppliedSpec(c.specification, {
        name: list(meta.recorded_sets) for name, meta in c.tags.items()}) for c in in_force], product,
                                       spec_from, ended_at)

    record_rows = sorted([SimpleNamespace(gateway_id=r.gateway_id, seq=r.seq, type=r.type, subject=None, data=r.data,
                                          ts_us=r.ts_us) for r in batch_rows] + list(other_rows),
                         key=lambda r: (r.ts_us, r.seq))
    release_qc = None if specification.unapproved else approved_qc(
        conn, sorted(labels.values())[0].split("/", 1)[0], specification.hash,
        f"specification {specification.id} v{specification.version} (sha256 {(specification.hash or '')[:16]}…)")
    record = batch_record_info(conn, gids, labels, record_rows, parameters, release_qc)

    return TraceReport(
        record=record,
        specification=specification,
        generated_at_us=now_us(),
        batch=info,
        phases=phases,
        materials=materials,
        parameters=parameters,
        qc=qc,
        alarms=alarms,
        sources=sources,
        integrity=integrity,
    )


def _large(boundaries: dict[int, tuple[int | None, int | None]]) -> bool:
    """Whether the batch spans enough sealed batches for its integrity check to run in the worker process."""
    spanned = sum(end - start + 1 for start, end in boundaries.values() if start is not None and end is not None)
    return spanned >= PARALLEL_MIN_BATCHES


def _not_found(conn: Connection, batch_no: str, site: str | None) -> str:
    """"No record" only if nothing could have held the batch: else name the gaps of the chains."""
    message = f"no record of batch {batch_no!r}" + (f" at site {site!r}" if site else "") + " is stored"
    gaps = chain_gaps(conn, site)
    if not gaps:
        return message
    listed = "; ".join(f"{label} misses sealed batch(es) {spans(numbers)}" for label, numbers in sorted(gaps.items()))
    return f"{message}, but the store is incomplete, and its records may have been in what is missing: {listed}"


def _unreadable_limits_finding(config: _AppliedConfig, why: str) -> Finding:
    return Finding(severity="incomplete", code="limits_unreadable",
                   message=f"configuration {config.sha256[:12]}: {why}: the limits in force may be unknown")


def _no_config_finding(label: str) -> Finding:
    return Finding(
        severity="incomplete",
        code="no_config",
        message=f"{label}: no config.applied is stored for some readings: the limits in force are unknown",
    )


def _phases(batch_rows: Sequence[Any], ended_at: int | None) -> list[PhaseSpan]:
    marks = [(r.ts_us, _str((r.data or {}).get("phase"))) for r in batch_rows if r.type == "batch.phase"]
    spans: list[PhaseSpan] = []
    for i, (ts, phase) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else ended_at
        spans.append(
            PhaseSpan(phase=phase or "-", start_us=ts, end_us=end, duration_s=None if end is None else (end - ts) / 1e6)
        )
    return spans


def _events(
    rows: Sequence[Any], labels: dict[int, str]
) -> tuple[list[MaterialLine], list[QcLine], list[AlarmLine], list[SourceLine]]:
    materials: list[MaterialLine] = []
    qc: list[QcLine] = []
    alarms: list[AlarmLine] = []
    sources: list[SourceLine] = []
    for r in rows:
        d: dict[str, Any] = dict(r.data or {})
        gw = labels[r.gateway_id]
        if r.type == "material.consumed":
            target, actual = _num(d.get("target")), _num(d.get("actual"))
            deviation = (actual - target) / target * 100 if target and actual is not None else None
            materials.append(
                MaterialLine(
                    material=_str(d.get("material")),
                    lot=_str(d.get("lot")),
                    target=target,
                    actual=actual,
                    eng_unit=_str(d.get("eng_unit")),
                    deviation_pct=deviation,
                    tolerance_pct=_num(d.get("tolerance_pct")),
                    in_tolerance=_bool(d.get("in_tolerance")),
                    scale=_str(d.get("scale")),
                    operator=_str(d.get("operator")),
                    verifier=_str(d.get("verifier")),
                    ts_us=r.ts_us,
                    gateway=gw,
                )
            )
        elif r.type == "qc.result":
            qc.append(
                QcLine(
                    test=_str(d.get("test")),
                    value=d.get("value"),
                    eng_unit=_str(d.get("eng_unit")),
                    spec_low=_num(d.get("spec_low")),
                    spec_high=_num(d.get("spec_high")),
                    passed=_bool(d.get("pass")),
                    sample=_str(d.get("sample")),
                    operator=_str(d.get("operator")),
                    ts_us=r.ts_us,
                    gateway=gw,
                )
            )
        elif r.type.startswith("alarm."):
            alarms.append(
                AlarmLine(
                    ts_us=r.ts_us,
                    transition=r.type.split(".", 1)[1],
                    rule=_str(d.get("rule")),
                    tag=_str(d.get("tag", r.subject)),
                    level=_str(d.get("level")),
                    value=d.get("value"),
                    limit=d.get("limit"),
                    priority=_str(d.get("priority")),
                    user=_str(d.get("user")),
                    phase=r.phase,
                    gateway=gw,
                )
            )
        elif r.type.startswith("source."):
            sources.append(
                SourceLine(
                    ts_us=r.ts_us,
                    type=r.type,
                    source=_str(d.get("source", r.subject)),
                    reason=_str(d.get("reason")),
                    phase=r.phase,
                    gateway=gw,
                )
            )
    return materials, qc, alarms, sources


def _parameters(
    conn: Connection,
    batch_no: str,
    labels: dict[int, str],
    configs: _Configs,
    product: str | None,
    ranges: SeqRanges | None,
) -> tuple[list[ParameterStats], set[str], list[Finding]]:
    """Per (gateway, tag, phase) statistics against the limits in force, with excursions; and a finding
    for each stored chunk that cannot be unpacked (left out of the statistics).

    The readings come as chunks (:mod:`blackbox.store.chunks`) and are summed up a chunk at a
    time with C-speed builtins; only a chunk holding an excursion, spanning a configuration
    change, or readings out of time order is walked reading by reading.
    """
    rc = reading_chunks.c
    stmt = (select(*(rc[c] for c in _StatChunk._fields))
            .where(rc.batch == batch_no, rc.gateway_id.in_(list(labels)), in_ranges(reading_chunks, ranges))
            .order_by(rc.gateway_id, rc.tag, rc.first_ts_us, rc.first_seq))
    rows = (_StatChunk._make(row) for part in driver_rows(conn, stmt) for row in part)
    stats = _Stats(labels, configs, product)
    group: list[tuple[Any, bytes | None]] = []
    unreadable: list[Finding] = []
    for row in rows:
        try:
            check_sizes(row)
        except ChunkError as exc:
            unreadable.append(Finding(severity="failed", code="row_altered", message=(
                f"{labels[row.gateway_id]}: reading_chunks first_seq={row.first_seq} (tag {row.tag}) cannot be "
                f"unpacked, its readings are left out of the statistics: {exc}")))
            continue
        if group and (group[0][0].gateway_id, group[0][0].tag) != (row.gateway_id, row.tag):
            stats.tag(_runs(group))
            group = []
        mask = None
        if ranges is not None:
            lo, hi = ranges[row.gateway_id]
            if row.first_seq < lo or (hi is not None and row.last_seq > hi):
                mask = bytes([lo <= s and (hi is None or s <= hi) for s in unpack_seqs(row.seqs, row.n)])
        group.append((row, mask))
    if group:
        stats.tag(_runs(group))
    out = [
        ParameterStats(
            gateway=a.gateway,
            tag=a.tag,
            unit=a.meta.unit if a.meta else None,
            eng_unit=a.meta.eng_unit if a.meta else None,
            category=a.meta.category if a.meta else None,
            phase=a.phase,
            n=a.n,
            n_numeric=a.n_numeric,
            min=a.lo,
            max=a.hi,
            mean=a.total / a.n_numeric if a.n_numeric else None,
            first_ts_us=a.first_ts_us,
            last_ts_us=a.last_ts_us,
            limits=a.limits,
            limits_known=a.limits_known,
            n_outside=a.n_outside,
            n_outside_hh_ll=a.n_outside_hard,
            n_bad_quality=a.n_bad,
            excursions=a.excursions,
        )
        for a in stats.accs.values()
    ]
    out.sort(key=lambda p: (p.gateway, p.tag, p.first_ts_us))
    return out, stats.no_config, unreadable


class _StatChunk(NamedTuple):
    """The columns of a stored chunk the statistics read (texts, reasons and source times are not)."""

    gateway_id: int
    batch_seq: int
    tag: str
    batch: str | None
    phase: str | None
    first_seq: int
    last_seq: int
    n: int
    seqs: bytes
    ts: bytes
    kinds: bytes
    nums: bytes
    qualities: bytes


def _runs(group: list[tuple[Any, bytes | None]]) -> list[tuple[Chunk, bytes | None]]:
    """Consecutive chunks of one phase joined (:func:`blackbox.store.chunks.merge`), each with its seq mask."""
    out: list[tuple[Chunk, bytes | None]] = []
    start = 0
    for i in range(1, len(group) + 1):
        if i == len(group) or group[i][0].phase != group[start][0].phase:
            part = group[start:i]
            masks = [m for _r, m in part]
            mask = None if all(m is None for m in masks) else b"".join(
                m if m is not None else b"\x01" * r.n for r, m in part)
            out.append((merge([r for r, _m in part]), mask))
            start = i
    return out


_STAT_KINDS = bytes(1 if c in b"fin" else 0 for c in range(256))
"""Readings the statistics count: float, int and null (bool and str are no process values)."""
_BAD = bytes(1 if c == ord("b") else 0 for c in range(256))


class _Stats:
    """The running statistics of :func:`_parameters`, fed one tag of one gateway at a time, in time order."""

    def __init__(self, labels: dict[int, str], configs: _Configs, product: str | None) -> None:
        self.labels, self.configs, self.product = labels, configs, product
        self.accs: dict[tuple[int, str, str | None], _Acc] = {}
        self.no_config: set[str] = set()
        self._limits: dict[tuple[int, str, str | None], Limits | None] = {}
        self._open: _Open | None = None

    def tag(self, group: list[tuple[Chunk, bytes | None]]) -> None:
        """Every chunk of one (gateway, tag), sorted by first time: in order unless their times overlap."""
        times: list[list[int]] = []
        for chunk, _mask in group:
            ts = chunk.ts.tolist()
            if (times and ts[0] < times[-1][-1]) or ts != sorted(ts):
                break
            times.append(ts)
        if len(times) == len(group):
            for (chunk, mask), ts in zip(group, times, strict=True):
                self._chunk(chunk, mask, ts)
        else:  # readings out of time order: all of the tag's readings, sorted, one by one
            rows: list[tuple[int, int, float | None, int]] = []
            for chunk, mask in group:
                keep = and_masks(mask, chunk.kinds.translate(_STAT_KINDS))
                nums = [None if k == ord("n") else v for k, v in zip(chunk.kinds, chunk.nums, strict=True)]
                rows.extend(zip(take(chunk.ts, keep), take(chunk.seqs, keep), take(nums, keep),
                                take(chunk.qualities, keep), strict=True))
            rows.sort(key=lambda r: (r[0], r[1]))
            chunk = group[0][0]
            phases: dict[int, str | None] = {}  # seq -> phase
            for c, _m in group:
                phases.update(dict.fromkeys(c.seqs.tolist(), c.phase))
            for ts_us, seq, num, quality in rows:
                self._row(chunk.gateway_id, chunk.tag, phases[seq], num, quality == ord("b"), ts_us)
        if self._open is not None:
            _close(self._open, self._open.last_us, returned=False)
            self._open = None

    def _chunk(self, chunk: Chunk, mask: bytes | None, all_ts: list[int]) -> None:
        """The readings of a run of chunks (``all_ts``: their times, in order) summed up at C speed."""
        gid, tag, phase, n = chunk.gateway_id, chunk.tag, chunk.phase, chunk.n
        every = mask is None and chunk.kinds == b"f" * n  # the usual run: every reading a float, all counted
        keep = None if every else and_masks(mask, chunk.kinds.translate(_STAT_KINDS))
        ts = all_ts if keep is None else take(all_ts, keep)
        if not ts:
            return
        cfg = self.configs.at(gid, ts[0])
        if cfg is not self.configs.at(gid, ts[-1]):  # a configuration applied within the chunk
            nums = take([None if k == ord("n") else v for k, v in zip(chunk.kinds, chunk.nums, strict=True)], keep)
            for t, num, q in zip(ts, nums, take(chunk.qualities, keep), strict=True):
                self._row(gid, tag, phase, num, q == ord("b"), t)
            return
        meta = cfg.tags.get(tag) if cfg is not None else None
        if cfg is not None and (meta is None or meta.category not in TRACED_CATEGORIES):
            return
        acc = self._acc(gid, tag, phase, meta, ts[0])
        acc.n += len(ts)
        acc.last_ts_us = ts[-1]
        n_bad = chunk.qualities.count(b"b")
        if every and not n_bad:
            vals: list[float] = chunk.nums.tolist()
            times = ts
        else:
            if n_bad:
                acc.n_bad += take(chunk.qualities.translate(_BAD), keep).count(1)
            good = and_masks(keep, chunk.numeric_good())
            vals = take(chunk.nums, good)
            times = take(all_ts, good)
        if not vals:
            return
        acc.n_numeric += len(vals)
        acc.total = sum(vals, acc.total)
        lo, hi = min(vals), max(vals)
        acc.lo = lo if acc.lo is None else min(acc.lo, lo)
        acc.hi = hi if acc.hi is None else max(acc.hi, hi)
        lim = self._limit(cfg, meta, gid, tag, phase, acc)
        up, down = _bounds(lim) if lim is not None else (None, None)
        if lim is None or not ((up is not None and hi > up) or (down is not None and lo < down)):
            if self._open is not None:
                _close(self._open, times[0], returned=True)
                self._open = None
            return
        if up is not None and down is not None and up < down:  # limits that overlap: judged one by one
            self._judge_each(acc, lim, vals, times, up, down)
        else:  # a side the run's extremes do not cross is not looked at reading by reading
            runs = _outside_runs(vals, up if up is not None and hi > up else None,
                                 down if down is not None and lo < down else None)
            self._excursions(acc, lim, vals, times, runs, lo, hi)

    def _excursions(self, acc: _Acc, lim: Limits, vals: list[float], times: list[int],
                    runs: list[tuple[int, int, bool]], lo: float, hi: float) -> None:
        """Count and record the excursions of ``runs`` (``(first, end, high)``: readings ``first..end - 1``
        all above the band, or all below): what :meth:`_judge` makes of them one reading at a time.
        ``lo`` and ``hi``: the least and greatest of ``vals``.

        Only the first run can continue the excursion the chunk before ended in, and only the last can
        reach the chunk's end and stay open: every run between is an excursion ended by the next
        reading (inside the band, or on its other side), made in one tight loop.
        """
        hh, ll = lim.hh, lim.ll
        acc.n_outside += sum(map(sub, map(_END, runs), map(_FIRST, runs)))
        # beyond HH (LL) is above (below) the band too: counted at C speed over all the readings
        acc.n_outside_hard += ((0 if hh is None or hi <= hh else sum(map(float(hh).__lt__, vals)))
                               + (0 if ll is None or lo >= ll else sum(map(float(ll).__gt__, vals))))
        n = len(vals)
        todo = runs
        open_ex = self._open
        if open_ex is not None:
            first, end, high = runs[0]
            if first != 0 or (open_ex.side == "high") != high:  # it ended before this chunk's first run
                _close(open_ex, times[0], returned=True)
                open_ex = None
            else:  # it goes on
                todo = runs[1:]
                peak, level = _peak(vals, first, end, high, hh, ll)
                open_ex.n += end - first
                open_ex.last_us = times[end - 1]
                open_ex.peak = max(open_ex.peak, peak) if high else min(open_ex.peak, peak)
                if _RANK[level] > _RANK[open_ex.level]:
                    open_ex.level = level
                if end < n:
                    _close(open_ex, times[end], returned=True)
                    open_ex = None
        last = todo[-1] if todo and todo[-1][1] == n else None
        if last is not None:
            todo = todo[:-1]
        made = acc.excursions
        for first, end, high in todo:
            peak, level = _peak(vals, first, end, high, hh, ll)
            start_us, end_us = times[first], times[end]
            made.append(Excursion(level, start_us, end_us, (end_us - start_us) / 1e6, peak, end - first, True))
        if last is not None:
            first, end, high = last
            peak, level = _peak(vals, first, end, high, hh, ll)
            open_ex = _Open(level, "high" if high else "low", times[first], times[end - 1], peak, end - first, acc)
        self._open = open_ex

    def _judge_each(self, acc: _Acc, lim: Limits, vals: list[float], times: list[int], up: float,
                    down: float) -> None:
        """The readings outside judged one by one; a reading inside between them ends an excursion."""
        nxt = 0  # index of the reading after the last one judged
        for i, v in enumerate(vals):
            if not (v > up or v < down):
                continue
            if i != nxt and self._open is not None:
                _close(self._open, times[nxt], returned=True)
                self._open = None
            self._judge(acc, lim, v, times[i])
            nxt = i + 1
        if nxt < len(vals) and self._open is not None:
            _close(self._open, times[nxt], returned=True)
            self._open = None

    def _acc(self, gid: int, tag: str, phase: str | None, meta: _TagMeta | None, ts: int) -> _Acc:
        key = (gid, tag, phase)
        acc = self.accs.get(key)
        if acc is None:
            acc = self.accs[key] = _Acc(gateway=self.labels[gid], tag=tag, phase=phase, meta=meta, first_ts_us=ts)
        return acc

    def _limit(self, cfg: _AppliedConfig | None, meta: _TagMeta | None, gid: int, tag: str, phase: str | None,
               acc: _Acc) -> Limits | None:
        if cfg is None:
            acc.limits_known = False
            self.no_config.add(self.labels[gid])
            return None
        ck = (id(cfg), tag, phase)
        if ck not in self._limits:
            self._limits[ck] = meta.limits_for(phase, self.product) if meta is not None else None
        lim = self._limits[ck]
        if lim is not None and lim not in acc.limits:
            acc.limits.append(lim)
        return lim

    def _row(self, gid: int, tag: str, phase: str | None, num: float | None, bad: bool, ts: int) -> None:
        """One reading (the slow path): counted, summed, judged against the limits in force at its time."""
        cfg = self.configs.at(gid, ts)
        meta = cfg.tags.get(tag) if cfg is not None else None
        if cfg is not None and (meta is None or meta.category not in TRACED_CATEGORIES):
            return
        acc = self._acc(gid, tag, phase, meta, ts)
        acc.n += 1
        acc.last_ts_us = ts
        if bad:
            acc.n_bad += 1
            return
        if num is None:
            return
        acc.n_numeric += 1
        acc.total += num
        acc.lo = num if acc.lo is None else min(acc.lo, num)
        acc.hi = num if acc.hi is None else max(acc.hi, num)
        lim = self._limit(cfg, meta, gid, tag, phase, acc)
        if lim is not None:
            self._judge(acc, lim, num, ts)
        elif self._open is not None:
            _close(self._open, ts, returned=True)
            self._open = None

    def _judge(self, acc: _Acc, lim: Limits, num: float, ts: int) -> None:
        level = _classify(num, lim)
        open_ex = self._open
        if level is None:
            if open_ex is not None:
                _close(open_ex, ts, returned=True)
                self._open = None
            return
        acc.n_outside += 1
        if level in ("HH", "LL"):
            acc.n_outside_hard += 1
        side = "high" if level in ("H", "HH") else "low"
        if open_ex is not None and open_ex.side != side:
            _close(open_ex, ts, returned=True)
            open_ex = None
        if open_ex is None:
            open_ex = self._open = _Open(level, side, ts, ts, num, 0, acc)
        open_ex.n += 1
        open_ex.last_us = ts
        open_ex.peak = max(open_ex.peak, num) if side == "high" else min(open_ex.peak, num)
        if _RANK[level] > _RANK[open_ex.level]:
            open_ex.level = level


def _outside_runs(vals: list[float], up: float | None, down: float | None) -> list[tuple[int, int, bool]]:
    """``(first, end, high)`` of each run of consecutive readings above ``up`` (``high``) or below ``down``,
    in order, found at C speed (``up`` and ``down`` do not overlap): Python walks only the runs."""
    runs: list[tuple[int, int, bool]] = []
    for bound, high in ((up, True), (down, False)):
        if bound is None:
            continue
        compare = float(bound).__lt__ if high else float(bound).__gt__  # bound < v: v above; bound > v: v below
        outside = list(compress(range(len(vals)), map(compare, vals)))
        if not outside:
            continue
        # a run starts wherever an index is not the one before plus one, and ends before the next start
        starts = [0, *compress(range(1, len(outside)), map(ne, outside[1:], map(_NEXT, outside)))]
        ends = [*starts[1:], len(outside)]
        runs.extend(zip(map(outside.__getitem__, starts),
                        map(_NEXT, map(outside.__getitem__, map(_PREVIOUS, ends))), repeat(high)))
    runs.sort()
    return runs


_NEXT = (1).__add__
_PREVIOUS = (-1).__add__
_FIRST = itemgetter(0)
_END = itemgetter(1)


def _peak(vals: list[float], first: int, end: int, high: bool, hh: float | None,
          ll: float | None) -> tuple[float, Level]:
    """The extreme of readings ``first..end - 1`` (all above the band if ``high``, else all below) and its level."""
    if high:
        peak = max(vals[first:end])
        return peak, "HH" if hh is not None and peak > hh else "H"
    peak = min(vals[first:end])
    return peak, "LL" if ll is not None and peak < ll else "L"


def _bounds(lim: Limits) -> tuple[float | None, float | None]:
    """The highest and lowest values :func:`_classify` takes as inside (``None``: no bound on that side)."""
    highs = [x for x in (lim.h, lim.hh) if x is not None]
    lows = [x for x in (lim.l, lim.ll) if x is not None]
    return (min(highs) if highs else None), (max(lows) if lows else None)


def reverse_lot(engine: Engine, lot: str, *, site: str | None = None) -> list[LotUse]:
    """Every consumption of supplier lot ``lot`` (SPEC §10 question 2), oldest first."""
    e, g = events.c, gateways.c
    with engine.connect() as conn:
        stmt = (
            select(e.gateway_id, e.data, e.batch, e.ts_us, g.site, g.gateway)
            .join_from(events, gateways, e.gateway_id == g.id)
            .where(e.type == "material.consumed", e.ref == lot)
            .order_by(e.ts_us, e.seq)
        )
        if site is not None:
            stmt = stmt.where(g.site == site)
        rows = conn.execute(stmt).all()
        batches = sorted({r.batch for r in rows if r.batch is not None})
        products: dict[str, str | None] = {}
        if batches:
            for b, data in conn.execute(
                select(e.ref, e.data).where(e.type == "batch.started", e.ref.in_(batches)).order_by(e.ts_us.desc())
            ):
                products[b] = _str((data or {}).get("product"))
    out: list[LotUse] = []
    for r in rows:
        d = dict(r.data or {})
        out.append(
            LotUse(
                lot=lot,
                material=_str(d.get("material")),
                batch=r.batch,
                product=products.get(r.batch) if r.batch is not None else None,
                target=_num(d.get("target")),
                actual=_num(d.get("actual")),
                eng_unit=_str(d.get("eng_unit")),
                ts_us=r.ts_us,
                site=r.site,
                gateway=r.gateway,
            )
        )
    return out
