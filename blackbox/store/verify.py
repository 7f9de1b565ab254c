"""Re-verify the store against its record: the signed batches, re-derived row by row.

The exact wire bytes in ``sealed_batches.wire`` are the record; every other row is derived from
them by :func:`blackbox.store.derive.derive` at ingest. :func:`check_chain` walks one gateway's
stored batches in chain order and, for each, re-opens the bytes, checks the header columns, the
signing key (trusted only as far as the enrolment and the rotations *inside the chain* vouch for
it, never because a ``gateway_keys`` column says so), the signature, the chain link and the record
seq continuity, re-derives its rows and compares them with the stored ``reading_chunks``, ``events``
and ``tag_configs``. Stored rows come in seq order through streaming cursors and are merged with the
derived ones, so memory stays bounded by one batch whatever the size of the store. A batch's
reading chunks are compared whole (their packed columns as bytes); only when they differ are both
sides unpacked and merged reading by reading, so that the difference names the reading.

:func:`verify_store` runs it over every gateway (``blackbox store verify``); the trace report runs
it over the batches holding one production batch (:mod:`blackbox.store.integrity`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, func, select

from blackbox.seal import (
    GENESIS_HASH,
    BadSignature,
    ChainEnd,
    MalformedBatch,
    OpenedBatch,
    Rotation,
    RotationError,
    SealError,
    breaks,
    genesis_problem,
    key_id,
    key_range_breach,
    link_faults,
    load_public_key,
    open_batch,
    verify_batch,
)
from blackbox.store.chunks import CHUNK_COLUMNS, READING_COLUMNS, ChunkError, decode_tuple, explode
from blackbox.store.confirm import derive_confirmed
from blackbox.store.derive import (
    BATCH_COLUMNS,
    EVENT_COLUMNS,
    TAG_CONFIG_COLUMNS,
    Derived,
    batch_columns,
    derive,
)
from blackbox.store.findings import Difference, Emit
from blackbox.store.joint import purges
from blackbox.store.schema import events, gateway_keys, gateways, reading_chunks, sealed_batches, tag_configs
from blackbox.store.verify_log import (
    BatchEntry,
    batch_entries,
    check_batch_logged,
    check_key_rows,
    check_log,
    check_status,
    logged_but_missing,
)
from blackbox.tlog.note import Verifier


@dataclass
class Stats:
    """What a run looked at, for the summary line and the readings/s figure."""

    gateways: int = 0
    batches: int = 0
    batches_verified: int = 0
    readings: int = 0
    events: int = 0
    findings: int = 0
    log_entries: int = 0
    checkpoints: int = 0
    checkpoints_signed: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def readings_per_s(self) -> float:
        return self.readings / self.seconds if self.seconds > 0 else 0.0


# -- keys ----------------------------------------------------------------------------------------


@dataclass
class _Trust:
    public_key: Ed25519PublicKey
    valid_from_seq: int | None = None
    valid_to_seq: int | None = None
    revoked_at_us: int | None = None


def trusted_keys(conn: Connection, gid: int, label: str, emit: Emit) -> dict[str, _Trust]:
    """The keys the chain lets us trust for gateway ``gid``, with the record ranges they may sign.

    Keys an operator enrolled are trust anchors (their enrolment is an act outside the chain).
    A key that came in by rotation is trusted only if the stored batch that ends at the record
    before its ``valid_from_seq`` verifies with the key it retires and carries exactly that
    ``key.rotated`` event; the retired key's range ends there. Stored ``valid_*`` columns are
    compared with what the rotations give, never used as such.
    """
    gk = gateway_keys.c
    rows = conn.execute(select(gateway_keys).where(gk.gateway_id == gid).order_by(gk.valid_from_seq, gk.id)).all()
    loaded: dict[str, Ed25519PublicKey] = {}
    for row in rows:
        try:
            pub = load_public_key(row.public_key_pem)
        except (SealError, ValueError) as exc:
            emit(Difference(label, "key_altered", f"key {row.key_id}: the stored public key cannot be read: {exc}",
                            "gateway_keys", row.key_id, "public_key_pem"))
            continue
        if key_id(pub) != row.key_id:
            emit(Difference(label, "key_altered", f"key {row.key_id}: the stored public key is another key "
                            f"(id {key_id(pub)})", "gateway_keys", row.key_id, "public_key_pem",
                            key_id(pub), row.key_id))
            continue
        loaded[row.key_id] = pub
    trust: dict[str, _Trust] = {}
    by_id = {row.key_id: row for row in rows}
    for row in rows:
        if row.key_id in loaded and row.rotated_from is None and row.valid_from_seq is None:
            trust[row.key_id] = _Trust(loaded[row.key_id], revoked_at_us=row.revoked_at_us)
            if row.enrolled_by != "operator":
                emit(Difference(label, "key_altered", f"key {row.key_id} says it came by rotation but names no "
                                f"rotation", "gateway_keys", row.key_id, "enrolled_by", row.enrolled_by, "operator"))
    unproven: set[str] = set()
    for row in rows:  # rotated-in keys, in record order
        if row.key_id not in loaded or (row.rotated_from is None and row.valid_from_seq is None):
            continue
        proof = _vouch(conn, gid, row, trust)
        if isinstance(proof, str):
            unproven.add(row.rotated_from)
            emit(Difference(label, "key_altered", f"key {row.key_id} is recorded as rotated in from "
                            f"{row.rotated_from} at record {row.valid_from_seq}, but {proof}",
                            "gateway_keys", row.key_id, "valid_from_seq", row.valid_from_seq, None))
            continue
        trust[proof.old_key_id].valid_to_seq = proof.old_valid_to
        trust[row.key_id] = _Trust(loaded[row.key_id], proof.new_valid_from, revoked_at_us=row.revoked_at_us)
        if row.enrolled_by != "rotation":
            emit(Difference(label, "key_altered", f"key {row.key_id} came by rotation but says {row.enrolled_by}",
                            "gateway_keys", row.key_id, "enrolled_by", row.enrolled_by, "rotation"))
    for kid, t in trust.items():
        stored = by_id[kid].valid_to_seq
        if stored != t.valid_to_seq and kid not in unproven:  # an unproven rotation is reported already
            emit(Difference(label, "key_altered", f"key {kid}: valid_to_seq is {stored}, the chain's rotations "
                            f"give {t.valid_to_seq}", "gateway_keys", kid, "valid_to_seq", stored, t.valid_to_seq))
    return trust


def _vouch(conn: Connection, gid: int, row: Any, trust: dict[str, _Trust]) -> Rotation | str:
    """The signed rotation that proves the one recorded in ``row``, or why no stored batch proves it."""
    if row.valid_from_seq is None or row.rotated_from is None:
        return "its rotated_from or valid_from_seq is empty"
    old = trust.get(row.rotated_from)
    if old is None:
        return f"key {row.rotated_from} is not trusted itself"
    end = Rotation.seq_bringing_in(row.valid_from_seq)
    sb = sealed_batches.c
    wire = conn.execute(select(sb.wire).where(sb.gateway_id == gid, sb.last_seq == end)).scalar()
    if wire is None:
        return f"no stored batch ends at record {end}"
    try:
        opened = open_batch(bytes(wire))
        if not _in_force(old, opened):
            return f"the batch ending at record {end} is outside key {row.rotated_from}'s range"
        verify_batch(opened, old.public_key)
        rotation = derive(opened, gid).rotation
    except (SealError, ValueError) as exc:
        return f"the batch ending at record {end} does not prove it ({exc})"
    if rotation is None or (rotation.old_key_id, rotation.new_key_id, rotation.new_valid_from) != (
            row.rotated_from, row.key_id, row.valid_from_seq):
        return f"the signed batch ending at record {end} carries no such key.rotated event"
    return rotation


def _in_force(t: _Trust, opened: OpenedBatch) -> bool:
    return key_range_breach(opened.header, t.valid_from_seq, t.valid_to_seq) is None


# -- stored rows, streamed in seq order ------------------------------------------------------------


CHUNK = 4000
"""Stored rows fetched per round trip."""


class _Stream:
    """Stored rows of one table for one gateway, in seq order, merged against the derived rows.

    Rows arrive as plain tuples in chunks; a batch whose stored rows equal its derived rows is
    confirmed with one list comparison (the usual case), anything else goes through the row by row
    merge that names each difference.
    """

    def __init__(self, chunks: Iterator[list[tuple[Any, ...]]], table_name: str, columns: tuple[str, ...],
                 label: str, emit: Emit) -> None:
        self.table = table_name
        self._columns = columns
        self._seq_at = columns.index("seq")
        self._batch_at = columns.index("batch_seq") if "batch_seq" in columns else None
        self._chunks = chunks
        self._buf: list[tuple[Any, ...]] = []
        self._i = 0
        self._done = False
        self._label = label
        self._emit = emit
        self.stored_batches: set[int] = set()

    def _ensure(self, n: int) -> bool:
        """At least ``n`` rows buffered ahead (``False`` if the table has fewer left)."""
        while len(self._buf) - self._i < n and not self._done:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
                break
            self._buf = self._buf[self._i:] + chunk
            self._i = 0
        return len(self._buf) - self._i >= n

    def _peek_seq(self) -> int | None:
        return self._buf[self._i][self._seq_at] if self._ensure(1) else None

    def _advance(self) -> tuple[Any, ...]:
        row = self._buf[self._i]
        self._i += 1
        return row

    def skip_through(self, seq: int) -> None:
        """Leave the rows up to ``seq`` unchecked (their batch cannot be verified: already reported)."""
        while (s := self._peek_seq()) is not None and s <= seq:
            self._advance()

    def extras_before(self, seq: int | None) -> None:
        """Report stored rows with a seq below ``seq`` (all remaining if ``None``): no batch yields them."""
        while (s := self._peek_seq()) is not None and (seq is None or s < seq):
            row = self._advance()
            claimed = row[self._batch_at] if self._batch_at is not None else None
            why = (f"it claims batch {claimed}, which is not stored" if claimed is not None
                   and claimed not in self.stored_batches else "no stored signed batch holds this record")
            self._emit(Difference(self._label, "row_unexplained", f"{self.table} seq {s}: {why}",
                                  self.table, f"seq={s}", stored=_tuple_dict(self._columns, row), batch_seq=claimed))

    def compare(self, derived: list[tuple[Any, ...]], batch_seq: int) -> None:
        """Merge the rows derived from batch ``batch_seq`` (by seq) with the stored ones."""
        n = len(derived)
        if n and self._ensure(n) and self._buf[self._i:self._i + n] == derived:
            self._i += n
            return
        columns = self._columns
        for want in derived:
            seq = want[self._seq_at]
            self.extras_before(seq)
            if self._peek_seq() != seq:
                self._emit(Difference(self._label, "row_missing", f"{self.table} seq {seq} of batch {batch_seq} "
                                      f"is not stored", self.table, f"seq={seq}", derived=_tuple_dict(columns, want),
                                      batch_seq=batch_seq))
                continue
            have = self._advance()
            if have != want:
                for col, h, w in zip(columns, have, want, strict=True):
                    if h != w:
                        self._emit(Difference(self._label, "row_altered", f"{self.table} seq {seq} of batch "
                                              f"{batch_seq}: {describe_change(col, h, w)}",
                                              self.table, f"seq={seq}", col, h, w, batch_seq))


class _ChunkStream:
    """Stored reading chunks of one gateway in first-seq order, compared whole with the derived ones.

    Equal chunk lists (the usual case) cost one comparison of a few hundred tuples of bytes; if a
    batch's chunks differ, both sides are unpacked into readings and merged by :class:`_Stream`,
    which names each reading missing, altered or unexplained.
    """

    table = reading_chunks.name

    def __init__(self, chunks: Iterator[list[tuple[Any, ...]]], label: str, emit: Emit) -> None:
        self._chunks = chunks
        self._buf: list[tuple[Any, ...]] = []
        self._i = 0
        self._done = False
        self._label = label
        self._emit = emit
        self.stored_batches: set[int] = set()

    def _peek_through(self, seq: int | None) -> list[tuple[Any, ...]]:
        """The stored chunks ahead whose first seq is at most ``seq`` (all if ``None``), left in the stream."""
        while not self._done and (self._i == len(self._buf) or seq is None or self._buf[-1][_FIRST_SEQ] <= seq):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
            else:
                self._buf, self._i = self._buf[self._i:] + chunk, 0
        j = self._i
        while j < len(self._buf) and (seq is None or self._buf[j][_FIRST_SEQ] <= seq):
            j += 1
        return self._buf[self._i:j]

    def _take_through(self, seq: int | None) -> list[tuple[Any, ...]]:
        out = self._peek_through(seq)
        self._i += len(out)
        return out

    def _readings(self, chunks: list[tuple[Any, ...]], batch_seq: int | None) -> list[tuple[Any, ...]]:
        """The readings of stored chunks, by seq; a chunk that cannot be unpacked is reported as such."""
        out: list[tuple[Any, ...]] = []
        for row in chunks:
            try:
                out.extend(explode(decode_tuple(row)))
            except ChunkError as exc:
                key = f"first_seq={row[_FIRST_SEQ]}"
                self._emit(Difference(self._label, "row_altered", f"{self.table} {key} (tag {row[2]!r}, batch "
                                      f"{row[1]}): its columns cannot be unpacked: {exc}", self.table, key,
                                      batch_seq=batch_seq))
        out.sort(key=_seq_of)
        return out

    def _merge(self, stored: list[tuple[Any, ...]], derived: list[tuple[Any, ...]], batch_seq: int | None) -> None:
        rows = _Stream(iter([stored]), self.table, READING_COLUMNS, self._label, self._emit)
        rows.stored_batches = self.stored_batches
        if derived:
            rows.compare(derived, batch_seq if batch_seq is not None else -1)
        rows.extras_before(None)

    def skip_through(self, seq: int) -> None:
        """Leave the chunks starting up to ``seq`` unchecked (their batch cannot be verified: already reported)."""
        self._take_through(seq)

    def extras_before(self, seq: int | None) -> None:
        """Report the readings of stored chunks starting below ``seq`` (all remaining if ``None``)."""
        extra = self._take_through(None if seq is None else seq - 1)
        if extra:
            self._merge(self._readings(extra, None), [], None)

    def batch_chunks(self, first_seq: int, last_seq: int) -> list[tuple[Any, ...]]:
        """The stored chunks of a batch's records ``first_seq..last_seq``, left in the stream (those before
        are reported, as :meth:`compare` would)."""
        self.extras_before(first_seq)
        return self._peek_through(last_seq)

    def compare(self, derived: list[tuple[Any, ...]], batch_seq: int, first_seq: int, last_seq: int) -> None:
        """The chunks derived from batch ``batch_seq`` (records ``first_seq..last_seq``) against the stored ones."""
        self.extras_before(first_seq)
        stored = self._take_through(last_seq)
        if stored == derived:
            return
        want: list[tuple[Any, ...]] = []
        for chunk in derived:
            want.extend(explode(decode_tuple(chunk)))
        want.sort(key=_seq_of)
        self._merge(self._readings(stored, batch_seq), want, batch_seq)


_FIRST_SEQ = CHUNK_COLUMNS.index("first_seq")


def _seq_of(row: tuple[Any, ...]) -> int:
    return int(row[1])


def describe_change(path: str, stored: Any, derived: Any, limit: int = 3) -> str:
    """``data.tags[0].limits[1].h is 95.0, the signed record says 79.0``: the first few differing leaves."""
    changes: list[str] = []

    def walk(p: str, a: Any, b: Any) -> None:
        if a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(f"{p}.{k}", a.get(k, _ABSENT), b.get(k, _ABSENT))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(f"{p}[{i}]", x, y)
        else:
            changes.append(f"{p} is {_show(a)}, the signed record says {_show(b)}")

    walk(path, stored, derived)
    more = f" (and {len(changes) - limit} more)" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more


class _Absent:
    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _tuple_dict(columns: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    return {k: v for k, v in zip(columns, values, strict=True) if k != "gateway_id"}


# -- one gateway's chain ---------------------------------------------------------------------------


@dataclass
class ChainResult:
    """The batches of a checked range: stored, verified (signature, chain and rows), and their clock status."""

    first_seq: int | None = None
    """Lowest record seq of the stored batches checked (``None`` if none is stored)."""
    last_seq: int | None = None
    present: set[int] = field(default_factory=set)
    verified: set[int] = field(default_factory=set)
    missing: list[int] = field(default_factory=list)
    clock: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Part:
    """The share of a gateway's chain one call of :func:`check_chain` checks: slice ``index`` of ``count``.

    The batch range is cut into ``count`` runs of consecutive batch numbers, and the stored rows
    into the record seq ranges that start after the last record of the stored batches before each
    run, so every row of the whole range is looked at by exactly one slice. Slice 0 also makes the
    checks that open the walk (the keys, the key rows, the status rows), the last one those that
    close it (``last_batch_at_us``); a range with nothing to cut is checked whole by slice 0.
    Each slice opens the batch before its run for the chain link, as a bounded walk does; the
    slices' findings, in slice order, are those of the whole walk.
    """

    index: int = 0
    count: int = 1

    @property
    def opens(self) -> bool:
        return self.index == 0

    @property
    def closes(self) -> bool:
        return self.index == self.count - 1


WHOLE = Part()


def check_chain(
    conn: Connection,
    gid: int,
    label: str,
    emit: Emit,
    *,
    first: int | None = None,
    last: int | None = None,
    since_us: int | None = None,
    stats: Stats | None = None,
    rows: bool = True,
    part: Part = WHOLE,
) -> ChainResult:
    """Verify gateway ``gid``'s batches ``first..last`` (all if ``None``) and, with ``rows``, every row they yield.

    ``since_us`` starts at the first batch whose records end at or after that time. Without
    bounds every stored row of the gateway is accounted for (rows beyond the last batch too);
    with bounds only rows within the seq span of the batches checked. ``part``: only that slice
    of the range (the result's ``first_seq`` and ``last_seq`` are still the whole range's).
    """
    result = ChainResult()
    stats = stats if stats is not None else Stats()
    sb = sealed_batches.c
    where = [sb.gateway_id == gid]
    if since_us is not None:
        where.append(sb.last_ts_us >= since_us)
        if first is None:
            first = conn.execute(select(func.min(sb.batch_seq)).where(*where)).scalar()
            if first is None:
                return result
    bounded = first is not None or last is not None
    if first is not None:
        where.append(sb.batch_seq >= first)
    if last is not None:
        where.append(sb.batch_seq <= last)
    trust = trusted_keys(conn, gid, label, emit if part.opens else _unheard)
    if part.opens:
        check_key_rows(conn, gid, label, emit)
        check_status(conn, gid, label, emit)
    lo = hi = None
    if bounded:
        lo, hi = conn.execute(select(func.min(sb.first_seq), func.max(sb.last_seq)).where(*where)).one()
        result.first_seq, result.last_seq = lo, hi
    site, gateway = label.split("/", 1)
    purged = purges(conn).get((site, gateway))  # a two-party purge removed the chain's start
    start = max(first or 1, purged.through_batch_seq + 1 if purged is not None else 1)
    stored_numbers = set(conn.execute(select(sb.batch_seq).where(*where)).scalars())
    piece = _slice(conn, where, part, start, last, stored_numbers, lo, hi)
    if piece is None:
        return result
    checked = _streams(conn, gid, label, emit, piece.lo_seq, piece.hi_seq) if rows else None
    streams: tuple[_ChunkStream | _Stream, ...] = checked or ()
    for s in streams:
        s.stored_batches = stored_numbers
    wire_row = conn.execute(select(sb.batch_seq, sb.wire).where(sb.gateway_id == gid,
                                                                sb.batch_seq == piece.start - 1)).first()
    prev: OpenedBatch | None = _open_quietly(wire_row.wire) if wire_row is not None else None
    prev_n = piece.start - 1
    batch_stmt = (select(sealed_batches).where(*where, *piece.where).order_by(sb.batch_seq)
                  .execution_options(yield_per=64))
    for row, logged in _with_log_entries(conn, batch_stmt):
        n = row.batch_seq
        stats.batches += 1
        _missing(result, label, emit, prev_n + 1, n)
        if n != prev_n + 1:
            prev = None
        prev_n = n
        result.present.add(n)
        opened = _check_batch(row, label, site, gateway, trust, emit)
        if opened is None:
            for s in streams:
                s.extras_before(row.first_seq)
                s.skip_through(row.last_seq)
            prev = None
            continue
        h = opened.header
        check_batch_logged(conn, gid, label, n, opened.hash, row.received_at_us, emit, logged)
        if prev is not None:
            faults = link_faults(ChainEnd.of(prev), h)  # batch_seq follows: prev is batch n - 1
            if "prev_hash" in faults:
                emit(Difference(label, "chain_broken", f"batch {n} does not link to batch {n - 1} (its prev_hash "
                                f"is not batch {n - 1}'s hash)", "sealed_batches", f"batch_seq={n}", "prev_hash",
                                h.prev_hash, prev.hash, n))
            elif "seq_gap" in faults:
                emit(Difference(label, "seq_gap", f"records {prev.header.last_seq + 1}..{h.first_seq - 1} between "
                                f"batches {n - 1} and {n} are in neither", batch_seq=n))
        elif n == 1 and genesis_problem(h) is not None:
            emit(Difference(label, "chain_broken", "batch 1 does not start at the genesis hash", "sealed_batches",
                            "batch_seq=1", "prev_hash", h.prev_hash, GENESIS_HASH, 1))
        elif (purged is not None and n == purged.through_batch_seq + 1
              and breaks(ChainEnd(purged.through_batch_seq, purged.through_hash, None), h)):
            emit(Difference(label, "chain_broken", f"batch {n} does not link to the last purged batch",
                            "sealed_batches", f"batch_seq={n}", "prev_hash", h.prev_hash, purged.through_hash, n))
        prev = opened
        derived = None
        if checked is not None:  # the stored chunks proven equal to the derived ones, if they are
            derived = derive_confirmed(opened, gid, checked[0].batch_chunks(h.first_seq, h.last_seq))
        if derived is None:
            try:
                derived = derive(opened, gid)
            except (MalformedBatch, RotationError) as exc:
                emit(Difference(label, "stored_malformed", f"the records of stored batch {n} cannot be derived: "
                                f"{exc}", "sealed_batches", f"batch_seq={n}", batch_seq=n))
                for s in streams:
                    s.extras_before(h.first_seq)
                    s.skip_through(h.last_seq)
                continue
        _check_rotation(derived, trust, label, emit)
        if checked is not None:
            _compare_rows(checked, derived, n)
        result.verified.add(n)
        if row.clock != "ok":
            result.clock.setdefault(row.clock, []).append(n)
        stats.batches_verified += 1
        stats.readings += derived.n_readings
        stats.events += len(derived.events)
    if piece.stop is not None:
        _missing(result, label, emit, prev_n + 1, piece.stop + 1)
    for s in streams:
        s.extras_before(None)
    if piece.closes:
        _check_last_batch_at(conn, gid, label, emit, where)
    return result


def _unheard(_d: Difference) -> None:
    """For the findings another slice reports."""


@dataclass(frozen=True)
class _Slice:
    """One :class:`Part` of a walk, made concrete."""

    start: int
    """The first batch number of the run (the walk's ``start`` for slice 0)."""
    stop: int | None
    """The last batch number of the run (the walk's ``last`` for the last slice: ``None`` if unbounded)."""
    where: list[ColumnElement[bool]]
    """What restricts the walk's batch query to the run."""
    lo_seq: int | None
    hi_seq: int | None
    """The record seqs whose stored rows the slice compares (``None``: unbounded on that side)."""
    closes: bool
    """Whether the slice makes the checks that close the walk."""


def _slice(conn: Connection, where: list[ColumnElement[bool]], part: Part, start: int, last: int | None,
           stored: set[int], lo: int | None, hi: int | None) -> _Slice | None:
    """The run of batches and the seq range of ``part`` (``None``: nothing to check in it).

    A slice's rows start after the last record of the stored batches before its run, so that the
    rows a walk would report with a batch (those since the batch before it) are reported by the
    slice that checks the batch, in the same order.
    """
    if part.count == 1:
        return _Slice(start, last, [], lo, hi, closes=True)
    if last is None or lo is None or hi is None:
        raise ValueError("only a walk between two batches is cut into parts")
    if not stored or last < start:  # nothing to cut: the first slice checks it all
        return _Slice(start, last, [], lo, hi, closes=True) if part.opens else None
    sb = sealed_batches.c
    n = last - start + 1
    runs = [start + n * i // part.count for i in range(part.count + 1)]
    cuts = [lo]
    for b in runs[1:-1]:
        before = conn.execute(select(func.max(sb.last_seq)).where(*where, sb.batch_seq < b)).scalar()
        cuts.append(max(cuts[-1], lo if before is None else before + 1))  # never back, whatever the columns say
    cuts.append(hi + 1)
    i = part.index
    run_where = [*([sb.batch_seq >= runs[i]] if i > 0 else []), *([] if part.closes else [sb.batch_seq < runs[i + 1]])]
    return _Slice(runs[i], last if part.closes else runs[i + 1] - 1, run_where,
                  cuts[i], max(cuts[i + 1], cuts[i]) - 1, closes=part.closes)


def _check_last_batch_at(conn: Connection, gid: int, label: str, emit: Emit, where: list[ColumnElement[bool]]) -> None:
    """The gateway's ``last_batch_at_us`` is no earlier than the arrival of any of its stored batches."""
    max_received = conn.execute(select(func.max(sealed_batches.c.received_at_us)).where(*where)).scalar()
    last_at = conn.execute(select(gateways.c.last_batch_at_us).where(gateways.c.id == gid)).scalar_one()
    if max_received is not None and (last_at is None or last_at < max_received):
        emit(Difference(label, "gateway_altered", "last_batch_at_us is before the arrival of its last stored "
                        "batch", "gateways", label, "last_batch_at_us", last_at, max_received))


def _with_log_entries(conn: Connection, stmt: Select[Any]) -> Iterator[tuple[Any, dict[str, BatchEntry]]]:
    """Each stored batch ``stmt`` selects, with the log entries of its page of batches (one query a page)."""
    for part in conn.execute(stmt).partitions():
        logged = batch_entries(conn, [row.hash for row in part])
        for row in part:
            yield row, logged


def _missing(result: ChainResult, label: str, emit: Emit, start: int, stop: int) -> None:
    for n in range(start, stop):
        result.missing.append(n)
        emit(Difference(label, "missing_batch", f"sealed batch {n} is not stored", "sealed_batches",
                        f"batch_seq={n}", batch_seq=n))


def _streams(conn: Connection, gid: int, label: str, emit: Emit, lo: int | None,
             hi: int | None) -> tuple[_ChunkStream, _Stream, _Stream]:
    rc = reading_chunks.c
    cond = [rc.gateway_id == gid, *([rc.first_seq >= lo] if lo is not None else []),
            *([rc.first_seq <= hi] if hi is not None else [])]
    stmt = select(*(rc[c] for c in CHUNK_COLUMNS)).where(*cond).order_by(rc.first_seq)
    chunks = _ChunkStream(driver_rows(conn, stmt), label, emit)
    out = []
    for table, columns in ((events, EVENT_COLUMNS), (tag_configs, TAG_CONFIG_COLUMNS)):
        where = [table.c.gateway_id == gid]
        if lo is not None:
            where.append(table.c.seq >= lo)
        if hi is not None:
            where.append(table.c.seq <= hi)
        stmt = select(*(table.c[c] for c in columns)).where(and_(*where)).order_by(table.c.seq)
        out.append(_Stream(_chunks(conn, stmt), table.name, columns, label, emit))
    return chunks, out[0], out[1]


def _chunks(conn: Connection, stmt: Select[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """Rows through SQLAlchemy (its types decode JSON columns), as tuples, streamed."""
    for part in conn.execute(stmt.execution_options(yield_per=CHUNK)).partitions():
        yield [tuple(row) for row in part]


def driver_rows(conn: Connection, stmt: Select[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """Rows straight from the driver's cursor, for columns that need no type processing (reading chunks).

    On PostgreSQL a named (server-side) cursor in the connection's transaction, so millions of
    rows never sit in memory at once, and the binary protocol, so that the chunks' packed columns
    come as they are stored rather than as hexadecimal text (twice the bytes, and decoded); the
    driver's tuples compare directly with derived ones.
    """
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(params[k] for k in compiled.positiontup or ())
    dbapi = conn.connection.driver_connection
    if dbapi is None:
        raise RuntimeError("internal error: expected dbapi is not None")
    if conn.dialect.name == "postgresql":
        cursor = dbapi.cursor(name=f"bb_verify_{next(_CURSOR_IDS)}", binary=True)
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(str(compiled), params)
        while chunk := cursor.fetchmany(CHUNK):
            yield chunk
    finally:
        cursor.close()


_CURSOR_IDS = itertools.count(1)


def _open_quietly(wire: Any) -> OpenedBatch | None:
    try:
        return open_batch(bytes(wire))
    except (SealError, ValueError):
        return None


def _check_batch(row: Any, label: str, site: str, gateway: str, trust: dict[str, _Trust],
                 emit: Emit) -> OpenedBatch | None:
    """Open, compare the header columns, check the key and the signature; ``None`` if it cannot be trusted."""
    n = row.batch_seq
    key = f"batch_seq={n}"
    try:
        opened = open_batch(bytes(row.wire))
    except (SealError, ValueError) as exc:
        emit(Difference(label, "stored_malformed", f"stored batch {n} no longer parses: {exc}", "sealed_batches",
                        key, "wire", batch_seq=n))
        return None
    h = opened.header
    derived = batch_columns(opened)
    for col in BATCH_COLUMNS:
        if getattr(row, col) != derived[col]:
            emit(Difference(label, "batch_altered", f"sealed batch {n}: {col} differs from the signed header",
                            "sealed_batches", key, col, getattr(row, col), derived[col], n))
    if (h.site, h.gateway) != (site, gateway):
        emit(Difference(label, "wrong_gateway", f"stored batch {n} is a batch of {h.site}/{h.gateway}",
                        "sealed_batches", key, "gateway_id", label, f"{h.site}/{h.gateway}", n))
        return None
    t = trust.get(h.key_id)
    if t is None:
        emit(Difference(label, "unknown_key", f"batch {n} is signed by key {h.key_id}, which no enrolment or "
                        f"rotation vouches for", "sealed_batches", key, "key_id", batch_seq=n))
        return None
    if not _in_force(t, opened):
        emit(Difference(label, "key_not_in_force", f"batch {n} (records {h.first_seq}..{h.last_seq}) is signed by "
                        f"key {h.key_id}, in force only for records {t.valid_from_seq or 1}.."
                        f"{'' if t.valid_to_seq is None else t.valid_to_seq}", "sealed_batches", key, "key_id",
                        batch_seq=n))
        return None
    if t.revoked_at_us is not None and t.revoked_at_us <= row.received_at_us:
        emit(Difference(label, "revoked_key", f"batch {n} was received after its key {h.key_id} was revoked",
                        "sealed_batches", key, "received_at_us", batch_seq=n))
        return None
    try:
        verify_batch(opened, t.public_key)
    except BadSignature:
        emit(Difference(label, "bad_signature", f"the signature of stored batch {n} does not verify",
                        "sealed_batches", key, "wire", batch_seq=n))
        return None
    return opened


def _check_rotation(derived: Derived, trust: dict[str, _Trust], label: str, emit: Emit) -> None:
    r = derived.rotation
    if r is None:
        return
    new = trust.get(r.new_key_id)
    if new is None or new.valid_from_seq != r.new_valid_from or trust[r.old_key_id].valid_to_seq != r.old_valid_to:
        emit(Difference(label, "key_altered", f"batch {derived.batch['batch_seq']} rotates from key {r.old_key_id} "
                        f"to key {r.new_key_id} at record {r.seq}; gateway_keys does not record it",
                        "gateway_keys", r.new_key_id, "valid_from_seq",
                        None if new is None else new.valid_from_seq, r.new_valid_from, derived.batch["batch_seq"]))


def _compare_rows(streams: tuple[_ChunkStream, _Stream, _Stream], derived: Derived, n: int) -> None:
    r, e, c = streams
    r.compare(derived.readings, n, derived.batch["first_seq"], derived.batch["last_seq"])
    e.compare([tuple(row[k] for k in EVENT_COLUMNS) for row in derived.events], n)
    c.compare([tuple(row[k] for k in TAG_CONFIG_COLUMNS) for row in derived.tag_configs], n)


# -- the whole store -------------------------------------------------------------------------------


def verify_store(engine: Engine, emit: Emit, *, gateway: str | None = None, since_us: int | None = None,
                 store_key: Verifier | None = None) -> Stats:
    """Verify every gateway's chain (or only ``gateway``: ``GW`` or ``SITE/GW``); each finding goes to ``emit``.

    Without ``gateway`` the transparency log is checked too (:func:`blackbox.store.verify_log.check_log`),
    its signed checkpoints against ``store_key`` when given. One read-only snapshot covers the
    whole run (PostgreSQL REPEATABLE READ; a SQLite transaction on an engine from
    :func:`blackbox.store.db.open_store_readonly`).
    """

    stats = Stats()

    def counted(d: Difference) -> None:
        stats.findings += 1
        emit(d)

    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            g = gateways.c
            stmt = select(g.id, g.site, g.gateway).order_by(g.site, g.gateway)
            if gateway is not None:
                site, _, gw = gateway.rpartition("/")
                stmt = stmt.where(g.gateway == gw, *([g.site == site] if site else []))
            known = conn.execute(stmt).all()
            gone = logged_but_missing(conn) if gateway is not None else {}
            for gid, site, gw in known:
                stats.gateways += 1
                result = check_chain(conn, gid, f"{site}/{gw}", counted, since_us=since_us, stats=stats)
                newest = max(result.present, default=0)
                for n in (k for k in gone.get(f"{site}/{gw}", []) if k > newest):  # check_log's, for one gateway
                    counted(Difference(f"{site}/{gw}", "batch_missing", f"batch {n}, logged as accepted, is not "
                                       f"stored", "sealed_batches", f"batch_seq={n}", batch_seq=n))
            if gateway is None:
                _orphans(conn, counted)
                log = check_log(conn, counted, store_key)
                stats.log_entries, stats.checkpoints = log.entries, log.checkpoints
                stats.checkpoints_signed = log.checkpoints_signed
    stats.seconds = time.monotonic() - stats.started
    return stats


def _orphans(conn: Connection, emit: Emit) -> None:
    """Rows stored under a gateway id the gateways table does not have."""
    ids = select(gateways.c.id)
    for table in (sealed_batches, reading_chunks, events, tag_configs, gateway_keys):
        for gid, n in conn.execute(select(table.c.gateway_id, func.count()).where(table.c.gateway_id.not_in(ids))
                                   .group_by(table.c.gateway_id)):
            emit(Difference(f"gateway id {gid}", "row_unexplained", f"{n} {table.name} row(s) belong to gateway id "
                            f"{gid}, which is not in the gateways table", table.name, f"gateway_id={gid}", stored=n))
