"""Where a verified batch fits in its gateway's stored chain: duplicate, conflict, or stored.

A gateway's chain is one line of batches: batch ``n`` names batch ``n - 1`` by hash
(``prev_hash``), batch 1 names genesis. Batches may arrive out of order and some may never arrive
(the gateway's disk quota can drop sealed batches), so the store keeps batches whose predecessor
it has not seen yet. Two batches that cannot both belong to one line **conflict**:

* the same ``batch_seq`` with different hashes, or two batches naming the same predecessor — a
  **fork**, wherever the second one sits (batch 6 naming batch 2 while batch 3 also names it);
* a batch naming a stored batch that is not numbered ``batch_seq - 1``, or a stored neighbour that
  does not link — a **broken chain**;
* two batches holding the same record seq — a **replay**.

Which one stays (:func:`place`):

1. A batch that contradicts a stored batch's own content is never right: one that names a stored
   batch at the wrong distance is refused; a stored one that names the newcomer at the wrong
   distance is moved aside.
2. A batch that **links**, i.e. whose predecessor is stored and matches (or batch 1 at genesis),
   wins over a stored batch that does not link: the stored one is moved aside, so a batch stored
   ahead of the chain can never lock the genuine chain out.
3. Otherwise the stored batch stays and the newcomer is refused (the gateway re-sends refused
   batches, so a genuine one comes back once the chain below it is stored).

A stored batch that carried a key rotation is never moved aside (its rotation may have been used).
Every conflict is recorded naming both batches (``rejections.conflict_batch_seq/conflict_hash``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from blackbox.seal import GENESIS_HASH, ChainEnd, OpenedBatch, breaks, genesis_problem
from blackbox.store.chunks import ChunkError, unpack_seqs
from blackbox.store.schema import gateway_keys, sealed_batches


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """The chain fields of a stored batch."""

    batch_seq: int
    hash: str
    prev_hash: str
    first_seq: int
    last_seq: int

    def name(self) -> str:
        return f"batch {self.batch_seq} ({self.hash})"


class Conflict(Exception):
    """The batch cannot be stored: ``reason`` (a rejection code), ``detail``, and the stored batch it
    conflicts with (``None`` when it breaks a rule on its own)."""

    def __init__(self, reason: str, detail: str, other: StoredBatch | None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.other = other


_SB = sealed_batches.c
_COLUMNS = (_SB.batch_seq, _SB.hash, _SB.prev_hash, _SB.first_seq, _SB.last_seq)


def _fetch(conn: Connection, gid: int, *where: ColumnElement[bool]) -> list[StoredBatch]:
    rows = conn.execute(select(*_COLUMNS).where(_SB.gateway_id == gid, *where).order_by(_SB.batch_seq))
    return [StoredBatch(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class KeyState:
    """The signing key's row as the chain's lock holder sees it: revocation and validity range."""

    revoked_at_us: int | None
    valid_from_seq: int | None
    valid_to_seq: int | None


@dataclass(frozen=True, slots=True)
class ChainState:
    """What :func:`place` weighs a batch against, read in one statement (:func:`read_state`)."""

    batches: list[StoredBatch]
    """Stored batches numbered next to it, naming its predecessor or it, or being its predecessor; by batch_seq."""
    holders: dict[int, int]
    """Stored batch -> lowest record seq it holds inside the batch's seq range (readings and events)."""
    key: KeyState | None
    """The signing key's row (``None``: not enrolled for this gateway)."""


def state_sql(mark: str) -> str:
    """The statement :func:`read_state` runs, with ``mark`` as the driver's parameter mark (``?`` or ``%s``).

    Selects joined by ``UNION ALL``: the candidates of :func:`place` (batches numbered next to
    this one, naming its predecessor or it, or being its predecessor), the reading chunks and events
    overlapping its records, and the signing key's row; one statement reads them all from one
    snapshot. Plain SQL: the ingest sends it in a pipeline on PostgreSQL, and building it with
    SQLAlchemy for every batch would cost more than running it. The casts type the columns that
    the first select leaves empty.
    """
    m = mark
    batches = "SELECT 'b', batch_seq, first_seq, last_seq, hash, prev_hash, NULL, NULL FROM sealed_batches WHERE"
    return (
        # one select per index (gateway+batch_seq, gateway+prev_hash twice, gateway+hash): an OR of the
        # three may be planned as a scan of all the gateway's batches
        f"SELECT 'b', batch_seq, first_seq, last_seq, hash, prev_hash, CAST(NULL AS BYTEA), CAST(NULL AS BIGINT) "
        f"FROM sealed_batches WHERE gateway_id = {m} AND batch_seq IN ({m}, {m}, {m}) "
        f"UNION ALL {batches} gateway_id = {m} AND prev_hash = {m} "
        f"UNION ALL {batches} gateway_id = {m} AND prev_hash = {m} "
        f"UNION ALL {batches} gateway_id = {m} AND hash = {m} "
        f"UNION ALL SELECT 'c', batch_seq, first_seq, n, NULL, NULL, seqs, NULL "
        f"FROM reading_chunks WHERE gateway_id = {m} AND last_seq >= {m} AND first_seq <= {m} "
        f"UNION ALL SELECT 'e', batch_seq, min(seq), NULL, NULL, NULL, NULL, NULL "
        f"FROM events WHERE gateway_id = {m} AND seq BETWEEN {m} AND {m} GROUP BY batch_seq "
        f"UNION ALL SELECT 'k', NULL, valid_from_seq, valid_to_seq, NULL, NULL, NULL, revoked_at_us "
        f"FROM gateway_keys WHERE gateway_id = {m} AND key_id = {m}"
    )


def state_params(gid: int, opened: OpenedBatch) -> tuple[Any, ...]:
    """The parameters of :func:`state_sql` for this batch."""
    h = opened.header
    return (gid, h.batch_seq - 1, h.batch_seq, h.batch_seq + 1, gid, h.prev_hash, gid, opened.hash, gid, h.prev_hash,
            gid, h.first_seq, h.last_seq, gid, h.first_seq, h.last_seq, gid, h.key_id)


def chain_state(rows: Iterable[Sequence[Any]], opened: OpenedBatch) -> ChainState:
    """The :class:`ChainState` from the rows of :func:`state_sql`."""
    h = opened.header
    found: dict[int, StoredBatch] = {}  # a batch may come from several of the selects
    holders: dict[int, int] = {}
    key_state: KeyState | None = None
    for src, batch_seq, lo, hi, hash_, prev_hash, seqs, at in rows:
        if src == "b":
            found[batch_seq] = StoredBatch(batch_seq, hash_, prev_hash, lo, hi)
        elif src == "k":
            key_state = KeyState(at, lo, hi)
        else:
            if src == "c":
                lowest = _lowest_held(seqs, hi, lo, h.first_seq, h.last_seq)
                if lowest is None:
                    continue
            else:
                lowest = lo
            holders[batch_seq] = min(lowest, holders.get(batch_seq, lowest))
    return ChainState([found[k] for k in sorted(found)], holders, key_state)


_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def read_state(conn: Connection, gid: int, opened: OpenedBatch) -> ChainState:
    """Everything :func:`place` and the key checks need about the stored chain, in one statement
    (:func:`state_sql`). Run it after the statement that locks the gateway's chain, never in it."""
    sql = state_sql(_MARKS[conn.dialect.paramstyle])
    return chain_state(conn.exec_driver_sql(sql, state_params(gid, opened)), opened)


def place(conn: Connection, gid: int, opened: OpenedBatch, state: ChainState) -> list[StoredBatch] | None:
    """``None`` if this exact batch is stored already, else the stored batches to move aside first.

    Raises :class:`Conflict` if the batch must be refused. Call inside the transaction that
    stores the batch, with the gateway's chain locked, with the ``state`` read since the lock.
    """
    h, me = opened.header, opened.hash
    mine = ChainEnd.of(opened)
    s, p = h.batch_seq, h.prev_hash
    near = {b.batch_seq: b for b in state.batches if s - 1 <= b.batch_seq <= s + 1}
    same = near.get(s)
    if same is not None and same.hash == me:
        return None
    genesis = genesis_problem(h)
    if genesis is not None:
        raise Conflict("chain_broken", genesis, None)
    siblings = [x for x in state.batches if x.prev_hash == p and x.hash != me] if p != GENESIS_HASH else []
    if p != GENESIS_HASH:
        for named in (x for x in state.batches if x.hash == p):
            if breaks(named, h):  # at the wrong distance, it contradicts a stored batch: rule 1
                if siblings:
                    raise Conflict("fork", f"batch {s} ({me}) and stored {siblings[0].name()} both name "
                                           f"{named.name()} as their predecessor; only batch "
                                           f"{named.batch_seq + 1} may", siblings[0])
                raise Conflict("chain_broken", f"batch {s} ({me}) names stored {named.name()} as its predecessor, "
                                               f"which would make it batch {named.batch_seq + 1}", named)
    pred = near.get(s - 1)
    if pred is not None and breaks(pred, h):
        raise Conflict("chain_broken", f"batch {s} ({me}) names {p} as its predecessor, but stored "
                                       f"{pred.name()} is not that batch", pred)
    links = s == 1 or pred is not None
    doomed: dict[int, StoredBatch] = {}

    def linked(x: StoredBatch) -> bool:
        """Whether stored batch ``x`` links to a stored predecessor that stays."""
        if x.batch_seq == 1:
            return True
        if x.batch_seq - 1 == s:
            return not breaks(mine, x)
        if x.batch_seq - 1 in doomed:
            return False
        below = near.get(x.batch_seq - 1)
        return below is not None or bool(_fetch(conn, gid, _SB.batch_seq == x.batch_seq - 1))

    def settle(x: StoredBatch, reason: str, why: str, *, contradicts: bool = False) -> None:
        """Move ``x`` aside if this batch wins (rules 1 and 2 above), else refuse this batch."""
        if x.batch_seq in doomed:
            return
        if (contradicts or (links and not linked(x))) and not _carried_rotation(conn, gid, x):
            doomed[x.batch_seq] = x
            return
        raise Conflict(reason, f"batch {s} ({me}) conflicts with stored {x.name()}: {why}", x)

    if same is not None:
        settle(same, "fork", "two batches with the same batch_seq")
    for x in siblings:
        settle(x, "fork", f"both name {p} as their predecessor")
    for x in (x for x in state.batches if x.prev_hash == me):
        if breaks(mine, x):
            settle(x, "fork", f"it names this batch as its predecessor but is numbered {x.batch_seq}",
                   contradicts=True)
    nxt = near.get(s + 1)
    if nxt is not None and breaks(mine, nxt):
        settle(nxt, "chain_broken", f"it links to {nxt.prev_hash}, not to this batch")
    for batch_seq, seq in sorted(state.holders.items()):
        holder = _fetch(conn, gid, _SB.batch_seq == batch_seq)
        if not holder:  # records without their sealed batch: nothing to weigh them against
            raise Conflict("replay", f"record seq {seq} is already stored (from batch {batch_seq})", None)
        settle(holder[0], "replay", f"record seq {seq} is already stored from it")
    return list(doomed.values())


def _lowest_held(seqs: bytes, n: int, chunk_first: int, first: int, last: int) -> int | None:
    """The lowest reading seq in ``first..last`` of a stored chunk overlapping that range (``None``: none is).

    The (gateway, last_seq) index finds the chunks: new batches come last, so few chunks end at or after ``first``.
    """
    try:
        held = [s for s in unpack_seqs(seqs, n) if first <= s <= last]
    except ChunkError:  # an altered chunk (store verify reports it): it still claims the range
        return max(first, chunk_first)
    return min(held) if held else None


def _carried_rotation(conn: Connection, gid: int, x: StoredBatch) -> bool:
    gk = gateway_keys.c
    return bool(conn.execute(
        select(func.count()).where(gk.gateway_id == gid, gk.valid_to_seq.between(x.first_seq, x.last_seq))
    ).scalar_one())


__all__ = ["ChainState", "Conflict", "KeyState", "StoredBatch", "chain_state", "place", "read_state", "state_params",
           "state_sql"]
