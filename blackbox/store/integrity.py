"""Integrity of a production batch's records: signatures, chain, completeness, edits after capture.

For each gateway that recorded the production batch, the range checked runs from the sealed batch
holding the earliest of (``batch.started``, first record of the batch) to the one holding the
latest of (``batch.ended``, last record). Without ``batch.started`` and ``batch.ended`` the edges
of that range cannot be proven complete, so the verdict cannot be "verified".

Within the range the checks are exactly those of ``blackbox store verify``
(:func:`blackbox.store.verify.check_chain`): every sealed batch must be stored; each is re-opened
from the exact wire bytes kept at ingest, its header columns compared, its key trusted only as
far as the enrolment and the chain's own rotations vouch for it, its signature and its chain link
checked, and (``deep``) every row it yields (reading chunks, events, the limits in force) re-derived and
compared with the rows the queries read, so an edit of the database after capture shows as
"failed".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Connection, Table, func, or_, select, true

from blackbox.model import Event
from blackbox.seal import SealError, decode_records, open_batch
from blackbox.store.findings import CODES, Difference
from blackbox.store.report import Finding, GapLine, Integrity, SealedRange, Severity, Verdict
from blackbox.store.schema import events, gateways, reading_chunks, sealed_batches
from blackbox.store.verify import WHOLE, ChainResult, Part, check_chain
from blackbox.store.verify_log import logged_but_missing

MAX_DIFFS_PER_BATCH = 5


@dataclass
class _Checker:
    findings: list[Finding] = field(default_factory=list)

    def add(self, severity: Severity, code: str, message: str) -> None:
        self.findings.append(Finding(severity=severity, code=code, message=message))

    def verdict(self) -> Verdict:
        severities = {f.severity for f in self.findings}
        if "failed" in severities:
            return "failed"
        if "incomplete" in severities:
            return "incomplete"
        return "verified"


@dataclass
class GatewayShare:
    """What one part of the check found on one gateway, in the order the report lists it."""

    label: str
    first: int | None
    """The range of sealed batches checked (``None``: nothing of the batch on this gateway to check)."""
    last: int | None
    opening: list[Finding]
    """No start or end event (the first part)."""
    differences: _Collector
    """What :func:`blackbox.store.verify.check_chain` found in the part's slice of the range."""
    result: ChainResult
    closing: list[Finding]
    """Gap and clock-jump events, batches missing around the range (the last part)."""
    gap_lines: list[GapLine]


def check_integrity(
    conn: Connection,
    batch_no: str,
    gateway_labels: dict[int, str],
    boundaries: dict[int, tuple[int | None, int | None]],
    *,
    deep: bool = True,
    lost: dict[int, list[int]] | None = None,
    scope: Callable[[Table], ColumnElement[bool]] | None = None,
    part: Part = WHOLE,
) -> list[GatewayShare]:
    """The findings over the sealed batches holding ``batch_no``'s records on each gateway, in ``part`` of each
    gateway's range; :func:`merge_shares` makes the verdict of all the parts' (of the one ``WHOLE`` part,
    or of parts checked by several processes on the same snapshot).

    ``boundaries`` maps a gateway id to the batch_seq of the sealed batches holding the batch's
    first ``batch.started`` and last ``batch.ended`` events (``None`` if not stored); ``lost``
    the sealed batches whose signed records hold the batch but whose rows are gone
    (:func:`find_lost_records`). ``scope`` restricts which rows of reading chunks/events belong to the
    batch (one occurrence of a reused batch number).
    """
    in_scope = scope or (lambda _t: true())
    record_spans = _record_spans(conn, batch_no, list(gateway_labels), in_scope)
    shares: list[GatewayShare] = []
    for gid, label in sorted(gateway_labels.items(), key=lambda kv: kv[1]):
        chk = _Checker()
        started, ended = boundaries.get(gid, (None, None))
        if part.opens and started is None:
            chk.add("incomplete", "no_start", f"{label}: no batch.started event for {batch_no} is stored")
        if part.opens and ended is None:
            chk.add("incomplete", "no_end", f"{label}: no batch.ended event for {batch_no} is stored")
        share = GatewayShare(label, None, None, chk.findings, _Collector(label), ChainResult(), [], [])
        shares.append(share)
        candidates = [x for x in (*record_spans.get(gid, ()), *(lost or {}).get(gid, ()), started, ended)
                      if x is not None]
        if not candidates:
            continue
        share.first, share.last = min(candidates), max(candidates)
        _check_gateway(conn, share, gid, deep, batch_no, in_scope, part)
    return shares


def merge_shares(parts: list[list[GatewayShare]]) -> Integrity:
    """The verdict of the parts' shares (each part's list by gateway, the parts in order)."""
    chk = _Checker()
    ranges: list[SealedRange] = []
    gaps: list[GapLine] = []
    for by_part in zip(*parts, strict=True):
        head = by_part[0]
        chk.findings.extend(head.opening)
        if head.first is None or head.last is None:
            continue
        collected = _Collector(head.label)
        present: set[int] = set()
        verified: set[int] = set()
        missing: list[int] = []
        clock: dict[str, list[int]] = {}
        for share in by_part:
            collected.merge(share.differences)
            present |= share.result.present
            verified |= share.result.verified
            missing += share.result.missing
            for status, numbers in share.result.clock.items():
                clock.setdefault(status, []).extend(numbers)
        chk.findings.extend(collected.findings())
        for status, numbers in sorted(clock.items()):
            chk.add("info", "clock", f"{head.label}: {_count(numbers, 'batch')} ({spans(numbers)}) sealed with "
                    f"clock status {status!r}")
        for share in by_part:
            chk.findings.extend(share.closing)
            gaps.extend(share.gap_lines)
        ranges.append(SealedRange(gateway=head.label, first_batch_seq=head.first, last_batch_seq=head.last,
                                  n_present=len(present), n_verified=len(verified), missing=sorted(missing)))
    return Integrity(verdict=chk.verdict(), findings=chk.findings, ranges=ranges, gaps=gaps)


def _adjoining_gaps(conn: Connection, chk: _Checker, gid: int, label: str, first: int, last: int,
                    batch_no: str) -> None:
    """Missing sealed batches right before or after the range: the batch's records may have run into them."""
    sb = sealed_batches.c
    before = conn.execute(select(func.max(sb.batch_seq)).where(sb.gateway_id == gid, sb.batch_seq < first)).scalar()
    after = conn.execute(select(func.min(sb.batch_seq)).where(sb.gateway_id == gid, sb.batch_seq > last)).scalar()
    lo = (before or 0) + 1
    if lo < first:
        chk.add("incomplete", "missing_batch", f"{label}: sealed batch(es) {spans(range(lo, first))} just before "
                f"those holding {batch_no} are not stored; the batch may have begun in them")
    if after is not None and after > last + 1:
        chk.add("incomplete", "missing_batch", f"{label}: sealed batch(es) {spans(range(last + 1, after))} just "
                f"after those holding {batch_no} are not stored; the batch may have continued in them")
    if after is None:  # the newest batches: only the log knows whether any came after
        gone = logged_but_missing(conn, gid, after=last).get(label, [])
        if gone:
            chk.add("failed", "batch_missing", f"{label}: sealed batch(es) {spans(gone)}, logged as accepted, are no "
                    f"longer stored; the batch may have continued in them")


def _record_spans(
    conn: Connection, batch_no: str, gids: list[int], scope: Callable[[Table], ColumnElement[bool]]
) -> dict[int, tuple[int, int]]:
    spans: dict[int, tuple[int, int]] = {}
    for table in (reading_chunks, events):
        stmt = (
            select(table.c.gateway_id, func.min(table.c.batch_seq), func.max(table.c.batch_seq))
            .where(table.c.batch == batch_no, table.c.gateway_id.in_(gids), scope(table))
            .group_by(table.c.gateway_id)
        )
        for gid, lo, hi in conn.execute(stmt):
            old = spans.get(gid)
            spans[gid] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return spans


def _check_gateway(conn: Connection, share: GatewayShare, gid: int, deep: bool, batch_no: str,
                   scope: Callable[[Table], ColumnElement[bool]], part: Part) -> None:
    """The same checks as ``blackbox store verify`` (:func:`blackbox.store.verify.check_chain`) over the
    share's range (``part`` of it), into ``share``.

    Plus: rows of the production batch outside the record span of those batches (no batch in the
    range yields them; ``verify`` finds them when it walks the whole chain).
    """
    label, first, last = share.label, share.first, share.last
    collect = share.differences
    result = share.result = check_chain(conn, gid, label, collect, first=first, last=last, rows=deep, part=part)
    if not part.closes or first is None or last is None:
        return
    if deep:
        for table in (reading_chunks, events):
            c = table.c
            lo, hi = (c.first_seq, c.last_seq) if table is reading_chunks else (c.seq, c.seq)
            outside = [lo < result.first_seq, hi > result.last_seq] if result.first_seq is not None else []
            stmt = select(lo, c.batch_seq).where(c.gateway_id == gid, c.batch == batch_no, scope(table))
            if outside:
                stmt = stmt.where(or_(*outside))
            for seq, batch_seq in conn.execute(stmt.order_by(lo)):
                collect(Difference(label, "row_unexplained", f"{table.name} seq {seq} of {batch_no} (claiming batch "
                                   f"{batch_seq}) lies outside every stored batch of the range",
                                   table.name, f"seq={seq}", batch_seq=batch_seq))
    chk = _Checker(share.closing)
    for ev in conn.execute(
        select(events.c.type, events.c.ts_us, events.c.data)
        .where(
            events.c.gateway_id == gid,
            events.c.batch_seq.between(first, last),
            events.c.type.in_(["buffer.gap", "clock.jump"]),
        )
        .order_by(events.c.ts_us, events.c.seq)
    ):
        data = dict(ev.data or {})
        share.gap_lines.append(GapLine(gateway=label, type=ev.type, ts_us=ev.ts_us, data=data))
        if ev.type == "buffer.gap":
            chk.add(
                "incomplete",
                "buffer_gap",
                f"{label}: the gateway dropped records {data.get('first_seq')}..{data.get('last_seq')} "
                f"({data.get('reason', 'no reason given')})",
            )
        else:
            chk.add("info", "clock_jump", f"{label}: clock jump recorded: {data}")
    _adjoining_gaps(conn, chk, gid, label, first, last, batch_no)


class _Collector:
    """Turns verify's differences into report findings: at most a few per batch and code, then a count."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._kept: list[Difference] = []
        self._more: dict[tuple[int | None, str], int] = defaultdict(int)
        self._seen: dict[tuple[int | None, str], int] = defaultdict(int)

    def __call__(self, d: Difference) -> None:
        key = (d.batch_seq, d.code)
        self._seen[key] += 1
        if self._seen[key] <= MAX_DIFFS_PER_BATCH:
            self._kept.append(d)
        else:
            self._more[key] += 1

    def findings(self) -> list[Finding]:
        out = [Finding(severity=d.severity, code=d.code, message=f"{self._label}: {d.message}") for d in self._kept]
        for (batch_seq, code), n in sorted(self._more.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
            out.append(Finding(severity=CODES[code][0], code=code,
                               message=f"{self._label}: and {n} more like it in batch {batch_seq}"))
        return out

    def merge(self, other: _Collector) -> None:
        """Take ``other``'s differences after this one's, as if they had come here."""
        for d in other._kept:
            self(d)
        for key, n in other._more.items():
            self._seen[key] += n
            self._more[key] += n


def find_lost_records(conn: Connection, batch_no: str, site: str | None) -> dict[int, list[int]]:
    """Stored batches whose rows fall short of their header's counts and whose signed records hold ``batch_no``.

    For a trace that finds no row of the batch: if its rows were deleted while the sealed bytes
    stayed, the report says so instead of "no record". Reads every batch's row counts (one index
    range count per batch), so it runs only when the rows are not found.
    """
    sb, r, e = sealed_batches.c, reading_chunks.c, events.c
    n_r = select(func.coalesce(func.sum(r.n), 0)).where(r.gateway_id == sb.gateway_id,
                                                        r.first_seq.between(sb.first_seq, sb.last_seq))
    n_e = select(func.count()).where(e.gateway_id == sb.gateway_id, e.seq.between(sb.first_seq, sb.last_seq))
    stmt = (select(sb.gateway_id, sb.batch_seq, sb.wire).join(gateways, gateways.c.id == sb.gateway_id)
            .where(or_(n_r.scalar_subquery() < sb.n_readings, n_e.scalar_subquery() < sb.n_events))
            .order_by(sb.gateway_id, sb.batch_seq))
    if site is not None:
        stmt = stmt.where(gateways.c.site == site)
    lost: dict[int, list[int]] = defaultdict(list)
    for gid, batch_seq, wire in conn.execute(stmt):
        try:
            records = decode_records(open_batch(bytes(wire)))
        except (SealError, ValueError):
            continue  # an unreadable stored batch: the integrity check of any range holding it says so
        if any(rec.batch == batch_no or (isinstance(rec, Event) and rec.data.get("batch") == batch_no)
               for rec in records):
            lost[gid].append(batch_seq)
    return dict(lost)


def chain_gaps(conn: Connection, site: str | None) -> dict[str, list[int]]:
    """Per gateway (``site/gateway``), the batch_seqs below its highest stored one that are not stored,
    and those the transparency log accepted that are gone."""
    sb, g = sealed_batches.c, gateways.c
    stmt = (select(g.id, g.site, g.gateway, func.count(), func.max(sb.batch_seq))
            .join_from(sealed_batches, gateways, g.id == sb.gateway_id).group_by(g.id, g.site, g.gateway))
    if site is not None:
        stmt = stmt.where(g.site == site)
    out: dict[str, list[int]] = {}
    for gid, s, gw, n, hi in conn.execute(stmt):
        if n < hi:
            have = set(conn.execute(select(sb.batch_seq).where(sb.gateway_id == gid)).scalars())
            out[f"{s}/{gw}"] = [k for k in range(1, hi + 1) if k not in have]
    for label, numbers in logged_but_missing(conn).items():
        if site is None or label.split("/", 1)[0] == site:
            out[label] = sorted(set(out.get(label, [])) | set(numbers))
    return out


def spans(seqs: Iterable[int]) -> str:
    out: list[str] = []
    grouped: dict[int, list[int]] = defaultdict(list)
    start = prev = None
    for s in seqs:
        if start is None or prev is None or s != prev + 1:
            start = s
        grouped[start].append(s)
        prev = s
    for start_seq, members in grouped.items():
        out.append(str(start_seq) if len(members) == 1 else f"{start_seq}..{members[-1]}")
    return ", ".join(out[:10]) + (" ..." if len(out) > 10 else "")


def _count(numbers: list[int], noun: str) -> str:
    return f"{len(numbers)} {noun}{'' if len(numbers) == 1 else 'es' if noun.endswith('h') else 's'}"

