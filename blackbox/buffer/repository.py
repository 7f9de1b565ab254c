"""The one repository the agent writes and the sealer and uplink read.

Sequence numbers are allocated here, inside the transaction that makes the records durable: a
number exists only once its record has committed, so sequence numbers in the buffer are
contiguous and survive restarts (the next number is derived from what is on disk at open).
Readings are stored as blocks, one row per commit (``reading_blocks`` in
:mod:`blackbox.buffer.schema`); every operation on a range of seqs finds the blocks by index and
cuts a block where the range ends inside it.

Space: delivered data is pruned first (:meth:`Buffer.prune_delivered`); only when that is not
enough is the oldest *undelivered* data dropped (:meth:`Buffer.drop_undelivered`), and the drop
records a ``buffer.gap`` event in the same transaction, so no record disappears unaccounted for.

The class is synchronous and not thread-safe; the agent calls it from one dedicated thread. It
speaks plain SQL through the standard library's ``sqlite3`` (:mod:`blackbox.buffer.database`).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import sqlite3
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar, TypeVarTuple

import orjson

from blackbox.buffer.database import PAGE_SIZE, Synchronous, connect, transaction
from blackbox.buffer.migrate import BufferVersionError, prepare
from blackbox.columns import ReadingBlock, SampleColumns
from blackbox.model import Context, Event, EventDraft, Quality, Reading, Sample, StateRows, Value, now_us
from blackbox.seal.records import reading_columns_pass

_INSERT_BLOCK = ("INSERT INTO reading_blocks (first_seq, last_seq, ts_us, batch, phase, tags, vals, qualities, "
                 "reasons, source_ts_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_EVENT = "INSERT INTO events (seq, ts_us, type, subject, data, batch, phase) VALUES (?, ?, ?, ?, ?, ?, ?)"
RESERVE_BYTES = 8 << 20
"""Disk kept in reserve beside the buffer (see :meth:`Buffer.ensure_reserve`)."""
CONTEXT_EVENT_PREFIXES = ("batch.", "material.", "qc.")
"""Types of the production-context events, which a drop to make room never takes (they are recorded again)."""
_PUT_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value"
_PUT_RULE_ROW = ("INSERT INTO rule_state (key, state) VALUES (?, ?) "
                 "ON CONFLICT(key) DO UPDATE SET state=excluded.state")


T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class DbCall(Protocol):
    """``await db(fn, *args)``: runs ``fn(*args)`` (a :class:`Buffer` call) on the buffer's own thread
    and returns its result, so that SQLite work never blocks the event loop (the agent's ``Runtime.db``)."""

    def __call__(self, fn: Callable[[*Ts], T], /, *args: *Ts) -> Awaitable[T]: ...


class BufferError(Exception):
    """The buffer cannot be used or written as asked."""


class BufferFull(BufferError):
    """No room for the write: the quota is reached or the disk is full (``SQLITE_FULL``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"buffer full ({reason}): {detail}")
        self.reason = reason
        """``"quota"`` or ``"disk full"``."""


@dataclass(frozen=True)
class StoredBatch:
    """A sealed batch as kept in the buffer until the store acknowledges it."""

    batch_seq: int
    first_seq: int
    last_seq: int
    hash: str
    wire: bytes
    delivered: bool


@dataclass(frozen=True)
class Committed:
    """What one :meth:`Buffer.commit` made durable."""

    readings: ReadingBlock
    """The cycle's readings as stored: its samples with sequence numbers (empty without samples)."""
    events: list[Event]
    used_bytes: int = 0
    """Bytes of the database in use after the commit (free pages not counted)."""


@dataclass(frozen=True)
class Unsealed:
    """Records the sealer takes next (:meth:`Buffer.unsealed`): the readings as runs, one per stored block
    (a :class:`~blackbox.seal.document.ReadingRun`, made into rows only when sealed), and the event rows."""

    runs: list[SpanRun]
    events: list[list[Any]]

    @property
    def readings(self) -> list[tuple[Any, ...]]:
        """All the reading rows at once (what a large batch should not hold: the sealer takes the runs)."""
        return [row for run in self.runs for row in run.rows()[0]]


@dataclass(frozen=True)
class Usage:
    used_bytes: int
    """Pages in use; freed pages are reused before the file grows."""
    file_bytes: int
    """The database file and its WAL on disk."""
    quota_bytes: int | None


@dataclass(frozen=True)
class Backlog:
    """What the store has not acknowledged yet."""

    last_seq: int
    undelivered_records: int
    oldest_undelivered_ts_us: int | None
    unsealed_records: int
    pending_batches: int


@dataclass(frozen=True)
class Dropped:
    """Undelivered records removed to make room; the ``buffer.gap`` event describes them."""

    first_seq: int
    last_seq: int
    from_us: int | None
    to_us: int | None
    readings: int
    events: int
    batches: int


class Buffer:
    """Durable store of readings, events and sealed batches on the gateway."""

    def __init__(self, path: Path, synchronous: Synchronous = "FULL", quota_bytes: int | None = None) -> None:
        self.path = path
        self.quota_bytes = quota_bytes
        """The quota in force: the configured one, or the file's size while the disk is full."""
        self.configured_quota_bytes = quota_bytes
        self.synchronous = synchronous
        self.db = connect(path, synchronous, quota_bytes)
        try:
            self.migrated = prepare(self.db, path, synchronous, quota_bytes)
        except BufferVersionError as exc:
            self.db.close()
            raise BufferError(str(exc)) from None
        self._next_seq = self._max_seq(self.db.cursor()) + 1
        self._sealable_tags = SealableTags()

    def close(self) -> None:
        self.db.close()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        """A cursor in one transaction of the buffer: committed at the end of the block, rolled back if it raises."""
        return transaction(self.db)

    # -- writing -----------------------------------------------------------------------------

    def commit(self, samples: Sequence[Sample], drafts: Sequence[EventDraft], context: Context,
               ts_us: int | None = None, state: dict[str, Any] | None = None,
               rule_rows: StateRows | None = None) -> Committed:
        """Make one poll cycle durable in one transaction and return it with sequence numbers.

        Events come first in sequence order: a context change found in this cycle is recorded
        before the readings that are attributed to it. The readings (``samples``: the agent's
        :class:`~blackbox.columns.SampleColumns`, or any sequence of samples) are stored as one
        block. ``state`` (if given) and ``rule_rows`` (the rules' rows that changed) are saved in
        the same transaction, so that state derived from the records can never disagree with
        them. Raises :class:`BufferFull` when there is no room, :class:`BufferError` on other
        failures (a value JSON cannot hold, an unknown quality); nothing of the cycle is then
        stored and no sequence number is used up.
        """
        ts = now_us() if ts_us is None else ts_us
        columns = SampleColumns.of(samples)
        try:
            with self.transaction() as cur:
                made, seq, used = self._insert(cur, self._next_seq, columns, drafts, context, ts, state, rule_rows)
        except Exception as exc:
            raise self._write_error(exc) from exc
        self._next_seq = seq
        return Committed(made.readings, made.events, used)

    def _insert(self, cur: sqlite3.Cursor, seq: int, samples: SampleColumns, drafts: Sequence[EventDraft],
                context: Context, ts: int, state: dict[str, Any] | None,
                rule_rows: StateRows | None = None) -> tuple[Committed, int, int]:
        dumps = orjson.dumps
        event_rows: list[tuple[Any, ...]] = []
        made_events: list[Event] = []
        for d in drafts:
            ctx = d.context or context
            ev = Event(seq, d.type, d.subject, d.data, d.ts_us or ts, ctx.batch, ctx.phase)
            made_events.append(ev)
            event_rows.append((seq, ev.ts_us, ev.type, ev.subject, dumps(ev.data).decode(), ev.batch, ev.phase))
            seq += 1
        block = ReadingBlock(seq, ts, context.batch, context.phase, samples)
        if event_rows:
            cur.executemany(_INSERT_EVENT, event_rows)
        if samples:
            cur.execute(_INSERT_BLOCK, (seq, block.last_seq, ts, block.batch, block.phase,
                                        *_block_json(samples.tags, samples.values, samples.qualities,
                                                     samples.reasons, samples.source_ts_us)))
        if state is not None:
            cur.execute(_PUT_META, ("agent_state", dumps(state).decode()))
        if rule_rows is not None:
            put_state_rows(cur, rule_rows)
        used = _used_bytes(cur)
        return Committed(block, made_events), seq + len(samples), used

    def _write_error(self, exc: Exception) -> BufferError:
        if isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_FULL:
            return BufferFull(self._full_reason(), str(exc))
        return BufferError(f"cannot write the buffer {self.path}: {type(exc).__name__}: {exc}")

    def _full_reason(self) -> str:
        if self.quota_bytes is None or self.size_held:
            return "disk full"
        try:
            pages = self._one("PRAGMA page_count") or 0
            limit = self._one("PRAGMA max_page_count") or 0
        except Exception:  # the disk may be too full to even look; that is the answer then
            return "disk full"
        return "quota" if pages >= limit - 8 else "disk full"  # a few pages' slack: one insert grows several

    # -- space -------------------------------------------------------------------------------

    def usage(self) -> Usage:
        used = _used_bytes(self.db.cursor())
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return Usage(used, size, self.quota_bytes)

    @property
    def reserve_path(self) -> Path:
        return self.path.with_name(self.path.name + ".reserve")

    def ensure_reserve(self) -> bool:
        """Keep :data:`RESERVE_BYTES` of disk beside the buffer, to be given back when the disk is full.

        With the disk full, even the transaction that drops old data to make room needs a little
        space for its WAL frames; releasing the reserve provides it. Returns whether it is in place.
        """
        path = self.reserve_path
        try:
            if path.stat().st_size >= RESERVE_BYTES:
                return True
        except FileNotFoundError:
            pass
        try:
            with open(path, "wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    for _ in range(RESERVE_BYTES >> 16):  # a filesystem without fallocate: real blocks
                        f.write(bytes(1 << 16))
                    f.flush()
                    os.fsync(f.fileno())
            return True
        except OSError:
            path.unlink(missing_ok=True)  # no room for it now; the agent tries again later
            return False

    def release_reserve(self) -> bool:
        """Give the reserve's disk space back; ``True`` if there was one."""
        try:
            self.reserve_path.unlink()
            return True
        except FileNotFoundError:
            return False

    def hold_size(self) -> int:
        """The disk is full: make the file's present size the quota until :meth:`release_size`.

        From then on SQLite refuses to grow the file (cleanly, before writing anything) and the
        agent's quota handling keeps free pages inside it, so writes never again need more disk.
        Returns the quota now in force.
        """
        pages = int(self._one("PRAGMA page_count") or 0)
        size = int(self._one("PRAGMA page_size") or PAGE_SIZE)
        held = pages * size
        if self.configured_quota_bytes is not None:
            held = min(held, self.configured_quota_bytes)
        self._set_quota(held)
        return held

    def release_size(self) -> None:
        """Back to the configured quota (the disk has room again)."""
        self._set_quota(self.configured_quota_bytes)

    @property
    def size_held(self) -> bool:
        return self.quota_bytes != self.configured_quota_bytes

    def disk_free_bytes(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def _set_quota(self, quota_bytes: int | None) -> None:
        """A new connection with the quota: SQLite's ``max_page_count`` has no value for "no limit" to set back."""
        fresh = connect(self.path, self.synchronous, quota_bytes)
        self.db.close()
        self.db = fresh
        self.quota_bytes = quota_bytes

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it, giving its disk space back.

        Raises :class:`BufferFull` if the database file cannot take the pages.
        """
        try:
            busy, _log, _done = self.db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except Exception as exc:
            raise self._write_error(exc) from exc
        if busy:
            raise BufferError("the WAL checkpoint was blocked by a reader of the buffer")

    def prune_delivered(self, delivered_before_us: int | None = None, max_records: int = 100_000) -> int:
        """Delete up to ``max_records`` records the store has acknowledged, oldest first.

        Only records delivered before ``delivered_before_us`` go when it is given (retention);
        all delivered ones otherwise (the quota needs the room). The newest sealed batch is kept
        whatever its state: the next batch's hash chain starts from it. Returns records deleted.
        """
        with self.transaction() as cur:
            prefix = self._delivered_prefix(cur)
            n = 0
            if delivered_before_us is None:
                n += self._delete_delivered_beyond(cur, prefix)
                upto = _scalar(cur, "SELECT max(last_seq) FROM sealed_batches WHERE last_seq <= ?", prefix)
            else:
                upto = _scalar(cur, "SELECT max(last_seq) FROM sealed_batches WHERE last_seq <= ? AND "
                               "(delivered_at_us < ? OR dropped_at_us IS NOT NULL)", prefix, delivered_before_us)
            if upto is None:
                return n
            first = self._min_row_seq(cur, 0)
            if first is not None and first <= upto:
                upto = min(upto, first + max_records - 1)
                n += self._delete_rows(cur, first, upto)
            cur.execute(f"DELETE FROM sealed_batches WHERE last_seq <= ? AND NOT ({_PENDING}) "
                        "AND batch_seq != (SELECT max(batch_seq) FROM sealed_batches)", (upto,))
        return n

    def drop_undelivered(self, fraction: float, reason: str, context: Context, ts_us: int,
                         extra: Sequence[EventDraft] = (), state: dict[str, Any] | None = None,
                         carry_alarms: frozenset[str] = frozenset(),
                         rule_rows: StateRows | None = None) -> tuple[Committed, Dropped] | None:
        """Drop the oldest ``fraction`` of the undelivered records and record it, in one transaction.

        Whole sealed batches go (a batch cannot be cut); they stay listed, marked dropped, so the
        chain continues. The ``buffer.gap`` event (and ``extra`` events, e.g. the alarm) take new
        sequence numbers. The account of earlier losses is never lost in turn: ``buffer.gap``
        events inside the dropped range, and ``alarm.raised`` events of the rules in
        ``carry_alarms`` (alarms still active), are recorded again, as they were, with
        ``carried_from_seq``. So is the production context (``batch.*``, ``material.*``, ``qc.*``
        events, with their own time): what was made, from what, and how it tested is never dropped.
        Returns ``None`` if nothing undelivered is left to drop.
        """
        try:
            with self.transaction() as cur:
                prefix = self._delivered_prefix(cur)
                self._delete_delivered_beyond(cur, prefix)
                lo = self._min_row_seq(cur, prefix)
                last = self._next_seq - 1
                if lo is None:
                    return None
                upto = min(last, lo + max(1, math.ceil((last - lo + 1) * fraction)) - 1)
                cut = _scalar(cur, f"SELECT max(last_seq) FROM sealed_batches WHERE {_PENDING} AND first_seq <= ?",
                              upto)
                upto = max(upto, cut or 0)
                n_r, r_from, r_to = self._reading_span(cur, lo, upto)
                n_e, e_from, e_to = cur.execute("SELECT count(*), min(ts_us), max(ts_us) FROM events "
                                                "WHERE seq BETWEEN ? AND ?", (lo, upto)).fetchone()
                carried = self._carried(cur, lo, upto, carry_alarms)
                n_e -= len(carried)
                self._delete_rows(cur, lo, upto)
                n_b = cur.execute(f"UPDATE sealed_batches SET wire = ?, dropped_at_us = ? WHERE {_PENDING} "
                                  "AND last_seq <= ?", (b"", ts_us, upto)).rowcount
                froms = [t for t in (r_from, e_from) if t is not None]
                tos = [t for t in (r_to, e_to) if t is not None]
                dropped = Dropped(lo, upto, min(froms, default=None), max(tos, default=None), n_r, n_e, n_b)
                gap = EventDraft("buffer.gap", "buffer", {
                    "first_seq": dropped.first_seq, "last_seq": dropped.last_seq, "from_us": dropped.from_us,
                    "to_us": dropped.to_us, "reason": reason, "readings": n_r, "events": n_e, "batches": n_b})
                made, seq, used = self._insert(cur, self._next_seq, SampleColumns.of(()), [*carried, gap, *extra],
                                               context, ts_us, state, rule_rows)
        except Exception as exc:
            raise self._write_error(exc) from exc
        self._next_seq = seq
        return Committed(made.readings, made.events, used), dropped

    # -- sealing -----------------------------------------------------------------------------

    def unsealed_rows(self, after: int, limit: int) -> tuple[list[tuple[Any, ...]], list[list[Any]]]:
        """The sealer's rows: the ``limit`` lowest-numbered records above ``after``, in the records document's layout.

        Readings as ``[seq, tag, value, quality, reason, ts_us, source_ts_us, batch, phase]``
        (quality a plain string), events as ``[seq, type, subject, data, ts_us, batch, phase]``
        (data a dict); each list in ``seq`` order. See :meth:`unsealed`.
        """
        found = self.unsealed(after, limit)
        return found.readings, found.events

    def unsealed(self, after: int, limit: int) -> Unsealed:
        """The records of :meth:`unsealed_rows`, the readings as one run per block (:class:`SpanRun`).

        Only the blocks the rows need are read. A run's rows are made from its block's columns by
        C-level ``zip``, not a Python step per reading, when the sealer asks for them, so a batch of
        tens of thousands of readings never holds all its rows at once. The columns are checked
        against the rules of a sealed reading (:func:`~blackbox.seal.records.reading_columns_pass`)
        as they are, which costs a tenth of checking the rows made of them.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        with self.transaction() as cur:  # one snapshot of both tables
            event_rows = [[seq, kind, subject, orjson.loads(data), ts, batch, phase]
                          for seq, kind, subject, data, ts, batch, phase in cur.execute(
                              "SELECT seq, type, subject, data, ts_us, batch, phase FROM events WHERE seq > ? "
                              "ORDER BY seq LIMIT ?", (after, limit))]
            spans = self._spans(cur, after + 1, None, limit)
        n_r = sum(sp.hi - sp.lo + 1 for sp in spans)
        if n_r + len(event_rows) > limit:  # keep the `limit` lowest seqs of the two
            e_seqs = [row[0] for row in event_rows]
            r_seqs = chain.from_iterable(range(sp.lo, sp.hi + 1) for sp in spans)
            last = sorted(chain(r_seqs, e_seqs))[limit - 1]
            del event_rows[bisect_right(e_seqs, last):]
            spans = _first(spans, limit - len(event_rows))
        return Unsealed([SpanRun(sp, self._sealable_tags) for sp in spans], event_rows)

    def last_sealed(self) -> StoredBatch | None:
        row = self.db.execute(f"{_SELECT_BATCH} ORDER BY batch_seq DESC LIMIT 1").fetchone()
        return _row_to_batch(row) if row else None

    def add_sealed(self, batch_seq: int, first_seq: int, last_seq: int, hash_: str, wire: bytes) -> None:
        try:
            self.db.execute("INSERT INTO sealed_batches (batch_seq, first_seq, last_seq, hash, wire, sealed_at_us) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (batch_seq, first_seq, last_seq, hash_, wire, now_us()))
        except Exception as exc:
            raise self._write_error(exc) from exc

    # -- delivery ----------------------------------------------------------------------------

    def undelivered(self, after_batch_seq: int, limit: int, without: AbstractSet[int] = frozenset(),
                    ) -> list[StoredBatch]:
        """Sealed batches not yet acknowledged by the store (nor dropped), oldest first: the first
        ``limit`` above ``after_batch_seq`` that are not in ``without``.

        ``without``: batches the caller would not send (already out): their wires, hundreds of
        kilobytes each for a large batch, are not read.
        """
        seqs = self.db.execute(f"SELECT batch_seq FROM sealed_batches WHERE {_PENDING} AND batch_seq > ? "
                               "ORDER BY batch_seq LIMIT ?", (after_batch_seq, limit + len(without))).fetchall()
        wanted = [seq for (seq,) in seqs if seq not in without][:limit]
        if not wanted:
            return []
        rows = self.db.execute(f"{_SELECT_BATCH} WHERE batch_seq IN ({', '.join('?' * len(wanted))}) "
                               "ORDER BY batch_seq", wanted).fetchall()
        return [_row_to_batch(r) for r in rows]

    def first_undelivered(self) -> tuple[int, int] | None:
        """``(batch_seq, first_seq)`` of the oldest batch the store has not acknowledged (nor dropped)."""
        row = self.db.execute(f"SELECT batch_seq, first_seq FROM sealed_batches WHERE {_PENDING} "
                              "ORDER BY batch_seq LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def mark_delivered(self, batch_seq: int, hash_: str, receipt: dict[str, Any] | None = None) -> bool:
        """Record the store's acknowledgement; ``False`` if no pending batch has that hash.

        ``receipt``: the verified receipt's ``receipts`` columns, kept in the same transaction.
        """
        with self.transaction() as cur:
            marked = cur.execute(f"UPDATE sealed_batches SET delivered_at_us = ? WHERE batch_seq = ? AND hash = ? "
                                 f"AND {_PENDING}", (now_us(), batch_seq, hash_)).rowcount == 1
            if marked and receipt is not None:
                row = {**receipt, "batch_seq": batch_seq, "hash": hash_, "accepted_at_us": now_us()}
                if row.keys() != set(RECEIPT_COLUMNS):
                    raise ValueError(f"a receipt row has the columns {', '.join(RECEIPT_COLUMNS)}, "
                                     f"not {', '.join(sorted(row))}")
                cur.execute(_INSERT_RECEIPT, [row[c] for c in RECEIPT_COLUMNS])
        return marked

    def sealed_batch(self, batch_seq: int) -> StoredBatch | None:
        """The sealed batch ``batch_seq``, or ``None`` if it was never sealed."""
        row = self.db.execute(f"{_SELECT_BATCH} WHERE batch_seq = ?", (batch_seq,)).fetchone()
        return _row_to_batch(row) if row else None

    def receipts(self, after_batch_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The store's receipts this gateway accepted, by batch, oldest first."""
        rows = self.db.execute(f"SELECT {', '.join(RECEIPT_COLUMNS)} FROM receipts WHERE batch_seq > ? "
                               "ORDER BY batch_seq LIMIT ?", (after_batch_seq, limit))
        return [dict(zip(RECEIPT_COLUMNS, r, strict=True)) for r in rows]

    def meta_value(self, key: str) -> str | None:
        value: str | None = self._one("SELECT value FROM meta WHERE key = ?", key)
        return value

    def set_meta_value(self, key: str, value: str) -> None:
        self.db.execute(_PUT_META, (key, value))

    def pending_counts(self) -> tuple[int, int]:
        """(undelivered batches, last sequence number committed)."""
        return self._one(f"SELECT count(*) FROM sealed_batches WHERE {_PENDING}"), self._next_seq - 1

    def backlog(self) -> Backlog:
        """Depth of what the store has not acknowledged, by index lookups only (cheap at any size).

        Undelivered records always form one range up to the last sequence number: delivery
        advances from the oldest and drops remove the oldest.
        """
        last = self._next_seq - 1
        with self.transaction() as cur:
            prefix = self._delivered_prefix(cur)
            lo = self._min_row_seq(cur, prefix)
            oldest = None
            if lo is not None:
                held = self._block_at(cur, lo)
                oldest = None if held is None else held.ts_us
                if oldest is None:
                    oldest = _scalar(cur, "SELECT ts_us FROM events WHERE seq = ?", lo)
            pending = _scalar(cur, f"SELECT count(*) FROM sealed_batches WHERE {_PENDING}")
            sealed_upto = _scalar(cur, "SELECT max(last_seq) FROM sealed_batches") or 0
        return Backlog(last_seq=last, undelivered_records=0 if lo is None else last - lo + 1,
                       oldest_undelivered_ts_us=oldest, unsealed_records=last - sealed_upto, pending_batches=pending)

    # -- state -------------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The agent state saved with the last commit (context, trigger values…), or ``{}``.

        The rules' rows are under ``"rules"`` (row key -> row), when there are any.
        """
        with self.transaction() as cur:
            raw = _scalar(cur, "SELECT value FROM meta WHERE key = 'agent_state'")
            rows = cur.execute("SELECT key, state FROM rule_state").fetchall()
        state: dict[str, Any] = orjson.loads(raw) if raw else {}
        if rows:
            state["rules"] = {key: orjson.loads(text) for key, text in rows}
        return state

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    # -- reading back (status, tests) --------------------------------------------------------

    def readings_between(self, first_seq: int, last_seq: int) -> list[Reading]:
        with self.transaction() as cur:
            spans = self._spans(cur, first_seq, last_seq)
        return [r for sp in spans for r in sp.readings()]

    # -- internals ---------------------------------------------------------------------------

    def _one(self, sql: str, *params: Any) -> Any:
        """The first column of the first row of ``sql`` on its own, ``None`` without one."""
        return _scalar(self.db.cursor(), sql, *params)

    @staticmethod
    def _max_seq(cur: sqlite3.Cursor) -> int:
        candidates = [
            _scalar(cur, "SELECT last_seq FROM reading_blocks ORDER BY first_seq DESC LIMIT 1"),
            _scalar(cur, "SELECT max(seq) FROM events"),
            _scalar(cur, "SELECT max(last_seq) FROM sealed_batches"),
        ]
        return max((c for c in candidates if c is not None), default=0)

    @staticmethod
    def _delivered_prefix(cur: sqlite3.Cursor) -> int:
        """Highest seq such that every record up to it was delivered (or dropped, and recorded so)."""
        first_pending = _scalar(cur, f"SELECT min(first_seq) FROM sealed_batches WHERE {_PENDING}")
        if first_pending is not None:
            return int(first_pending) - 1
        return int(_scalar(cur, "SELECT max(last_seq) FROM sealed_batches") or 0)

    @staticmethod
    def _delete_delivered_beyond(cur: sqlite3.Cursor, prefix: int) -> int:
        """Rows of batches acknowledged out of order (beyond the delivered prefix)."""
        n = 0
        ranges = cur.execute("SELECT first_seq, last_seq FROM sealed_batches WHERE delivered_at_us IS NOT NULL "
                             "AND last_seq > ?", (prefix,)).fetchall()
        for first, last in ranges:
            n += Buffer._delete_rows(cur, first, last)
        return n

    @staticmethod
    def _min_row_seq(cur: sqlite3.Cursor, above: int) -> int | None:
        if Buffer._block_at(cur, above + 1) is not None:
            return above + 1
        found = [_scalar(cur, "SELECT min(first_seq) FROM reading_blocks WHERE first_seq > ?", above),
                 _scalar(cur, "SELECT min(seq) FROM events WHERE seq > ?", above)]
        return min((f for f in found if f is not None), default=None)

    @staticmethod
    def _block_at(cur: sqlite3.Cursor, seq: int) -> _BlockBounds | None:
        """The bounds of the block holding reading ``seq``, if one does.

        An index lookup: ``first_seq`` is the rowid and blocks never overlap.
        """
        row = cur.execute("SELECT first_seq, last_seq, ts_us FROM reading_blocks WHERE first_seq <= ? "
                          "ORDER BY first_seq DESC LIMIT 1", (seq,)).fetchone()
        return _BlockBounds(*row) if row is not None and row[1] >= seq else None

    @staticmethod
    def _over(cur: sqlite3.Cursor, first: int, last: int | None) -> tuple[str, tuple[int, ...]]:
        """SQL condition (and its parameters) on blocks holding any reading in ``first..last`` (``None``: no
        upper end), by the index."""
        held = Buffer._block_at(cur, first)
        start = first if held is None else held.first_seq
        if last is None:
            return "first_seq >= ? AND last_seq >= ?", (start, first)
        return "first_seq >= ? AND first_seq <= ? AND last_seq >= ?", (start, last, first)

    @staticmethod
    def _spans(cur: sqlite3.Cursor, first: int, last: int | None, limit: int | None = None) -> list[_Span]:
        """The stored readings in ``first..last`` as spans of blocks, in seq order; the first ``limit`` of them."""
        where, params = Buffer._over(cur, first, last)
        spans: list[_Span] = []
        n = 0
        # row by row, not fetchall: with a backlog, the blocks past ``limit`` are never read
        for row in cur.execute(f"SELECT {_BLOCK_COLUMNS} FROM reading_blocks WHERE {where} ORDER BY first_seq",
                               params):
            block = _Block(*row)
            lo, hi = max(block.first_seq, first), block.last_seq if last is None else min(block.last_seq, last)
            if limit is not None:
                hi = min(hi, lo + limit - n - 1)
            spans.append(_Span(block, lo, hi))
            n += hi - lo + 1
            if n == limit:
                break
        return spans

    @staticmethod
    def _reading_span(cur: sqlite3.Cursor, first: int, last: int) -> tuple[int, int | None, int | None]:
        """(readings in ``first..last``, their earliest and latest ``ts_us``), from the blocks' bounds alone."""
        where, params = Buffer._over(cur, first, last)
        n, t_from, t_to = cur.execute(
            f"SELECT sum(min(last_seq, ?) - max(first_seq, ?) + 1), min(ts_us), max(ts_us) FROM reading_blocks "
            f"WHERE {where}", (last, first, *params)).fetchone()
        return int(n or 0), t_from, t_to

    @staticmethod
    def _carried(cur: sqlite3.Cursor, lo: int, upto: int, carry_alarms: frozenset[str]) -> list[EventDraft]:
        """Events in ``lo..upto`` that must outlive the drop, as drafts to record again."""
        kinds = " OR ".join(["type IN ('buffer.gap', 'alarm.raised')",
                             *(f"type GLOB '{prefix}*'" for prefix in CONTEXT_EVENT_PREFIXES)])
        rows = cur.execute(f"SELECT seq, type, subject, data, ts_us, batch, phase FROM events "
                           f"WHERE seq BETWEEN ? AND ? AND ({kinds}) ORDER BY seq", (lo, upto)).fetchall()
        out = []
        for seq, kind, subject, raw, ts_us, batch, phase in rows:
            data = orjson.loads(raw)
            production = kind.startswith(CONTEXT_EVENT_PREFIXES)
            if production or kind == "buffer.gap" or data.get("rule") in carry_alarms:
                out.append(EventDraft(kind, subject, {**data, "carried_from_seq": seq},
                                      ts_us=ts_us if production else None, context=Context(batch=batch, phase=phase)))
        return out

    @staticmethod
    def _delete_rows(cur: sqlite3.Cursor, first: int, last: int) -> int:
        """Delete the records ``first..last``; return how many there were.

        A block reaching out of the range (a sealed batch or a prune can end inside a block) is
        rewritten as its part, or two parts, outside the range.
        """
        n = 0
        reaching_out = {held.first_seq for held in (Buffer._block_at(cur, first), Buffer._block_at(cur, last))
                        if held is not None and (held.first_seq < first or held.last_seq > last)}
        for first_seq in reaching_out:
            block = _Block(*cur.execute(f"SELECT {_BLOCK_COLUMNS} FROM reading_blocks WHERE first_seq = ?",
                                        (first_seq,)).fetchone())
            cur.execute("DELETE FROM reading_blocks WHERE first_seq = ?", (first_seq,))
            for lo, hi in ((block.first_seq, first - 1), (last + 1, block.last_seq)):
                if lo <= hi:
                    cur.execute(_INSERT_BLOCK, _Span(block, lo, hi).stored())
            n += min(block.last_seq, last) - max(block.first_seq, first) + 1
        # the rest lie wholly inside
        n += int(_scalar(cur, "SELECT sum(last_seq - first_seq + 1) FROM reading_blocks "
                              "WHERE first_seq BETWEEN ? AND ?", first, last) or 0)
        cur.execute("DELETE FROM reading_blocks WHERE first_seq BETWEEN ? AND ?", (first, last))
        return n + cur.execute("DELETE FROM events WHERE seq BETWEEN ? AND ?", (first, last)).rowcount


def _scalar(cur: sqlite3.Cursor, sql: str, *params: Any) -> Any:
    """The first column of the first row of ``sql``, ``None`` without one."""
    row = cur.execute(sql, params).fetchone()
    return None if row is None else row[0]


def put_state_rows(cur: Any, rule_rows: StateRows) -> None:
    """Upsert the changed rows, delete the emptied ones (and every other row, for a replacement)."""
    if rule_rows.replace:
        cur.execute("DELETE FROM rule_state")
    put = [(k, v) for k, v in rule_rows.rows.items() if v is not None]
    gone = [(k,) for k, v in rule_rows.rows.items() if v is None]
    if put:
        cur.executemany(_PUT_RULE_ROW, put)
    if gone:
        cur.executemany("DELETE FROM rule_state WHERE key = ?", gone)


def _used_bytes(cur: Any) -> int:
    pages = cur.execute("PRAGMA page_count").fetchone()[0]
    free = cur.execute("PRAGMA freelist_count").fetchone()[0]
    size = cur.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


_QUALITIES = frozenset(Quality)


def _dump(column: Sequence[Any]) -> str:
    """A column as JSON text (orjson takes lists and tuples; any other sequence is copied into a list)."""
    return orjson.dumps(column if isinstance(column, list | tuple) else list(column)).decode()


def _block_json(tags: Sequence[str], values: Sequence[Value], qualities: Sequence[str] | None,
                reasons: Sequence[str | None] | None, sources: Sequence[int | None] | None,
                ) -> tuple[str, str, str | None, str | None, str | None]:
    """A block's JSON columns; NULL (``None`` in, or all default) for all good, no reasons, no source times.

    Counting with the list's own C ``count`` decides that without a Python step per reading.
    """
    n = len(tags)
    if qualities is not None and qualities.count(Quality.GOOD) != n:
        unknown = set(qualities) - _QUALITIES  # Quality is a StrEnum: "good" and Quality.GOOD are one
        if unknown:
            raise ValueError(f"unknown quality {sorted(map(repr, unknown))[0]}, not one of {', '.join(Quality)}")
        quality_json: str | None = _dump(qualities)
    else:
        quality_json = None
    return (_dump(tags), _dump(values), quality_json,
            None if reasons is None or reasons.count(None) == n else _dump(reasons),
            None if sources is None or sources.count(None) == n else _dump(sources))


class _Block(NamedTuple):
    """A row of ``reading_blocks``."""

    first_seq: int
    last_seq: int
    ts_us: int
    batch: str | None
    phase: str | None
    tags: str
    vals: str
    qualities: str | None
    reasons: str | None
    source_ts_us: str | None


class _BlockBounds(NamedTuple):
    first_seq: int
    last_seq: int
    ts_us: int


_Columns = tuple[list[Any], list[Any], list[Any] | None, list[Any] | None, list[Any] | None]
"""Tags, values, qualities, reasons and source times of a span; ``None`` for a NULL (all default) column."""


@dataclass(frozen=True, slots=True)
class _Span:
    """Readings ``lo..hi`` of a stored block (a row of ``reading_blocks``)."""

    block: _Block
    lo: int
    hi: int

    @property
    def whole(self) -> bool:
        """Whether the span is all of its block."""
        return self.lo == self.block.first_seq and self.hi == self.block.last_seq

    def passes_check(self, columns: _Columns, tags_known: bool = False) -> bool:
        """Whether the rows of the span certainly pass the sealer's check (see :meth:`Buffer.unsealed`);
        ``tags_known``: the tag column passed before (:class:`SealableTags`)."""
        b = self.block
        tags, vals, qualities, reasons, sources = columns
        return reading_columns_pass(self.lo, self.hi, tags, vals, qualities, reasons, b.ts_us, sources, b.batch,
                                    b.phase, tags_checked=tags_known)

    def columns(self, tags: Sequence[str] | None = None) -> _Columns:
        """Tags, values, qualities, reasons and source times of the span; ``None`` for a NULL (all default) column.

        ``tags``: the block's whole tag column, already parsed (:class:`SealableTags`).
        """
        b = self.block
        i, j = self.lo - b.first_seq, self.hi - b.first_seq + 1
        whole = self.whole

        def part(text: str) -> list[Any]:
            column: list[Any] = orjson.loads(text)
            return column if whole else column[i:j]

        def optional(text: str | None) -> list[Any] | None:
            return None if text is None else part(text)

        tag_column = part(b.tags) if tags is None else list(tags if whole else tags[i:j])
        return tag_column, part(b.vals), optional(b.qualities), optional(b.reasons), optional(b.source_ts_us)

    def rows(self, columns: _Columns | None = None) -> list[tuple[Any, ...]]:
        """The readings as rows of the records document (from :meth:`columns`, if already made)."""
        b, n = self.block, self.hi - self.lo + 1
        tags, vals, qualities, reasons, sources = columns if columns is not None else self.columns()
        # tuples, not lists: a tuple of atomic values leaves the cyclic GC's view once it survives a
        # collection, and orjson writes both alike
        return list(zip(range(self.lo, self.hi + 1), tags, vals,
                        repeat(Quality.GOOD.value, n) if qualities is None else qualities,
                        repeat(None, n) if reasons is None else reasons, repeat(b.ts_us, n),
                        repeat(None, n) if sources is None else sources, repeat(b.batch, n),
                        repeat(b.phase, n), strict=True))

    def readings(self) -> Iterator[Reading]:
        b, n = self.block, self.hi - self.lo + 1
        tags, vals, qualities, reasons, sources = self.columns()
        return map(Reading, range(self.lo, self.hi + 1), tags, vals,
                   repeat(Quality.GOOD, n) if qualities is None else map(Quality, qualities),
                   repeat(None, n) if reasons is None else reasons, repeat(b.ts_us, n),
                   repeat(None, n) if sources is None else sources, repeat(b.batch, n), repeat(b.phase, n))

    def stored(self) -> tuple[Any, ...]:
        """Column values of a block of just these readings (the parameters of ``_INSERT_BLOCK``)."""
        b = self.block
        return (self.lo, self.hi, b.ts_us, b.batch, b.phase, *_block_json(*self.columns()))


@dataclass(frozen=True, slots=True)
class SpanRun:
    """A span of a stored block as a :class:`~blackbox.seal.document.ReadingRun`: its rows are made from
    the block's columns when the sealer asks, and checked as columns (a tenth of the cost of a check row
    by row); a block's tag column that passed is remembered (:class:`SealableTags`)."""

    span: _Span
    sealable_tags: SealableTags

    @property
    def first_seq(self) -> int:
        return self.span.lo

    @property
    def last_seq(self) -> int:
        return self.span.hi

    def rows(self) -> tuple[list[tuple[Any, ...]], bool]:
        sp = self.span
        known = self.sealable_tags.get(sp.block.tags)
        columns = sp.columns(known)
        checked = sp.passes_check(columns, tags_known=known is not None)
        if checked and known is None and sp.whole:
            self.sealable_tags.add(sp.block.tags, columns[0])
        return sp.rows(columns), checked


class SealableTags:
    """Tag columns that passed the sealer's check, by their stored text.

    A source's blocks repeat one tag column cycle after cycle: it is parsed and checked once, not
    for every block (about 0.1 µs per reading at 1,000 tags a source). Bounded: emptied when full.
    """

    LIMIT = 256

    def __init__(self) -> None:
        self._by_text: dict[str, tuple[str, ...]] = {}

    def get(self, text: str) -> tuple[str, ...] | None:
        return self._by_text.get(text)

    def add(self, text: str, tags: Sequence[str]) -> None:
        if len(self._by_text) >= self.LIMIT:
            self._by_text.clear()
        self._by_text[text] = tuple(tags)


def _first(spans: list[_Span], n: int) -> list[_Span]:
    """The spans cut down to their first ``n`` readings."""
    out = []
    for sp in spans:
        if n <= 0:
            break
        out.append(_Span(sp.block, sp.lo, min(sp.hi, sp.lo + n - 1)))
        n -= sp.hi - sp.lo + 1
    return out


_BLOCK_COLUMNS = ", ".join(_Block._fields)
_SELECT_BATCH = "SELECT batch_seq, first_seq, last_seq, hash, wire, delivered_at_us FROM sealed_batches"
_PENDING = "delivered_at_us IS NULL AND dropped_at_us IS NULL"
RECEIPT_COLUMNS = ("batch_seq", "hash", "status", "log_index", "tree_size", "received_at_us", "receipt",
                   "checkpoint", "inclusion", "accepted_at_us")
"""The ``receipts`` table's columns, in the order :meth:`Buffer.receipts` gives them."""
_INSERT_RECEIPT = (f"INSERT INTO receipts ({', '.join(RECEIPT_COLUMNS)}) "
                   f"VALUES ({', '.join('?' * len(RECEIPT_COLUMNS))})")


def _row_to_batch(r: Any) -> StoredBatch:
    batch_seq, first_seq, last_seq, hash_, wire, delivered_at_us = r
    return StoredBatch(batch_seq=batch_seq, first_seq=first_seq, last_seq=last_seq, hash=hash_, wire=wire,
                       delivered=delivered_at_us is not None)
