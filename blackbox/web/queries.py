"""The web window's own queries: batch search, chart series, comparison, site time zones, access log.

The trace report itself comes from :mod:`blackbox.store.trace`; what is here is what a page or an
API client needs beyond it, and must stay fast on a store of millions of readings: the search
touches only ``batch.*`` events, a chart reads one tag of one batch (its reading chunks, decoded at
C speed) and reduces it to at most a few thousand buckets (each keeping its minimum and maximum, so
no excursion is lost).

A production batch is an **occurrence**: the ``batch.started`` event that opened it on a gateway,
up to the next ``batch.ended`` of the same batch number there. A PLC that restarts its counter
reuses a batch number: the two runs are two occurrences, numbered 1, 2, ... per site in order of
their start, and never merged.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, insert, or_, select
from sqlalchemy.orm import aliased

from blackbox.model import now_us
from blackbox.store.chunks import QUALITY_NAMES, ChunkError, decode_chunk, select_seqs, take
from blackbox.store.schema import access_log, events, gateways, reading_chunks, sealed_batches, tag_configs
from blackbox.store.trace import _Configs

log = logging.getLogger(__name__)

MAX_POINTS = 5000


class NotFound(LookupError):
    """Nothing the caller may see matches (the batch may exist at a site the caller cannot see)."""


# -- occurrences -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Occurrence:
    """One run of a batch number on one site (one or more gateways)."""

    site: str
    batch: str
    occurrence: int
    n_occurrences: int
    product: str | None
    recipe: str | None
    gateways: list[str]
    started_at_us: int
    ended_at_us: int | None
    ranges: dict[int, tuple[int, int | None]] = field(repr=False)
    """gateway id -> (seq of batch.started, last seq before the gateway's next start of the number, or None).

    Past the ``batch.ended``: entries recorded later for the batch (verification, QC results,
    filling, release) are part of its record."""
    run_ranges: dict[int, tuple[int, int | None]] = field(repr=False, default_factory=dict)
    """gateway id -> (seq of batch.started, seq of its batch.ended, or the range's end while it runs).

    The production run itself: its phases are looked for here, not in the whole record range, which
    stays open for the newest occurrence and would hold every later batch's phase events."""

    def public(self) -> dict[str, Any]:
        return {
            "site": self.site, "batch": self.batch, "occurrence": self.occurrence,
            "n_occurrences": self.n_occurrences, "product": self.product, "recipe": self.recipe,
            "gateways": self.gateways, "started_at_us": self.started_at_us, "ended_at_us": self.ended_at_us,
        }


def _occurrences(conn: Connection, site_batches: set[tuple[str, str]]) -> list[Occurrence]:
    """Every occurrence of the given (site, batch) pairs."""
    if not site_batches:
        return []
    e, g = events.c, gateways.c
    numbers = sorted({b for _, b in site_batches})
    rows = conn.execute(
        select(e.gateway_id, e.seq, e.type, e.ref, e.data, e.ts_us, g.site, g.gateway)
        .join_from(events, gateways, e.gateway_id == g.id)
        .where(e.type.in_(["batch.started", "batch.ended"]), e.ref.in_(numbers))
        .order_by(e.gateway_id, e.seq)
    ).all()
    # per gateway: pair each start with the first end after it (and before the next start). An occurrence's
    # records run up to the next start: entries made after its end (a verification, a QC result days
    # later, the filling, the release) name the batch and belong to it.
    runs: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if (r.site, r.ref) not in site_batches:
            continue
        gw_runs = runs[(r.site, r.ref)][r.gateway_id]
        if r.type == "batch.started":
            gw_runs.append({"gid": r.gateway_id, "gateway": r.gateway, "start_seq": r.seq, "start_ts": r.ts_us,
                            "data": dict(r.data or {}), "end_seq": None, "end_ts": None})
        elif gw_runs and gw_runs[-1]["end_seq"] is None:
            gw_runs[-1]["end_seq"], gw_runs[-1]["end_ts"] = r.seq, r.ts_us
    out: list[Occurrence] = []
    for (site, batch), by_gw in runs.items():
        n = max(len(v) for v in by_gw.values())
        for i in range(n):
            parts = [v[i] for v in by_gw.values() if i < len(v)]
            first = min(parts, key=lambda p: p["start_ts"])
            ends = [p["end_ts"] for p in parts]
            out.append(Occurrence(
                site=site, batch=batch, occurrence=i + 1, n_occurrences=n,
                product=_s(first["data"].get("product")), recipe=_s(first["data"].get("recipe")),
                gateways=sorted(p["gateway"] for p in parts), started_at_us=first["start_ts"],
                ended_at_us=None if None in ends else max(ends),
                ranges={gid: (v[i]["start_seq"], v[i + 1]["start_seq"] - 1 if i + 1 < len(v) else None)
                        for gid, v in by_gw.items() if i < len(v)},
                run_ranges={gid: (v[i]["start_seq"], v[i]["end_seq"] if v[i]["end_seq"] is not None
                                  else (v[i + 1]["start_seq"] - 1 if i + 1 < len(v) else None))
                            for gid, v in by_gw.items() if i < len(v)},
            ))
    return out


def occurrences(engine: Engine, site: str, batch: str) -> list[Occurrence]:
    """Every occurrence of a batch number at a site, oldest first."""
    with engine.connect() as conn:
        return _occurrences(conn, {(site, batch)})


def find_occurrence(engine: Engine, site: str, batch: str, occurrence: int | None) -> Occurrence:
    """The occurrence asked for (default: the latest); NotFound if there is none."""
    occs = occurrences(engine, site, batch)
    if not occs:
        raise NotFound(batch)
    if occurrence is None:
        return occs[-1]
    for o in occs:
        if o.occurrence == occurrence:
            return o
    raise NotFound(batch)


def occurrence_at(engine: Engine, site: str, batch: str, ts_us: int) -> int | None:
    """The occurrence of a batch number running at ``ts_us`` (the last one started by then), e.g. the
    run that consumed a lot; None if no occurrence had started."""
    found = None
    for o in occurrences(engine, site, batch):
        if o.started_at_us <= ts_us:
            found = o.occurrence
    return found


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


# -- search ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchResult:
    total: int
    items: list[Occurrence]


def search_batches(
    engine: Engine,
    *,
    sites: Sequence[str] | None,
    site: str | None = None,
    batch: str | None = None,
    product: str | None = None,
    from_us: int | None = None,
    to_us: int | None = None,
    with_alarms: bool = False,
    with_gaps: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> SearchResult:
    """Occurrences matching every filter given, newest first; ``sites`` is what the caller may see."""
    e, g = events.c, gateways.c
    other = aliased(events)
    o = other.c
    conds: list[Any] = [e.type == "batch.started"]
    if sites is not None:
        conds.append(g.site.in_(list(sites)))
    if site:
        conds.append(g.site == site)
    if batch:
        conds.append(e.ref.like(f"%{_escape_like(batch)}%", escape="\\"))
    if product:
        conds.append(e.data["product"].as_string() == product)
    if from_us is not None:
        conds.append(e.ts_us >= from_us)
    if to_us is not None:
        conds.append(e.ts_us <= to_us)
    # each filter names the batch (o.batch == e.ref) so that the (batch, type) index answers it; a
    # condition on the gateway's seq range would steer the planner to the primary key instead, which
    # walks every later event of the gateway for each batch (minutes over 10,000 batches)
    if with_alarms:
        conds.append(exists().where(o.batch == e.ref, o.type == "alarm.raised", o.gateway_id == e.gateway_id)
                     .correlate(events))
    if with_gaps:
        conds.append(exists().where(o.batch == e.ref, o.type == "buffer.gap", o.gateway_id == e.gateway_id)
                     .correlate(events))
    base = select(g.site, e.ref).join_from(events, gateways, e.gateway_id == g.id).where(and_(*conds))
    with engine.connect() as conn:
        keys = base.group_by(g.site, e.ref).subquery()
        total = conn.execute(select(func.count()).select_from(keys)).scalar_one()
        page = conn.execute(
            base.add_columns(func.max(e.ts_us).label("latest")).group_by(g.site, e.ref)
            .order_by(func.max(e.ts_us).desc(), g.site, e.ref).offset(offset).limit(limit)
        ).all()
        occs = _occurrences(conn, {(r.site, r.ref) for r in page})
    # the filters chose (site, batch) pairs; keep the occurrences that themselves match the time filter
    items = [x for x in occs if (from_us is None or x.started_at_us >= from_us)
             and (to_us is None or x.started_at_us <= to_us)]
    items.sort(key=lambda x: (-x.started_at_us, x.site, x.batch))
    return SearchResult(total=total, items=items)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- chart series ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitSegment:
    start_us: int
    end_us: int
    ll: float | None
    l: float | None  # noqa: E741 - the ISA name
    h: float | None
    hh: float | None


def _phase_spans(conn: Connection, occ: Occurrence) -> list[tuple[str, int, int]]:
    e = events.c
    marks: list[tuple[int, str]] = []
    for gid, (lo, hi) in occ.run_ranges.items():
        stmt = select(e.ts_us, e.data).where(e.gateway_id == gid, e.type == "batch.phase", e.seq >= lo)
        if hi is not None:
            stmt = stmt.where(e.seq <= hi)
        marks.extend((ts, str((d or {}).get("phase") or "-")) for ts, d in conn.execute(stmt)
                     if (d or {}).get("batch", occ.batch) == occ.batch)
    marks.sort()
    end = occ.ended_at_us if occ.ended_at_us is not None else (marks[-1][0] if marks else occ.started_at_us)
    return [(p, ts, marks[i + 1][0] if i + 1 < len(marks) else end) for i, (ts, p) in enumerate(marks)]


def _seq_filter(table: Any, occ: Occurrence) -> Any:
    c = table.c
    parts = []
    for gid, (lo, hi) in occ.ranges.items():
        cond = and_(c.gateway_id == gid, c.seq >= lo)
        parts.append(and_(cond, c.seq <= hi) if hi is not None else cond)
    return or_(*parts)


def _chunk_filter(occ: Occurrence) -> Any:
    """Reading chunks that may hold readings of the occurrence (their seq span overlaps its ranges)."""
    c = reading_chunks.c
    parts = []
    for gid, (lo, hi) in occ.ranges.items():
        cond = and_(c.gateway_id == gid, c.last_seq >= lo)
        parts.append(and_(cond, c.first_seq <= hi) if hi is not None else cond)
    return and_(c.batch == occ.batch, or_(*parts))


def batch_tags(engine: Engine, occ: Occurrence) -> list[str]:
    """Numeric process/environment tags recorded in the occurrence (what can be charted)."""
    c = reading_chunks.c
    with engine.connect() as conn:
        numeric: set[str] = set()
        for tag, kinds in conn.execute(select(c.tag, c.kinds).where(_chunk_filter(occ))):
            if tag not in numeric and (b"f" in kinds or b"i" in kinds):
                numeric.add(tag)
        tags = sorted(numeric)
        configs = _Configs(conn, occ.ranges)
    gid = next(iter(occ.ranges))
    cfg = configs.at(gid, occ.started_at_us) or configs.at(gid, 2**63 - 1)
    if cfg is None:
        return tags
    return [t for t in tags if t not in cfg.tags or cfg.tags[t].category in ("process", "environment")]


def tag_values(conn: Connection, occ: Occurrence, tag: str, from_us: int | None = None,
               to_us: int | None = None) -> tuple[list[int], list[float]]:
    """Times and values of the tag's numeric readings of not-bad quality in the occurrence, in time order.

    One query for the tag's chunks (the (batch, tag) index), each decoded and filtered with C-speed
    builtins; the readings are sorted only if the chunks' times are out of order.
    """
    c = reading_chunks.c
    where = [_chunk_filter(occ), c.tag == tag]
    if from_us is not None:
        where.append(c.last_ts_us >= from_us)
    if to_us is not None:
        where.append(c.first_ts_us <= to_us)
    ts: list[int] = []
    vals: list[float] = []
    seqs: list[int] = []
    ordered = True
    for row in conn.execute(select(reading_chunks).where(*where).order_by(c.first_ts_us, c.first_seq)):
        try:
            chunk = decode_chunk(row)
        except ChunkError as exc:  # the batch's integrity verdict says "failed" and why
            log.warning("chart of %s: a stored reading chunk (first seq %d) cannot be unpacked: %s", tag,
                        row.first_seq, exc)
            continue
        lo, hi = occ.ranges[chunk.gateway_id]
        keep = select_seqs(chunk, lo, hi)
        good = chunk.numeric_good()
        if keep is not None:
            good = bytes(a & b for a, b in zip(good, keep, strict=True))
        t = take(chunk.ts, good)
        if not t:
            continue
        if (ts and t[0] < ts[-1]) or t != sorted(t):
            ordered = False
        ts.extend(t)
        vals.extend(take(chunk.nums, good))
        seqs.extend(take(chunk.seqs, good))
    if not ordered:
        order = sorted(range(len(ts)), key=lambda i: (ts[i], seqs[i]))
        ts, vals = [ts[i] for i in order], [vals[i] for i in order]
    if from_us is not None or to_us is not None:
        i = bisect.bisect_left(ts, from_us) if from_us is not None else 0
        j = bisect.bisect_right(ts, to_us) if to_us is not None else len(ts)
        ts, vals = ts[i:j], vals[i:j]
    return ts, vals


def downsample(ts: list[int], vals: list[float], t0: int, t1: int, points: int
               ) -> tuple[list[int], list[float], list[float]]:
    """Buckets ``(ts - t0) * points // span`` (``span = t1 - t0 + 1``) of time-ordered readings: per non-empty
    bucket the middle of its first and last time, its minimum and its maximum (slices, at C speed)."""
    span = max(1, t1 - t0 + 1)
    t: list[int] = []
    lo: list[float] = []
    hi: list[float] = []
    i, n = 0, len(ts)
    while i < n:
        b = (ts[i] - t0) * points // span
        # first time of bucket b + 1: the least x with (x - t0) * points >= (b + 1) * span
        j = bisect.bisect_left(ts, t0 - (-(b + 1) * span // points), i)
        part = vals[i:j]
        t.append((ts[i] + ts[j - 1]) // 2)
        lo.append(min(part))
        hi.append(max(part))
        i = j
    return t, lo, hi


def series(engine: Engine, occ: Occurrence, tag: str, *, from_us: int | None = None, to_us: int | None = None,
           points: int = 1200) -> dict[str, Any]:
    """One tag over the occurrence: buckets keeping min and max, limit bands, phases, alarms, excursions.

    At most ``points`` buckets (each bucket's minimum and maximum are exact, so a spike is never
    smoothed away); with fewer readings than that every reading is returned as it is.
    """
    points = max(10, min(points, MAX_POINTS))
    e = events.c
    with engine.connect() as conn:
        ts, vals = tag_values(conn, occ, tag, from_us, to_us)
        n = len(ts)
        # buckets over the window asked for (the occurrence when it has ended, else the readings' own span)
        t0 = from_us if from_us is not None else occ.started_at_us
        t1 = to_us if to_us is not None else occ.ended_at_us
        if t1 is None and ts:
            t0, t1 = ts[0], ts[-1]
        if n > points and t1 is not None:
            t, lo, hi = downsample(ts, vals, t0, t1, points)
        else:  # few readings: every one as it is
            t, lo, hi = ts, vals, list(vals)
        phases = _phase_spans(conn, occ)
        alarms = [
            {"ts_us": ts, "transition": typ.split(".", 1)[1], "level": _s((d or {}).get("level")),
             "value": (d or {}).get("value"), "user": _s((d or {}).get("user"))}
            for ts, typ, d in conn.execute(
                select(e.ts_us, e.type, e.data)
                .where(e.batch == occ.batch, _seq_filter(events, occ), e.type.like("alarm.%"),
                       or_(e.subject == tag, e.data["tag"].as_string() == tag))
                .order_by(e.ts_us, e.seq))
        ]
        configs = _Configs(conn, occ.ranges)
        meta_unit = None
        gid = next(iter(occ.ranges))
        limits = _limit_segments(configs, gid, tag, occ, phases)
        cfg = configs.at(gid, occ.started_at_us) or configs.at(gid, 2**63 - 1)
        if cfg is not None and tag in cfg.tags:
            meta_unit = cfg.tags[tag].eng_unit
    excursions = _excursions(t, lo, hi, limits)
    start = occ.started_at_us
    end = occ.ended_at_us if occ.ended_at_us is not None else max([start, *t, *(b for _, _, b in phases)])
    return {
        "tag": tag, "eng_unit": meta_unit, "n_readings": n, "downsampled": bool(n and n > points),
        "start_us": start, "end_us": end,
        "t": t, "min": lo, "max": hi,
        "limits": [seg.__dict__ for seg in limits],
        "phases": [{"phase": p, "start_us": a, "end_us": b} for p, a, b in phases],
        "alarms": alarms, "excursions": excursions,
    }


def _limit_segments(configs: _Configs, gid: int, tag: str, occ: Occurrence,
                    phases: list[tuple[str, int, int]]) -> list[LimitSegment]:
    """The limits in force for ``tag`` over the occurrence: one segment per phase and configuration."""
    start = occ.started_at_us
    end = occ.ended_at_us if occ.ended_at_us is not None else (phases[-1][2] if phases else start)
    cuts = {start, end, *(a for _, a, _ in phases)}
    cuts.update(c.effective_from_us for c in configs._by_gateway.get(gid, []) if start < c.effective_from_us < end)
    edges = sorted(x for x in cuts if start <= x <= end)
    segs: list[LimitSegment] = []
    for a, b in itertools.pairwise(edges):
        phase = next((p for p, pa, pb in phases if pa <= a < pb), None)
        cfg = configs.at(gid, a)
        meta = cfg.tags.get(tag) if cfg is not None else None
        lim = meta.limits_for(phase, occ.product) if meta is not None else None
        if lim is None:
            continue
        seg = LimitSegment(a, b, lim.ll, lim.l, lim.h, lim.hh)
        if segs and (segs[-1].ll, segs[-1].l, segs[-1].h, segs[-1].hh, segs[-1].end_us) == (
                seg.ll, seg.l, seg.h, seg.hh, seg.start_us):
            segs[-1] = LimitSegment(segs[-1].start_us, b, seg.ll, seg.l, seg.h, seg.hh)
        else:
            segs.append(seg)
    return segs


def _excursions(t: list[int], lo: list[float], hi: list[float], limits: list[LimitSegment]) -> list[dict[str, Any]]:
    """Spans of buckets with a reading outside L..H (or LL..HH) of the limits in force there."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for ts, a, b in zip(t, lo, hi, strict=True):
        seg = next((s for s in limits if s.start_us <= ts <= s.end_us), None)
        level = None
        if seg is not None:
            high = seg.h if seg.h is not None else seg.hh
            low = seg.l if seg.l is not None else seg.ll
            if high is not None and b > high:
                level = "HH" if seg.hh is not None and b > seg.hh else "H"
            elif low is not None and a < low:
                level = "LL" if seg.ll is not None and a < seg.ll else "L"
        if level is None:
            current = None
            continue
        if current is None or current["side"] != level[0]:
            current = {"start_us": ts, "end_us": ts, "level": level, "side": level[0]}
            out.append(current)
        current["end_us"] = ts
        if len(level) == 2:
            current["level"] = level
    for x in out:
        x.pop("side")
    return out


# -- comparison --------------------------------------------------------------------------------

STEPS_PER_PHASE = 40


@dataclass(frozen=True)
class Profile:
    """A tag over one occurrence, phase-aligned: per phase, STEPS_PER_PHASE bucket means."""

    occ: Occurrence
    phases: list[tuple[str, int, int]]
    values: dict[str, list[float | None]]
    peak: float | None
    mean: float | None


def _profile(conn: Connection, occ: Occurrence, tag: str) -> Profile:
    """Each reading goes to step ``phase index * STEPS + step`` of the phase holding its time."""
    phases = _phase_spans(conn, occ)
    values: dict[str, list[float | None]] = {}
    peak: float | None = None
    total, count = 0.0, 0
    if not phases:
        return Profile(occ, phases, values, peak, None)
    ts, nums = tag_values(conn, occ, tag, phases[0][1], phases[-1][2] - 1)
    per_phase: list[list[float | None]] = [[None] * STEPS_PER_PHASE for _ in phases]
    done = 0  # readings before this index belong to an earlier phase (the first phase holding a time wins)
    for i, (_, a, b) in enumerate(phases):
        start, end = max(done, bisect.bisect_left(ts, a)), bisect.bisect_left(ts, b)
        span = max(1, b - a)
        k = start
        while k < end:
            step = (ts[k] - a) * STEPS_PER_PHASE // span
            stop = min(end, bisect.bisect_left(ts, a - (-(step + 1) * span // STEPS_PER_PHASE), k))
            part = nums[k:stop]
            avg = sum(part) / len(part)
            per_phase[i][step] = avg
            peak = max(part) if peak is None else max(peak, max(part))
            total += avg * len(part)
            count += len(part)
            k = stop
        done = max(done, end)
    for (phase, _, _), vals in zip(phases, per_phase, strict=True):
        values.setdefault(phase, vals)  # a phase run twice: its first run is compared
    return Profile(occ, phases, values, peak, total / count if count else None)


def comparison(engine: Engine, occ: Occurrence, tag: str, *, reference: list[Occurrence], k: float = 2.0,
               spread: Sequence[Occurrence] = ()) -> dict[str, Any]:
    """This occurrence against reference occurrences: phase-aligned overlay with mean ± k·sd.

    ``spread``: occurrences whose variation sets the envelope's width instead of the references'
    own — a golden batch is one reference, whose standard deviation does not exist; its envelope is
    the golden curve ± k·sd of the product's last batches, so deviations from it can be flagged.
    """
    with engine.connect() as conn:
        this = _profile(conn, occ, tag)
        refs = [_profile(conn, o, tag) for o in reference]
        spreads = [_profile(conn, o, tag) for o in spread]
    phase_names = [p for p, _, _ in this.phases]
    for ref in refs:
        phase_names.extend(p for p, _, _ in ref.phases if p not in phase_names)
    x: list[float] = []
    own: list[float | None] = []
    mean: list[float | None] = []
    lower: list[float | None] = []
    upper: list[float | None] = []
    deviations: list[dict[str, Any]] = []
    missing = [None] * STEPS_PER_PHASE
    for i, phase in enumerate(phase_names):
        run_open = False  # a deviation spans steps without readings until a reading is back inside
        for step in range(STEPS_PER_PHASE):
            x.append(i + (step + 0.5) / STEPS_PER_PHASE)
            v = this.values.get(phase, missing)[step]
            samples = [val for ref in refs if (val := ref.values.get(phase, missing)[step]) is not None]
            widths = [val for ref in spreads if (val := ref.values.get(phase, missing)[step]) is not None] \
                if spreads else samples
            own.append(v)
            if samples:
                m = sum(samples) / len(samples)
                sd = _sd(widths)
                mean.append(m)
                lower.append(m - k * (sd or 0.0))
                upper.append(m + k * (sd or 0.0))
                if v is not None and sd is not None:
                    if not m - k * sd <= v <= m + k * sd:
                        if run_open and deviations:
                            deviations[-1]["to_x"] = x[-1]
                        else:
                            deviations.append({"phase": phase, "from_x": x[-1], "to_x": x[-1]})
                        run_open = True
                    else:
                        run_open = False
            else:
                mean.append(None)
                lower.append(None)
                upper.append(None)

    def figures(p: Profile) -> dict[str, Any]:
        return {**p.occ.public(), "peak": p.peak, "mean": p.mean,
                "durations_s": {ph: (b - a) / 1e6 for ph, a, b in p.phases}}

    batch_figures = figures(this)
    ref_figures = [figures(p) for p in refs]
    spread_figures = [figures(p) for p in spreads]
    batch_figures["outside"] = _outside_figures(batch_figures, ref_figures, spread_figures or ref_figures,
                                                phase_names, k)
    return {
        "tag": tag, "k": k, "phases": phase_names, "x": x, "this": own, "mean": mean, "lower": lower,
        "upper": upper, "deviations": deviations, "batch": batch_figures, "reference": ref_figures,
        "spread": [{key: f[key] for key in ("site", "batch", "occurrence", "started_at_us")} for f in spread_figures],
    }


def _sd(samples: list[float]) -> float | None:
    """Sample standard deviation; None for fewer than two samples (no spread is known)."""
    if len(samples) < 2:
        return None
    m = sum(samples) / len(samples)
    return math.sqrt(sum((s - m) ** 2 for s in samples) / (len(samples) - 1))


def _outside_figures(this: dict[str, Any], refs: list[dict[str, Any]], spread: list[dict[str, Any]],
                     phases: list[str], k: float) -> list[str]:
    """Key figures of this batch outside the references' mean ± k·sd of ``spread`` (the references
    themselves, or the last batches around a golden one): ``peak``, ``mean``, ``duration:<phase>``."""

    def outside(value: float | None, centre: list[float], widths: list[float]) -> bool:
        sd = _sd(widths)
        if value is None or not centre or sd is None:
            return False
        return abs(value - sum(centre) / len(centre)) > k * sd

    out = [key for key in ("peak", "mean")
           if outside(this[key], [r[key] for r in refs if r[key] is not None],
                      [r[key] for r in spread if r[key] is not None])]
    for ph in phases:
        if outside(this["durations_s"].get(ph), [r["durations_s"][ph] for r in refs if ph in r["durations_s"]],
                   [r["durations_s"][ph] for r in spread if ph in r["durations_s"]]):
            out.append(f"duration:{ph}")
    return out


def reference_occurrences(engine: Engine, occ: Occurrence, *, last: int = 10) -> list[Occurrence]:
    """The last ``last`` finished occurrences of the same product at the site before ``occ``."""
    if occ.product is None:
        return []
    found = search_batches(engine, sites=[occ.site], product=occ.product, to_us=occ.started_at_us - 1,
                           limit=last * 2)
    return [o for o in found.items if o.ended_at_us is not None][:last]


# -- site time zone ----------------------------------------------------------------------------


def site_timezone(engine: Engine, site: str) -> str | None:
    """The time zone named by the site's latest applied configuration, if it names one."""
    tc, g = tag_configs.c, gateways.c
    with engine.connect() as conn:
        row = conn.execute(
            select(tc.data).join_from(tag_configs, gateways, tc.gateway_id == g.id).where(g.site == site)
            .order_by(tc.effective_from_us.desc()).limit(1)
        ).first()
    tz = ((row.data or {}).get("site") or {}).get("timezone") if row is not None else None
    return tz if isinstance(tz, str) else None


# -- access log --------------------------------------------------------------------------------


def record_access(engine: Engine, principal: str, role: str, action: str, *, site: str | None = None,
                  batch: str | None = None, detail: str | None = None, client: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(insert(access_log).values(at_us=now_us(), principal=principal, role=role, action=action,
                                               site=site, batch=batch, detail=detail, client=client))


def list_access(engine: Engine, *, sites: Sequence[str] | None, site: str | None = None, batch: str | None = None,
                offset: int = 0, limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
    a = access_log.c
    conds: list[Any] = []
    if sites is not None:
        conds.append(a.site.in_(list(sites)))
    if site:
        conds.append(a.site == site)
    if batch:
        conds.append(a.batch == batch)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(access_log).where(*conds)).scalar_one()
        rows = conn.execute(
            select(a.at_us, a.principal, a.role, a.action, a.site, a.batch, a.detail, a.client)
            .where(*conds).order_by(a.at_us.desc(), a.id.desc()).offset(offset).limit(limit)
        ).all()
    return total, [dict(r._mapping) for r in rows]


# -- live view ---------------------------------------------------------------------------------


def site_stamp(engine: Engine, site: str) -> tuple[int, int]:
    """Changes whenever a sealed batch of the site is stored: (highest id, count)."""
    sb, g = sealed_batches.c, gateways.c
    with engine.connect() as conn:
        hi, n = conn.execute(select(func.max(sb.id), func.count()).join_from(sealed_batches, gateways,
                                                                             sb.gateway_id == g.id)
                             .where(g.site == site)).one()
    return (hi or 0, n)


def live_snapshot(engine: Engine, site: str) -> dict[str, Any]:
    """The site's current (latest started) batch: last value of each tag against its limits now, its alarms."""
    found = search_batches(engine, sites=[site], limit=1)
    if not found.items:
        return {"site": site, "batch": None, "values": [], "alarms": []}
    occ = found.items[0]
    c, e = reading_chunks.c, events.c
    values: list[dict[str, Any]] = []
    with engine.connect() as conn:
        latest = (
            select(c.gateway_id, c.tag, func.max(c.last_seq).label("last_seq"))
            .where(_chunk_filter(occ))
            .group_by(c.gateway_id, c.tag)
            .subquery()
        )
        rows = []
        for row in conn.execute(
            select(reading_chunks)
            .join(latest, and_(c.gateway_id == latest.c.gateway_id, c.tag == latest.c.tag,
                               c.last_seq == latest.c.last_seq))
            .order_by(c.tag)
        ):
            try:
                chunk = decode_chunk(row)
            except ChunkError as exc:  # the batch's integrity verdict says "failed" and why
                log.warning("live view: a stored reading chunk (first seq %d) cannot be unpacked: %s",
                            row.first_seq, exc)
                continue
            lo, hi = occ.ranges[chunk.gateway_id]
            last = next((i for i in range(chunk.n - 1, -1, -1) if chunk.kinds[i] in b"fi"
                         and lo <= chunk.seqs[i] and (hi is None or chunk.seqs[i] <= hi)), None)
            if last is not None:
                quality = (chunk.quality_names[last] if chunk.quality_names is not None
                           else QUALITY_NAMES[chunk.qualities[last]])
                rows.append((chunk.tag, chunk.nums[last], quality, chunk.ts[last],
                             chunk.phase, chunk.gateway_id))
        configs = _Configs(conn, occ.ranges)
        alarms = [
            {"ts_us": ts, "transition": typ.split(".", 1)[1], "tag": _s((d or {}).get("tag", subject)),
             "level": _s((d or {}).get("level")), "value": (d or {}).get("value"), "user": _s((d or {}).get("user")),
             "seq": seq}
            for ts, typ, subject, d, seq in conn.execute(
                select(e.ts_us, e.type, e.subject, e.data, e.seq)
                .where(e.batch == occ.batch, _seq_filter(events, occ), e.type.like("alarm.%"))
                .order_by(e.ts_us, e.seq))
        ]
    for tag, num, quality, ts, phase, gid in rows:
        cfg = configs.at(gid, ts)
        meta = cfg.tags.get(tag) if cfg is not None else None
        if meta is not None and meta.category not in ("process", "environment"):
            continue
        lim = meta.limits_for(phase, occ.product) if meta is not None else None
        values.append({
            "tag": tag, "value": num, "quality": quality, "ts_us": ts, "phase": phase,
            "eng_unit": meta.eng_unit if meta else None,
            "limits": None if lim is None else {"ll": lim.ll, "l": lim.l, "h": lim.h, "hh": lim.hh},
        })
    return {"site": site, "batch": occ.public(), "values": values, "alarms": alarms}
