"""Integrity of a production batch's records: signatures, chain, completeness, edits after capture.

For each gateway that recorded the production batch, the range checked runs from the sealed batch
holding the earliest of (``batch.started``, first record of the batch) to the one holding the
latest of (``batch.ended``, last record). Without ``batch.started`` and ``batch.ended`` the edges
of that range cannot be proven complete, so the verdict cannot be "verified".

Within the range, every sealed batch must be stored; each is re-opened from the exact wire bytes
kept at ingest, its hash recomputed, its signature verified against the key enrolled for the
gateway, its chain link to its neighbours checked, and (``deep``) its records decoded and compared
with the rows the queries read, so an edit of the database after capture shows as "failed".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, func, select

from blackbox.model import Event, Reading
from blackbox.seal import (
    GENESIS_HASH,
    BadSignature,
    MalformedBatch,
    OpenedBatch,
    SealError,
    decode_records,
    load_public_key,
    open_batch,
    verify_batch,
)
from blackbox.store.derive import encode_value
from blackbox.store.report import Finding, GapLine, Integrity, SealedRange, Severity, Verdict
from blackbox.store.schema import events, gateway_keys, readings, sealed_batches

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


def check_integrity(
    conn: Connection,
    batch_no: str,
    gateway_labels: dict[int, str],
    boundaries: dict[int, tuple[int | None, int | None]],
    *,
    deep: bool = True,
) -> Integrity:
    """Verdict over the sealed batches holding ``batch_no``'s records on each gateway.

    ``boundaries`` maps a gateway id to the batch_seq of the sealed batches holding the batch's
    first ``batch.started`` and last ``batch.ended`` events (``None`` if not stored).
    """
    chk = _Checker()
    ranges: list[SealedRange] = []
    gaps: list[GapLine] = []
    record_spans = _record_spans(conn, batch_no, list(gateway_labels))
    for gid, label in sorted(gateway_labels.items(), key=lambda kv: kv[1]):
        started, ended = boundaries.get(gid, (None, None))
        if started is None:
            chk.add("incomplete", "no_start", f"{label}: no batch.started event for {batch_no} is stored")
        if ended is None:
            chk.add("incomplete", "no_end", f"{label}: no batch.ended event for {batch_no} is stored")
        candidates = [x for x in (*record_spans.get(gid, ()), started, ended) if x is not None]
        if not candidates:
            continue
        first, last = min(candidates), max(candidates)
        sealed_range, gateway_gaps = _check_gateway(conn, chk, gid, label, first, last, deep)
        ranges.append(sealed_range)
        gaps.extend(gateway_gaps)
    return Integrity(verdict=chk.verdict(), findings=chk.findings, ranges=ranges, gaps=gaps)


def _record_spans(conn: Connection, batch_no: str, gids: list[int]) -> dict[int, tuple[int, int]]:
    spans: dict[int, tuple[int, int]] = {}
    for table in (readings, events):
        stmt = (
            select(table.c.gateway_id, func.min(table.c.batch_seq), func.max(table.c.batch_seq))
            .where(table.c.batch == batch_no, table.c.gateway_id.in_(gids))
            .group_by(table.c.gateway_id)
        )
        for gid, lo, hi in conn.execute(stmt):
            old = spans.get(gid)
            spans[gid] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return spans


@dataclass(frozen=True)
class _KeyInfo:
    public_key: Ed25519PublicKey | None
    revoked_at_us: int | None
    problem: str | None
    valid_from_seq: int | None = None
    valid_to_seq: int | None = None


def _keys(conn: Connection, gid: int) -> dict[str, _KeyInfo]:
    out: dict[str, _KeyInfo] = {}
    rows = conn.execute(
        select(
            gateway_keys.c.key_id,
            gateway_keys.c.public_key_pem,
            gateway_keys.c.revoked_at_us,
            gateway_keys.c.valid_from_seq,
            gateway_keys.c.valid_to_seq,
        ).where(gateway_keys.c.gateway_id == gid)
    )
    for kid, pem, revoked, valid_from, valid_to in rows:
        try:
            out[kid] = _KeyInfo(load_public_key(pem), revoked, None, valid_from, valid_to)
        except (SealError, ValueError) as exc:
            out[kid] = _KeyInfo(None, revoked, f"enrolled key {kid} cannot be loaded: {exc}")
    return out


def _check_gateway(
    conn: Connection, chk: _Checker, gid: int, label: str, first: int, last: int, deep: bool
) -> tuple[SealedRange, list[GapLine]]:
    sb = sealed_batches.c
    stored = {
        row.batch_seq: row
        for row in conn.execute(
            select(
                sb.batch_seq,
                sb.hash,
                sb.prev_hash,
                sb.key_id,
                sb.first_seq,
                sb.last_seq,
                sb.clock,
                sb.received_at_us,
                sb.wire,
            ).where(sb.gateway_id == gid, sb.batch_seq.between(first - 1, last + 1))
        )
    }
    keys = _keys(conn, gid)
    clock_status: dict[str, list[int]] = defaultdict(list)
    opened: dict[int, OpenedBatch] = {}
    verified: set[int] = set()
    missing = [n for n in range(first, last + 1) if n not in stored]
    for n in missing:
        chk.add("incomplete", "missing_batch", f"{label}: sealed batch {n} has not been received")

    for n in range(first - 1, last + 2):
        row = stored.get(n)
        if row is None:
            continue
        try:
            ob = open_batch(bytes(row.wire))
        except MalformedBatch as exc:
            if first <= n <= last:
                chk.add("failed", "stored_malformed", f"{label}: stored batch {n} no longer parses: {exc}")
            continue
        opened[n] = ob
        if not first <= n <= last:
            continue  # neighbours only serve the chain links at the edges
        if ob.hash != row.hash or ob.header.batch_seq != n or ob.header.prev_hash != row.prev_hash:
            chk.add("failed", "hash_mismatch", f"{label}: stored batch {n} does not match its recorded hash or header")
            continue
        key = keys.get(ob.header.key_id)
        if key is None:
            chk.add("failed", "unknown_key", f"{label}: batch {n} is signed by key {ob.header.key_id}, not enrolled")
            continue
        if key.public_key is None:
            chk.add("failed", "unknown_key", f"{label}: batch {n}: {key.problem}")
            continue
        if key.revoked_at_us is not None and key.revoked_at_us <= row.received_at_us:
            chk.add(
                "failed", "revoked_key", f"{label}: batch {n} was received after its key {ob.header.key_id} was revoked"
            )
            continue
        h = ob.header
        if (key.valid_from_seq is not None and h.first_seq < key.valid_from_seq) or (
            key.valid_to_seq is not None and h.last_seq > key.valid_to_seq
        ):
            chk.add("failed", "key_not_in_force", f"{label}: batch {n} is signed by key {h.key_id} outside the "
                    f"records it may sign (a rotation retired it or had not yet brought it in)")
            continue
        try:
            verify_batch(ob, key.public_key)
        except BadSignature:
            chk.add("failed", "bad_signature", f"{label}: the signature of stored batch {n} does not verify")
            continue
        verified.add(n)
        if row.clock != "ok":
            clock_status[row.clock].append(n)
    for status, numbers in sorted(clock_status.items()):
        chk.add("info", "clock", f"{label}: {_count(numbers, 'batch')} ({_spans(numbers)}) sealed with clock "
                f"status {status!r}")

    # chain links and seq contiguity between consecutive stored batches
    for n in range(first - 1, last + 1):
        a, b = opened.get(n), opened.get(n + 1)
        if a is None or b is None:
            continue
        if b.header.prev_hash != a.hash:
            chk.add("failed", "chain_broken", f"{label}: batch {n + 1} does not link to batch {n} (prev_hash differs)")
        elif b.header.first_seq != a.header.last_seq + 1:
            lo, hi = a.header.last_seq + 1, b.header.first_seq - 1
            chk.add("incomplete", "seq_gap", f"{label}: records {lo}..{hi} between batches {n} and {n + 1} are missing")
    if first == 1 and 1 in opened and opened[1].header.prev_hash != GENESIS_HASH:
        chk.add("failed", "chain_broken", f"{label}: batch 1 does not start at the genesis hash")

    if deep:
        _compare_records(conn, chk, gid, label, {n: opened[n] for n in verified})

    gap_lines: list[GapLine] = []
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
        gap_lines.append(GapLine(gateway=label, type=ev.type, ts_us=ev.ts_us, data=data))
        if ev.type == "buffer.gap":
            chk.add(
                "incomplete",
                "buffer_gap",
                f"{label}: the gateway dropped records {data.get('first_seq')}..{data.get('last_seq')} "
                f"({data.get('reason', 'no reason given')})",
            )
        else:
            chk.add("info", "clock_jump", f"{label}: clock jump recorded: {data}")

    return (
        SealedRange(
            gateway=label,
            first_batch_seq=first,
            last_batch_seq=last,
            n_present=sum(1 for n in range(first, last + 1) if n in stored),
            n_verified=len(verified),
            missing=missing,
        ),
        gap_lines,
    )


def _reading_key(r: Reading, batch_seq: int) -> tuple[Any, ...]:
    kind, num, text = encode_value(r.value)
    return (
        "r",
        r.seq,
        batch_seq,
        r.tag,
        kind,
        num,
        text,
        str(r.quality),
        r.reason,
        r.ts_us,
        r.source_ts_us,
        r.batch,
        r.phase,
    )


def _event_key(e: Event, batch_seq: int) -> tuple[Any, ...]:
    return ("e", e.seq, batch_seq, e.type, e.subject, e.data, e.ts_us, e.batch, e.phase)


def _compare_records(conn: Connection, chk: _Checker, gid: int, label: str, batches: dict[int, OpenedBatch]) -> None:
    """Compare the rows stored for each batch with the records decoded from its signed bytes."""
    if not batches:
        return
    lo = min(b.header.first_seq for b in batches.values())
    hi = max(b.header.last_seq for b in batches.values())
    stored: dict[int, tuple[Any, ...]] = {}
    r, e = readings.c, events.c
    for row in conn.execute(
        select(
            r.seq,
            r.batch_seq,
            r.tag,
            r.kind,
            r.num,
            r.text,
            r.quality,
            r.reason,
            r.ts_us,
            r.source_ts_us,
            r.batch,
            r.phase,
        ).where(r.gateway_id == gid, r.seq.between(lo, hi))
    ):
        stored[row.seq] = ("r", *tuple(row))
    for erow in conn.execute(
        select(e.seq, e.batch_seq, e.type, e.subject, e.data, e.ts_us, e.batch, e.phase).where(
            e.gateway_id == gid, e.seq.between(lo, hi)
        )
    ):
        stored[erow.seq] = ("e", *tuple(erow))

    covered: set[int] = set()
    for n, ob in sorted(batches.items()):
        try:
            records = decode_records(ob)
        except MalformedBatch as exc:
            chk.add("failed", "stored_malformed", f"{label}: records of stored batch {n} cannot be decoded: {exc}")
            continue
        diffs: list[str] = []
        for rec in records:
            covered.add(rec.seq)
            want = _reading_key(rec, n) if isinstance(rec, Reading) else _event_key(rec, n)
            have = stored.get(rec.seq)
            if have is None:
                diffs.append(f"seq {rec.seq} is missing from the database")
            elif have != want:
                diffs.append(f"seq {rec.seq} differs from the signed record")
        if diffs:
            shown = "; ".join(diffs[:MAX_DIFFS_PER_BATCH])
            more = f" (and {len(diffs) - MAX_DIFFS_PER_BATCH} more)" if len(diffs) > MAX_DIFFS_PER_BATCH else ""
            chk.add("failed", "records_altered", f"{label}: stored rows of batch {n} were altered: {shown}{more}")
    extra = sorted(s for s, row in stored.items() if row[2] in batches and s not in covered)
    if extra:
        chk.add("failed", "records_altered", f"{label}: rows not in any signed batch: seq {_spans(extra)}")


def _spans(seqs: Iterable[int]) -> str:
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

